"""Support code, generic: on/off settings read from text (lessons need not read this)."""

from __future__ import annotations


def parse_bool(text: str) -> bool:
    """1/true/yes/on or 0/false/no/off (any case) as a bool; a ValueError for anything else."""
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected 1/0/true/false, got {text!r}")
