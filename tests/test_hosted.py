"""Kaggle as a home for the series, simulated: its environment variable, a read-only input mount
holding the data, and /kaggle/working as the only writable place (issue: Colab and Kaggle).

The notebooks run in a kernel of their own, so a first cell, added by the test, points the
Kaggle paths at temporary folders; everything else is the series as a learner runs it there.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from helpers import LARGE_COUNTS, ROOT, execute_notebook, snapshot

from cxr_support.synthetic import make_synthetic_dataset


def files_under(root: Path, skip: tuple[str, ...] = (".venv", ".git", "__pycache__")) -> set[str]:
    """Every file below ``root``, as relative paths, outside ``skip`` folders."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not set(p.relative_to(root).parts) & set(skip)}


def kaggle_notebook(name: str, mount: Path, working: Path) -> nbformat.NotebookNode:
    """Notebook ``name`` with a first cell that makes this kernel look like a Kaggle notebook."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(f"""import os
from pathlib import Path
from cxr_support import config, dataset
os.environ["KAGGLE_KERNEL_RUN_TYPE"] = "Interactive"
config.KAGGLE_WORKING, dataset.KAGGLE_MOUNT = Path({str(working)!r}), Path({str(mount)!r})"""))
    return notebook


def test_notebooks_01_and_02_on_kaggle_write_only_to_its_working_folder(tmp_path, monkeypatch):
    """The data is found at the input mount and never written; every product lands in the working
    folder's runs/, and nothing is added to the project folder."""
    mount = make_synthetic_dataset(tmp_path / "input", seed=7, counts=LARGE_COUNTS)
    working = tmp_path / "working"
    working.mkdir()
    for var in ("CXR_RUN_DIR", "CXR_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {"CXR_QUICK": "1", "CXR_EPOCHS": "2", "CXR_IMAGE_SIZE": "32",
                       "CXR_MAX_IMAGES": "64", "CXR_PRETRAINED": "0", "CXR_JOVIAN": "0"}.items():
        monkeypatch.setenv(var, value)
    input_before, project_before = snapshot(mount), files_under(ROOT)
    for name in ("01_data_preview.ipynb", "02_training_on_gpu.ipynb"):
        outputs = execute_notebook(kaggle_notebook(name, mount, working), ROOT / "notebooks")
        assert '"output_type": "error"' not in outputs, name
        assert str(working / "runs") in outputs and "SYNTHETIC" not in outputs, name
    assert snapshot(mount) == input_before, "the read-only input mount was written to"
    assert files_under(ROOT) == project_before, "the project folder got new files"
    runs = working / "runs"
    assert any(runs.glob("split-seed*.json")) and any((runs / "cache").glob("*.pt"))
    assert len(list((runs / "checkpoints").glob("*.pt"))) == 1
    assert len(list((runs / "records").glob("*.json"))) == 1
    assert {p.name for p in working.iterdir()} == {"runs"}
