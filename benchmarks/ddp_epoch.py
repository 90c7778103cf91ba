"""One training epoch with 1 and with 2 processes (train_ddp.py under torchrun): the ratio.

    python benchmarks/ddp_epoch.py [--nproc 1 2] [--image-size 64] [--max-images 400]
                                   [--batch-size 32] [--arch resnet18] [--json FILE]

Both launches train on the same data (the data CXR_DATA_DIR names, else the synthetic sample;
decoded once into a temporary run dir before any timer starts) at the same batch per process,
so 2 processes take half as many steps, each on 2 shards of one global batch. Each launch
trains 2 epochs; the figure is the second epoch's training time as `fit` measures it (rank 0's
clock; the first epoch carries DDP's first-step set-up), next to the whole launch's wall time
(process start, imports, data and model set-up, both epochs with validation, the checkpoint).
The processes split the machine's cores (OMP_NUM_THREADS = cores / processes), so on a CPU both
launches use the same cores. On NVIDIA GPUs each process gets one GPU; for the full-size figure
use ``--image-size 224 --max-images all --arch resnet50 --batch-size 64``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_json

# The project's helpers, imported in this one place: the lessons' (cxr_utils) and the
# support package's.
from cxr_support import records
from cxr_support.config import load_config
from cxr_support.paths import PROJECT_ROOT
from cxr_utils import load_data


def settings(args: argparse.Namespace, run_dir: Path) -> dict[str, str]:
    """The CXR_* variables of both launches."""
    return {"CXR_RUN_DIR": str(run_dir), "CXR_IMAGE_SIZE": str(args.image_size),
            "CXR_MAX_IMAGES": str(args.max_images), "CXR_BATCH_SIZE": str(args.batch_size),
            "CXR_ARCH": args.arch, "CXR_EPOCHS": "2", "CXR_PRETRAINED": "0",
            "CXR_QUICK": "1" if args.image_size <= 64 else "0", "CXR_SEED": "42"}


def launch(nproc: int, env: dict[str, str], run_id: str) -> tuple[float, dict]:
    """(wall seconds, run record) of one torchrun launch of train_ddp.py."""
    threads = max(1, (os.cpu_count() or 1) // nproc)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(PROJECT_ROOT / "train_ddp.py"), "--run-id", run_id]
    start = time.perf_counter()
    done = subprocess.run(command, env={**env, "OMP_NUM_THREADS": str(threads)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{nproc} process(es) failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    record = json.loads((Path(env["CXR_RUN_DIR"]) / "records" / f"{run_id}.json").read_text())
    return wall, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-images", default="400")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **settings(args, Path(tmp))}
        config = load_config(env)  # decode once, before any timer: both launches read the cache
        splits = load_data(config.data_dir, config.run_dir, config.image_size, config.seed,
                           config.max_images, config.positive_class, progress=False).splits
        print(f"{machine()}\n{len(splits['train'])} training images at {args.image_size} px, "
              f"{args.arch}, batch {args.batch_size} per process")
        results = {}
        for nproc in args.nproc:
            wall, record = launch(nproc, env, records.new_run_id())
            epoch = record["history"][1]
            results[nproc] = {"epoch_s": epoch["seconds"], "images_per_s": epoch["images_per_s"],
                              "launch_s": round(wall, 1),
                              "steps": len(epoch["lrs"])}
            print(f"{nproc} process(es): second epoch {epoch['seconds']:.2f} s "
                  f"({results[nproc]['steps']} steps, {epoch['images_per_s']:.0f} images/s); "
                  f"whole launch {wall:.1f} s")
    if 1 in results and len(results) > 1:
        for nproc in (n for n in results if n != 1):
            ratio = results[1]["epoch_s"] / results[nproc]["epoch_s"]
            whole = results[1]["launch_s"] / results[nproc]["launch_s"]
            print(f"speed-up of {nproc} processes over 1: epoch {ratio:.2f}x, "
                  f"whole launch {whole:.2f}x")
    write_json(args.json, args, {"results": results})


if __name__ == "__main__":
    main()
