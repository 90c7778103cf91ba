"""Keep the committed notebooks clean: navigation links up to date, no outputs.

    python tools/notebook_hygiene.py          # rewrite navigation links, strip outputs
    python tools/notebook_hygiene.py --check  # only report; exit 1 if anything is stale (CI)

Navigation lives between the markers <!-- nav --> and <!-- /nav --> in the first and last
cells of every numbered notebook, and is generated from the list of notebooks and their
first '# ' heading, so adding or renaming a notebook only needs a re-run of this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAV_PATTERN = re.compile(r"<!-- nav -->.*?<!-- /nav -->", re.DOTALL)


def numbered_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The series, in order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def title_of(notebook: nbformat.NotebookNode) -> str:
    """The first level-1 heading of a notebook."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for line in cell["source"].splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError("notebook has no '# ' title")


def nav_block(paths: list[Path], titles: list[str], index: int) -> str:
    """The navigation line for notebook ``index`` of the series."""
    parts = []
    if index > 0:
        parts.append(f"[&larr; {titles[index - 1]}]({paths[index - 1].name})")
    parts.append("[Contents](../README.md#the-series)")
    if index < len(paths) - 1:
        parts.append(f"[{titles[index + 1]} &rarr;]({paths[index + 1].name})")
    return "<!-- nav -->\n" + " | ".join(parts) + "\n<!-- /nav -->"


def problems(folder: Path = NOTEBOOKS, fix: bool = False) -> list[str]:
    """Every stale navigation block and every stored output; with ``fix``, repair them in place."""
    paths = numbered_notebooks(folder)
    notebooks = [nbformat.read(p, as_version=4) for p in paths]
    titles = [title_of(nb) for nb in notebooks]
    found = []
    for index, (path, notebook) in enumerate(zip(paths, notebooks)):
        changed = False
        wanted = nav_block(paths, titles, index)
        nav_cells = [c for c in notebook["cells"] if c["cell_type"] == "markdown" and NAV_PATTERN.search(c["source"])]
        if len(nav_cells) < 2 or notebook["cells"][0] is not nav_cells[0] or notebook["cells"][-1] is not nav_cells[-1]:
            found.append(f"{path.name}: navigation must be in the first and the last cell")
        for cell in nav_cells:
            source = cell["source"]
            updated = NAV_PATTERN.sub(wanted, source)
            if updated != source:
                found.append(f"{path.name}: stale navigation links")
                cell["source"], changed = updated, True
        for number, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
                found.append(f"{path.name}: cell {number} has outputs or an execution count")
                cell["outputs"], cell["execution_count"], changed = [], None, True
        if fix and changed:
            nbformat.write(notebook, path)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report only; exit 1 when something is stale")
    args = parser.parse_args()
    found = problems(fix=not args.check)
    for line in found:
        print(line)
    if args.check and found:
        print("Run `python tools/notebook_hygiene.py` to fix.")
        return 1
    print("notebooks clean" if not found else f"fixed {len(found)} problem(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
