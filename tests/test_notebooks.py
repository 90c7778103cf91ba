"""The committed notebooks: clean, navigable, and shaped like lessons."""

import ast
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from helpers import only_defines

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "notebook_hygiene", ROOT / "tools" / "notebook_hygiene.py"
)
hygiene = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hygiene)

NOTEBOOKS = hygiene.numbered_notebooks()


def test_the_series_has_six_numbered_notebooks():
    """01 to 06 exist, numbered in order."""
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


def test_notebooks_are_clean_and_links_fresh():
    """No outputs, no execution counts, navigation links match the notebook list.

    CI runs the same check.
    """
    assert hygiene.problems() == []


def test_hygiene_detects_and_fixes_stale_links_and_outputs(tmp_path):
    """A renamed neighbour makes links stale and a stored output is reported.

    Fixing makes both go away.
    """
    for path in NOTEBOOKS[:2]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    first = tmp_path / NOTEBOOKS[0].name
    notebook = nbformat.read(first, as_version=4)
    code = next(c for c in notebook.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="hello")]
    code.execution_count = 3
    nbformat.write(notebook, first)
    (tmp_path / NOTEBOOKS[1].name).rename(tmp_path / "02_renamed.ipynb")
    found = hygiene.problems(tmp_path, fix=True)
    assert any("stale navigation" in line for line in found)
    assert any("outputs" in line for line in found)
    assert hygiene.problems(tmp_path) == []
    assert "02_renamed.ipynb" in nbformat.read(first, as_version=4).cells[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_reads_like_a_lesson(path):
    """Title, learning goals, prerequisites, a parameters cell, a summary and 3 to 5 exercises."""
    notebook = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert re.search(r"^# \d\. ", markdown, re.MULTILINE)
    assert "After this notebook you will be able to" in markdown
    assert "**You need**" in markdown
    assert "## Summary" in markdown
    exercises = markdown.split("## Exercises", 1)[1]
    assert 3 <= len(re.findall(r"^\d\. ", exercises, re.MULTILINE)) <= 5
    assert any(
        "parameters" in c.metadata.get("tags", []) for c in notebook.cells if c.cell_type == "code"
    )


EXERCISE_TAGS = ("**[offline]**", "**[ImageNet weights]**", "**[GPU]**", "**[internet]**")
EXERCISE = re.compile(r"^\d\. ", re.MULTILINE)  # a numbered exercise starts a line
SOLUTION = "<details><summary>Solution</summary>"


def exercise_cells(notebook: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """The '## Exercises' cell (heading and tags legend) and the Markdown cells after it."""
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    starts = [i for i, source in enumerate(markdown) if source.startswith("## Exercises")]
    assert len(starts) == 1, "no Markdown cell of its own starts with '## Exercises'"
    start = starts[0]
    return markdown[start], markdown[start + 1:]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_exercise_is_its_own_cell(path):
    """The summary, the exercises' heading with its legend, then one cell per exercise.

    Each exercise's cell holds exactly one numbered exercise, with its folded solution;
    the navigation cell comes last.
    """
    notebook = nbformat.read(path, as_version=4)
    markdown = [c.source for c in notebook.cells if c.cell_type == "markdown"]
    summary = [source for source in markdown if "## Summary" in source]
    assert len(summary) == 1 and summary[0].startswith("## Summary"), "no Summary cell of its own"
    assert "## Exercises" not in summary[0], "the Summary cell also holds the exercises"
    legend, after = exercise_cells(notebook)
    assert not EXERCISE.search(legend), "the '## Exercises' cell also holds an exercise"
    *exercises, last = after
    assert notebook.cells[-1].cell_type == "markdown" and last == notebook.cells[-1].source
    assert hygiene.NAV_PATTERN.search(last), "the navigation is not the last cell"
    assert not EXERCISE.search(last), "the navigation cell holds an exercise"
    for source in after:  # lesson prose may hold numbered lists; exercises come after the legend
        assert len(EXERCISE.findall(source)) <= 1, f"one cell holds exercises {source[:40]!r}..."
    for number, source in enumerate(exercises, 1):
        assert source.startswith(f"{number}. "), f"cell {number} after the legend: {source[:40]!r}"
        assert source.count(SOLUTION) == 1 and source.rstrip().endswith("</details>"), (
            f"exercise {number}: its solution is not folded in its own cell"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_says_what_it_needs_and_has_a_worked_solution(path):
    """Each exercise starts with what it needs (offline, weights, GPU, internet).

    It gives an offline variant when it needs more, and holds a collapsed solution.
    """
    legend, after = exercise_cells(nbformat.read(path, as_version=4))
    items = [EXERCISE.split(source, 1)[1] for source in after if EXERCISE.match(source)]
    assert items, "no exercises"
    # a legend of the tags
    assert all(tag.strip("*") in legend.split("\n\n")[1] for tag in EXERCISE_TAGS)
    for number, item in enumerate(items, 1):
        assert item.startswith(EXERCISE_TAGS), (
            f"exercise {number} does not start with what it needs"
        )
        assert item.count(SOLUTION) == 1 and "</details>" in item, (
            f"exercise {number}: no solution"
        )
        if not item.startswith("**[offline]**"):
            assert "*Offline variant:*" in item, (
                f"exercise {number} needs weights, a GPU or internet but offers no offline variant"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_stay_short(path):
    """A definition cell (saved or not) stays within 40 lines, an import cell 45, the setup cell 30,
    any other cell 20."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        imports_only = all(
            not line.strip() or line.startswith(("from ", "import ", "%", " ", ")"))
            for line in lines
        )
        try:
            body = ast.parse(cell.source).body
        except SyntaxError:  # IPython syntax: not a definition cell
            body = []
        defines = bool(body) and all(only_defines(node) for node in body) and not imports_only
        limit = 40 if defines else 45 if imports_only else 20
        if cell.source.startswith(hygiene.SETUP_MARK):
            limit = 30  # generated, the same in every notebook, not a lesson: fetch and route
        assert len(lines) <= limit, (
            f"a cell of {len(lines)} lines (limit {limit}) starting {lines[0]!r}"
        )


def test_launch_links_and_setup_cells_come_from_the_one_repository_setting(tmp_path):
    """Colab and Kaggle links (navigation, README) and each notebook's setup cell use pyproject's
    Repository; a README whose links are stale, or a notebook without the setup cell, is reported
    and fixed."""
    repo = hygiene.repository()
    assert repo.startswith("https://github.com/")
    name = NOTEBOOKS[0].name
    links = hygiene.launch_links(name, repo)
    path = repo.removeprefix("https://github.com/")
    assert f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{name}" in links
    assert f"kaggle.com/kernels/welcome?src={repo}/blob/main/notebooks/{name}" in links
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        first_code = next(c for c in notebook.cells if c.cell_type == "code")
        assert first_code.source == hygiene.setup_cell(repo), path.name
        assert hygiene.launch_links(path.name, repo) in notebook.cells[0].source, path.name
    for source in NOTEBOOKS[:2]:
        (tmp_path / source.name).write_bytes(source.read_bytes())
    notebook = nbformat.read(tmp_path / NOTEBOOKS[0].name, as_version=4)
    notebook.cells = [c for c in notebook.cells if not c.source.startswith(hygiene.SETUP_MARK)]
    nbformat.write(notebook, tmp_path / NOTEBOOKS[0].name)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- launch -->\n- old link\n<!-- /launch -->\n")
    found = hygiene.problems(tmp_path, fix=True, readme=readme)
    assert "README.md: stale launch links" in found
    assert any("no setup cell" in line for line in found)
    assert hygiene.problems(tmp_path, readme=readme) == []
    assert hygiene.launch_links(NOTEBOOKS[1].name, repo) in readme.read_text()
