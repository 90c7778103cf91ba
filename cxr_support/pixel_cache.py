"""Support code: decode every image once into a uint8 tensor (lessons need not read this).

The tensor is cached on disk in the run dir. The cache file's name is a hash of the paths,
their sizes and modification times and the image size, so any change rebuilds it; a damaged
cache is rebuilt, never trusted. The cache is only a speed-up: when it cannot be written
(disk full, quota) the run warns and goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cxr_support.atomic_files import atomic_torch_save, remove_stale_temporaries
from cxr_support.dataset import warn_skipped
from cxr_support.errors import DataError
from cxr_support.images import decode_resized
from cxr_support.names import CLASS_NAMES
from cxr_support.progress import progress_bar

CACHE_FORMAT = 2  # 2: EXIF orientation, float images scaled by their range


@dataclasses.dataclass
class XraySplit:
    """One split held in memory: uint8 pixels (N x 1 x S x S), labels, and where each came from."""

    name: str
    pixels: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    original_sizes: list[tuple[int, int]]
    original_modes: list[str]
    skipped: list[tuple[str, str]]
    # label k is class_names[k]; the last one is the class the model detects
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        """Images per class name."""
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts))

    def subset(self, indices: Sequence[int], name: str | None = None) -> XraySplit:
        """A new split holding only ``indices`` (pixels are shared views where possible)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return XraySplit(
            name or self.name,
            self.pixels[index],
            self.labels[index],
            [self.paths[i] for i in index.tolist()],
            [self.original_sizes[i] for i in index.tolist()],
            [self.original_modes[i] for i in index.tolist()],
            self.skipped,
            self.class_names,
        )


def _decode_or_none(path: Path, image_size: int):
    try:
        return decode_resized(path, image_size)
    except DataError as err:
        return err


def decode_files(
    paths: Sequence[Path], image_size: int, workers: int | None = None, progress: bool = True
) -> tuple[np.ndarray, list[int], list[tuple[int, int]], list[str], list[tuple[str, str]]]:
    """Decode files in parallel threads.

    Return pixels, indices kept, sizes, modes and (path, reason) skipped.
    """
    # Pillow releases the GIL while it decodes: one thread per core
    workers = workers or os.cpu_count() or 1
    kept, pixels, sizes, modes, skipped = [], [], [], [], []
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: _decode_or_none(p, image_size), paths)
        for index, result in enumerate(progress_bar(results, total=len(paths), desc="decode",
                                                    unit="image", disable=not progress)):
            if isinstance(result, DataError):
                skipped.append((str(paths[index]), str(result.__cause__ or result)))
                continue
            array, size, mode = result
            kept.append(index)
            pixels.append(array)
            sizes.append(size)
            modes.append(mode)
    stacked = np.stack(pixels) if pixels else np.zeros((0, image_size, image_size), np.uint8)
    return stacked, kept, sizes, modes, skipped


def cache_key(paths: Sequence[Path], image_size: int) -> str:
    """The cache file's key.

    A hash of the paths, their sizes and modification times and the image size.
    """
    digest = hashlib.sha256(f"format{CACHE_FORMAT}-size{image_size}".encode())
    for path in paths:
        stat = Path(path).stat()
        # os.fsencode: any file name
        digest.update(os.fsencode(Path(path).resolve())
                      + f"|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_pixels(
    name: str, samples: Sequence[tuple[Path, int]], image_size: int, cache_dir: Path | None,
    progress: bool = True, class_names: Sequence[str] = CLASS_NAMES,
) -> XraySplit:
    """Decode a list of (path, label) once into an ``XraySplit``.

    Reuses the on-disk cache when it matches. The cache file's name is a hash of the paths,
    their sizes and modification times and the image size, so any change rebuilds it.
    Unreadable files are skipped with a warning that lists them.
    """
    paths = [Path(p) for p, _ in samples]
    labels = [int(label) for _, label in samples]
    cache_path = (Path(cache_dir) / f"{name}-{cache_key(paths, image_size)}.pt"
                  if cache_dir else None)
    if cache_dir is not None:
        # left by a process killed while it wrote a cache file
        remove_stale_temporaries(Path(cache_dir))
    if cache_path is not None and cache_path.exists():
        try:
            saved = torch.load(cache_path, weights_only=True)
            # labels come from the folders now, not the cache: CXR_POSITIVE_CLASS may differ
            label_of = dict(zip(paths, labels))
            split = XraySplit(
                name,
                saved["pixels"],
                torch.tensor([label_of[Path(p)] for p in saved["paths"]], dtype=torch.long),
                [Path(p) for p in saved["paths"]],
                [tuple(s) for s in saved["original_sizes"]],
                list(saved["original_modes"]),
                [tuple(s) for s in saved["skipped"]],
                tuple(class_names),
            )
            warn_skipped(split.skipped, f"unreadable images in {name}")
            return split
        except Exception as err:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"Ignoring unreadable cache {cache_path} ({err}); rebuilding it.",
                          stacklevel=2)
    pixels, kept, sizes, modes, skipped = decode_files(paths, image_size, progress=progress)
    split = XraySplit(
        name,
        torch.from_numpy(pixels).unsqueeze(1),
        torch.tensor([labels[i] for i in kept], dtype=torch.long),
        [paths[i] for i in kept],
        sizes,
        modes,
        skipped,
        tuple(class_names),
    )
    warn_skipped(skipped, f"unreadable images in {name}")
    if cache_path is not None:
        _save_cache(split, cache_path)
    return split


def _save_cache(split: XraySplit, cache_path: Path) -> None:
    """Write the cache file.

    On failure (disk full, quota, read-only) warn and go on: the pixels are in memory.
    """
    payload = {
        "pixels": split.pixels,
        "labels": split.labels,
        "paths": [str(p) for p in split.paths],
        "original_sizes": [list(s) for s in split.original_sizes],
        "original_modes": split.original_modes,
        "skipped": [list(s) for s in split.skipped],
    }
    try:
        atomic_torch_save(payload, cache_path)
    except OSError as err:
        warnings.warn(
            f"Could not save the pixel cache {cache_path} ({err}). "
            "Carrying on with the pixels in memory; "
            "the next run decodes the images again. "
            "Free some disk space or set CXR_RUN_DIR to a folder with room.",
            stacklevel=3,
        )
