"""Support code, generic: the project folder, printable paths (lessons need not read this)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: notebooks/, runs/, data/


def display_path(path: Path | str) -> str:
    """A path as printable text, also when it is not valid UTF-8 (such bytes show as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
