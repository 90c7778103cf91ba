"""Support code, generic: the folder names of the Kaggle layout (lessons need not read this)."""

from __future__ import annotations

CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # the Kaggle classes: label 0, and label 1 (the one detected)
SPLIT_FOLDERS = ("train", "val", "test")
