"""Every relative link in the project's Markdown points at a file, and every anchor at a heading.

The pages: README.md, CONTRIBUTING.md, docs/*.md, benchmarks/README.md, and the Markdown cells
of the notebooks (read here, never changed). A link's `#anchor` must name a heading of its
target (a Markdown file or a notebook) as GitHub makes anchors: the heading's text in lower
case, spaces turned into '-', punctuation other than '-' and '_' dropped, and '-1', '-2', ...
added to repeats. Links to other hosts are not followed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted({ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "README.md",
                *(ROOT / "docs").glob("*.md"), *(ROOT / "notebooks").glob("*.ipynb")})

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
# [text](target) and ![alt](target), with an optional <...> around the target and a "title"
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
EXPLICIT_ANCHOR = re.compile(r"<a\b[^>]*\b(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)


def markdown_of(path: Path) -> str:
    """A page's Markdown: the file itself, or a notebook's Markdown cells one after another."""
    if path.suffix == ".ipynb":
        notebook = nbformat.read(path, as_version=4)
        return "\n\n".join(cell.source for cell in notebook.cells
                           if cell.cell_type == "markdown")
    return path.read_text(encoding="utf-8")


def without_code(text: str) -> str:
    """Markdown without fenced code blocks, HTML comments and code spans (no links there)."""
    return CODE_SPAN.sub("", COMMENT.sub("", FENCE.sub("", text)))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading, from its text as shown (without the markup)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags show nothing
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a Markdown text: its headings (repeats numbered) and explicit anchors."""
    text = COMMENT.sub("", FENCE.sub("", text))
    found: set[str] = set(EXPLICIT_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for match in HEADING.finditer(text):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str) -> list[str]:
    """The targets of a Markdown text's links and images, in order."""
    text = without_code(text)
    return [*LINK.findall(text), *HTML_LINK.findall(text)]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of a page whose file or heading does not exist, one line each."""
    text = markdown_of(page)
    problems = []
    for target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
            continue  # https:, mailto: ...: another host
        path, _, anchor = unquote(target).partition("#")
        if path.startswith("/"):
            problems.append(f"{target}: a link from the root breaks on GitHub and in the book")
            continue
        file = (page.parent / path).resolve() if path else page
        if not file.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the project")
            continue
        if not file.exists():
            problems.append(f"{target}: no such file ({file.relative_to(root.resolve())})")
            continue
        if (anchor and file.suffix in (".md", ".ipynb")
                and anchor not in anchors(markdown_of(file))):
            problems.append(f"{target}: no heading with the anchor #{anchor} in "
                            f"{file.relative_to(root.resolve())}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_pages_links_are_found():
    readme = links(markdown_of(ROOT / "README.md"))
    assert "docs/settings.md" in readme and "images/synthetic_sample.png" in readme
    assert "#colab-and-kaggle" in readme


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Set up: it's `quick`!\n\n## A page\n")
    page = tmp_path / "README.md"
    page.write_text("# Top\n\n[ok](docs/a.md#set-up-its-quick) [ok](docs/a.md#a-page-1) "
                    "[ok](#top) [web](https://example.org/x#y) `[code](nowhere.md)`\n"
                    "```\n[fenced](nowhere.md)\n```\n"
                    "[gone](docs/b.md) [no heading](docs/a.md#settings) [here](#nothing)\n")
    found = broken_links(page, root=tmp_path)
    assert [line.split(":")[0] for line in found] == ["docs/b.md", "docs/a.md#settings",
                                                     "#nothing"]


def test_anchors_follow_github_s_rule():
    assert github_slug("Colab and Kaggle") == "colab-and-kaggle"
    assert github_slug("`ddp_epoch.py`: one epoch with 1 and with 2 processes") == (
        "ddp_epochpy-one-epoch-with-1-and-with-2-processes")
    assert github_slug("On a T4 (Colab, Kaggle)") == "on-a-t4-colab-kaggle"
    assert github_slug("Why Sphinx, myst-nb and sphinx-book-theme") == (
        "why-sphinx-myst-nb-and-sphinx-book-theme")
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
