"""Support code: Colab and Kaggle, where each notebook runs in a runtime of its own (lessons need
not read this).

A notebook opened from an "Open in Colab" or "Open in Kaggle" link starts on a machine of its own,
without the files an earlier notebook made there. The series carries its run dir across by one
route per service:

- Colab: the setup cell (the first code cell of every notebook) mounts Google Drive and sets
  ``CXR_RUN_DIR`` to a folder there (its ``DRIVE_RUN_DIR``), so every notebook shares one run dir.
- Kaggle: a saved version of notebook 02 keeps its ``/kaggle/working``; added to a later notebook
  with Add Input, it appears read-only under ``/kaggle/input``. ``bring_attached_runs``
  copies the checkpoints and records found there into this notebook's run dir, where later
  notebooks (03, 04, 06) look, and never writes to the input.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cxr_support.atomic_files import atomic_write_bytes
from cxr_support.paths import display_path

KAGGLE_INPUT = Path("/kaggle/input")  # where Kaggle mounts a notebook's inputs, read-only
# what a later notebook reads from an earlier run: the folder and its files
PRODUCTS = {"checkpoints": "*.pt", "records": "*.json"}
MAX_DEPTH = 6  # e.g. /kaggle/input/<notebook>/<project folder>/runs/checkpoints: depth 4

ROUTES = (
    "A notebook opened from a Colab or Kaggle link runs in a runtime of its own, without the "
    "files of the notebooks before it. On Colab, keep the run dir on Google Drive: leave "
    "DRIVE_RUN_DIR set in the setup cell (the first code cell) of every notebook. On Kaggle, "
    "save a version of notebook 02 (Save Version), then add its output to this notebook "
    "(Add Input, then your notebook 02) and run again: the series copies it from /kaggle/input.")


def attached_run_dirs(root: Path | None = None) -> list[Path]:
    """Folders below ``root`` (Kaggle's inputs) holding an earlier run's checkpoints or records."""
    root = KAGGLE_INPUT if root is None else Path(root)
    if not root.is_dir():
        return []
    found = set()
    for depth in range(MAX_DEPTH):
        for folder_name in PRODUCTS:
            for folder in root.glob("*/" * depth + folder_name):
                if folder.is_dir():
                    found.add(folder.parent)
    return sorted(found)


def bring_attached_runs(run_dir: Path, root: Path | None = None) -> list[Path]:
    """Copy the attached runs' checkpoints and records that ``run_dir`` lacks; return the copies.

    A file of the same name already in the run dir is kept as it is (notebook 03 may have stored
    a threshold in it). Each copy is written atomically; the input is only read.
    """
    sources, copied = attached_run_dirs(root), []
    for source in sources:
        for folder_name, pattern in PRODUCTS.items():
            for path in sorted((source / folder_name).glob(pattern)):
                target = Path(run_dir) / folder_name / path.name
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(target, path.read_bytes())
                    shutil.copystat(path, target)
                    copied.append(target)
    if copied:
        print(f"Copied {len(copied)} file(s) of earlier runs from "
              f"{', '.join(display_path(s) for s in sources)} (attached as input, left as it is) "
              f"into {display_path(run_dir)}")
    return copied
