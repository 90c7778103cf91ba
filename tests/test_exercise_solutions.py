"""Every exercise's worked solution runs as written, offline, after its notebook.

The notebooks run in quick mode, with tiny settings.
"""

from __future__ import annotations

import re
import textwrap

import nbformat
from helpers import ROOT, execute_notebook

SOLUTION_CODE = re.compile(r"<details><summary>Solution</summary>(.*?)</details>", re.DOTALL)
PYTHON_BLOCK = re.compile(r"^   ```python\n(.*?)^   ```", re.DOTALL | re.MULTILINE)


def solution_blocks(notebook: nbformat.NotebookNode) -> list[str]:
    """The Python code blocks of every exercise's folded solution, dedented, in order.

    Each exercise is a Markdown cell after the '## Exercises' cell, its solution folded in it.
    """
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    starts = [i for i, source in enumerate(markdown) if source.startswith("## Exercises")]
    assert len(starts) == 1, "no Markdown cell of its own starts with '## Exercises'"
    start = starts[0]
    return [
        textwrap.dedent(block)
        for exercise in markdown[start + 1:]
        for solution in SOLUTION_CODE.findall(exercise)
        for block in PYTHON_BLOCK.findall(solution)
    ]


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
