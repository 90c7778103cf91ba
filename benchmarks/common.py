"""Shared set-up for the benchmarks: realistic full-size chest-film JPEGs and timing helpers."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cxr_utils as cxr


def make_fullsize_jpegs(folder: Path, n_images: int, seed: int = 0) -> Path:
    """Write ``n_images`` X-ray-like JPEGs, 1000 to 2500 px a side, 5% RGB, in the Kaggle class layout."""
    root = folder / "train"
    for name in cxr.CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        label = int(i % 4 != 0)  # 3 PNEUMONIA : 1 NORMAL, as in the real data
        height = int(rng.integers(1000, 2200))  # width up to 2500
        width = min(2500, int(height * rng.uniform(1.0, 1.35)))
        anatomy = cxr._patient_anatomy(rng, pneumonia=bool(label))
        small = cxr.synthetic_xray(rng, 300, round(300 * width / height), anatomy, bool(label))
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 2, (height, width))  # film grain: files of 200-400 kB, like the Kaggle originals
        image = Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))
        if i % 20 == 0:
            image = image.convert("RGB")
        image.save(root / cxr.CLASS_NAMES[label] / f"person{i}_bacteria_1.jpeg", quality=90)
    return root


def machine() -> str:
    """One line naming the machine the figures come from."""
    line = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name()}"
    return line


def timed(fn) -> tuple[float, object]:
    """(seconds, result) of ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
