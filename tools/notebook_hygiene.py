"""Keep the committed notebooks clean: navigation and launch links up to date, no outputs.

    python tools/notebook_hygiene.py          # rewrite links and the setup cell, strip outputs
    python tools/notebook_hygiene.py --check  # only report; exit 1 if anything is stale (CI)

Navigation lives between the markers <!-- nav --> and <!-- /nav --> in the first and last
cells of every numbered notebook, and is generated from the list of notebooks and their
first '# ' heading, so adding or renaming a notebook only needs a re-run of this script.
The "Open in Colab" and "Open in Kaggle" links (in the navigation and in the README, between
<!-- launch --> and <!-- /launch -->) and each notebook's first code cell, which fetches the
project on Colab and Kaggle, are generated from one setting: the repository's address,
`Repository` under `[project.urls]` in pyproject.toml.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAV_PATTERN = re.compile(r"<!-- nav -->.*?<!-- /nav -->", re.DOTALL)
LAUNCH_PATTERN = re.compile(r"<!-- launch -->.*?<!-- /launch -->", re.DOTALL)
SETUP_MARK = "# On Colab or Kaggle"
DRIVE_RUN_DIR = "/content/drive/MyDrive/cxr-runs"  # the setup cell's run dir on Colab


def repository(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The repository's address, from pyproject.toml's [project.urls] Repository."""
    found = re.search(r'^Repository\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if not found:
        raise ValueError(f"{pyproject} has no Repository under [project.urls]")
    return found.group(1).rstrip("/")


def launch_links(name: str, repo: str) -> str:
    """Markdown links that open notebook ``name`` of the repository in Colab and in Kaggle."""
    path = repo.removeprefix("https://github.com/") + f"/blob/main/notebooks/{name}"
    colab = f"https://colab.research.google.com/github/{path}"
    kaggle = f"https://kaggle.com/kernels/welcome?src=https://github.com/{path}"
    return f"[Open in Colab]({colab}) | [Open in Kaggle]({kaggle})"


def setup_cell(repo: str) -> str:
    """The first code cell: on Colab or Kaggle, clone the project and install its packages.

    Offline (a Kaggle notebook with Internet off) it stops with one line naming the fix; on Colab
    it keeps the run dir on Google Drive, so that the next notebook, in a runtime of its own,
    finds what this one made (cxr_support/hosted.py).
    """
    folder = repo.rsplit("/", 1)[-1]
    host = urlsplit(repo).hostname
    return f"""{SETUP_MARK}: fetch the project and its packages (elsewhere this does nothing).
from __future__ import annotations  # for the cells below too

import importlib.util
import os
import socket
import sys

PROJECT = "{repo}"
DRIVE_RUN_DIR = "{DRIVE_RUN_DIR}"  # Colab: the run dir on Drive; None: not kept
COLAB, KAGGLE = "google.colab" in sys.modules, "KAGGLE_KERNEL_RUN_TYPE" in os.environ
if (COLAB or KAGGLE) and importlib.util.find_spec("cxr_utils") is None:
    try:
        socket.create_connection(("{host}", 443), timeout=10).close()
    except OSError:
        fix = ("switch Internet on in the notebook's settings (needs a phone-verified account)"
               if KAGGLE else "reconnect the runtime")
        raise ConnectionError(f"No internet to fetch the project: {{fix}}, then rerun") from None
    if not os.path.isdir("{folder}"):
        !git clone -q --depth 1 {{PROJECT}} {folder}
    %pip install -q -e {folder}
    sys.path.insert(0, os.path.abspath("{folder}"))
if COLAB and DRIVE_RUN_DIR and "CXR_RUN_DIR" not in os.environ:
    from google.colab import drive
    drive.mount("/content/drive")  # Colab asks for permission
    os.environ["CXR_RUN_DIR"] = DRIVE_RUN_DIR"""


def launch_table(paths: list[Path], repo: str) -> str:
    """The README's block of launch links, one line per notebook."""
    lines = [f"- [{path.stem}]({path.parent.name}/{path.name}): {launch_links(path.name, repo)}"
             for path in paths]
    return "<!-- launch -->\n" + "\n".join(lines) + "\n<!-- /launch -->"


LESSON_NAME = re.compile(r"\d\d_[a-z0-9_]+\.ipynb")  # 02_training_on_gpu.ipynb, not a copy


def numbered_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The series, in order: the lessons only, not a learner's scratch copy of one
    (02_training_on_gpu-Copy1.ipynb) or a notebook of another name."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if LESSON_NAME.fullmatch(p.name))


def title_of(notebook: nbformat.NotebookNode) -> str:
    """The first level-1 heading of a notebook."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for line in cell["source"].splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    raise ValueError("notebook has no '# ' title")


def nav_block(paths: list[Path], titles: list[str], index: int, repo: str) -> str:
    """The navigation line and the launch links for notebook ``index`` of the series."""
    parts = []
    if index > 0:
        parts.append(f"[&larr; {titles[index - 1]}]({paths[index - 1].name})")
    parts.append("[Contents](../README.md#the-series)")
    if index < len(paths) - 1:
        parts.append(f"[{titles[index + 1]} &rarr;]({paths[index + 1].name})")
    launch = launch_links(paths[index].name, repo)
    return "<!-- nav -->\n" + " | ".join(parts) + f"\n\n{launch}\n<!-- /nav -->"


def problems(folder: Path = NOTEBOOKS, fix: bool = False, readme: Path | None = None) -> list[str]:
    """Every stale link, setup cell or stored output; with ``fix``, repair them in place."""
    paths = numbered_notebooks(folder)
    notebooks = [nbformat.read(p, as_version=4) for p in paths]
    titles = [title_of(nb) for nb in notebooks]
    repo = repository()
    found = _readme_problems(readme or folder.parent / "README.md", paths, repo, fix)
    for index, (path, notebook) in enumerate(zip(paths, notebooks)):
        changed = _setup_cell_problems(path, notebook, repo, found)
        wanted = nav_block(paths, titles, index, repo)
        nav_cells = [
            c
            for c in notebook["cells"]
            if c["cell_type"] == "markdown" and NAV_PATTERN.search(c["source"])
        ]
        if (
            len(nav_cells) < 2
            or notebook["cells"][0] is not nav_cells[0]
            or notebook["cells"][-1] is not nav_cells[-1]
        ):
            found.append(f"{path.name}: navigation must be in the first and the last cell")
        for cell in nav_cells:
            source = cell["source"]
            updated = NAV_PATTERN.sub(wanted, source)
            if updated != source:
                found.append(f"{path.name}: stale navigation links")
                cell["source"], changed = updated, True
        for number, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] == "code" and (
                cell.get("outputs") or cell.get("execution_count") is not None
            ):
                found.append(f"{path.name}: cell {number} has outputs or an execution count")
                cell["outputs"], cell["execution_count"], changed = [], None, True
        if fix and changed:
            nbformat.write(notebook, path)
    return found


def _setup_cell_problems(path: Path, notebook: nbformat.NotebookNode, repo: str,
                         found: list[str]) -> bool:
    """Make the first code cell the generated setup cell; report and return whether it changed."""
    wanted = setup_cell(repo)
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    if code and code[0]["source"] == wanted:
        return False
    if code and code[0]["source"].startswith(SETUP_MARK):
        found.append(f"{path.name}: stale setup cell")
        code[0]["source"] = wanted
    else:
        found.append(f"{path.name}: no setup cell before the first code cell")
        first = notebook["cells"].index(code[0]) if code else len(notebook["cells"]) - 1
        notebook["cells"].insert(first, nbformat.v4.new_code_cell(wanted))
    return True


def _readme_problems(readme: Path, paths: list[Path], repo: str, fix: bool) -> list[str]:
    """A stale launch block in the README; with ``fix``, rewrite it."""
    if not readme.exists():
        return []
    text = readme.read_text()
    updated = LAUNCH_PATTERN.sub(launch_table(paths, repo), text)
    if not LAUNCH_PATTERN.search(text):
        return [f"{readme.name}: no <!-- launch --> block"]
    if updated == text:
        return []
    if fix:
        readme.write_text(updated)
    return [f"{readme.name}: stale launch links"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="report only; exit 1 when something is stale"
    )
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
