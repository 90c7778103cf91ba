"""Every exercise's worked solution runs as written, offline, after its notebook.

The notebooks run in quick mode, with tiny settings.
"""

from __future__ import annotations

import nbformat
from helpers import ROOT, execute_notebook, solution_blocks


def run_with_solutions(name: str) -> tuple[str, int]:
    """Run a notebook with each solution block appended as a cell.

    Returns (outputs as JSON, number of blocks).
    """
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    blocks = solution_blocks(notebook)
    notebook.cells += [nbformat.v4.new_code_cell(block) for block in blocks]
    return execute_notebook(notebook, ROOT / "notebooks"), len(blocks)


def test_every_solution_runs_after_its_notebook(tmp_path, monkeypatch):
    """Notebooks 01 to 05 in order, each followed by its solutions' code: no cell raises."""
    settings = {
        "CXR_QUICK": "1",
        "CXR_IMAGE_SIZE": "32",
        "CXR_MAX_IMAGES": "64",
        "CXR_EPOCHS": "2",
        "CXR_BATCH_SIZE": "16",
        "CXR_RUN_DIR": str(tmp_path / "runs"),
        "CXR_PRETRAINED": "0",
        "CXR_JOVIAN": "0",
    }
    for var, value in settings.items():
        monkeypatch.setenv(var, value)
    for name, expected_blocks in [("01_data_preview.ipynb", 4), ("02_training_on_gpu.ipynb", 3),
                                  ("03_test_predictions.ipynb", 6),
                                  ("04_jovian_logging.ipynb", 3),
                                  ("05_several_gpus.ipynb", 2)]:
        outputs, blocks = run_with_solutions(name)
        assert blocks == expected_blocks, (
            f"{name}: {blocks} solution code blocks, expected {expected_blocks}"
        )
        assert '"output_type": "error"' not in outputs, f"{name}: a cell raised"
