"""Training throughput benchmark: images/s of a full training step, three ways, in one run.

    python benchmarks/training_throughput.py [--images N] [--size S] [--batch-size B] ...

1. the blog post's recipe end to end: ImageFolder + its transforms + DataLoader(num_workers=2),
   every JPEG decoded at full size in every epoch (torchvision's loader, no `draft`), fp32,
   sigmoid + BCE, Adam, gradient clipping, batch ``--blog-batch-size`` (the blog post's 64 on
   a GPU); its last epoch is measured;
2. this series' recipe end to end: decode-once cache on the device, batched augmentation,
   `PneumoniaCnnModel`, channels-last, mixed precision (on CUDA), `fit`; every epoch after
   the first (which includes cuDNN's kernel search) is measured;
3. the compute limit: forward, backward, gradient clipping and Adam step of the same model in
   the same precision on one batch already on the device, in a minimal loop (no scheduler, no
   loss list, no progress bar), timed between two device synchronisations after warm-up steps.
(2) and (3) run at ``--batch-size``. Defaults: 1024 JPEGs, 224 px, batch 128 for (2) and (3)
and 64 for (1) on a GPU; 96 JPEGs, 64 px and batch 16 for all three on a CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from common import add_output_args, machine, precision, prepare_jpegs, timed, write_json
from input_pipeline import seed_loader
from torch.utils.data import DataLoader
from torchvision import models

# The project's helpers, imported in this one place: the lessons' (cxr_utils) and the
# support package's.
from cxr_support.dataset import list_split
from cxr_support.pixel_cache import load_pixels
from cxr_utils import (
    RECIPE,
    CachedBatchLoader,
    PneumoniaCnnModel,
    autocast_settings,
    build_model,
    fit,
    get_default_device,
    resolve_precision,
    synchronize,
)

SERIES, LIMIT, BLOG = ("this series' recipe, end to end", "compute limit (batch on the device)",
                       "blog post recipe, end to end")


def seed_model(device: torch.device) -> nn.Module:
    """The blog post's network: a ResNet50 with a one-output head, fp32.

    Random init: no download here.
    """
    network = models.resnet50(weights=None)
    network.fc = nn.Linear(network.fc.in_features, 1)
    return network.to(device)


def seed_train_epoch(network: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                     device: torch.device) -> int:
    """One epoch of the blog post's training loop; returns the images seen.

    The loop: sigmoid + BCE, clipping, Adam.
    """
    network.train()
    count = 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device).float().view(-1, 1)
        loss = F.binary_cross_entropy(torch.sigmoid(network(images)), targets)
        loss.backward()
        nn.utils.clip_grad_value_(network.parameters(), RECIPE["grad_clip"])
        optimizer.step()
        optimizer.zero_grad()
        count += len(targets)
    synchronize(device)
    return count


def seed_recipe(root: Path, size: int, batch_size: int, device: torch.device, epochs: int) -> float:
    """images/s of the blog post's training loop, measured on its last epoch."""
    loader = seed_loader(root, size, batch_size)
    network = seed_model(device)
    optimizer = recipe_optimizer(network.parameters())
    seconds, count = 0.0, 0
    for epoch in range(epochs):
        seconds, count = timed(lambda: seed_train_epoch(network, optimizer, loader, device))
        print(f"  blog post epoch {epoch}: {count} images in {seconds:.2f} s, "
              f"{count / seconds:.1f} images/s")
    return count / seconds


def recipe_optimizer(params) -> torch.optim.Optimizer:
    """RECIPE's optimiser (Adam, weight decay 1e-4: the blog post's and the series') at 1e-4."""
    return RECIPE["opt_func"](params, 1e-4, weight_decay=RECIPE["weight_decay"])


def project_model(device: torch.device, pos_weight: float = 0.35) -> PneumoniaCnnModel:
    """The series' ResNet50 on ``device``, as notebook 02 builds it (build_model; random init)."""
    return build_model("resnet50", device, None, pos_weight)


def project_recipe(samples: list, size: int, batch_size: int, device: torch.device, cache: Path,
                   epochs: int, precision: str = "auto") -> float:
    """images/s of `fit` fed by the decode-once cache, over every epoch but the first.

    The cache is built before.
    """
    seconds, split = timed(lambda: load_pixels("train", samples, size, cache, progress=False))
    print(f"  decode once: {len(split)} files in {seconds:.2f} s "
          f"({len(split) / seconds:.0f} files/s)")
    train_dl = CachedBatchLoader(split, batch_size, device, shuffle=True, augment=True,
                                 drop_last=True)
    val_dl = CachedBatchLoader(split.subset(range(min(batch_size, len(split)))), batch_size,
                               device)
    history = fit(epochs, 1e-4, project_model(device), train_dl, val_dl, precision=precision,
                  keep_best=False, progress=False, **RECIPE)
    # drop_last: every epoch sees exactly this many
    seen = len(train_dl) * batch_size
    for h in history:
        print(f"  series epoch {h['epoch']}: {seen} images, {h['images_per_s']:.1f} images/s")
    measured = history[1:] or history
    return len(measured) * seen / sum(seen / h["images_per_s"] for h in measured)


def compute_limit(size: int, batch_size: int, warmup: int, steps: int,
                  device: torch.device, precision: str = "auto") -> float:
    """images/s of bare training steps of the series' model on one batch already on the device.

    The same model (channels-last), loss, precision (autocast, and a gradient scaler only for
    fp16, as in `fit`), gradient clipping and Adam as `fit`, and nothing else in the loop.
    """
    model = project_model(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = recipe_optimizer(params)
    autocast = autocast_settings(device, precision)
    scaler = torch.amp.GradScaler(device.type,
                                  enabled=resolve_precision(device, precision) == "fp16")
    images = torch.rand(batch_size, 1, size, size, device=device)
    labels = (torch.rand(batch_size, device=device) > 0.25).float()

    def step() -> None:
        with torch.autocast(device.type, **autocast):
            loss = model.training_step((images, labels))
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_value_(params, RECIPE["grad_clip"])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    print(f"  compute limit: {steps} steps of {batch_size} after {warmup} warm-up steps, "
          f"{seconds / steps * 1000:.1f} ms/step")
    return steps * batch_size / seconds


def main() -> None:
    device = get_default_device()
    gpu = device.type == "cuda"
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1024 if gpu else 96,
                        help="generated full-size JPEGs")
    parser.add_argument("--size", type=int, default=224 if gpu else 64)
    parser.add_argument("--batch-size", type=int, default=128 if gpu else 16,
                        help="batch of (2) and (3), this series")
    parser.add_argument("--blog-batch-size", type=int, default=64 if gpu else 16,
                        help="batch of (1), the blog post's recipe (the blog post used 64)")
    parser.add_argument("--epochs", type=int, default=4 if gpu else 2,
                        help="epochs of `fit`; all but the first are measured")
    parser.add_argument("--seed-epochs", type=int, default=2,
                        help="epochs of the blog post's recipe; the last is measured")
    parser.add_argument("--limit-warmup", type=int, default=15 if gpu else 1,
                        help="untimed steps before the compute limit")
    parser.add_argument("--limit-steps", type=int, default=60 if gpu else 4,
                        help="timed steps of the compute limit")
    parser.add_argument("--precisions", default="auto",
                        help="comma-separated precisions for (2) and (3), side by side "
                             "(auto, bf16, fp16, fp32; e.g. bf16,fp16,fp32)")
    add_output_args(parser)
    args = parser.parse_args()
    choices = [p.strip() for p in args.precisions.split(",")]
    if not set(choices) <= {"auto", "bf16", "fp16", "fp32"}:
        parser.error(f"--precisions: auto, bf16, fp16 or fp32, got {args.precisions!r}")
    if gpu:
        torch.backends.cudnn.benchmark = True
    print(f"machine: {machine()}")
    print(f"device {device}, series in {', '.join(precision(device, p) for p in choices)}, "
          f"{args.images} JPEGs, {args.size} px, "
          f"batch {args.batch_size} (blog post's recipe: {args.blog_batch_size})")
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare_jpegs(args, Path(tmp) / "data")
        samples, _ = list_split(root.parent, "train")
        results = {}
        print(f"1. {BLOG} (fp32, batch {args.blog_batch_size}, last of {args.seed_epochs} epochs)")
        results[BLOG] = seed_recipe(root, args.size, args.blog_batch_size, device, args.seed_epochs)
        for choice in choices:
            label = f" ({precision(device, choice)})" if len(choices) > 1 else ""
            print(f"2. {SERIES}{label} (epochs 1 to {args.epochs - 1} of {args.epochs})")
            results[SERIES + label] = project_recipe(samples, args.size, args.batch_size, device,
                                                     Path(tmp) / "cache", args.epochs, choice)
    for choice in choices:
        label = f" ({precision(device, choice)})" if len(choices) > 1 else ""
        print(f"3. {LIMIT}{label}")
        results[LIMIT + label] = compute_limit(args.size, args.batch_size, args.limit_warmup,
                                               args.limit_steps, device, choice)
    print()
    for name, speed in results.items():
        print(f"{name:48} {speed:9.1f} images/s")
    first = f" ({precision(device, choices[0])})" if len(choices) > 1 else ""
    ours, limit = results[SERIES + first], results[LIMIT + first]
    ours_vs_limit, ours_vs_blog = ours / limit, ours / results[BLOG]
    print(f"this series / compute limit: {ours_vs_limit:.0%} "
          f"(target >= 85 %: {'met' if ours_vs_limit >= 0.85 else 'NOT met'})")
    print(f"this series / blog post:     {ours_vs_blog:.1f}x "
          f"(target >= 10x: {'met' if ours_vs_blog >= 10 else 'NOT met'})")
    write_json(args.json, args, {"images_per_s": results, "series_over_limit": ours_vs_limit,
                                 "series_over_blog": ours_vs_blog})


if __name__ == "__main__":
    main()
