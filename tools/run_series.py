"""Run every lesson headless, in order, into the run dir (never rewriting notebooks/).

    python tools/run_series.py            # all notebooks
    python tools/run_series.py 01 02      # only those whose names start with 01 or 02

Settings come from the same CXR_* environment variables as in Jupyter. The executed
copies, with their outputs, land in $CXR_RUN_DIR/executed/.
"""

from __future__ import annotations

import sys
import time

import nbformat
from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor
from notebook_hygiene import NOTEBOOKS, numbered_notebooks

from cxr_support.config import load_config


def main(prefixes: list[str]) -> int:
    out_dir = load_config().run_dir / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in numbered_notebooks():  # the lessons, not scratch copies
        if prefixes and not any(path.name.startswith(p) for p in prefixes):
            continue
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        print(f"running {path.name} ...", flush=True)
        try:
            ExecutePreprocessor(timeout=None, kernel_name="python3").preprocess(
                notebook, {"metadata": {"path": str(NOTEBOOKS)}}
            )
        except CellExecutionError as err:
            nbformat.write(notebook, out_dir / path.name)
            print(
                f"FAILED: {path.name} (executed copy with the error: {out_dir / path.name})\n{err}",
                file=sys.stderr,
            )
            return 1
        nbformat.write(notebook, out_dir / path.name)
        print(f"  done in {time.perf_counter() - start:.0f} s -> {out_dir / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
