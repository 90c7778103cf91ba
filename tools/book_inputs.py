"""Fetch what the real book needs, or say why the quick book is built instead (the book workflow).

    python tools/book_inputs.py --data data --env-file "$GITHUB_ENV"

On a machine with internet (GitHub's runners), this downloads the dataset with
`cxr_support.download.download_dataset` (no account) and torchvision's ImageNet weights of the
network the book's CPU run uses (ResNet50) into torchvision's cache
(`$TORCH_HOME/hub/checkpoints`), then writes `CXR_DATA_DIR` to the env file, so that the next
step builds the real book: on a CPU with the weights on disk the series trains the fixed
feature extractor at 224 px. When a fetch fails,
it writes `CXR_QUICK=1` instead (the quick book on the synthetic sample, with its banner) and
prints why, as a GitHub warning annotation, in the job log. It never fails the job.
`--data-dir` uses a dataset already on disk instead of downloading it; weights already in the
cache are not downloaded again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchvision import models

from cxr_support import download
from cxr_support.errors import error_summary

# the network of the book's run: a CPU with its weights on disk runs the fixed feature extractor
# at 224 px (notebooks 02-04), and notebook 05's quick run in two CPU processes keeps it
ARCHS = ("resnet50",)


def fetch_weights(arch: str = "resnet50") -> Path:
    """Download torchvision's ImageNet weights for ``arch`` into its cache; return the file."""
    weights = models.get_model_weights(arch).DEFAULT
    weights.get_state_dict(progress=False)  # downloads once, checks the file's hash
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def book_settings(data: Path, data_dir: Path | None = None) -> tuple[dict[str, str], str | None]:
    """(the CXR_* settings for the book's build, or the quick book's; why it fell back, or None)."""
    try:
        root = Path(data_dir) if data_dir else download.download_dataset(data)
        for arch in ARCHS:
            fetch_weights(arch)
    except Exception as err:  # no network, a server refusing, a full disk: the quick book
        return {"CXR_QUICK": "1"}, error_summary(err)
    return {"CXR_DATA_DIR": str(root)}, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="where to download and unpack the dataset")
    parser.add_argument("--data-dir", type=Path, help="a dataset already on disk (no download)")
    parser.add_argument("--env-file", type=Path, help="append KEY=value lines here ($GITHUB_ENV)")
    args = parser.parse_args(argv)
    settings, why = book_settings(args.data, args.data_dir)
    if why:
        print(f"::warning title=Quick book::The real data or the ImageNet weights could not be "
              f"fetched ({why}); building the quick book on the synthetic sample instead.")
    else:
        print("Building the real book: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    if args.env_file:
        with open(args.env_file, "a", encoding="utf-8") as env:
            env.writelines(f"{key}={value}\n" for key, value in settings.items())
    return 0


if __name__ == "__main__":
    sys.exit(main())
