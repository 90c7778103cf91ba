"""The notebooks show the code they teach: every helper of ``cxr_utils.py`` is defined in a lesson cell.

Cells that start with ``#@save`` define a lesson's helpers (d2l's convention). Their code
must be the code of ``cxr_utils.py`` (docstrings may differ), every definition of the module
must come from exactly one such cell, and each helper's docstring names the notebook and the
section that defines it. To change a helper: edit it in its lesson, copy it to the module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SAVE_MARK = "#@save"


def without_docstrings(node: ast.AST) -> ast.AST:
    """A copy of ``node`` with the docstring of every function and class inside it removed."""
    node = ast.parse(ast.unparse(node)).body[0]
    for inner in ast.walk(node):
        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and inner.body:
            first = inner.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                inner.body = inner.body[1:] or [ast.Pass()]
    return node


def definitions(source: str) -> dict[str, ast.AST]:
    """Top-level functions, classes and assigned names of some Python source."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found.update({t.id: node for t in targets if isinstance(t, ast.Name)})
    return found


def python_of(cell_source: str) -> str:
    """A code cell's source without IPython magics and shell escapes."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines())


def code_cells(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def same_code(a: ast.AST, b: ast.AST) -> bool:
    return ast.dump(without_docstrings(a)) == ast.dump(without_docstrings(b))


MODULE_SOURCE = (ROOT / "cxr_utils.py").read_text()
MODULE = definitions(MODULE_SOURCE)
TAUGHT = {path.name: [definitions(python_of(s)) for s in code_cells(path) if s.startswith(SAVE_MARK)] for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_definitions_are_the_module_code(path):
    """Each definition in a #@save cell is in cxr_utils.py with the same code."""
    for cell in TAUGHT[path.name]:
        for name, node in cell.items():
            assert name in MODULE, f"{path.name} defines {name} in a #@save cell, but cxr_utils.py does not: copy it there"
            assert same_code(node, MODULE[name]), f"{name} in {path.name} differs from cxr_utils.py: copy the lesson's version"


def test_every_module_definition_is_taught_exactly_once():
    """cxr_utils.py holds the taught helpers and nothing else, each from one lesson cell."""
    places: dict[str, list[str]] = {}
    for notebook, cells in TAUGHT.items():
        for cell in cells:
            for name in cell:
                places.setdefault(name, []).append(notebook)
    assert sorted(set(MODULE) - set(places)) == [], "defined in cxr_utils.py but in no notebook's #@save cell"
    assert {name: where for name, where in places.items() if len(where) > 1} == {}, "defined by more than one lesson"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_other_cells_do_not_redefine_module_helpers(path):
    """A cell without #@save must not quietly define its own version of a helper."""
    for source in code_cells(path):
        if not source.startswith(SAVE_MARK):
            clash = set(definitions(python_of(source))) & set(MODULE)
            assert not clash, f"{path.name}: a cell without {SAVE_MARK} redefines {sorted(clash)}"


def test_docstrings_name_the_defining_notebook_and_section():
    """Each helper's docstring ends with (NN, 'Section'): its notebook and a heading that exists there."""
    headings = {}
    for path in NOTEBOOKS:
        markdown = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        headings[path.name] = [h.strip() for h in re.findall(r"^#{2,4} (.+)$", markdown, re.MULTILINE)]
    for notebook, cells in TAUGHT.items():
        for cell in cells:
            for name, node in cell.items():
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    continue
                docstring = ast.get_docstring(MODULE[name]) or ""
                match = re.search(r"\((\d\d), '([^']+)'\)\.?$", docstring.splitlines()[0] if docstring else "")
                assert match, f"{name}: the docstring's first line must end with (NN, 'Section'), got {docstring!r}"
                assert match.group(1) == notebook[:2], f"{name} is defined in {notebook} but its docstring says {match.group(1)}"
                assert any(h.startswith(match.group(2)) for h in headings[notebook]), f"{name}: no heading '{match.group(2)}' in {notebook}"


def test_the_module_stays_small_and_imports_support_one_way():
    """cxr_utils.py is at most 700 lines; cxr_support never imports it; no source file is over 700 lines."""
    assert len(MODULE_SOURCE.splitlines()) <= 700
    for path in (ROOT / "cxr_support").glob("*.py"):
        imported = {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        assert "cxr_utils" not in imported, f"cxr_support/{path.name} imports cxr_utils: support code must not depend on the lessons"
    sources = [p for p in ROOT.rglob("*.py") if not {".venv", "runs", "build"} & set(p.relative_to(ROOT).parts)]
    assert {p.name: n for p in sources if (n := len(p.read_text().splitlines())) > 700} == {}


def test_a_drifted_copy_is_caught():
    """The comparison sees a changed line but ignores a changed docstring."""
    original = ast.parse('def f(x):\n    """One."""\n    return x + 1\n').body[0]
    new_docstring = ast.parse('def f(x):\n    """Two."""\n    return x + 1\n').body[0]
    new_code = ast.parse('def f(x):\n    """One."""\n    return x + 2\n').body[0]
    assert same_code(original, new_docstring)
    assert not same_code(original, new_code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_skill_promised_points_at_its_code(path):
    """Each helper named in "After this notebook you will be able to" is defined in a #@save cell of that notebook.

    And every line of that list names at least one thing in backticks, so a learner can find its cell.
    """
    markdown = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    goals = markdown.split("**After this notebook you will be able to**", 1)[1].split("**You need**", 1)[0]
    items = [line for line in goals.splitlines() if line.startswith("- ")]
    assert len(items) >= 2, f"{path.name}: the goals list is empty or missing"
    taught_here = {name for cell in TAUGHT[path.name] for name in cell}
    for item in items:
        named = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", item)
        assert named, f"{path.name}: goal without any name in backticks: {item!r}"
        for name in set(named) & set(MODULE):
            assert name in taught_here, f"{path.name} promises `{name}` but defines it in no #@save cell"
