"""Notebook 02's training run at full size, as a plain script, then notebook 03's test metrics.

    python benchmarks/full_run.py [--data-dir .gpudata/chest_xray] [--epochs 8]
                                  [--json results.json]

For machines without Jupyter: the same helpers in the same order as the notebooks' full mode
(CXR_QUICK=0), with CXR_PRETRAINED=0 because the GPU machine has no network. Patient split
of train/ at 224 px (`load_data`), random-init ResNet50 fine-tuned (`build_model`:
channels-last), `fit` with notebook 02's `RECIPE` (Adam, weight decay 1e-4, gradient clipping
0.1) and a one-cycle schedule, 8 epochs, max_lr 3e-4, batch 64, bf16 autocast on a GPU; the
weights of the epoch with the lowest validation loss are kept. Then the test split is predicted
and scored at threshold 0.5 and at the threshold chosen on VALIDATION by Youden's J (the test
split never chooses anything). The JSON holds notebook 02's run record (`run_record`) and
notebook 03's metrics. Prints only numbers: nothing that shows the images' pixels.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import tempfile
import time
from pathlib import Path

import torch
from common import machine, precision, write_json

# The project's helpers, imported in this one place: the lessons' (cxr_utils) and the
# support package's.
from cxr_support.records import best_epoch
from cxr_support.tables import Table, metrics_table
from cxr_utils import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RECIPE,
    CachedBatchLoader,
    binary_metrics,
    build_model,
    calibration,
    choose_threshold,
    class_balance_pos_weight,
    constant_loss,
    evaluate,
    fit,
    get_default_device,
    load_data,
    metrics_with_ci,
    patient_id,
    predict_dl,
    resolve_precision,
    resolve_train_mode,
    run_record,
    seed_everything,
)

METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")


def train(args: argparse.Namespace, device: torch.device, run_dir: Path) -> dict:
    """Notebook 02: data, loaders, model, `fit`.

    Then notebook 03's threshold on validation and test metrics.
    """
    seed_everything(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    data = load_data(args.data_dir, run_dir, args.size, args.seed, args.max_images, progress=False)
    splits, data_s = data.splits, time.perf_counter() - start
    print(Table([{"split": name, "images": len(split), **split.class_counts()}
                 for name, split in splits.items()]))
    print(f"data: patient split and decode-once cache in {data_s:.1f} s")

    train_dl = CachedBatchLoader(splits["train"], args.batch_size, device, shuffle=True,
                                 augment=True, seed=args.seed)
    val_dl = CachedBatchLoader(splits["val"], args.batch_size * 2, device)
    test_dl = CachedBatchLoader(splits["test"], args.batch_size * 2, device)
    train_mode = resolve_train_mode("auto", device, pretrained_loaded=False)
    pos_weight = class_balance_pos_weight(splits["train"].labels)
    model = build_model("resnet50", device, None, pos_weight,
                        freeze_backbone=train_mode == "feature_extractor")
    print(f"weights: random init (CXR_PRETRAINED=0); training mode: {train_mode}; "
          f"pos_weight {pos_weight:.3f}")

    history = [evaluate(model, val_dl, args.precision)]
    start = time.perf_counter()
    history += fit(args.epochs, args.max_lr, model, train_dl, val_dl, precision=args.precision,
                   progress=False, **RECIPE)
    nan_epochs = [h["epoch"] for h in history[1:]
                  if not (math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]))]
    print(f"epochs with a NaN or infinite loss: {nan_epochs or 'none'}")
    fit_s = time.perf_counter() - start
    epochs = history[1:]
    columns = ("epoch", "train_loss", "val_loss", "val_acc", "seconds", "images_per_s")
    print(Table([{k: h[k] for k in columns} for h in epochs], digits=4))
    majority = max(splits["val"].class_counts().values()) / len(splits["val"])
    best_val_acc = max(h["val_acc"] for h in epochs)  # of any epoch, not necessarily the kept one
    kept = best_epoch(history)  # the epoch fit restored: the lowest validation loss
    baseline = constant_loss(splits["val"].labels, pos_weight)  # notebook 02's yardstick
    print(f"fit: {fit_s:.1f} s for {args.epochs} epochs "
          f"(training only: {sum(h['seconds'] for h in epochs):.1f} s)")
    print(f"kept epoch {kept['epoch']}: val_acc {kept['val_acc']:.4f}; highest val_acc of any "
          f"epoch {best_val_acc:.4f}; majority-class rate {majority:.4f}; val_loss "
          f"{kept['val_loss'] / baseline:.2f} of the best constant prediction's (notebook 02's "
          f"check, at most 0.8: {'passed' if kept['val_loss'] <= 0.8 * baseline else 'FAILED'})")

    val_probs, val_labels = predict_dl(val_dl, model)
    test_probs, test_labels = predict_dl(test_dl, model)
    # intervals resample patients, not images
    patients = [patient_id(path) for path in splits["test"].paths]
    youden = choose_threshold(val_labels.numpy(), val_probs.numpy(), "youden")
    named = {
        "test, threshold 0.5": metrics_with_ci(test_labels.numpy(), test_probs.numpy(), 0.5,
                                               seed=args.seed, groups=patients),
        f"test, threshold {youden:.3f} (Youden on val)": metrics_with_ci(
            test_labels.numpy(), test_probs.numpy(), youden, seed=args.seed, groups=patients),
        "val, threshold 0.5": binary_metrics(val_labels.numpy(), val_probs.numpy(), 0.5),
    }
    print(f"test: {len(patients)} images of {len(set(patients))} patients; "
          "intervals: 95 %, 1,000 bootstrap resamples of patients")
    print(Table(metrics_table(named, METRICS)))
    per_image = metrics_with_ci(test_labels.numpy(), test_probs.numpy(), 0.5, seed=args.seed)
    print("the same at threshold 0.5 with intervals that resample images "
          "(too narrow: films of one child are not independent):")
    print(Table(metrics_table({"test, threshold 0.5, per-image intervals": per_image}, METRICS)))
    calibrations = {"validation": calibration(val_labels, val_probs),
                    "test": calibration(test_labels, test_probs)}
    print(Table([{"split": name, "images": c["n"], "Brier score": c["brier"], "ECE": c["ece"]}
                 for name, c in calibrations.items()]))
    for name, result in named.items():
        print(f"confusion matrix [[TN, FP], [FN, TP]], {name}: {result['confusion_matrix']}")
    settings = {"image_size": args.size, "seed": args.seed, "max_lr": args.max_lr,
                "batch_size": args.batch_size, "epochs": args.epochs, "arch": "resnet50",
                "pretrained": "0", "max_images": args.max_images}
    model_info = {"arch": "resnet50", "weights": "random initialisation", "pretrained": False,
                  "train_mode": train_mode, "pos_weight": pos_weight,
                  "class_names": list(data.class_names), "mean": list(IMAGENET_MEAN),
                  "std": list(IMAGENET_STD)}
    return {  # notebook 02's run record (its settings, data, model, recipe, epochs), then 03's
        "record": run_record("benchmark", "benchmarks/full_run.py", settings, data, model_info,
                             resolve_precision(device, args.precision), history[1:], device),
        "calibration": calibrations,
        "per_image_intervals_threshold_0.5": per_image["ci"],
        "data_s": data_s,
        "fit_s": fit_s,
        "majority_rate_val": majority,
        "best_val_acc": best_val_acc,
        "kept_epoch": kept["epoch"],
        "kept_val_acc": kept["val_acc"],
        "youden_threshold_from_val": youden,
        "metrics": named,
    }


def main() -> None:
    device = get_default_device()
    gpu = device.type == "cuda"
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".gpudata/chest_xray"),
                        help="the Kaggle layout: train/ val/ test/")
    parser.add_argument("--run-dir", type=Path,
                        help="split file and pixel cache (default: a fresh temporary folder)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-lr", type=float, default=3e-4)
    parser.add_argument("--max-images", type=int,
                        help="cap each split, keeping class proportions (smoke tests only)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                        help="training precision, as CXR_PRECISION (auto: the GPU's native one)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    print(f"date {started}; machine: {machine()}")
    print(f"device {torch.cuda.get_device_name(device) if gpu else 'cpu'}, "
          f"{precision(device, args.precision)}; "
          f"data {args.data_dir}; "
          f"{args.size} px, batch {args.batch_size}, {args.epochs} epochs, max_lr {args.max_lr}")
    with tempfile.TemporaryDirectory() as tmp:
        result = train(args, device, args.run_dir or Path(tmp))
    write_json(args.json, args, {"date": started, **result})


if __name__ == "__main__":
    main()
