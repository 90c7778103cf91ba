"""Input pipeline benchmark: the blog post's per-epoch decoding against the decode-once cache.

    python benchmarks/input_pipeline.py [--images 240] [--size 224] [--batch-size 64]

Generates full-size grayscale JPEGs sized like the Kaggle files (`common.make_fullsize_jpegs`)
in a temporary folder (or links them from ``--jpeg-pool``), then measures images/s for one
first epoch and two later epochs of
- the blog post's pipeline: ImageFolder (torchvision's loader: every JPEG decoded at full
  size, no `draft`), its transforms (NEAREST resize, flips, CIFAR normalisation),
  DataLoader(batch_size=64, shuffle=True, num_workers=2);
- this series' pipeline: decode once (Pillow draft + antialiased resize, threads), cache
  on disk, then batches from memory with batched augmentation on the device.
Loading and augmentation only: no model. The files were just written, so both read them
from the page cache, not from the disk. The last line is the later-epoch speed-up.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import add_output_args, machine, prepare_jpegs, timed, write_json
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

# The project's helpers, imported in this one place: the lessons' (cxr_utils) and the
# support package's.
from cxr_support.dataset import list_split
from cxr_support.pixel_cache import load_pixels
from cxr_support.tables import Table
from cxr_utils import CachedBatchLoader, get_default_device, synchronize


def seed_dataset(root: Path, size: int) -> datasets.ImageFolder:
    """The blog post's dataset and transforms, verbatim apart from the folder."""
    stats = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    train_transforms = transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=Image.NEAREST),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(*stats, inplace=True),
        ]
    )
    return datasets.ImageFolder(root, transform=train_transforms)


def seed_loader(root: Path, size: int, batch_size: int) -> DataLoader:
    """The blog post's pipeline: its dataset in a DataLoader with two worker processes."""
    dataset = seed_dataset(root, size)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2,
                      pin_memory=torch.cuda.is_available())


def one_pass(loader, device: torch.device) -> int:
    count = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        count += len(labels)
    synchronize(device)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="batch of both pipelines (the blog post used 64)")
    add_output_args(parser)
    args = parser.parse_args()
    device = get_default_device()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = prepare_jpegs(args, Path(tmp) / "data")
        samples, _ = list_split(root.parent, "train")
        print(f"image size {args.size}, batch {args.batch_size}")

        loader = seed_loader(root, args.size, args.batch_size)
        seed_times = [timed(lambda: one_pass(loader, device))[0] for _ in range(3)]

        def first_epoch():
            split = load_pixels("train", samples, args.size, Path(tmp) / "cache", progress=False)
            cached = CachedBatchLoader(split, args.batch_size, device, shuffle=True, augment=True)
            one_pass(cached, device)
            return cached

        first, cached = timed(first_epoch)
        ours_times = [first] + [timed(lambda: one_pass(cached, device))[0] for _ in range(2)]

    n = len(samples)
    rows = []
    for name, times in [("blog post (decode every epoch)", seed_times),
                        ("decode once, batches from memory", ours_times)]:
        rows.append({"pipeline": name, "first epoch img/s": round(n / times[0], 1),
                     "later epochs img/s": round(2 * n / sum(times[1:]), 1)})
    print(Table(rows, digits=1))
    first_speedup = rows[1]["first epoch img/s"] / rows[0]["first epoch img/s"]
    later_speedup = rows[1]["later epochs img/s"] / rows[0]["later epochs img/s"]
    print(f"first-epoch speed-up: {first_speedup:.1f}x")
    print(f"later-epoch speed-up: {later_speedup:.0f}x")
    write_json(args.json, args, {"rows": rows, "first_epoch_speedup": first_speedup,
                                 "later_epoch_speedup": later_speedup})


if __name__ == "__main__":
    main()
