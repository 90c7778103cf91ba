"""Build the series as a book: a static site of the notebooks with the outputs of one declared run.

    python tools/build_book.py            # run the series, then build the site from its outputs
    python tools/build_book.py --no-run   # build from the executed copies already in the run dir
    python tools/build_book.py --out DIR  # put the site in DIR instead of build/book/

The run is tools/run_series.py with whatever CXR_* settings are in force (on a laptop: quick
mode on the synthetic sample; with CXR_DATA_DIR and a GPU: the real book). It executes copies of
the notebooks into $CXR_RUN_DIR/executed/ and never touches notebooks/. The site is built from
those copies with Sphinx, myst-nb and sphinx-book-theme, which install from PyPI and build
without a network (docs/README.md says why). View it with `python -m http.server -d build/book`.

The front page and every notebook's page say which data, device, network, weights and settings
made its outputs, read from the run's record ($CXR_RUN_DIR/records/<run_id>.json), and a banner
on every page says so loudly when they are the synthetic sample or random weights. The reference
pages of docs/ (settings, results, design, ...) follow the notebooks, under "Reference".
"""

from __future__ import annotations

import argparse
import dataclasses
import posixpath
import pprint
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from notebook_hygiene import NAV_PATTERN, launch_links, numbered_notebooks, repository

from cxr_support.config import load_config
from cxr_support.records import RUN_ID_PATTERN, read_record

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Transfer learning on chest X-rays with PyTorch"
SOURCE_MARKER = ".book-source"  # marks a source folder this tool made, so it may clear it
MODEL_CARD = "model-card"  # the page of the series run's model card, after the notebooks
DOWNLOADS = "_downloads_src"  # notebooks to download, in the source folder but not pages
LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # the target of a Markdown link or image
# the reference pages of docs/, in the book's order; any other docs/*.md page follows them
REFERENCE_ORDER = ["settings", "run-dir", "install", "data", "where-it-runs", "results", "fixes",
                   "design", "code-layout", "README"]

CSS = """\
.bd-header-announcement, .bd-header-announcement::after { background-color: #a4161a; }
.bd-header-announcement { color: #fff; font-size: 1.05em; }
.bd-header-announcement a { color: #fff; text-decoration: underline; }
.cxr-launch { font-size: 0.95em; }
/* code and outputs: the series' lines of up to 100 characters fit the column of a wide window */
.bd-article div.cell pre, .bd-article div.highlight pre { font-size: 0.76em; }
/* tables: headers on one line; a table wider than the column scrolls instead of being cut */
.bd-article table th { white-space: nowrap; vertical-align: bottom; }
.bd-article .pst-scrollable-table-container, .bd-article .table-wrapper { overflow-x: auto; }
"""
# a grey film with two lungs: without an icon, browsers ask the server for a missing favicon.ico
FAVICON = """\
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="2"
fill="#222"/><ellipse cx="5" cy="8" rx="3" ry="5" fill="#ccc"/><ellipse cx="11" cy="8" rx="3"
ry="5" fill="#ccc"/></svg>
"""


@dataclasses.dataclass
class Provenance:
    """What made a book's outputs: one line per fact, and what a reader must be warned about."""

    facts: dict[str, str]
    warnings: list[str]
    run_id: str | None


def main(argv: list[str] | None = None) -> int:
    """Run the series (unless --no-run), then build the site from the executed copies."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true",
                        help="build from the executed copies already in $CXR_RUN_DIR/executed/")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book",
                        help="where the site goes (default: build/book/)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run_dir = load_config().run_dir
    before = set((run_dir / "records").glob("*.json"))
    if not args.no_run:
        print(f"running the series into {run_dir / 'executed'} ...", flush=True)
        code = subprocess.run([sys.executable, str(ROOT / "tools" / "run_series.py")],
                              cwd=ROOT, check=False).returncode
        if code:
            print("the series failed: no book built", file=sys.stderr)
            return code
    executed = [run_dir / "executed" / path.name for path in numbered_notebooks()]
    missing = [path.name for path in executed if not path.exists()]
    if missing:
        print(f"no executed copy of {', '.join(missing)} in {run_dir / 'executed'}: "
              "run without --no-run", file=sys.stderr)
        return 1
    record_path = find_record(run_dir, executed, before)
    provenance = describe_run(read_record(record_path) if record_path else None)
    print(f"outputs from run record: {record_path or 'none found'}")
    pages = {}  # a page whose outputs name a run of their own (05's torchrun) says so
    for path in executed:
        own = named_record(run_dir, path)
        if own is not None and own != record_path:
            pages[path.name] = describe_run(read_record(own))
            print(f"  {path.name}: outputs from run record {own}")
    card = run_dir / "model_cards" / f"{record_path.stem}.md" if record_path else None
    card_text = card.read_text() if card and card.exists() else None  # notebook 06 wrote it
    out = args.out.resolve()
    source = out.parent / f"{out.name}-source"
    write_source(source, executed, provenance, repository(), reference_pages(), pages, card_text)
    code = sphinx_build(source, out)
    if code == 0:
        print(f"book built in {time.perf_counter() - start:.0f} s: {out / 'index.html'}\n"
              f"view it: python -m http.server -d {out}")
    return code


def find_record(run_dir: Path, executed: list[Path], before: set[Path]) -> Path | None:
    """The record of the run behind the executed notebooks.

    The one their outputs name (notebook 02 prints it), else the newest record this run made,
    else the newest of all.
    """
    for path in executed:
        named = named_record(run_dir, path)
        if named is not None:
            return named
    records = sorted((run_dir / "records").glob("*.json"), key=lambda p: p.name)
    new = [path for path in records if path not in before]
    return (new or records or [None])[-1]


def named_record(run_dir: Path, executed: Path) -> Path | None:
    """The first run record in ``run_dir`` that an executed notebook's outputs name, or None."""
    named = re.compile(rf"records[/\\]({RUN_ID_PATTERN})\.json")
    for text in output_texts(nbformat.read(executed, as_version=4)):
        for found in named.finditer(text):
            candidate = run_dir / "records" / f"{found.group(1)}.json"
            if candidate.exists():
                return candidate
    return None


def output_texts(notebook: nbformat.NotebookNode) -> list[str]:
    """The text of every stream and plain-text output of a notebook."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            texts.append("".join(text) if isinstance(text, list) else text)
    return texts


WARNINGS = {  # what a banner says about each kind of output that is not a real result
    "synthetic sample": "on the built-in <strong>synthetic sample</strong> "
                        "(generated images, not real X-rays)",
    "random weights": "with <strong>random weights</strong> (no ImageNet pretraining)",
}


def describe_run(record: dict[str, Any] | None) -> Provenance:
    """Data, device, network, weights and settings of a run, from its record."""
    if record is None:
        return Provenance({}, ["no run record"], None)
    data, env = record.get("dataset", {}), record.get("environment", {})
    model, config = record.get("model", {}), record.get("config", {})
    hyper = record.get("hyperparams", {})
    counts = "; ".join(
        f"{split}: " + ", ".join(f"{n} {name}" for name, n in per_class.items())
        for split, per_class in data.get("counts", {}).items())
    kind = ("the built-in synthetic sample (generated images, not real X-rays)"
            if data.get("synthetic") else f"real X-ray files in {Path(data.get('root', '?')).name}")
    device = env.get("device", "?") + (f" ({env['gpu']})" if env.get("gpu") else "")
    facts = {
        "Data": f"{kind}; images {counts}; file list sha256 "
                f"{str(data.get('file_list_sha256', '?'))[:12]}",
        "Device": f"{device}, {env.get('cpu_count', '?')} CPU cores; Python "
                  f"{env.get('python', '?')}, torch {env.get('torch', '?')}, "
                  f"torchvision {env.get('torchvision', '?')}",
        "Network": f"{model.get('arch', '?')}, {model.get('train_mode', '?')}, "
                   f"{hyper.get('image_size', config.get('image_size', '?'))} px, "
                   f"{hyper.get('precision', '?')}",
        "Weights": str(model.get("weights", "?")),
        "Settings": ", ".join(f"{key}={value}" for key, value in config.items()
                              if key != "run_dir"),
        "Run": f"{record.get('run_id', '?')}, created {record.get('created', '?')}, "
               f"git commit {str(record.get('git_commit'))[:12]}",
    }
    warnings = [name for name, flagged in (("synthetic sample", data.get("synthetic", True)),
                                           ("random weights", not model.get("pretrained")))
                if flagged]
    return Provenance(facts, warnings, record.get("run_id"))


def banner_html(provenance: Provenance) -> str:
    """The loud line on top of every page, or '' when the outputs are real results."""
    if provenance.run_id is None:
        return ("UNKNOWN OUTPUTS: no run record was found, so which data, device, network and "
                "weights made the outputs in this book is unknown.")
    if not provenance.warnings:
        return ""
    return ("NOT REAL RESULTS: the outputs in this book were made "
            + " and ".join(WARNINGS[w] for w in provenance.warnings)
            + ". They show what the code does, not how well a model detects pneumonia.")


def provenance_markdown(provenance: Provenance, what: str) -> str:
    """A box that says where the outputs of ``what`` (this page, this book) come from."""
    loud, _, sentence = re.sub(r"<[^>]+>", "", banner_html(provenance)).partition(": ")
    title = (f"{loud.capitalize()}: {', '.join(provenance.warnings)}" if loud
             else f"The outputs of {what}: real data, ImageNet weights")
    lines = [f":::{{admonition}} {escape_markdown(title)}",
             f":class: {'danger' if loud else 'note'} cxr-provenance", ""]
    if sentence:
        lines += [escape_markdown(sentence[:1].upper() + sentence[1:]), ""]
    lines += [f"- **{name}:** {escape_markdown(value)}" for name, value in provenance.facts.items()]
    lines += ["", "Made by `python tools/build_book.py`, from the run's record "
                  "(`$CXR_RUN_DIR/records/<run_id>.json`).", ":::", ""]
    return "\n".join(lines)


def escape_markdown(text: str) -> str:
    """Text that Markdown shows as written: punctuation that could mean markup, escaped."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|$~])", r"\\\1", text)


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub and MyST make it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def readme_overview(readme: str) -> str:
    """The README's overview: its title, introduction and '## The series' section."""
    series = re.search(r"^## The series\b", readme, re.MULTILINE)
    start = series.end() if series else 0
    after = re.search(r"^## ", readme[start:], re.MULTILINE)
    return readme[: start + after.start()] if after else readme


def reference_pages(root: Path = ROOT) -> list[str]:
    """The repository paths of docs/'s pages, in the book's order."""
    names = [path.stem for path in sorted((root / "docs").glob("*.md"))]
    ordered = [n for n in REFERENCE_ORDER if n in names] + [n for n in names
                                                             if n not in REFERENCE_ORDER]
    return [f"docs/{name}.md" for name in ordered]


def book_path(path: str) -> str:
    """Where a repository file's page goes in the book (index.md, 01_...ipynb, docs/...md).

    README.md is the front page, the notebooks sit beside it, docs/ keeps its folder.
    """
    if path == "README.md":
        return "index.md"
    return posixpath.basename(path) if path.startswith("notebooks/") else path


def rewrite_links(text: str, here: str, repo: str, front_anchors: set[str],
                  pages: set[str]) -> str:
    """Point a Markdown text's links at the book's pages, or at the repository on GitHub.

    ``here`` is the text's path in the repository (README.md, notebooks/01_...ipynb,
    docs/settings.md); the front page's anchors and the pages' repository paths (notebooks and
    docs/ pages) say what the book has. Links between pages become relative to ``here``'s place
    in the book.
    """
    folder = posixpath.dirname(book_path(here))

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:
            return match.group(0)
        path, _, anchor = target.partition("#")
        suffix = f"#{anchor}" if anchor else ""
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(here), path or here))
        if resolved == "README.md":
            in_book = not anchor or anchor in front_anchors
        else:
            in_book = resolved in pages or resolved.startswith("images/")  # images are copied
        if not path and (here != "README.md" or in_book):
            new = target  # an anchor on the same page
        elif in_book:
            new = posixpath.relpath(book_path(resolved), folder or ".") + suffix
        else:
            new = f"{repo}/blob/main/{resolved}{suffix}"
        return match.group(1) + new + match.group(3)

    return LINK.sub(fix, text)


def without_launch_lines(source: str) -> str:
    """A navigation cell without its Colab/Kaggle line: the page's launch bar replaces it."""
    return "\n".join(line for line in source.splitlines()
                     if "colab.research.google.com" not in line).replace("\n\n\n", "\n\n")


def book_notebook(executed: Path, repo: str, provenance: Provenance, front_anchors: set[str],
                  pages: set[str]) -> nbformat.NotebookNode:
    """An executed notebook as a page: links rewritten, launch bar and provenance on top."""
    notebook = nbformat.read(executed, as_version=4)
    notebook.metadata.pop("widgets", None)  # the widgets' scripts would come from a CDN
    here = f"notebooks/{executed.name}"
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_links(cell.source, here, repo, front_anchors, pages)
        elif cell.cell_type == "code":
            cell.outputs = merged_streams(cell.outputs)
    first = notebook.cells[0] if notebook.cells else None
    top = 0
    if first is not None and first.cell_type == "markdown" and NAV_PATTERN.search(first.source):
        first.source = without_launch_lines(first.source)
        top = 1
    launch = (f"{launch_links(executed.name, repo)} | "
              f"{{download}}`Download the notebook <{DOWNLOADS}/notebooks/{executed.name}>` | "
              f"{{download}}`with these outputs <{DOWNLOADS}/executed/{executed.name}>`")
    header = (f":::{{rst-class}} cxr-launch\n{launch}\n:::\n\n"
              + provenance_markdown(provenance, "this page"))
    notebook.cells.insert(top, nbformat.v4.new_markdown_cell(header))
    return notebook


def merged_streams(outputs: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    """Consecutive chunks of one stream as one output: a cell that printed as it ran (notebook
    05's torchrun launch) shows one box of text, not one box per chunk."""
    merged: list[nbformat.NotebookNode] = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (output.get("output_type") == "stream" and previous is not None
                and previous.get("output_type") == "stream"
                and previous.get("name") == output.get("name")):
            previous["text"] = previous["text"] + output["text"]
        else:
            merged.append(output)
    return merged


def front_page(readme: str, repo: str, provenance: Provenance, pages: list[str],
               reference: tuple[str, ...] | list[str] = (), card: bool = False) -> str:
    """The README's overview, the run's provenance and the tables of contents: the series, then
    the reference pages of docs/."""
    overview = readme_overview(readme)
    anchors = front_page_anchors(readme)
    overview = rewrite_links(overview, "README.md", repo, anchors, {*pages, *reference})
    toctree = "\n".join([*(posixpath.basename(p).removesuffix(".ipynb") for p in pages),
                         *([MODEL_CARD] if card else [])])
    text = (f"{overview.rstrip()}\n\nSetting up, running, the tests, Colab and Kaggle and getting "
            f"the data are in the [README on GitHub]({repo}/blob/main/README.md)"
            + ("; settings, results and the other reference pages follow the notebooks here"
               if reference else "") + ".\n\n"
            f"## About the outputs in this book\n\n{provenance_markdown(provenance, 'this book')}\n"
            f"```{{toctree}}\n:caption: The series\n:hidden:\n\n{toctree}\n```\n")
    if reference:
        listed = "\n".join(book_path(p).removesuffix(".md") for p in reference)
        text += f"\n```{{toctree}}\n:caption: Reference\n:hidden:\n\n{listed}\n```\n"
    return text


def front_page_anchors(readme: str) -> set[str]:
    """The anchors of the headings on the front page."""
    overview = readme_overview(readme)
    headings = re.findall(r"^#{1,6} +(.+)$", overview, re.MULTILINE)
    return {slug(h) for h in headings} | {"about-the-outputs-in-this-book"}


def shown_images(text: str, folder: str = "") -> set[str]:
    """The images/ files a Markdown text in ``folder`` of the book links to."""
    targets = (posixpath.normpath(posixpath.join(folder, m.group(2))) for m in LINK.finditer(text))
    return {t for t in targets if t.startswith("images/")}


def write_source(source: Path, executed: list[Path], provenance: Provenance, repo: str,
                 reference: list[str] | None = None,
                 pages_provenance: dict[str, Provenance] | None = None,
                 card: str | None = None) -> None:
    """The Sphinx source folder: conf.py, the front page, the pages and what they link to.

    ``reference``: the repository paths of the docs/ pages to add after the notebooks.
    ``pages_provenance``: {notebook name: its run} for a page whose outputs come from a run of
    their own (notebook 05's); the others show ``provenance``, the series' run. ``card``: the
    series run's model card (notebook 06), a page after the notebooks.
    """
    pages_provenance = pages_provenance or {}
    clear(source, SOURCE_MARKER)
    source.mkdir(parents=True)
    (source / SOURCE_MARKER).write_text("made by tools/build_book.py; cleared on each build\n")
    readme = (ROOT / "README.md").read_text()
    reference = list(reference or [])
    pages = [f"notebooks/{path.name}" for path in executed]
    in_book = {*pages, *reference}
    texts = [(front_page(readme, repo, provenance, pages, reference, card is not None), "")]
    if card is not None:
        (source / f"{MODEL_CARD}.md").write_text(card)
    (source / "index.md").write_text(texts[0][0])
    anchors = front_page_anchors(readme)
    for path in executed:
        page = book_notebook(path, repo, pages_provenance.get(path.name, provenance), anchors,
                             in_book)
        nbformat.write(page, source / path.name)
        texts += [(cell.source, "") for cell in page.cells if cell.cell_type == "markdown"]
        for folder, original in (("notebooks", ROOT / "notebooks" / path.name),
                                 ("executed", path)):
            (source / DOWNLOADS / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(original, source / DOWNLOADS / folder / path.name)
    for doc in reference:
        text = rewrite_links((ROOT / doc).read_text(), doc, repo, anchors, in_book)
        (source / book_path(doc)).parent.mkdir(parents=True, exist_ok=True)
        (source / book_path(doc)).write_text(text)
        texts.append((text, posixpath.dirname(book_path(doc))))
    for image in set().union(*(shown_images(text, folder) for text, folder in texts)):
        if (ROOT / image).is_file():
            (source / image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / image, source / image)
    (source / "_static").mkdir()
    (source / "_static" / "book.css").write_text(CSS)
    (source / "_static" / "favicon.svg").write_text(FAVICON)
    write_conf(source / "conf.py", sphinx_settings(repo, banner_html(provenance)))


def sphinx_settings(repo: str, banner: str) -> dict[str, Any]:
    """Sphinx's configuration: no step fetches anything, at build time or when a page is read."""
    return {
        "project": TITLE,
        "author": f"the {repo.rsplit('/', 1)[-1]} contributors",
        "html_title": TITLE,
        "language": "en",
        "extensions": ["myst_nb", "sphinx-mathjax-offline", "sphinx.ext.githubpages"],
        "exclude_patterns": [DOWNLOADS, "_build", "**.ipynb_checkpoints", SOURCE_MARKER],
        "myst_enable_extensions": ["colon_fence", "dollarmath"],
        "myst_heading_anchors": 3,
        "nb_execution_mode": "off",  # the outputs come from the declared run, as they are
        "nb_ipywidgets_js": {},  # no RequireJS or widget manager from a CDN
        "nb_mime_priority_overrides": [  # widgets: their text, as in the executed notebook
            ("html", "application/vnd.jupyter.widget-view+json", None),
        ],
        "html_theme": "sphinx_book_theme",
        "html_theme_options": {
            "repository_url": repo,
            "repository_branch": "main",
            "use_repository_button": True,
            "use_download_button": False,  # the launch bar on each page has the downloads
            "home_page_in_toc": True,
            "show_navbar_depth": 1,
            "announcement": banner,
        },
        "html_context": {"default_mode": "auto"},  # light or dark, as the reader's system says
        "html_favicon": "_static/favicon.svg",
        "html_static_path": ["_static"],
        "html_css_files": ["book.css"],
        "html_copy_source": False,
        "html_show_sourcelink": False,
        "html_last_updated_fmt": None,
    }


def write_conf(path: Path, settings: dict[str, Any]) -> None:
    """Write Sphinx settings as a conf.py (so `sphinx-build` can rebuild the source by hand)."""
    lines = ['"""Sphinx settings of the book, written by tools/build_book.py."""', ""]
    lines += [f"{name} = {pprint.pformat(value, width=100, sort_dicts=False)}"
              for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")


def sphinx_build(source: Path, out: Path) -> int:
    """Build the HTML site from the source folder into ``out`` (replacing an earlier build)."""
    from sphinx.cmd.build import build_main

    clear(out, ".buildinfo")
    return build_main(["-b", "html", "-E", "-q", "-d",
                       str(source.parent / f"{source.name}-doctrees"), str(source), str(out)])


def clear(folder: Path, marker: str) -> None:
    """Remove a folder this tool made earlier (it holds ``marker``); refuse any other one."""
    if not folder.exists():
        return
    if any(folder.iterdir()) and not (folder / marker).exists():
        raise SystemExit(f"{folder} exists and was not made by tools/build_book.py: "
                         "choose another --out or remove it")
    shutil.rmtree(folder)


if __name__ == "__main__":
    sys.exit(main())
