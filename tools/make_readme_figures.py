"""Make the figures of the README and docs/results.md in images/.

    python tools/make_readme_figures.py                       # synthetic sample grid
    python tools/make_readme_figures.py --record RUN.json     # plus training curves of a run

The sample grid shows only generated (synthetic) images. The curves are numbers from a run
record, labelled with the data and settings that produced them.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cxr_support import plots, records  # noqa: E402
from cxr_support.dataset import list_split  # noqa: E402
from cxr_support.images import read_xray  # noqa: E402
from cxr_support.names import CLASS_NAMES  # noqa: E402
from cxr_support.synthetic import make_synthetic_dataset  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "images"


def sample_grid(seed: int = 42) -> Path:
    """Four NORMAL and four PNEUMONIA images of the synthetic sample."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_dataset(Path(tmp), seed=seed)
        samples, _ = list_split(root, "train")
        fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
        for row, label in enumerate((0, 1)):
            paths = [p for p, y in samples if y == label][:: 7][:4]
            for ax, path in zip(axes[row], paths):
                ax.imshow(read_xray(path), cmap="gray")
                ax.set_title(f"{CLASS_NAMES[label]}: {path.name}", fontsize=8)
                ax.axis("off")
        fig.suptitle("Synthetic sample (generated, not real X-rays)")
        fig.tight_layout()
        out = IMAGES / "synthetic_sample.png"
        fig.savefig(out, dpi=80)
    return out


def training_curves(record_path: Path) -> Path:
    """Loss and accuracy per epoch of one run, titled with its provenance."""
    record = records.read_record(record_path)
    plots.plot_history(record["history"])
    data = "synthetic sample" if record["dataset"]["synthetic"] else "real X-rays"
    train = sum(record["dataset"]["counts"]["train"].values())
    weights = (
        "ImageNet weights" if record["model"]["pretrained"] else "random init (no ImageNet weights)"
    )
    title = (
        f"{data}, {train} training images, {record['model']['arch']} at "
        f"{record['config']['image_size']} px, {weights}, {record['environment']['device']}"
    )
    plt.gcf().suptitle(f"run {record['run_id']}: {title}", fontsize=10)
    plt.gcf().tight_layout()
    out = IMAGES / "training_curves.png"
    plt.savefig(out, dpi=80)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--record", type=Path, help="a run record whose training curves to plot")
    args = parser.parse_args()
    IMAGES.mkdir(exist_ok=True)
    print("wrote", sample_grid())
    if args.record:
        print("wrote", training_curves(args.record))


if __name__ == "__main__":
    main()
