"""Fixed feature extractor vs fine-tuning: what precomputing the frozen backbone's features saves.

    python benchmarks/feature_extractor.py [--images N] [--size S] [--finetune-steps K]
                                           [--json FILE]

In one run, on generated images (random pixels: the content does not change the arithmetic)
and a randomly initialised ResNet50 (the weights do not change the time either), it measures
1. the feature pass: `backbone_features` over ``--images`` images, through the notebook's
   `feature_cache.compute_features` (one forward pass of the backbone per image);
2. a head epoch on stored features: `fit` of `FeatureHead` over as many rows as a Kaggle
   training split (4,694 train, 522 validation: Kaggle's 5,216 training images split 90/10),
   validation included;
3. a fine-tuning step: augmentation, forward, backward, gradient clipping and Adam on the
   whole `PneumoniaCnnModel`, per image.
It then projects to the whole Kaggle set (5,856 images for the feature pass; 20 epochs) and
prints, last, the line that benchmarks/README.md quotes. Fine-tuning is projected
conservatively: training images and validation passes only, no test predictions, no decoding.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import machine, write_json

# The project's helpers, imported in this one place: the lessons' (cxr_utils) and the
# support package's.
from cxr_support.feature_cache import compute_features
from cxr_support.pixel_cache import XraySplit
from cxr_utils import (
    RECIPE,
    DeviceDataLoader,
    FeatureHead,
    PneumoniaCnnModel,
    augment_batch,
    backbone_features,
    build_model,
    fit,
    get_default_device,
    synchronize,
    to_model_input,
)

KAGGLE_IMAGES, KAGGLE_TRAIN, KAGGLE_VAL, EPOCHS = 5856, 4694, 522, 20


def generated_split(n: int, size: int, seed: int = 0) -> XraySplit:
    """``n`` random grey images of ``size`` px, held like a decoded split.

    3 PNEUMONIA : 1 NORMAL.
    """
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([int(i % 4 != 0) for i in range(n)])
    return XraySplit("generated", pixels, labels, [], [], [], [])


def feature_pass_seconds_per_image(
    model: PneumoniaCnnModel, split: XraySplit, batch_size: int, device: torch.device
) -> float:
    """Seconds per image of the backbone's feature pass, after one untimed batch."""
    backbone_features(model, to_model_input(split.pixels[:batch_size].to(device)))
    synchronize(device)
    start = time.perf_counter()
    compute_features(split, lambda pixels: backbone_features(model, to_model_input(pixels)),
                     device, batch_size, progress=False)
    synchronize(device)
    return (time.perf_counter() - start) / len(split)


def head_epoch_seconds(
    model: PneumoniaCnnModel, batch_size: int, device: torch.device, epochs: int = 3
) -> float:
    """Wall seconds of one `fit` epoch of the head on stored features of a Kaggle-sized split.

    Validation included.
    """
    generator = torch.Generator().manual_seed(0)

    def loader(rows: int, shuffle: bool) -> DeviceDataLoader:
        data = torch.utils.data.TensorDataset(torch.rand(rows, 2048, generator=generator),
                                              (torch.arange(rows) % 4 != 0).float())
        return DeviceDataLoader(
            torch.utils.data.DataLoader(data, batch_size, shuffle=shuffle, generator=generator),
            device,
        )

    train_dl, val_dl = loader(KAGGLE_TRAIN, True), loader(KAGGLE_VAL, False)
    start = time.perf_counter()
    fit(epochs, 1e-3, FeatureHead(model), train_dl, val_dl, progress=False, **RECIPE)
    return (time.perf_counter() - start) / epochs


def finetune_seconds_per_image(
    split: XraySplit, batch_size: int, steps: int, device: torch.device
) -> float:
    """Seconds per image of one fine-tuning step of the whole model, after one untimed step.

    A step is augment, forward, backward, clip, Adam.
    """
    model = build_model("resnet50", device, None, pos_weight=1 / 3).train()
    optimizer = RECIPE["opt_func"](model.parameters(), 3e-4, weight_decay=RECIPE["weight_decay"])

    def step(index: int) -> None:
        chosen = [(index * batch_size + k) % len(split) for k in range(batch_size)]
        images = augment_batch(to_model_input(split.pixels[chosen].to(device)))
        model.training_step((images, split.labels[chosen].float().to(device))).backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), RECIPE["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(0)
    synchronize(device)
    start = time.perf_counter()
    for index in range(1, steps + 1):
        step(index)
    synchronize(device)
    return (time.perf_counter() - start) / (steps * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=192,
                        help="generated images for the feature pass")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="batch of the feature pass and of the head")
    parser.add_argument("--finetune-batch-size", type=int, default=16)
    parser.add_argument("--finetune-steps", type=int, default=3,
                        help="timed fine-tuning steps (after one untimed)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    device = get_default_device()
    print(f"machine: {machine()} | device {device} | {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    split = generated_split(args.images, args.size)
    model = build_model("resnet50", device, None, pos_weight=1 / 3, freeze_backbone=True)
    feature_s = feature_pass_seconds_per_image(model, split, args.batch_size, device)
    print(f"feature pass: {feature_s * 1000:.1f} ms per image "
          f"({args.images} images at {args.size} px, batch {args.batch_size})")
    head_s = head_epoch_seconds(model, args.batch_size, device)
    print(f"head epoch on stored features: {head_s:.3f} s "
          f"({KAGGLE_TRAIN} train + {KAGGLE_VAL} validation rows)")
    finetune_s = finetune_seconds_per_image(split, args.finetune_batch_size, args.finetune_steps,
                                            device)
    print(f"fine-tuning step: {finetune_s * 1000:.1f} ms per image "
          f"(batch {args.finetune_batch_size}, {args.finetune_steps} steps)")
    features_total, heads_total = KAGGLE_IMAGES * feature_s, EPOCHS * head_s
    total = features_total + heads_total
    finetune_total = EPOCHS * (KAGGLE_TRAIN * finetune_s + KAGGLE_VAL * feature_s)
    print(f"fine-tuning {EPOCHS} epochs, projected: {finetune_total:.0f} s "
          f"({finetune_total / 3600:.1f} h; training and validation only)")
    write_json(args.json, args, {
        "feature_ms_per_image": feature_s * 1000, "head_epoch_s": head_s,
        "finetune_ms_per_image": finetune_s * 1000,
        "projected_features_s": features_total, "projected_head_s": heads_total,
        "projected_finetune_s": finetune_total})
    print(f"whole Kaggle set at {args.size} px, projected on this machine: "
          f"features {features_total:.0f} s + {EPOCHS} head epochs "
          f"{heads_total:.0f} s = {total:.0f} s; "
          f"{finetune_total / total:.0f}x less than fine-tuning {EPOCHS} epochs")


if __name__ == "__main__":
    main()
