"""The benchmarks' generated JPEGs look like the Kaggle files in size, dimensions and mode.

The Kaggle "Chest X-Ray Images (Pneumonia)" set: 5,856 grayscale JPEGs, 1.23 GB (about
210 kB a file), widths about 384 to 2,900 px. A benchmark of a decode-bound pipeline on
heavier files would overstate every speed-up (issue 19).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def common():
    """benchmarks/common.py, loaded under its own name (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_jpegs_match_the_kaggle_files(common, tmp_path: Path) -> None:
    root = common.make_fullsize_jpegs(tmp_path, 40, workers=1)
    files = sorted(root.rglob("*.jpeg"))
    assert len(files) == 40
    sizes_kb = np.array([f.stat().st_size / 1e3 for f in files])
    assert 150 <= sizes_kb.mean() <= 270, sizes_kb.mean()
    assert sizes_kb.min() >= 20 and sizes_kb.max() <= 2000
    for f in files:
        with Image.open(f) as image:
            width, height = image.size
            assert image.mode == "L", f
            assert image.format == "JPEG"
        assert 384 <= width <= 2900, (f, width)
        assert 0.5 <= height / width <= 1.0, (f, width, height)


def test_generator_is_deterministic_and_versioned(common, tmp_path: Path) -> None:
    for name in ("a", "b"):
        for label in ("NORMAL", "PNEUMONIA"):
            (tmp_path / name / label).mkdir(parents=True)
        common.write_fullsize_jpeg(tmp_path / name, 5, seed=3)
    relative = common.jpeg_name(5)
    assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    # a pool names the generator's version: files of an earlier generator are not reused
    common.make_fullsize_jpegs(tmp_path / "run", 1, workers=1, pool=tmp_path / "pool")
    store = tmp_path / "pool" / f"v{common.GENERATOR_VERSION}-seed0"
    assert (store / common.jpeg_name(0)).is_file()
