"""Training throughput benchmark: images/s of a full training step, three ways, in one run.

    python benchmarks/training_throughput.py [--images N] [--size S] [--batch-size B]

1. the blog post's recipe end to end: ImageFolder + its transforms + DataLoader(num_workers=2),
   fp32, sigmoid + BCE, Adam, gradient clipping;
2. this series' recipe end to end: decode-once cache on the device, batched augmentation,
   `PneumoniaCnnModel`, channels-last, mixed precision (on CUDA), `cxr_utils.fit`;
3. the compute limit: the same model and `fit`, fed one random batch already on the device.
Defaults: 224 px and batch 128 on a GPU; 64 px and batch 16 on a CPU (so it finishes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from common import machine, make_fullsize_jpegs, timed
from input_pipeline import seed_loader
from torchvision import models

import cxr_utils as cxr


def seed_recipe(root: Path, size: int, batch_size: int, device: torch.device, epochs: int) -> float:
    """images/s of the blog post's training loop, measured on its last epoch."""
    loader = seed_loader(root, size, batch_size)
    network = models.resnet50(weights=None)
    network.fc = torch.nn.Linear(network.fc.in_features, 1)
    network = network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), 1e-4, weight_decay=1e-4)
    seconds = 0.0
    for _ in range(epochs):
        def one_epoch():
            count = 0
            for images, targets in loader:
                images, targets = images.to(device), targets.to(device).float().view(-1, 1)
                loss = F.binary_cross_entropy(torch.sigmoid(network(images)), targets)
                loss.backward()
                torch.nn.utils.clip_grad_value_(network.parameters(), 0.1)
                optimizer.step()
                optimizer.zero_grad()
                count += len(targets)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return count

        seconds, count = timed(one_epoch)
    return count / seconds


def project_model(device: torch.device) -> cxr.PneumoniaCnnModel:
    return cxr.to_device(cxr.PneumoniaCnnModel(pos_weight=0.35), device).to(memory_format=torch.channels_last)


def project_recipe(samples, size: int, batch_size: int, device: torch.device, cache: Path, epochs: int) -> float:
    """images/s of `fit` fed by the decode-once cache, measured on its last epoch (cache already built)."""
    split = cxr.load_pixels("train", samples, size, cache, progress=False)
    train_dl = cxr.CachedBatchLoader(split, batch_size, device, shuffle=True, augment=True, drop_last=True)
    val_dl = cxr.CachedBatchLoader(split.subset(range(batch_size)), batch_size, device)
    history = cxr.fit(epochs, 1e-4, project_model(device), train_dl, val_dl, weight_decay=1e-4, grad_clip=0.1,
                      opt_func=torch.optim.Adam, keep_best=False, progress=False)
    return history[-1]["images_per_s"]


def compute_limit(size: int, batch_size: int, steps: int, device: torch.device, epochs: int) -> float:
    """images/s of `fit` on one random batch that is already on the device: no input pipeline at all."""
    images = torch.rand(batch_size, 1, size, size, device=device)
    labels = (torch.rand(batch_size, device=device) > 0.25).float()
    batches = [(images, labels)] * steps
    history = cxr.fit(epochs, 1e-4, project_model(device), batches, batches[:1], weight_decay=1e-4, grad_clip=0.1,
                      opt_func=torch.optim.Adam, keep_best=False, progress=False)
    return history[-1]["images_per_s"]


def main() -> None:
    device = cxr.get_default_device()
    gpu = device.type == "cuda"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024 if gpu else 96)
    parser.add_argument("--size", type=int, default=224 if gpu else 64)
    parser.add_argument("--batch-size", type=int, default=128 if gpu else 16)
    parser.add_argument("--epochs", type=int, default=3 if gpu else 2, help="the last epoch is measured")
    args = parser.parse_args()
    if gpu:
        torch.backends.cudnn.benchmark = True
    print(f"machine: {machine()}")
    print(f"device {device}, {args.images} full-size JPEGs, {args.size} px, batch {args.batch_size}, last of {args.epochs} epochs measured")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_fullsize_jpegs(Path(tmp) / "data", args.images)
        samples, _ = cxr.list_split(root.parent, "train")
        results = {
            "blog post recipe, end to end": seed_recipe(root, args.size, args.batch_size, device, args.epochs),
            "this series' recipe, end to end": project_recipe(samples, args.size, args.batch_size, device, Path(tmp) / "cache", args.epochs),
            "compute limit (random batch on device)": compute_limit(args.size, args.batch_size, args.images // args.batch_size, device, args.epochs),
        }
    for name, speed in results.items():
        print(f"{name:42} {speed:9.1f} images/s")
    ours, limit, seed = results["this series' recipe, end to end"], results["compute limit (random batch on device)"], results["blog post recipe, end to end"]
    print(f"this series / compute limit: {ours / limit:.0%}; this series / blog post: {ours / seed:.1f}x")


if __name__ == "__main__":
    main()
