"""Small builders shared by the unit tests: image files, dataset trees, tensors and splits.

No fixtures here.
"""

from __future__ import annotations
import __future__

import ast
import functools
import json
import re
import textwrap
import types
from pathlib import Path

import nbformat
import numpy as np
import torch
from nbclient import NotebookClient
from PIL import Image

from cxr_support.pixel_cache import XraySplit

ROOT = Path(__file__).resolve().parent.parent  # the project folder

# patients per class of the small synthetic samples
TINY_COUNTS = {"train": (4, 6), "val": (1, 1), "test": (2, 3)}
LARGE_COUNTS = {"train": (20, 40), "val": (1, 1), "test": (1, 1)}
SIZE = 32  # image size of the decoded test images
IMAGE_SIZE = 32  # model-input size of the model tests

# ---------------------------------------------------------------------- shared helpers and fixtures


def noise_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A smooth random grayscale image (upsampled noise), different for each seed."""
    rng = np.random.default_rng(seed)
    small = (rng.random((6, 6)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (48, 40)) -> Path:
    """Write a small valid grayscale JPEG and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(seed, size).save(path, format="JPEG", quality=90)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    """Write a valid JPEG, then keep only the first half of its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    Image.fromarray((rng.random((120, 160)) * 255).astype(np.uint8)).save(
        path, format="JPEG", quality=95
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_fake_jpeg(path: Path) -> Path:
    """Write a text file with a .jpeg name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image, only a file with a .jpeg name\n")
    return path


# Kaggle-style names: NORMAL patients 1-3 images each, PNEUMONIA patients 1-2 (bacteria and virus).
TINY_LAYOUT = {
    "train": {
        "NORMAL": [
            "IM-0001-0001.jpeg",
            "IM-0001-0001-0002.jpeg",
            "IM-0002-0001.jpeg",
            "NORMAL2-IM-0003-0001.jpeg",
        ],
        "PNEUMONIA": [
            "person1_bacteria_1.jpeg",
            "person1_bacteria_2.jpeg",
            "person2_virus_3.jpeg",
            "person3_bacteria_4.jpeg",
        ],
    },
    "val": {"NORMAL": ["IM-0101-0001.jpeg"], "PNEUMONIA": ["person101_virus_1.jpeg"]},
    "test": {
        "NORMAL": ["IM-0201-0001.jpeg", "IM-0202-0001.jpeg"],
        "PNEUMONIA": ["person201_bacteria_1.jpeg", "person202_virus_2.jpeg"],
    },
}


def make_tree(root: Path, layout: dict[str, dict[str, list[str]]] = TINY_LAYOUT) -> Path:
    """Write a Kaggle-layout dataset of small JPEGs at ``root`` and return ``root``."""
    seed = 0
    for split, classes in layout.items():
        for class_name, names in classes.items():
            (root / split / class_name).mkdir(parents=True, exist_ok=True)
            for name in names:
                seed += 1
                write_jpeg(root / split / class_name / name, seed)
    return root


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every entry under ``root`` with (is folder, size, mtime in ns).

    Equal snapshots mean nothing changed.
    """
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        out[str(path.relative_to(root))] = (
            path.is_dir(),
            stat.st_size if path.is_file() else 0,
            stat.st_mtime_ns,
        )
    return out


def kaggle_samples(
    root: Path, n_normal: int = 30, n_pneumonia: int = 60, seed: int = 0
) -> list[tuple[Path, int]]:
    """A (path, label) list with Kaggle names and 1-3 images per patient.

    The files need not exist.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for patient in range(1, n_normal + 1):
        for k in range(1, int(rng.integers(1, 4)) + 1):
            stem = f"IM-{patient:04d}-0001" if k == 1 else f"IM-{patient:04d}-0001-{k:04d}"
            samples.append((root / "train" / "NORMAL" / f"{stem}.jpeg", 0))
    image_number = 0
    for patient in range(1, n_pneumonia + 1):
        kind = "bacteria" if patient % 2 else "virus"
        for _ in range(int(rng.integers(1, 4))):
            image_number += 1
            samples.append(
                (root / "train" / "PNEUMONIA" / f"person{patient}_{kind}_{image_number}.jpeg", 1)
            )
    return samples


def index_of_pixels(images: torch.Tensor) -> list[int]:
    """Recover the uint8 value of the first pixel of each [0, 1] model-input image.

    Used as a sample id.
    """
    return [round(float(v) * 255) for v in images[:, 0, 0, 0]]




def make_images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` model-input images: 1x32x32 grey in [0, 1], deterministic in the seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def make_split(labels: list[int], seed: int = 0, name: str = "tiny") -> XraySplit:
    """A hand-built XraySplit: random uint8 pixels (N, 1, 32, 32) with the given labels."""
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    pixels = torch.randint(
        0, 256, (n, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=generator
    )
    return XraySplit(
        name,
        pixels,
        torch.tensor(labels, dtype=torch.long),
        [Path(f"{name}-{i}.png") for i in range(n)],
        [(IMAGE_SIZE, IMAGE_SIZE)] * n,
        ["L"] * n,
        [],
    )


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """True when two state dicts have the same keys and identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def execute_notebook(notebook: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> str:
    """Run every cell of ``notebook`` in a fresh kernel started in ``cwd``.

    The outputs land in ``cwd``; return the outputs as JSON text.
    """
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    ).execute()
    return json.dumps([cell.get("outputs", []) for cell in notebook.cells])


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


@functools.cache
def lesson(stem: str) -> types.SimpleNamespace:
    """What a lesson's cells define, read from the notebook: the helpers it keeps to itself.

    A helper that only its own lesson uses is not saved to cxr_utils (d2l's way), so the notebook
    is its one source. This runs the cells that only import or define (functions, classes,
    UPPER_CASE constants), as the kernel runs them, and none of the cells that do the work.
    """
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    namespace: dict = {"__name__": f"lesson_{stem[:2]}"}
    flags = __future__.annotations.compiler_flag  # as the setup cell's future import does
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        lines = [line for line in cell.source.splitlines() if not line.startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:  # IPython inside a block (the setup cell's !git): not a definition
            continue
        if tree.body and all(only_defines(node) for node in tree.body):
            exec(compile(tree, str(path), "exec", flags=flags, dont_inherit=True), namespace)
    return types.SimpleNamespace(**namespace)


def only_defines(node: ast.stmt) -> bool:
    """An import (not from __future__), a def or class, or an assignment to UPPER_CASE names."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
        return not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
    return isinstance(node, ast.Assign) and all(
        isinstance(t, ast.Name) and t.id.isupper() for t in node.targets
    )


def run_series_notebook(name: str, timeout: int = 600) -> str:
    """Execute one notebook of the series, as nbval does; its outputs as JSON.

    It runs in notebooks/, with this process's CXR_* variables.
    """
    return execute_notebook(
        nbformat.read(ROOT / "notebooks" / name, as_version=4), ROOT / "notebooks", timeout
    )


class MomentumSGD(torch.optim.SGD):
    """SGD with momentum 0.9: an update linear in the gradients.

    The DDP equivalence test trains with it instead of Adam. Adam moves every weight by about the
    learning rate whatever its gradient's size, so float rounding that flips the sign of a
    near-zero gradient (2 processes sum in another order than 1) moves a weight by ~1e-3: the
    weights of the two runs then differ by far more than rounding. With SGD they differ by
    rounding only, on any CPU.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        super().__init__(params, lr, momentum=0.9, weight_decay=weight_decay)


def train_with_stored_batch_norm(self, mode: bool = True):
    """A model's ``train`` that keeps every batch-norm layer on its stored statistics.

    Patched into PneumoniaCnnModel by the DDP tests, in this process and in torchrun's, so that
    per-process batch statistics cannot make two processes differ from one.
    """
    torch.nn.Module.train(self, mode)
    for module in self.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    return self
