"""Whole-job benchmark: the blog post's whole job, from the JPEG files to the last validation pass.

    python benchmarks/whole_job.py [--images 5216] [--epochs 10] [--size 224] [--batch-size 128] ...

The job: train a ResNet50 for ``--epochs`` epochs on ``--images`` full-size JPEGs (sized like
the Kaggle files, as `common.make_fullsize_jpegs` makes them; generated before any timer
starts, so the job normally reads them from the page cache, not from the disk) with a 10 %
validation split, validating after every epoch.
- this series' pipeline, timed in full: list the files, patient split, decode every file
  once into a fresh pixel cache (`load_pixels`: threads, Pillow draft, cache written to disk),
  loaders on the device, `PneumoniaCnnModel` channels-last, `fit` (bf16 autocast on a GPU,
  one-cycle Adam, clipping) for every epoch, each followed by its validation pass;
- the blog post's pipeline (ImageFolder: every JPEG decoded at full size, no `draft`; NEAREST
  resize, flips, CIFAR normalisation, DataLoader with two workers and batch
  ``--blog-batch-size``, the blog post's 64 on a GPU; fp32 ResNet50, sigmoid + BCE, Adam,
  clipping), timed for ``--seed-epochs`` epochs (one by default) with their validation passes
  and EXTRAPOLATED to ``--epochs`` epochs: set-up + epochs x (mean training epoch + mean
  validation pass).
The CUDA context is created before the timers start. Defaults: the full job on a GPU
(5,216 JPEGs, 10 epochs, 224 px, batch 128 for this series and 64 for the blog post); a tiny
job on a CPU, for smoke tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import add_output_args, machine, precision, prepare_jpegs, timed, write_json
from input_pipeline import seed_dataset
from torch.utils.data import DataLoader, random_split
from training_throughput import project_model, recipe_optimizer, seed_model, seed_train_epoch

# The project's helpers, imported in this one place: the lessons' (cxr_utils) and the
# support package's.
from cxr_support.dataset import list_split
from cxr_support.pixel_cache import decode_files, load_pixels
from cxr_utils import (
    RECIPE,
    CachedBatchLoader,
    class_balance_pos_weight,
    fit,
    get_default_device,
    patient_split,
    seed_everything,
    synchronize,
)

TARGET_S = 30.0


def series_job(root: Path, args: argparse.Namespace, device: torch.device,
               cache_dir: Path) -> dict:
    """Seconds of this series' whole job, in parts.

    The parts: files to decoded cache, loaders and model, `fit`.
    """
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as notebook 02 does
    seed_everything(42)
    marks = {"start": time.perf_counter()}
    samples, _ = list_split(root.parent, "train")
    train_idx, val_idx = patient_split(samples, args.val_fraction, seed=42)
    marks["listed and split"] = time.perf_counter()
    split = load_pixels("train", samples, args.size, cache_dir, progress=False)
    if len(split) != len(samples):
        raise RuntimeError(f"{len(samples) - len(split)} generated files could not be decoded")
    marks["decoded once (load_pixels, cache written)"] = time.perf_counter()
    train, val = split.subset(train_idx, "train"), split.subset(val_idx, "val")
    train_dl = CachedBatchLoader(train, args.batch_size, device, shuffle=True, augment=True,
                                 seed=42)
    val_dl = CachedBatchLoader(val, args.batch_size * 2, device)
    model = project_model(device, class_balance_pos_weight(train.labels))
    synchronize(device)
    marks["loaders and model on the device"] = time.perf_counter()
    history = fit(args.epochs, args.max_lr, model, train_dl, val_dl, progress=False, **RECIPE)
    synchronize(device)
    marks["fit (training + validation)"] = time.perf_counter()
    names = list(marks)
    parts = {name: marks[name] - marks[previous] for previous, name in zip(names, names[1:])}
    train_s = [h["seconds"] for h in history]
    return {
        "total_s": marks[names[-1]] - marks["start"],
        "parts_s": parts,
        "train_epoch_s": train_s,
        "validation_and_other_s": parts["fit (training + validation)"] - sum(train_s),
        "images": len(samples),
        "train_images": len(train),
        "val_images": len(val),
        "best_val_acc": max(h["val_acc"] for h in history),
    }


@torch.no_grad()
def seed_validate(network: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """The blog post's validation pass (sigmoid + BCE, accuracy); returns the accuracy."""
    network.eval()
    correct, count, losses = 0, 0, []
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device).float().view(-1, 1)
        probs = torch.sigmoid(network(images))
        losses.append(F.binary_cross_entropy(probs, targets))
        correct += int(((probs > 0.5).float() == targets).sum())
        count += len(targets)
    synchronize(device)
    return correct / max(count, 1)


def blog_job(root: Path, args: argparse.Namespace, device: torch.device) -> dict:
    """Seconds of the blog post's job, extrapolated to ``--epochs``.

    Set-up and ``--seed-epochs`` measured epochs.
    """
    torch.backends.cudnn.benchmark = False  # the blog post does not set it
    torch.manual_seed(42)
    start = time.perf_counter()
    dataset = seed_dataset(root, args.size)
    n_val = int(args.val_fraction * len(dataset))
    train_ds, val_ds = random_split(dataset, [len(dataset) - n_val, n_val],
                                    generator=torch.Generator().manual_seed(42))
    pin = device.type == "cuda"
    batch = args.blog_batch_size
    train_dl = DataLoader(train_ds, batch, shuffle=True, num_workers=2, pin_memory=pin)
    val_dl = DataLoader(val_ds, batch * 2, num_workers=2, pin_memory=pin)
    network = seed_model(device)
    optimizer = recipe_optimizer(network.parameters())
    synchronize(device)
    setup_s = time.perf_counter() - start
    train_s, val_s = [], []
    for epoch in range(args.seed_epochs):
        seconds, seen = timed(lambda: seed_train_epoch(network, optimizer, train_dl, device))
        train_s.append(seconds)
        seconds, accuracy = timed(lambda: seed_validate(network, val_dl, device))
        val_s.append(seconds)
        print(f"  blog post epoch {epoch}: training {train_s[-1]:.1f} s "
              f"({seen / train_s[-1]:.0f} images/s), "
              f"validation {val_s[-1]:.1f} s, val_acc {accuracy:.3f}")
    per_epoch = statistics.mean(train_s) + statistics.mean(val_s)
    return {
        "setup_s": setup_s,
        "train_epoch_s": train_s,
        "validation_s": val_s,
        "measured_epochs": args.seed_epochs,
        "extrapolated_total_s": setup_s + args.epochs * per_epoch,
    }


def decode_scaling(paths: list[Path], size: int) -> dict:
    """files/s of `decode_files` with two thread counts.

    Its default thread count (one per CPU core) and the earlier cap of 8 threads.
    """
    counts = {f"default (os.cpu_count() = {os.cpu_count()})": None, "8 (the earlier cap)": 8}
    result = {}
    for name, workers in counts.items():
        seconds, _ = timed(
            lambda workers=workers: decode_files(paths, size, workers=workers, progress=False)
        )
        result[name] = len(paths) / seconds
        print(f"  decode_files, workers {name:24} {result[name]:7.0f} files/s")
    return result


def main() -> None:
    device = get_default_device()
    gpu = device.type == "cuda"
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5216 if gpu else 40,
                        help="full-size JPEGs (Kaggle's train/ has 5,216)")
    parser.add_argument("--epochs", type=int, default=10 if gpu else 1)
    parser.add_argument("--size", type=int, default=224 if gpu else 32)
    parser.add_argument("--batch-size", type=int, default=128 if gpu else 8,
                        help="batch of this series' job")
    parser.add_argument("--blog-batch-size", type=int, default=64 if gpu else 8,
                        help="batch of the blog post's job (the blog post used 64)")
    parser.add_argument("--max-lr", type=float, default=3e-4)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed-epochs", type=int, default=1,
                        help="epochs of the blog post's pipeline actually run (0: skip it)")
    parser.add_argument("--decode-check", type=int, default=2048 if gpu else 0,
                        help="after the jobs, time decode_files on this many files "
                             "with its default and with 8 threads (0: skip)")
    add_output_args(parser)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"device {device}, series in {precision(device)}; "
          f"job: {args.images} full-size JPEGs, {args.epochs} epochs, "
          f"{args.size} px, batch {args.batch_size} (blog post's job: {args.blog_batch_size}), "
          f"validation fraction {args.val_fraction}")
    record: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare_jpegs(args, Path(tmp) / "data")
        torch.zeros(1, device=device).add_(1)  # create the CUDA context before the timers
        synchronize(device)

        print(f"\n1. this series' whole job ({args.epochs} epochs, timed in full)")
        ours = series_job(root, args, device, Path(tmp) / "fresh-cache")
        record["series"] = ours
        for name, part in ours["parts_s"].items():
            print(f"  {name:45} {part:7.2f} s")
        epochs = ours["train_epoch_s"]
        later = (f", later epochs {statistics.mean(epochs[1:]):.2f} s each"
                 if len(epochs) > 1 else "")
        print(f"  of which training epochs {sum(epochs):.2f} s (first {epochs[0]:.2f} s{later}), "
              f"validation and the rest {ours['validation_and_other_s']:.2f} s")
        print(f"  {ours['train_images']} training + {ours['val_images']} val images, "
              f"best val_acc {ours['best_val_acc']:.3f}")
        print(f"  THIS SERIES, WHOLE JOB: {ours['total_s']:.1f} s "
              f"(target <= {TARGET_S:.0f} s: "
              f"{'met' if ours['total_s'] <= TARGET_S else 'NOT met'})")

        if args.seed_epochs > 0:
            print(f"\n2. the blog post's job ({args.seed_epochs} of {args.epochs} epochs run, "
                  "the rest EXTRAPOLATED)")
            blog = blog_job(root, args, device)
            record["blog"] = blog
            print(f"  set-up {blog['setup_s']:.1f} s; "
                  f"per epoch: training {statistics.mean(blog['train_epoch_s']):.1f} s "
                  f"+ validation {statistics.mean(blog['validation_s']):.1f} s")
            print(f"  BLOG POST, WHOLE JOB (EXTRAPOLATED from {args.seed_epochs} measured epoch(s) "
                  f"to {args.epochs}): "
                  f"{blog['extrapolated_total_s']:.0f} s")
            record["blog_over_series"] = blog["extrapolated_total_s"] / ours["total_s"]
            print(f"  blog post (extrapolated) / this series: {record['blog_over_series']:.1f}x")

        if args.decode_check > 0:
            paths = sorted(root.rglob("*.jpeg"))[: args.decode_check]
            print(f"\n3. decode threads: decode_files on {len(paths)} of the files "
                  "(page cache warm, no cache written)")
            record["decode_files_per_s"] = rates = decode_scaling(paths, args.size)
            decode_s = ours["images"] / next(iter(rates.values()))
            load_s = ours["parts_s"]["decoded once (load_pixels, cache written)"]
            best_s = ours["images"] / max(rates.values())
            print(f"  in the job, load_pixels took {load_s:.2f} s: "
                  f"about {decode_s:.2f} s decoding at the default thread count, "
                  f"{load_s - decode_s:.2f} s writing the cache and the rest; "
                  f"decoding with the fastest thread count would take about {best_s:.2f} s")
    write_json(args.json, args, record)


if __name__ == "__main__":
    main()
