"""The book: tools/build_book.py in quick mode on the synthetic sample, read in headless Chromium.

Needs the book extra (pip install -e ".[book]") and Chromium at /usr/bin/chromium, and is
skipped without them; with REQUIRE_BOOK_TESTS=1 (CI's book step) a missing piece fails instead.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from helpers import ROOT

REQUIRED = os.environ.get("REQUIRE_BOOK_TESTS") == "1"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# quick mode on the synthetic sample, small enough for CI; no ImageNet weights, so no download
SETTINGS = {"CXR_QUICK": "1", "CXR_EPOCHS": "2", "CXR_IMAGE_SIZE": "32", "CXR_MAX_IMAGES": "64",
            "CXR_PRETRAINED": "0", "MPLBACKEND": "Agg"}
NOTEBOOKS = [path.name for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
PAGES = [name.removesuffix(".ipynb") + ".html" for name in NOTEBOOKS]
CARD = ["model-card.html"]  # the series run's model card, written by notebook 06
sys.path.insert(0, str(ROOT / "tools"))  # build_book imports notebook_hygiene beside it
# the reference pages of docs/, after the notebooks, in the book's order
DOCS = [path.removesuffix(".md") + ".html"
        for path in importlib.import_module("build_book").reference_pages()]


def need(module: str) -> Any:
    """Import a module of the book extra; skip the tests without it (fail when required)."""
    if REQUIRED:
        return importlib.import_module(module)
    return pytest.importorskip(
        module, reason=f"the book extra is not installed (no {module}): pip install -e '.[book]'")


need("myst_nb")
need("sphinx_book_theme")
sync_api = need("playwright.sync_api")
if not CHROMIUM.exists():
    if REQUIRED:
        raise RuntimeError(f"REQUIRE_BOOK_TESTS=1 but there is no {CHROMIUM}")
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def repository() -> str:
    """The repository's address, read here on its own from pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1).rstrip("/")


# A book built beforehand, read instead of building the quick one: a folder holding site/ (the
# --out of tools/build_book.py) and run/ (its CXR_RUN_DIR), e.g. the real-data build of the book
# workflow's steps (docs/README.md, "Publishing").
PREBUILT = os.environ.get("CXR_BOOK_UNDER_TEST")


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> dict[str, Path]:
    """The book built by `python tools/build_book.py` into a tmp folder, with its run dir."""
    if PREBUILT:
        return {"site": Path(PREBUILT) / "site", "run": Path(PREBUILT) / "run"}
    tmp = tmp_path_factory.mktemp("book")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(SETTINGS, CXR_RUN_DIR=str(tmp / "run"))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "tools/build_book.py", "--out", str(tmp / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"build_book.py failed:\n{done.stdout[-4000:]}\n{done.stderr}"
    print(f"book built in {time.perf_counter() - start:.0f} s")
    return {"site": tmp / "site", "run": tmp / "run"}


@pytest.fixture(scope="module")
def base_url(book) -> Iterator[str]:
    """The built site, served on 127.0.0.1."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=str(book["site"])))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright."""
    playwright = sync_api.sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


PAGE_FACTS = """() => ({
  banner: document.querySelector('.bd-header-announcement')?.innerText ?? '',
  provenance: document.querySelector('.cxr-provenance')?.innerText ?? '',
  images: [...document.querySelectorAll('.cell_output img')]
    .map(i => [i.naturalWidth, i.naturalHeight]),
  tables: document.querySelectorAll('.cell_output table').length,
  links: [...document.querySelectorAll('a[href]')]
    .map(a => ({href: a.href, text: a.innerText.trim(), download: a.hasAttribute('download')})),
  sidebar: [...document.querySelectorAll('nav.bd-docs-nav a')]
    .map(a => new URL(a.href).pathname),
  next: document.querySelector('a.right-next')?.href ?? null,
  math: document.querySelectorAll('.math').length,
  typeset: document.querySelectorAll('mjx-container').length,
})"""


def visit(browser: Any, url: str, wait_for: str | None = None) -> dict[str, Any]:
    """Open a page; its facts, its console errors and failed loads, and requests to other hosts."""
    page = browser.new_page()
    problems: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}")
            if r.status >= 400 else None)

    def only_here(route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    try:
        page.goto(url, wait_until="networkidle")
        # MathJax typesets after the load event
        page.wait_for_function("document.querySelectorAll('.math').length === 0"
                               " || document.querySelectorAll('mjx-container').length > 0")
        if wait_for:
            page.wait_for_selector(wait_for, timeout=30_000)
        facts = page.evaluate(PAGE_FACTS)
    finally:
        page.close()
    return {**facts, "problems": problems, "outside": outside}


@pytest.fixture(scope="module")
def pages(book, base_url, browser) -> dict[str, dict[str, Any]]:
    """The facts of every page of the site, by file name."""
    site = book["site"]
    names = sorted(p.relative_to(site).as_posix()
                   for p in [*site.glob("*.html"), *site.glob("docs/*.html")])
    return {name: visit(browser, base_url + name) for name in names}


def site_file(book: dict[str, Path], base_url: str, url: str) -> Path:
    """The file of the site that a URL of the local server names."""
    path = unquote(urlsplit(url).path).lstrip("/") or "index.html"
    return book["site"] / (path + "index.html" if path.endswith("/") else path)


def executed_outputs(book: dict[str, Path], name: str) -> tuple[int, int]:
    """How many figures (PNG) and HTML tables the executed copy of notebook ``name`` holds."""
    notebook = nbformat.read(book["run"] / "executed" / name, as_version=4)
    outputs = [o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", [])]
    return (sum("image/png" in data for data in outputs),
            sum("<table" in "".join(data.get("text/html", "")) for data in outputs))


def test_the_site_has_a_front_page_a_page_per_notebook_and_search(pages):
    assert set(pages) == {"index.html", *PAGES, *CARD, *DOCS, "search.html", "genindex.html"}


def test_every_page_loads_without_errors_or_requests_to_other_hosts(pages):
    for name, facts in pages.items():
        assert facts["problems"] == [], name
        assert facts["outside"] == [], name


def test_notebook_pages_show_their_figures_and_tables(book, pages):
    for notebook, page in zip(NOTEBOOKS, PAGES):
        figures, tables = executed_outputs(book, notebook)
        assert figures > 0 and tables > 0, f"{notebook}: the run made no figure or no table"
        assert len(pages[page]["images"]) == figures, page
        assert all(w > 0 and h > 0 for w, h in pages[page]["images"]), f"{page}: empty figure"
        assert pages[page]["tables"] == tables, page


def test_math_is_typeset_without_a_network(pages):
    with_math = [facts for facts in pages.values() if facts["math"]]
    assert with_math, "no page has math any more: this test checks nothing"
    assert all(facts["typeset"] > 0 for facts in with_math)


def test_search_for_patient_finds_notebook_01(base_url, browser):
    facts = visit(browser, base_url + "search.html?q=patient", wait_for="#search-results li a")
    found = [urlsplit(link["href"]).path.lstrip("/") for link in facts["links"]
             if "/search.html" not in link["href"]]
    assert "01_data_preview.html" in found
    assert facts["problems"] == [] and facts["outside"] == []


def test_every_link_inside_the_site_points_at_an_existing_page_and_anchor(book, base_url, pages):
    for name, facts in pages.items():
        for link in facts["links"]:
            if not link["href"].startswith(base_url):
                continue
            target = site_file(book, base_url, link["href"])
            assert target.is_file(), f"{name}: {link['text']!r} -> {link['href']}"
            fragment = urlsplit(link["href"]).fragment
            if fragment and target.suffix == ".html":
                assert f'id="{fragment}"' in target.read_text(), f"{name}: {link['href']}"


def test_navigation_follows_the_series(base_url, pages):
    for name in ["index.html", *PAGES, *CARD, *DOCS]:
        sidebar = [path.lstrip("/") for path in pages[name]["sidebar"]]
        assert sidebar == ["index.html", *PAGES, *CARD, *DOCS], name
    chain = ["index.html", *PAGES, *CARD, *DOCS]
    for here, there in zip(chain, chain[1:]):
        assert pages[here]["next"] == base_url + there
    nav = [link["href"] for link in pages[PAGES[0]]["links"] if link["text"] == "Contents"]
    assert nav and all(href == base_url + "index.html#the-series" for href in nav)


def test_launch_links_open_the_right_notebook_and_downloads_are_the_notebooks(book, base_url,
                                                                            pages):
    repo = repository()
    for notebook, page in zip(NOTEBOOKS, PAGES):
        source = f"{repo.removeprefix('https://github.com/')}/blob/main/notebooks/{notebook}"
        colab = f"https://colab.research.google.com/github/{source}"
        kaggle = f"https://kaggle.com/kernels/welcome?src=https://github.com/{source}"
        links = pages[page]["links"]
        launch = [link["href"] for link in links if link["text"].startswith("Open in")]
        assert colab in launch and kaggle in launch, page
        assert set(launch) == {colab, kaggle}, f"{page} opens another notebook"
        downloads = [site_file(book, base_url, link["href"]) for link in links
                     if link["download"]]
        assert [d.name for d in downloads] == [notebook, notebook], page
        committed, executed = (path.read_bytes() for path in downloads)
        assert committed == (ROOT / "notebooks" / notebook).read_bytes()
        assert executed == (book["run"] / "executed" / notebook).read_bytes()
    index_launch = {link["href"] for link in pages["index.html"]["links"]
                    if link["text"] == "Open in Colab"}
    assert {f"https://colab.research.google.com/github/{repo.removeprefix('https://github.com/')}"
            f"/blob/main/notebooks/{n}" for n in NOTEBOOKS} <= index_launch


def run_of(box: str) -> str:
    """The run id a page's provenance box names."""
    return re.search(r"Run: (\S+?),", box).group(1)


def test_each_notebook_page_names_the_run_that_made_its_outputs(pages):
    """Notebook 05's outputs come from its own two-process run; every other page names the
    series' run (notebook 02's, which 03 and 04 read)."""
    runs = {name: run_of(pages[name]["provenance"]) for name in ["index.html", *PAGES]}
    series = {runs[name] for name in runs if not name.startswith("05_")}
    assert len(series) == 1, runs
    (ddp,) = [name for name in PAGES if name.startswith("05_")]
    assert runs[ddp] not in series, "notebook 05's page names another run than its own"


@pytest.mark.skipif(bool(PREBUILT), reason="a prebuilt book: see the real book's test")
def test_every_page_says_loudly_that_its_outputs_are_synthetic(pages):
    for name, facts in pages.items():
        assert "NOT REAL RESULTS" in facts["banner"], name
        assert "synthetic sample" in facts["banner"] and "random weights" in facts["banner"]
    for name in ["index.html", *PAGES]:
        box = pages[name]["provenance"]
        for fact in ("Data:", "Device:", "Network:", "Weights:", "Settings:", "Run:"):
            assert fact in box, f"{name}: no {fact}"
        assert "synthetic sample" in box and "random init" in box, name
        assert "epochs=2" in box and "image_size=32" in box and "max_images=64" in box, name


@pytest.mark.skipif(not PREBUILT, reason="needs a real-data book (CXR_BOOK_UNDER_TEST)")
def test_a_real_data_book_has_no_banner_and_says_which_data_and_weights(pages):
    for name, facts in pages.items():
        assert facts["banner"] == "", name
    for name in ["index.html", *PAGES]:
        box = pages[name]["provenance"]
        assert "real data, ImageNet weights" in box and "real X-ray files" in box, name
        assert "synthetic" not in box and "random init" not in box, name


def test_no_page_loads_scripts_styles_or_images_from_other_hosts(book):
    outside = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//",
                         re.IGNORECASE)
    for path in book["site"].rglob("*.html"):
        assert not outside.search(path.read_text()), path
    for path in book["site"].rglob("*.css"):
        assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", path.read_text()), path


LAYOUT = """() => ({
  clipped: [...document.querySelectorAll('.bd-article div.cell pre')]
    .filter(pre => Math.max(...pre.textContent.split('\\n').map(line => line.length)) <= 100)
    .filter(pre => pre.scrollWidth > pre.clientWidth + 1).map(pre => pre.textContent.slice(0, 60)),
  launch: [...document.querySelectorAll('.bd-article div.cell')]
    .filter(cell => cell.innerText.includes('torchrun exited with'))
    .map(cell => cell.querySelectorAll('.cell_output .output.stream').length),
  tables: [...document.querySelectorAll('.bd-article table')].map(table => ({
    header: table.querySelector('thead')?.getBoundingClientRect().height ?? 0,
    line: parseFloat(getComputedStyle(table).lineHeight) || 24,
    scrolls: getComputedStyle(table.parentElement).overflowX,
    wider: table.scrollWidth > table.parentElement.clientWidth})),
})"""


def test_code_fits_streams_are_one_box_and_tables_scroll(base_url, browser):
    """In a window 1,400 px wide, code and output lines within the project's 100 characters show
    whole; notebook 05's torchrun launch, printed as it ran, is one box of text; the front page's
    tables have one-line headers and scroll sideways when wider than the column."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        facts = {}
        for name in [*PAGES, "index.html"]:
            page.goto(base_url + name)
            facts[name] = page.evaluate(LAYOUT)
    finally:
        page.close()
    for name in PAGES:
        assert facts[name]["clipped"] == [], name
    assert facts["05_several_gpus.html"]["launch"] == [1]  # its chunks, one box
    for table in facts["index.html"]["tables"]:
        assert table["header"] < 2.5 * table["line"], table
        assert table["scrolls"] in ("auto", "scroll") or not table["wider"], table
