"""Support code: the figures of the series (lessons need not read this).

Each is a few matplotlib calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from cxr_support.images import read_xray, resize_square
from cxr_support.names import CLASS_NAMES
from cxr_support.pixel_cache import XraySplit


def plot_counts(rows: Sequence[dict[str, Any]], key: str = "folder",
                class_names: Sequence[str] = CLASS_NAMES) -> None:
    """Bar chart of images per class per split."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    positions = np.arange(len(rows))
    for offset, name in zip((-0.2, 0.2), class_names):
        bars = ax.bar(positions + offset, [r[name] for r in rows], width=0.4, label=name)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(positions, [r[key] for r in rows])
    ax.set(ylabel="images", title="Images per class")
    ax.legend()


def plot_image_sizes(split: XraySplit) -> None:
    """Scatter of the original width and height of every image in a split."""
    sizes = np.array(split.original_sizes)
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, name in enumerate(split.class_names):
        mask = split.labels.numpy() == label
        ax.scatter(sizes[mask, 0], sizes[mask, 1], s=8, alpha=0.5, label=name)
    ax.set(xlabel="width (px)", ylabel="height (px)", title=f"Original image sizes ({split.name})")
    ax.legend()


def show_augmentations(original: torch.Tensor, augmented: torch.Tensor) -> None:
    """One image (1 x H x W, in [0, 1]) beside augmented versions of it (N x 1 x H x W)."""
    fig, axes = plt.subplots(1, len(augmented) + 1, figsize=(2 * (len(augmented) + 1), 2.3))
    for ax, image, title in zip(axes, [original, *augmented],
                                ["original"] + ["augmented"] * len(augmented)):
        ax.imshow(image[0].float().cpu(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")


def show_resize_comparison(path: Path, image_size: int) -> None:
    """The blog post's NEAREST resize beside an antialiased one, with a zoomed crop."""
    image = read_xray(path)
    nearest = image.resize((image_size, image_size), Image.Resampling.NEAREST)
    smooth = resize_square(image, image_size)  # the series' resize
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    crop = (image_size // 4, image_size // 4, image_size // 2, image_size // 2)
    for ax, (title, picture) in zip(
        axes,
        [("NEAREST (blog post)", nearest), ("antialiased (this series)", smooth),
         ("NEAREST, zoomed", nearest.crop(crop)), ("antialiased, zoomed", smooth.crop(crop))],
    ):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")


def loss_scale(losses: Sequence[float], spread: float = 10.0) -> str:
    """'log' when the largest finite loss is over ``spread`` times the smallest, else 'linear'.

    On a linear scale, one spike would flatten the rest.
    """
    finite = [x for x in losses if x is not None and np.isfinite(x) and x > 0]
    return "log" if finite and max(finite) > spread * min(finite) else "linear"


def plot_history(history: Sequence[dict[str, Any]]) -> None:
    """Plot train/val loss, val accuracy and the learning rate per batch."""
    history = [h for h in history if "epoch" in h]  # skip the pre-training baseline
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["train_loss"] for h in history], "-o", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "-o", label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss vs. epochs",
                yscale=loss_scale([h[k] for h in history for k in ("train_loss", "val_loss")]))
    axes[0].legend()
    axes[1].plot(epochs, [h["val_acc"] for h in history], "-o")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    axes[2].plot([lr for h in history for lr in h["lrs"]])
    axes[2].set(xlabel="batch", ylabel="learning rate", title="One-cycle learning rate")
    fig.tight_layout()


def plot_confusion_roc_hist(labels, probs, metrics: dict[str, Any], title: str = "",
                            class_names: Sequence[str] = CLASS_NAMES) -> None:
    """Confusion matrix, ROC curve with the operating point, and probability histograms."""
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    # m comes from binary_metrics(labels, probs, threshold)
    m, threshold = metrics, metrics["threshold"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ConfusionMatrixDisplay(np.array(m["confusion_matrix"]),
                           display_labels=list(class_names)).plot(ax=axes[0], colorbar=False)
    axes[0].set_title(f"Confusion matrix (threshold {threshold:.3f})")
    RocCurveDisplay.from_predictions(y, p, ax=axes[1], name="model")
    axes[1].plot(1 - m["specificity"], m["sensitivity"], "ro", label="operating point")
    axes[1].legend(loc="lower right")
    axes[1].set_title("ROC curve")
    bins = np.linspace(0, 1, 26)
    for label, name in enumerate(class_names):
        axes[2].hist(p[y == label], bins=bins, alpha=0.6, label=f"true {name}")
    axes[2].axvline(threshold, color="k", linestyle="--", label="threshold")
    axes[2].set(xlabel=f"predicted probability of {class_names[-1]}", ylabel="images",
                title="Predicted probabilities")
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()


def threshold_explorer(labels, probs, metrics_at: Callable[..., dict[str, Any]],
                       initial: float = 0.5, class_names: Sequence[str] = CLASS_NAMES):
    """A slider that moves the threshold and redraws the confusion matrix and rates live."""
    import ipywidgets as widgets

    output = widgets.Output()
    slider = widgets.FloatSlider(value=initial, min=0.0, max=1.0, step=0.01,
                                 description="threshold", continuous_update=False)

    def redraw(change=None):
        m = metrics_at(labels, probs, slider.value)
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(4, 3.5))
            ax.imshow(np.array(m["confusion_matrix"]), cmap="Blues")
            for (i, j), v in np.ndenumerate(np.array(m["confusion_matrix"])):
                ax.text(j, i, str(v), ha="center", va="center")
            ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=class_names,
                   yticklabels=class_names, xlabel="predicted", ylabel="true")
            ax.set_title(f"sens {m['sensitivity']:.3f}  spec {m['specificity']:.3f}")
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, output])


def plot_threshold_sweep(labels, probs, metrics_at: Callable[..., dict[str, Any]],
                         marks: dict[str, float]) -> None:
    """Sensitivity and specificity against the threshold, with chosen thresholds marked.

    A static figure.
    """
    grid = np.linspace(0.01, 0.99, 99)
    sweep = [metrics_at(labels, probs, t) for t in grid]
    sens, spec = [m["sensitivity"] for m in sweep], [m["specificity"] for m in sweep]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, sens, label="sensitivity")
    ax.plot(grid, spec, label="specificity")
    for name, t in marks.items():
        ax.axvline(t, linestyle="--", color="gray")
        ax.text(t, 0.02, f" {name}", rotation=90, va="bottom")
    ax.set(xlabel="threshold", ylabel="rate", ylim=(0, 1.02),
           title="Moving the threshold trades sensitivity for specificity")
    ax.legend()


def outcome_indices(labels, probs, threshold: float, n: int = 4) -> dict[str, list[int]]:
    """The ``n`` most confident true/false positives/negatives.

    Returned as {'TP': [...], 'FP': ..., 'FN': ..., 'TN': ...}.
    """
    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    pred = p >= threshold
    confidence = np.abs(p - threshold)
    groups = {"TP": pred & (y == 1), "FP": pred & (y == 0),
              "FN": ~pred & (y == 1), "TN": ~pred & (y == 0)}
    return {name: [int(i) for i in np.flatnonzero(mask)[np.argsort(-confidence[mask])][:n]]
            for name, mask in groups.items()}


def show_confident_mistakes(split: XraySplit, probs, threshold: float, n: int = 8) -> None:
    """A gallery of the most confident wrong predictions on a split."""
    groups = outcome_indices(split.labels, probs, threshold, n)
    mistakes = sorted(groups["FP"] + groups["FN"],
                      key=lambda i: -abs(float(probs[i]) - threshold))[:n]
    if not mistakes:
        print("No mistakes at this threshold.")
        return
    fig, axes = plt.subplots(1, len(mistakes), figsize=(2.4 * len(mistakes), 2.8), squeeze=False)
    for ax, i in zip(axes[0], mistakes):
        ax.imshow(split.pixels[i, 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {split.class_names[int(split.labels[i])][:4]}\np={float(probs[i]):.2f}",
                     fontsize=9)
        ax.axis("off")
    fig.suptitle("Most confident mistakes")
    fig.tight_layout()


def overlay_heatmap(image: torch.Tensor, heatmap: np.ndarray) -> np.ndarray:
    """Blend a heatmap over an image tensor (1 x H x W, in [0, 1]) for display."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image.float().cpu().expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float32)
    return show_cam_on_image(rgb, heatmap, use_rgb=True)


def heatmap_agreement(heatmaps: Sequence[np.ndarray]) -> float:
    """Mean correlation of every pair of heatmaps; NaN for fewer than 2.

    Near 1, they show the layer's geometry, not evidence in each image.
    """
    if len(heatmaps) < 2:
        return float("nan")
    flat = np.asarray(heatmaps, dtype=float).reshape(len(heatmaps), -1)
    # a constant heatmap has no correlation: left out
    with np.errstate(invalid="ignore", divide="ignore"):
        pairs = np.corrcoef(flat)[np.triu_indices(len(flat), k=1)]
    return float(np.nanmean(pairs)) if np.isfinite(pairs).any() else float("nan")


def show_heatmaps(images: torch.Tensor, heatmaps: np.ndarray, titles: Sequence[str],
                  title: str) -> None:
    """Heatmaps (such as Grad-CAM's) over their images, one titled panel each.

    The images are N x 1 x H x W, in [0, 1].
    """
    if not len(images):
        print(f"{title}: none")
        return
    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.4), squeeze=False)
    for ax, image, heat, name in zip(axes[0], images, heatmaps, titles):
        ax.imshow(overlay_heatmap(image, heat))
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()


def plot_reliability(named: dict[str, dict[str, Any]], positive: str = CLASS_NAMES[-1]) -> None:
    """Reliability diagrams: observed PNEUMONIA rate against mean predicted probability.

    One line per named result.
    """
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", label="perfectly calibrated")
    for name, c in named.items():  # c comes from calibration(labels, probs)
        ax.plot(c["mean_predicted"], c["fraction_positive"], "-o",
                label=f"{name} (ECE {c['ece']:.3f}, Brier {c['brier']:.3f})")
    ax.set(xlabel=f"mean predicted probability of {positive}",
           ylabel=f"fraction that is {positive}", xlim=(0, 1), ylim=(0, 1),
           title="Reliability diagram")
    ax.legend(fontsize=8, loc="lower right")


def plot_run_curves(records: Sequence[dict[str, Any]]) -> None:
    """Validation loss and accuracy per epoch for several runs on one figure."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for r in records:
        history = r.get("history") or []
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["val_loss"] for h in history], "-o", label=r["run_id"])
        axes[1].plot(epochs, [h["val_acc"] for h in history], "-o", label=r["run_id"])
    losses = [h["val_loss"] for r in records for h in r.get("history") or []]
    scale = loss_scale(losses)
    axes[0].set(xlabel="epoch",
                ylabel="validation loss" + (" (log scale: one run's loss is far above the others)"
                                            if scale == "log" else ""),
                yscale=scale)
    axes[1].set(xlabel="epoch", ylabel="validation accuracy")
    axes[1].legend(fontsize=7)
    fig.tight_layout()


def show_box(images: torch.Tensor, mask: torch.Tensor, titles: Sequence[str], title: str) -> None:
    """Films (N x 1 x H x W in [0, 1]) with the outline of a boolean H x W mask drawn on them."""
    fig, axes = plt.subplots(1, len(images), figsize=(2.8 * len(images), 3.2), squeeze=False)
    for ax, image, name in zip(axes[0], images, titles):
        ax.imshow(image[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.contour(mask.cpu().numpy().astype(float), levels=[0.5], colors="red", linewidths=1.5)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()


def plot_share_by_outcome(shares: dict[str, np.ndarray], uniform: float) -> None:
    """Box plots of each outcome's per-film share (TP, FP, FN, TN), with every film as a dot and
    the share a uniform map would give."""
    names = [name for name in shares if len(shares[name])]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.boxplot([shares[name] for name in names], showfliers=False)
    rng = np.random.default_rng(0)
    for position, name in enumerate(names, start=1):
        jitter = rng.uniform(-0.12, 0.12, len(shares[name]))
        ax.plot(position + jitter, shares[name], ".", alpha=0.35, color="tab:blue")
    ax.axhline(uniform, color="gray", ls="--", label=f"a uniform map ({uniform:.2f})")
    ax.set_xticks(range(1, len(names) + 1),
                  [f"{name}\n({len(shares[name])} films)" for name in names])
    ax.set(ylim=(0, 1), ylabel="share of Grad-CAM inside the lung box",
           title="Where the model looks, per outcome")
    ax.legend(loc="lower right")
    fig.tight_layout()


def plot_decision_curve(thresholds: np.ndarray, curves: dict[str, np.ndarray],
                        chosen: float | None = None) -> None:
    """Net benefit against the threshold probability, one line per strategy."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(thresholds, values, label=name, ls="--" if name.startswith("treat") else "-")
    if chosen is not None:
        ax.axvline(chosen, color="gray", lw=0.8, label=f"threshold from validation ({chosen:.2f})")
    top = max(float(np.nanmax(v)) for v in curves.values())
    ax.set(xlim=(0, 1), ylim=(-0.05, max(top, 0.05) * 1.1), xlabel="threshold probability",
           ylabel="net benefit (true positives per film)", title="Decision curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
