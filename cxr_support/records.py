"""Support code: one JSON record per run (lessons need not read this).

A record is created once and never over another run's; later notebooks add or replace
sections of their own run's record.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cxr_support import hosted, provenance
from cxr_support.atomic_files import atomic_write_text, create_exclusive, locked_file
from cxr_support.dataset import file_list_sha256, warn_skipped
from cxr_support.devices import device_name
from cxr_support.download import read_download_record
from cxr_support.paths import PROJECT_ROOT

if TYPE_CHECKING:  # a type for the annotations: no import at run time
    from cxr_support.pixel_cache import XraySplit

RUN_ID_PATTERN = r"\d{8}-\d{6}-\d{6}-[0-9a-f]{12}"


def new_run_id() -> str:
    """A unique id that sorts by time: UTC ``YYYYmmdd-HHMMSS-microseconds-<48 random bits>``."""
    # Runs that end in the same second still sort by the microsecond; the random part keeps
    # processes apart (20,000 ids made in the same microsecond would collide with odds below 1e-6).
    return (dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f") + "-"
            + secrets.token_hex(6))


def git_commit(path: Path = PROJECT_ROOT) -> str | None:
    """The current git commit of the project, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_summary(device: torch.device) -> dict[str, Any]:
    """Device name, CPU count and library versions for a run record."""
    info = {"device": str(device), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            **provenance.library_versions()}
    if device.type != "cpu":
        info["gpu"] = device_name(device)
    return info


def dataset_summary(root: Path, synthetic: bool, splits: dict[str, XraySplit]) -> dict[str, Any]:
    """Which data a run used: real or synthetic, counts per split, a hash of the file list, and
    the downloaded archive (its address and SHA-256) when ``download_dataset`` made the folder."""
    return {
        "root": str(root),
        "synthetic": synthetic,
        "counts": {name: split.class_counts() for name, split in splits.items()},
        "file_list_sha256": file_list_sha256(
            (p for split in splits.values() for p in split.paths), root),
        "download": read_download_record(Path(root).parent),
    }


def create_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write a new run record ``records/<run_id>.json``; refuses to overwrite an existing one."""
    path = Path(run_dir) / "records" / f"{record['run_id']}.json"
    if not create_exclusive(path, json.dumps(record, indent=1, default=str).encode("utf-8")):
        raise FileExistsError(f"A run record already exists at {path}; "
                              "a new record never replaces an existing one.")
    return path


def read_record(path: Path) -> dict[str, Any]:
    """Load one run record."""
    return json.loads(Path(path).read_text())


def update_record(path: Path, **sections: Any) -> dict[str, Any]:
    """Add or replace top-level sections of this run's own record, atomically.

    Concurrent updates take turns.
    """
    # without the lock, two updates that read the same record lose one's sections
    with locked_file(Path(path)):
        record = read_record(path)
        record.update(sections)
        atomic_write_text(Path(path), json.dumps(record, indent=1, default=str))
    return record


def list_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every readable run record in the run dir, oldest first (by run id).

    Unreadable ones are skipped with a warning. An empty run dir first takes the runs attached
    as Kaggle inputs.
    """
    records, skipped = [], []
    paths = sorted((Path(run_dir) / "records").glob("*.json"), key=lambda p: p.name)
    if not paths and hosted.bring_attached_runs(run_dir):  # Kaggle: notebook 02 attached as input
        paths = sorted((Path(run_dir) / "records").glob("*.json"), key=lambda p: p.name)
    for path in paths:
        try:
            records.append(read_record(path))
        except (OSError, ValueError) as err:  # ValueError covers bad JSON and bad UTF-8
            skipped.append((path, str(err)))
    warn_skipped(skipped, "unreadable run records")
    return records


def best_epoch(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch with the lowest finite validation loss (the one ``fit`` keeps), or None."""
    finite = [h for h in history if "epoch" in h and math.isfinite(h.get("val_loss", math.nan))]
    return min(finite, key=lambda h: h["val_loss"]) if finite else None
