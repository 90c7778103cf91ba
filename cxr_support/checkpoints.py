"""Support code: writing and reading checkpoint files safely (lessons need not read this).

Checkpoints are written atomically and read with ``torch.load(weights_only=True)``, which
refuses files that carry arbitrary Python objects instead of running them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from cxr_support import hosted
from cxr_support.atomic_files import create_exclusive
from cxr_support.errors import error_summary
from cxr_support.provenance import library_versions, now_iso

# 2: the network named by 'arch' alone
# (format 1 also had 'architecture', e.g. 'resnet50-gray-1logit')
CHECKPOINT_FORMAT = 2


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of the run dir's newest run, or an error naming the notebook that makes one.

    Checkpoints are named by run id, which starts with the run's UTC start time, so the name
    orders them; rewriting an older run's file (notebook 3 stores its threshold) does not make
    it the newest. An empty run dir first takes the runs attached as Kaggle inputs.
    """
    folder = Path(run_dir) / "checkpoints"
    found = sorted(folder.glob("*.pt"), key=lambda p: p.name) if folder.is_dir() else []
    if not found and hosted.bring_attached_runs(run_dir):  # Kaggle: notebook 02 attached as input
        found = sorted(folder.glob("*.pt"), key=lambda p: p.name)
    if not found:
        raise CheckpointError(f"No checkpoint in {folder}. Run notebooks/02_training_on_gpu.ipynb "
                              f"first (it trains and saves one). {hosted.ROUTES}")
    print(f"The newest checkpoint, {found[-1].name}: {origin(saved_metadata(found[-1]) or {})}")
    return found[-1]


def origin(meta: dict[str, Any]) -> str:
    """Where a checkpoint came from, in one line: its run, the notebook or script that made it,
    its processes, its data (real or synthetic) and its decision threshold."""
    processes = meta.get("processes", 1)
    made_by = meta.get("made_by") or ("train_ddp.py (notebook 05)" if processes > 1
                                      else "notebook 02")  # checkpoints older than made_by
    data = ("the SYNTHETIC sample, not real X-rays" if meta.get("synthetic_data")
            else "real X-rays" if "synthetic_data" in meta else "unknown data")
    how = meta.get("threshold_method", "none chosen yet: notebook 03 chooses one")
    return (f"run {meta.get('run_id')}, made by {made_by} in {processes} process(es), "
            f"trained on {data}; threshold {meta.get('threshold', 0.5):.3f} ({how})")


def write_checkpoint(path: Path, state_dict: dict[str, torch.Tensor],
                     metadata: dict[str, Any]) -> Path:
    """Write ``{"metadata", "state_dict"}`` atomically.

    Adds (or renews) the file format, library versions and the time of this write. ``metadata``
    must hold plain values (str, int, float, bool, lists, dicts), so that ``weights_only``
    loading accepts them. A checkpoint of another run (another ``run_id``) is never replaced, so
    a run record never points at weights that a later run wrote.
    """
    # these three describe this write, so they replace any that a re-saved checkpoint carried
    meta = {**metadata, "format": CHECKPOINT_FORMAT, "versions": library_versions(),
            "saved_at": now_iso()}
    meta = json.loads(json.dumps(meta))  # plain values only
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    buffer = io.BytesIO()
    torch.save({"metadata": meta, "state_dict": state}, buffer)
    path = Path(path)
    if not create_exclusive(path, buffer.getvalue(),
                            replace_if=lambda p: saved_run_id(p) == meta.get("run_id")):
        raise CheckpointError(
            f"{path} holds the checkpoint of run {saved_run_id(path)!r}; "
            f"refusing to replace it with run {meta.get('run_id')!r}'s, "
            "since that run's record points at it. Save under a new run id (records.new_run_id())."
        )
    return path


def saved_metadata(path: Path) -> dict[str, Any] | None:
    """A checkpoint's metadata, read without its weights; None when it cannot be read."""
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("metadata")
    except Exception:  # damaged, not a zip checkpoint, or not ours
        return None
    return meta if isinstance(meta, dict) else None


def saved_run_id(path: Path) -> str | None:
    """The ``run_id`` in a checkpoint's metadata.

    None when the file has none or cannot be read.
    """
    return (saved_metadata(path) or {}).get("run_id")


def read_checkpoint(path: Path,
                    archs: Collection[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata) of a checkpoint, or a CheckpointError.

    The checkpoint must have been written by ``write_checkpoint`` for one of ``archs``. Uses
    ``weights_only=True``, so a file that carries arbitrary Python objects is refused rather
    than executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. "
                              "Run notebooks/02_training_on_gpu.ipynb first (it writes one).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"Refusing to load {path}: it is not a plain weights file ({error_summary(err)}). "
            "It may be damaged or tampered with; re-run notebook 02 to make a fresh one."
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "metadata" not in payload:
        raise CheckpointError(f"{path} is not a checkpoint of this series "
                              "(no 'metadata'/'state_dict'); re-run notebook 02.")
    meta = payload["metadata"]
    if not isinstance(meta, dict) or not isinstance(payload["state_dict"], dict):
        raise CheckpointError(f"{path} is not a checkpoint of this series "
                              "(malformed 'metadata' or 'state_dict'); re-run notebook 02.")
    accepted = list(archs)
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("arch") not in accepted:
        raise CheckpointError(
            f"{path} has format {meta.get('format')!r} / arch {meta.get('arch')!r}; "
            f"this code reads format {CHECKPOINT_FORMAT} of {' or '.join(map(repr, accepted))}. "
            "Re-run notebook 02."
        )
    return payload["state_dict"], meta
