"""Notebook 5's training script: notebook 2's training, in one process per GPU (data parallel).

torchrun starts the processes and tells each its place (RANK, LOCAL_RANK, WORLD_SIZE):

    torchrun --standalone --nproc_per_node=2 train_ddp.py      # 2 GPUs here, or 2 CPU processes

    # two machines with 2 GPUs each: the same command on both (HOST: one of them)
    torchrun --nnodes=2 --nproc_per_node=2 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:29400 --rdzv-id=cxr train_ddp.py

The settings are the CXR_* variables, read by ``load_config`` as in the notebooks.
``CXR_BATCH_SIZE`` is each process's batch: an optimiser step sees processes x that many images.
The code is the lessons' helpers (``load_data``, ``build_model``, ``fit`` with ``RECIPE``,
``ShardedBatchLoader``, ``DistributedLearner``, ``run_record``, ``checkpoint_metadata``,
``save_checkpoint``, and notebook 5's ``start_processes``, ``scaled_max_lr`` and
``rank_zero_first``): no second training loop, no second record. What remains here is what
several processes alone need: each process's device, its share of the output, the launch.
Rank 0 alone prints and writes the checkpoint and the run record, in notebook 2's format, so
notebook 3 evaluates the run like any other.
NCCL on NVIDIA GPUs (``cuda:LOCAL_RANK`` for each process), gloo on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.elastic.multiprocessing.errors import record

from cxr_support import devices, records
from cxr_support.config import Config, load_config
from cxr_support.records import best_epoch
from cxr_support.weights import load_imagenet_weights
from cxr_utils import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RECIPE,
    TIMEOUT_S,
    DistributedLearner,
    PneumoniaCnnModel,
    ShardedBatchLoader,
    XrayData,
    build_model,
    checkpoint_metadata,
    class_balance_pos_weight,
    evaluate,
    fit,
    load_data,
    rank_zero_first,
    resolve_precision,
    run_record,
    save_checkpoint,
    scaled_max_lr,
    seed_everything,
    start_processes,
)

AUGMENT = True  # augment the training images, as notebook 2 does (a test switches it off)
MADE_BY = "train_ddp.py (notebook 05)"  # in the checkpoint and the record: who made the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="seconds a process waits for the others at any collective step "
                             f"before it stops with an error (default {TIMEOUT_S:g}: room for "
                             "rank 0's first decode of the data)")
    parser.add_argument("--lr-scaling", choices=("none", "linear", "sqrt"), default="none",
                        help="scale CXR_MAX_LR to the global batch (scaled_max_lr): 'linear' "
                             "(SGD's rule), 'sqrt' (a start for Adam) or 'none' (default)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="batch-norm statistics over all processes' images (SyncBatchNorm; "
                             "GPUs only): slower, and the same statistics as one process")
    parser.add_argument("--run-id", default=None,
                        help="the run's id (default: a new one), names its checkpoint and record")
    return parser.parse_args(argv)


def process_device(choice: str, local_rank: int, local_world_size: int) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` on a machine with GPUs, else the CPU."""
    kind = devices.accelerator_kind() if choice == "auto" else choice
    if kind in (None, "cpu"):
        return torch.device("cpu")
    if kind != "cuda":
        raise RuntimeError(f"this script trains on NVIDIA GPUs (NCCL) or the CPU (gloo), not on "
                           f"{kind}: set CXR_DEVICE=cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(f"{local_world_size} processes on this machine but {count} GPU(s): "
                           f"launch with --nproc_per_node={count}")
    torch.cuda.set_device(local_rank)  # NCCL and this process's kernels use this GPU
    torch.backends.cudnn.benchmark = True  # the fastest kernels for the fixed input size
    return torch.device("cuda", local_rank)


def process_model(config: Config, imagenet_weights: dict[str, torch.Tensor] | None,
                  pos_weight: float, device: torch.device,
                  sync_bn: bool = False) -> PneumoniaCnnModel:
    """Notebook 2's model (build_model), seeded, so that every process starts from the same
    weights; with ``sync_bn``, batch-norm statistics over all processes."""
    if sync_bn and device.type == "cpu":
        raise ValueError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm does not run on the CPU")
    seed_everything(config.seed)  # (DDP also copies rank 0's weights to the others at the start)
    model = build_model(config.arch, device, imagenet_weights, pos_weight)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn else model  # same keys


def train(config: Config, args: argparse.Namespace, rank: int, local_rank: int,
          world_size: int, device: torch.device) -> None:
    """Every process trains its share; rank 0 writes the checkpoint and the record."""
    if config.train_mode == "feature_extractor":
        raise ValueError("CXR_TRAIN_MODE=feature_extractor trains one layer on stored features "
                         "(notebook 2): nothing worth spreading over processes. Use finetune.")
    print(f"{world_size} process(es), backend {dist.get_backend()}, rank 0 on {device} "
          f"({devices.device_name(device)})")
    with rank_zero_first(local_rank):
        data = load_data(config.data_dir, config.run_dir, config.image_size, config.seed,
                         config.max_images, config.positive_class, progress=rank == 0)
        imagenet_weights, weights_description = load_imagenet_weights(
            config.pretrained, config.weights_file, arch=config.arch)
    splits = data.splits
    pos_weight = class_balance_pos_weight(splits["train"].labels)
    model = process_model(config, imagenet_weights, pos_weight, device, args.sync_bn)
    on_gpu = device.type == "cuda"
    learner = DistributedLearner(model, device_ids=[device.index] if on_gpu else None)
    train_dl = ShardedBatchLoader(splits["train"], config.batch_size, device, rank, world_size,
                                  shuffle=True, augment=AUGMENT, seed=config.seed)
    val_dl = ShardedBatchLoader(splits["val"], config.batch_size * 2, device, rank, world_size,
                                pad=False)  # every image exactly once: exact validation
    precision = resolve_precision(device, config.precision)
    max_lr = scaled_max_lr(config.max_lr, world_size, args.lr_scaling)
    print(f"batch {config.batch_size} per process, {config.batch_size * world_size} per step "
          f"(the global batch); {len(train_dl)} steps per epoch; max_lr {max_lr:g} (CXR_MAX_LR "
          f"{config.max_lr:g}, --lr-scaling {args.lr_scaling}); precision {precision}")
    history = fit(config.epochs, max_lr, learner, train_dl, val_dl, precision=precision,
                  progress=False, **RECIPE)  # notebook 2's loop and recipe
    best = best_epoch(history)
    kept = evaluate(learner, val_dl, precision)  # every process takes part: it is a collective
    if not math.isclose(kept["val_loss"], best["val_loss"], rel_tol=1e-3, abs_tol=1e-6):
        raise RuntimeError(f"the kept model gives val_loss {kept['val_loss']}, not "
                           f"{best['val_loss']}: it changed after fit")
    model_info = {"arch": model.arch, "weights": weights_description,
                  "pretrained": imagenet_weights is not None, "train_mode": "finetune",
                  "pos_weight": pos_weight, "class_names": list(data.class_names),
                  "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    with rank_zero_first(rank):  # one writer; the others stay until the files are written
        if rank == 0:
            save_run(config, args, model, data, model_info, precision, max_lr, history, device)


def save_run(config: Config, args: argparse.Namespace, model: PneumoniaCnnModel,
             data: XrayData, model_info: dict[str, Any], precision: str, max_lr: float,
             history: list[dict[str, Any]], device: torch.device) -> None:
    """Notebook 2's run record and checkpoint, plus the record's 'distributed' section."""
    run_id, world_size = args.run_id or records.new_run_id(), dist.get_world_size()
    per_step = config.batch_size * world_size
    record = run_record(
        run_id, MADE_BY, config.as_dict(), data, model_info, precision, history, device,
        recipe=RECIPE, hyperparams={"batch_size": per_step, "max_lr": max_lr},
        timings={"feature_seconds": None,
                 "training_images_per_s": {"all processes": history[-1]["images_per_s"]}},
        distributed={"processes": world_size, "backend": dist.get_backend(),
                     "machines": int(os.environ.get("GROUP_WORLD_SIZE", 1)),
                     "batch_size_per_process": config.batch_size, "batch_size_per_step": per_step,
                     "max_lr_scaling": args.lr_scaling, "sync_batchnorm": args.sync_bn})
    checkpoint_path = save_checkpoint(config.run_dir / "checkpoints" / f"{run_id}.pt", model,
                                      checkpoint_metadata(record))
    print("checkpoint:", checkpoint_path)
    record_path = records.create_record(config.run_dir,
                                        {**record, "checkpoint": str(checkpoint_path)})
    print("run record:", record_path)


@record  # a failing process's traceback goes into torchrun's error report
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank, local_world_size = (int(os.environ[v]) for v in ("LOCAL_RANK", "LOCAL_WORLD_SIZE"))
    if rank != 0:
        warnings.simplefilter("ignore")  # the same warnings as rank 0's: rank 0 alone speaks
    config = load_config()
    device = process_device(config.device, local_rank, local_world_size)
    start_processes(device, args.timeout)  # notebook 5: the backend, and the timeout
    try:
        with open(os.devnull, "w") as quiet, \
                contextlib.redirect_stdout(sys.stdout if rank == 0 else quiet):  # rank 0 prints
            train(config, args, rank, local_rank, world_size, device)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    if "RANK" not in os.environ:
        sys.exit(f"Launch {Path(__file__).name} with torchrun, for example:\n"
                 f"    torchrun --standalone --nproc_per_node=2 {__file__}")
    sys.exit(main())
