"""Support code, generic: the data's error, any error in a line (lessons need not read this)."""

from __future__ import annotations


class DataError(Exception):
    """A problem with the dataset folder or one of its files; the message names it and the fix."""


def error_summary(err: Exception) -> str:
    """The informative line of an exception (torch.load's weights-only errors put it mid-text)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    markers = ("Unsupported", "WeightsUnpickler error")
    marked = (line for line in lines if any(m in line for m in markers))
    key = next(marked, lines[0] if lines else "")
    return f"{type(err).__name__}: {key[:300]}"
