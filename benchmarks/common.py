"""Shared set-up for the benchmarks: realistic full-size chest-film JPEGs and timing helpers."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

# The project's helpers, imported in this one place: the lessons' (cxr_utils) and the
# support package's.
from cxr_support.names import CLASS_NAMES
from cxr_support.synthetic import _patient_anatomy, synthetic_xray
from cxr_utils import resolve_precision

T = TypeVar("T")


def jpeg_name(i: int) -> Path:
    """Where image ``i`` lives under a ``train`` folder.

    3 PNEUMONIA : 1 NORMAL, as in the real data.
    """
    label = int(i % 4 != 0)
    return Path(CLASS_NAMES[label]) / f"person{i}_bacteria_1.jpeg"


# Version of the files `write_fullsize_jpeg` makes: part of a pool's folder name, so that a
# pool written by an earlier generator is never reused. 1: 1,000 to 2,500 px a side, film
# grain at quality 90, every 20th file RGB, about 364 kB a file (1.9 GB for 5,216).
# 2: fitted to the Kaggle files.
GENERATOR_VERSION = 2

# The geometry and encoding of each class, fitted to the Kaggle "Chest X-Ray Images
# (Pneumonia)" files: 5,856 grayscale JPEGs, 1.23 GB (about 210 kB a file), widths about 384
# to 2,900 px (most 1,000 to 2,000), heights about 70 to 80 % of the width, NORMAL films
# larger than PNEUMONIA ones. In 16 original-resolution Kaggle files every file is grayscale
# ('L'); the 8 PNEUMONIA ones are 968 x 592 to 1,664 x 1,128 px, quality 75, 49 to 119 kB,
# the 8 NORMAL ones 1,240 x 1,104 to 1,776 x 1,416 px, quality about 93 to 96, 170 to 530 kB.
# Widths are log-normal (median, sigma), clipped to the real range; aspect (height / width)
# is normal (mean, sd); grain is the standard deviation of the per-pixel noise in grey
# levels, drawn uniformly per file, and mostly decides the size. The first 1,200 files
# (seed 0, 3 PNEUMONIA : 1 NORMAL) average 210 kB (NORMAL 547, PNEUMONIA 97; 29 kB to
# 1.6 MB), 1,277 x 933 px (widths 627 to 2,542 px, 81 % of them 1,000 to 2,000 px).
FILM = {
    "NORMAL": {"width": (1550, 0.20), "aspect": (0.81, 0.05), "quality": (93, 96),
               "grain": (1.5, 4.0)},
    "PNEUMONIA": {"width": (1150, 0.20), "aspect": (0.69, 0.06), "quality": (75, 75),
                  "grain": (3.0, 6.0)},
}
WIDTH_RANGE = (384, 2900)


def film_geometry(rng: np.random.Generator, label: int) -> tuple[int, int, int, float]:
    """(width, height, JPEG quality, grain) of one file of class ``label``, drawn from ``FILM``."""
    film = FILM[CLASS_NAMES[label]]
    width = int(np.clip(film["width"][0] * np.exp(rng.normal(0, film["width"][1])), *WIDTH_RANGE))
    height = round(width * float(np.clip(rng.normal(*film["aspect"]), 0.55, 1.0)))
    quality = int(rng.integers(film["quality"][0], film["quality"][1] + 1))
    return width, height, quality, float(rng.uniform(*film["grain"]))


def write_fullsize_jpeg(root: Path, i: int, seed: int = 0) -> None:
    """Write image ``i`` (deterministic in ``seed`` and ``i``): a grayscale film as in ``FILM``.

    Smooth anatomy (`synthetic_xray` at 300 px high, upscaled) plus per-pixel film grain.
    """
    rng = np.random.default_rng([seed, i])
    label = int(i % 4 != 0)
    width, height, quality, grain = film_geometry(rng, label)
    anatomy = _patient_anatomy(rng, pneumonia=bool(label))
    small = synthetic_xray(rng, 300, round(300 * width / height), anatomy, bool(label))
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.standard_normal((height, width), dtype=np.float32)
    pixels = np.asarray(image, np.float32) + grain * noise
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    path = root / jpeg_name(i)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(partial, format="JPEG", quality=quality)
    # a killed run never leaves a truncated file that a later run would reuse
    os.replace(partial, path)


def _write_chunk(root: Path, indices: list[int], seed: int) -> int:
    for i in indices:
        write_fullsize_jpeg(root, i, seed)
    return len(indices)


def make_fullsize_jpegs(
    folder: Path, n_images: int, seed: int = 0, workers: int | None = None, pool: Path | None = None
) -> Path:
    """Write ``n_images`` X-ray-like JPEGs under ``folder/train``; return that folder.

    The files are in the Kaggle class layout. ``workers`` processes share the work (default:
    every CPU core); the files do not depend on it. With ``pool``, the files are written there
    once, kept between calls and runs (only missing ones are made), and ``folder/train`` holds
    symbolic links to the first ``n_images`` of them, so several benchmarks can share one set
    of files.
    """
    # a pool's folder names the generator's version: files of an earlier one are never reused
    pooled = Path(pool or ".") / f"v{GENERATOR_VERSION}-seed{seed}"
    store = pooled if pool is not None else Path(folder) / "train"
    for name in CLASS_NAMES:
        (store / name).mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(n_images) if not (store / jpeg_name(i)).is_file()]
    workers = max(1, min(workers or os.cpu_count() or 1, len(missing)))
    if workers == 1:
        _write_chunk(store, missing, seed)
    elif missing:
        # interleaved: equal work per chunk
        chunks = [missing[k::workers * 4] for k in range(workers * 4)]
        with ProcessPoolExecutor(workers) as executor:
            list(executor.map(_write_chunk, [store] * len(chunks), chunks, [seed] * len(chunks)))
    if pool is None:
        return store
    root = Path(folder) / "train"
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        (root / jpeg_name(i)).symlink_to((store / jpeg_name(i)).resolve())
    return root


def prepare_jpegs(args: argparse.Namespace, folder: Path) -> Path:
    """Make (or link from ``args.jpeg_pool``) ``args.images`` JPEGs under ``folder``.

    Say how long it took; return train/.
    """
    seconds, root = timed(
        lambda: make_fullsize_jpegs(folder, args.images, workers=args.workers, pool=args.jpeg_pool)
    )
    megabytes = sum(p.stat().st_size for p in root.rglob("*.jpeg")) / 1e6
    print(
        f"{args.images} JPEGs ({megabytes:.0f} MB) ready in {seconds:.1f} s, before any timer; "
        f"pool {args.jpeg_pool or '-'}"
    )
    return root


def machine() -> str:
    """One line naming the machine the figures come from."""
    line = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )
    if torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name()}"
    return line


def precision(device: torch.device, choice: str = "auto") -> str:
    """The precision `fit` trains in on ``device`` for ``choice``: 'bf16 autocast', 'fp32', ..."""
    chosen = resolve_precision(device, choice)
    return "fp32" if chosen == "fp32" else f"{chosen} autocast"


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark that generates JPEGs shares.

    Generation processes, a reusable pool, a JSON file.
    """
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes that generate the JPEGs"
    )
    parser.add_argument(
        "--jpeg-pool",
        type=Path,
        help="keep the generated JPEGs here, to reuse (default: a temporary folder)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")


def write_json(path: Path | None, args: argparse.Namespace, results: dict) -> None:
    """Write the machine, the settings and ``results`` to ``path`` (nothing when it is None)."""
    if path is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        path.write_text(json.dumps({"machine": machine(), "settings": settings, **results},
                                   indent=1, default=float))


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
