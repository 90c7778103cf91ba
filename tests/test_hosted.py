"""Kaggle as a home for the series, simulated: its environment variable, a read-only input mount
holding the data, and /kaggle/working as the place whose files a saved version keeps (issue: Colab
and Kaggle).

The notebooks run in a kernel of their own, so a first cell, added by the test, points the
Kaggle paths at temporary folders; everything else is the series as a learner runs it there.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import LARGE_COUNTS, ROOT, execute_notebook, snapshot
from nbclient.exceptions import CellExecutionError

from cxr_support import hosted
from cxr_support.synthetic import make_synthetic_dataset

sys.path.insert(0, str(ROOT / "tools"))
import notebook_hygiene as hygiene  # noqa: E402


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


# ------------------------------------------ one runtime per notebook: carrying the run dir across

SMALL = {"CXR_QUICK": "1", "CXR_EPOCHS": "2", "CXR_IMAGE_SIZE": "32", "CXR_MAX_IMAGES": "64",
         "CXR_PRETRAINED": "0", "CXR_JOVIAN": "0"}


def small_settings(monkeypatch, **extra: str) -> None:
    """Quick, tiny settings in the environment that the kernels inherit; no CXR_RUN_DIR."""
    monkeypatch.delenv("CXR_RUN_DIR", raising=False)
    for var, value in {**SMALL, **extra}.items():
        monkeypatch.setenv(var, value)


def attached_kaggle_notebook(name: str, mount: Path, working: Path,
                             inputs: Path) -> nbformat.NotebookNode:
    """A Kaggle notebook whose inputs (/kaggle/input) are at ``inputs``."""
    notebook = kaggle_notebook(name, mount, working)
    notebook.cells[0].source += (f"\nfrom cxr_support import hosted\n"
                                 f"hosted.KAGGLE_INPUT = Path({str(inputs)!r})")
    return notebook


def test_on_kaggle_notebook_03_and_04_find_02s_saved_output_attached_as_input(tmp_path,
                                                                             monkeypatch):
    """Notebook 02 runs in one working folder; its saved output (the whole working folder) is
    attached read-only to two later notebooks, each with a working folder of its own: 03 and 04
    copy the checkpoint and record into their run dir and never write to the input."""
    mount = make_synthetic_dataset(tmp_path / "data", seed=7, counts=LARGE_COUNTS)
    small_settings(monkeypatch)
    first = tmp_path / "first" / "working"
    first.mkdir(parents=True)
    outputs = execute_notebook(kaggle_notebook("02_training_on_gpu.ipynb", mount, first),
                               ROOT / "notebooks")
    assert '"output_type": "error"' not in outputs
    inputs = tmp_path / "input"
    shutil.copytree(first, inputs / "cxr-02-training")  # Add Input: notebook 02
    for path in sorted(inputs.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = snapshot(inputs)
    try:
        for name in ("03_test_predictions.ipynb", "04_jovian_logging.ipynb"):
            working = tmp_path / name[:2] / "working"
            working.mkdir(parents=True)
            outputs = execute_notebook(attached_kaggle_notebook(name, mount, working, inputs),
                                       ROOT / "notebooks")
            assert '"output_type": "error"' not in outputs, name
            assert "Copied 2 file(s) of earlier runs" in outputs, name
            assert len(list((working / "runs" / "checkpoints").glob("*.pt"))) == 1, name
        assert snapshot(inputs) == before, "the attached input was written to"
    finally:
        for path in inputs.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_with_nothing_attached_notebook_03_names_the_routes(tmp_path, monkeypatch):
    """A later notebook in a fresh runtime, with nothing to read: one error naming both routes."""
    mount = make_synthetic_dataset(tmp_path / "data", seed=7, counts=LARGE_COUNTS)
    small_settings(monkeypatch)
    working = tmp_path / "working"
    working.mkdir()
    notebook = attached_kaggle_notebook("03_test_predictions.ipynb", mount, working,
                                        tmp_path / "no-input")
    with pytest.raises(CellExecutionError) as failed:
        execute_notebook(notebook, ROOT / "notebooks")
    message = str(failed.value)
    assert "No checkpoint in" in message and "DRIVE_RUN_DIR" in message
    assert "Add Input, then your notebook 02" in message


COLAB = '''import sys, types
from pathlib import Path
mounted = []
drive = types.SimpleNamespace(mount=lambda path: mounted.append(path))
google = types.ModuleType("google")
google.colab = types.ModuleType("google.colab")
google.colab.drive = drive
sys.modules.update({"google": google, "google.colab": google.colab})'''


def colab_notebook(name: str, drive_run_dir: Path) -> nbformat.NotebookNode:
    """Notebook ``name`` in a kernel that looks like Colab's; Drive's run dir: ``drive_run_dir``."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    setup = next(c for c in notebook.cells if c.cell_type == "code")
    wanted = f'DRIVE_RUN_DIR = "{hygiene.DRIVE_RUN_DIR}"'
    assert wanted in setup.source
    setup.source = setup.source.replace(wanted, f"DRIVE_RUN_DIR = {str(drive_run_dir)!r}")
    setup.source += "\nassert mounted == ['/content/drive'], mounted"
    notebook.cells.insert(0, nbformat.v4.new_code_cell(COLAB))
    return notebook


def test_on_colab_the_setup_cell_keeps_the_run_dir_on_drive_for_the_next_runtime(tmp_path,
                                                                                 monkeypatch):
    """Two kernels, each its own runtime with its own working folder: the setup cell mounts Drive
    and points CXR_RUN_DIR there, so notebook 03 finds the checkpoint that 02 made."""
    small_settings(monkeypatch, CXR_DATA_DIR=str(
        make_synthetic_dataset(tmp_path / "data", seed=7, counts=LARGE_COUNTS)))
    drive = tmp_path / "drive" / "cxr-runs"
    for name in ("02_training_on_gpu.ipynb", "03_test_predictions.ipynb"):
        runtime = tmp_path / name[:2] / "content"
        runtime.mkdir(parents=True)
        outputs = execute_notebook(colab_notebook(name, drive), runtime)
        assert '"output_type": "error"' not in outputs, name
    assert len(list((drive / "checkpoints").glob("*.pt"))) == 1
    record = json.loads(next((drive / "records").glob("*.json")).read_text())
    assert record.get("test"), "notebook 03 did not add its test metrics to 02's record"
    assert not (tmp_path / "03" / "content" / "runs").exists()


def test_attached_runs_are_found_at_any_depth_and_copied_without_replacing_anything(tmp_path):
    """Kaggle mounts a notebook's output as /kaggle/input/<notebook>/...; the project folder and
    runs/ add two levels. Files already in the run dir are kept as they are."""
    inputs, run_dir = tmp_path / "input", tmp_path / "working" / "runs"
    deep = inputs / "cxr-02" / "cxr-transfer-learning" / "runs"
    flat = inputs / "other-02"
    for folder, name in ((deep, "20260101-000000-000000-aaaaaaaaaaaa"),
                         (flat, "20260102-000000-000000-bbbbbbbbbbbb")):
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "records").mkdir()
        (folder / "checkpoints" / f"{name}.pt").write_bytes(b"weights " + name.encode())
        (folder / "records" / f"{name}.json").write_text("{}")
    (inputs / "chest-xray-pneumonia" / "chest_xray" / "train").mkdir(parents=True)  # the data
    assert hosted.attached_run_dirs(inputs) == [deep, flat]
    (run_dir / "records").mkdir(parents=True)
    kept = run_dir / "records" / "20260101-000000-000000-aaaaaaaaaaaa.json"
    kept.write_text('{"test": "stored by notebook 03"}')
    before = snapshot(inputs)
    copied = hosted.bring_attached_runs(run_dir, inputs)
    assert sorted(p.relative_to(run_dir).as_posix() for p in copied) == [
        "checkpoints/20260101-000000-000000-aaaaaaaaaaaa.pt",
        "checkpoints/20260102-000000-000000-bbbbbbbbbbbb.pt",
        "records/20260102-000000-000000-bbbbbbbbbbbb.json"]
    assert kept.read_text() == '{"test": "stored by notebook 03"}'
    assert (run_dir / "checkpoints" / "20260102-000000-000000-bbbbbbbbbbbb.pt").read_bytes() == (
        b"weights 20260102-000000-000000-bbbbbbbbbbbb")
    assert snapshot(inputs) == before
    assert hosted.bring_attached_runs(run_dir, inputs) == []  # nothing more to copy
    assert hosted.attached_run_dirs(tmp_path / "no-such-folder") == []
