"""Support code, generic: when and with which libraries a file was made (lessons need not read
this). Checkpoints and run records carry both."""

from __future__ import annotations

import datetime as dt
import platform

import numpy as np
import PIL
import torch
import torchvision


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Versions of Python and the main libraries, for records and checkpoints."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }
