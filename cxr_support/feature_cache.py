"""Support code: the frozen backbone's features, computed once (lessons need not read this).

They are cached in the run dir. A fixed feature extractor gives every image the same pooled
features (2048 for ResNet50, 512 for ResNet18 and ResNet34) in every epoch, so the backbone runs
once per split and only the head trains, on the stored features. The cache file's name is a hash
of the pixel cache's key (file names, sizes, modification times, image size) and of the
backbone's weights, so new weights, another image size or changed files rebuild it. Like the
pixel cache it is written atomically, and a damaged or unwritable cache only costs time.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from cxr_support.atomic_files import atomic_torch_save, remove_stale_temporaries
from cxr_support.pixel_cache import XraySplit, cache_key
from cxr_support.progress import progress_bar

FEATURE_FORMAT = 1


def weights_identity(model: nn.Module, skip_prefix: str = "network.fc.") -> str:
    """A hash of every weight and buffer of ``model`` except the head's.

    These are what decide the features.
    """
    digest = hashlib.sha256(f"features{FEATURE_FORMAT}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(skip_prefix) or name == "pos_weight":
            continue
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}\n".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def feature_cache_path(split: XraySplit, model: nn.Module, cache_dir: Path) -> Path:
    """Where the features of ``split`` under ``model``'s backbone are (or will be) cached."""
    image_size = int(split.pixels.shape[-1])
    key = hashlib.sha256(
        f"{cache_key(split.paths, image_size)}|{weights_identity(model)}".encode()
    ).hexdigest()[:20]
    return Path(cache_dir) / f"features-{split.name}-{key}.pt"


def compute_features(split: XraySplit, features_of: Callable[[torch.Tensor], torch.Tensor],
                     device: torch.device, batch_size: int = 64,
                     progress: bool = True) -> torch.Tensor:
    """Run ``features_of`` over the split's pixels; N x F float32 on the CPU.

    ``features_of`` maps uint8 pixels on ``device`` to N x F.
    """

    chunks = []
    starts = range(0, len(split), batch_size)
    for start in progress_bar(starts, desc=f"features {split.name}", unit="batch",
                              disable=not progress):
        pixels = split.pixels[start : start + batch_size].to(device, non_blocking=True)
        chunks.append(features_of(pixels).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


def load_features(split: XraySplit, model: nn.Module,
                  features_of: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                  cache_dir: Path | None, batch_size: int = 64,
                  progress: bool = True) -> torch.Tensor:
    """The split's features (N x F, CPU), from the cache when it matches, else computed.

    Computed features are cached when ``cache_dir`` is given.
    """
    path = feature_cache_path(split, model, cache_dir) if cache_dir is not None else None
    if path is not None:
        remove_stale_temporaries(Path(cache_dir))
        if path.exists():
            try:
                saved = torch.load(path, weights_only=True)
                if (saved["features"].shape[0] == len(split)
                        and torch.equal(saved["labels"], split.labels)):
                    return saved["features"]
                warnings.warn(f"{path} does not match its split; recomputing it.", stacklevel=2)
            except Exception as err:  # a damaged cache is recomputed, never trusted
                warnings.warn(f"Ignoring unreadable feature cache {path} ({err}); recomputing it.",
                              stacklevel=2)
    start = time.perf_counter()
    features = compute_features(split, features_of, device, batch_size, progress)
    if progress:
        print(f"features of {split.name}: {len(split)} images "
              f"in {time.perf_counter() - start:.1f} s")
    if path is not None:
        try:
            atomic_torch_save({"features": features, "labels": split.labels}, path)
        except OSError as err:
            warnings.warn(f"Could not save the feature cache {path} ({err}); "
                          "carrying on with the features in memory.", stacklevel=2)
    return features
