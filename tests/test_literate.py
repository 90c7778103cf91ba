"""The notebooks show the code they teach: ``cxr_utils.py`` is generated from their lesson cells.

Cells that start with ``#@save`` define a lesson's helpers (d2l's convention), and
``tools/generate_cxr_utils.py`` writes ``cxr_utils.py`` from them, in lesson order. These tests
check that the committed module is what the cells generate, that the generator refuses code that
reads a name nothing defines, that every helper comes from exactly one cell, and that each
helper's docstring names the notebook and the section that defines it. To change a helper: edit
it in its lesson, then run ``python tools/generate_cxr_utils.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import nbformat
import pytest
from helpers import solution_blocks

from cxr_support import config as config_module

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "generate_cxr_utils.py"
spec = importlib.util.spec_from_file_location("generate_cxr_utils", GENERATOR)
generator = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = generator  # dataclasses look their module up there
spec.loader.exec_module(generator)

NOTEBOOKS = generator.lesson_notebooks()
SAVE_MARK = generator.SAVE_MARK


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


def code_cells(path: Path) -> list[str]:
    """The sources of a notebook's code cells."""
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


MODULE_SOURCE = (ROOT / "cxr_utils.py").read_text()
MODULE = definitions(MODULE_SOURCE)
TAUGHT = {path.name: [definitions(generator.python_of(source)) for source in code_cells(path)
                      if source.startswith(SAVE_MARK)] for path in NOTEBOOKS}


def write_notebook(path: Path, *cells: str) -> Path:
    """A notebook of code cells, plus a '## Section' heading first."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("## Section")]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)
    return path


def test_the_committed_module_is_what_the_cells_generate():
    """cxr_utils.py is exactly the generator's output (CI runs the same check with --check)."""
    generated = generator.generate()
    stale = f"cxr_utils.py is stale: run `{generator.COMMAND}`\n"
    assert generated == MODULE_SOURCE, stale + generator.short_diff(MODULE_SOURCE, generated)


def test_generated_code_is_the_cells_code_in_lesson_order(tmp_path):
    """Each #@save cell appears verbatim, after a comment naming its notebook and '## ' section."""
    first = write_notebook(tmp_path / "01_a.ipynb", "import math",
                           "#@save\nTAU = 2 * math.pi  # a full turn")
    second = write_notebook(tmp_path / "02_b.ipynb",
                            "#@save\ndef turns(angle: float) -> float:\n    return angle / TAU")
    text = generator.generate([first, second])
    assert '# 01_a.ipynb, section "Section"\nTAU = 2 * math.pi  # a full turn\n' in text
    assert text.index("TAU =") < text.index("def turns")
    assert "\nimport math\n" in text and "from __future__ import annotations" in text
    namespace: dict = {}
    exec(compile(text, "cxr_utils.py", "exec"), namespace)
    assert namespace["turns"](namespace["TAU"]) == 1


def test_the_generator_refuses_a_name_nothing_defines(tmp_path):
    """A #@save cell reading a name nothing defines, or only a cell without #@save, stops it."""
    path = write_notebook(tmp_path / "01_a.ipynb", "def helper(x):\n    return x",
                          "#@save\ndef f(x):\n    return helper(x) + undefined_name")
    with pytest.raises(generator.GenerationError) as caught:
        generator.generate([path])
    assert "'undefined_name', which no notebook imports or defines" in str(caught.value)
    assert "'helper', which 01_a.ipynb, cell 1 defines in a cell without" in str(caught.value)


def test_the_generator_refuses_clashing_imports(tmp_path):
    """Two notebooks that bind one name to different things cannot make one module."""
    first = write_notebook(tmp_path / "01_a.ipynb", "import numpy as np",
                           "#@save\ndef f():\n    return np.pi")
    second = write_notebook(tmp_path / "02_b.ipynb", "import math as np")
    with pytest.raises(generator.GenerationError, match="'np' is imported in different ways"):
        generator.generate([first, second])


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_the_import_order_is_ruffs():
    """Imports come sorted as ruff's isort sorts them: sections, then CONSTANTS, Classes, names."""
    names = ["collections:OrderedDict", "collections:defaultdict", "collections:Counter:C", "os",
             "os.path::osp", "typing:TYPE_CHECKING", "typing:cast", "typing:Any", "torch.nn::nn",
             "torch", "PIL:Image", "lib10", "lib9", "sklearn:metrics:skm", "sklearn:datasets",
             "cxr_support.config:load_config", "cxr_support.config:ARCHS",
             "cxr_support.config:Config", "cxr_support:dataset"]
    bindings = [generator.Binding("__future__", "annotations", None)]
    for name in names:
        module, member, asname = (name.split(":") + ["", ""])[:3]
        bindings.append(generator.Binding(module, member or None, asname or None))
    text = generator.import_block(bindings) + "\nprint(os, osp, OrderedDict)\n"
    ruff = [sys.executable, "-m", "ruff"]
    command = [*ruff, "check", "--select", "I", "--stdin-filename", "cxr_utils.py", "-"]
    result = subprocess.run(command, input=text, text=True, capture_output=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_definition_is_taught_exactly_once():
    """cxr_utils.py holds the taught helpers and nothing else, each from one lesson cell."""
    places: dict[str, list[str]] = {}
    for notebook, cells in TAUGHT.items():
        for cell in cells:
            for name in cell:
                places.setdefault(name, []).append(notebook)
    untaught = sorted(set(MODULE) - set(places))
    assert untaught == [], "defined in cxr_utils.py but in no notebook's #@save cell"
    repeated = {name: where for name, where in places.items() if len(where) > 1}
    assert repeated == {}, "defined by more than one #@save cell"


def names_used(tree: ast.AST) -> set[str]:
    """The names some code reads: variables, attributes and imported names."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            used.update(alias.name for alias in node.names)
    return used


# the reader's toolkit: what a reader calls on their own films and runs, though no later lesson does
FOR_THE_READER = {"predict_image", "log_to_jovian", "compare_runs"}


def test_the_module_holds_what_later_code_uses():
    """A #@save helper is used after its lesson: by a later lesson (its cells or its exercises'
    solutions), a script or another helper.

    What only its own lesson calls (the blog post's leaky split, a one-lesson timer, notebook 6's
    probes) stays in its cell without #@save, as in d2l: the module carries the vocabulary
    forward and nothing else. Tests load those helpers from the notebook (helpers.lesson).
    """
    scripts = [ROOT / "train_ddp.py", *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tools/*.py")]
    used_by_scripts = set().union(*(names_used(ast.parse(p.read_text())) for p in scripts))
    module_tree = ast.parse(MODULE_SOURCE)
    unused = []
    for notebook, cells in TAUGHT.items():
        later = [code for path in NOTEBOOKS if path.name > notebook for code in (
            [generator.python_of(source) for source in code_cells(path)]
            + solution_blocks(nbformat.read(path, as_version=4)))]  # exercises' solutions too
        used_later = set().union(set(), *(names_used(ast.parse(code)) for code in later))
        for name in (name for cell in cells for name in cell):
            others = [node for node in module_tree.body if name not in definitions(
                ast.unparse(node))]
            used_inside = name in set().union(*(names_used(node) for node in others))
            if not (used_inside or name in used_later | used_by_scripts | FOR_THE_READER):
                unused.append(f"{notebook}: {name}")
    assert unused == [], "saved, but nothing after its lesson uses it: drop its #@save"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_other_cells_do_not_redefine_module_helpers(path):
    """A cell without #@save must not quietly define its own version of a helper."""
    for source in code_cells(path):
        if not source.startswith(SAVE_MARK):
            clash = set(definitions(generator.python_of(source))) & set(MODULE)
            assert not clash, f"{path.name}: a cell without {SAVE_MARK} redefines {sorted(clash)}"


def markdown_of(path: Path) -> str:
    """All the Markdown of a notebook."""
    cells = nbformat.read(path, as_version=4).cells
    return "\n".join(c.source for c in cells if c.cell_type == "markdown")


def test_docstrings_name_the_defining_notebook_and_section():
    """Each helper's docstring ends with (NN, 'Section'): its notebook and a heading there."""
    headings = {}
    for path in NOTEBOOKS:
        found = re.findall(r"^#{2,4} (.+)$", markdown_of(path), re.MULTILINE)
        headings[path.name] = [h.strip() for h in found]
    for notebook, cells in TAUGHT.items():
        for cell in cells:
            for name, node in cell.items():
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    continue
                docstring = ast.get_docstring(MODULE[name]) or ""
                first_line = docstring.splitlines()[0] if docstring else ""
                match = re.search(r"\((\d\d), '([^']+)'\)\.?$", first_line)
                assert match, f"{name}: the docstring's first line must end with (NN, 'Section')"
                number, section = match.groups()
                assert number == notebook[:2], f"{name}: in {notebook}, docstring says {number}"
                here = headings[notebook]
                assert any(h.startswith(section) for h in here), f"{name}: no '{section}' there"


def test_the_module_stays_small_and_imports_support_one_way():
    """cxr_utils.py has at most 750 lines of code (not counting blanks and comments).

    700 held the four single-GPU lessons; notebook 5's two classes for several processes
    (ShardedBatchLoader, DistributedLearner) took it to 750. Issue 29 moved into the cells what
    the lessons teach and train_ddp.py had held (the recipe, the run record, the learning-rate
    rule, one writer, the timeout): 817. Then what only its own lesson uses left the module
    (see test_the_module_holds_what_later_code_uses), notebook 6's helpers among them, and
    to_device went back to the blog post's lists and tuples: 750.
    cxr_support never imports it; no source file is longer than 700 lines.
    """
    code = [
        line
        for line in MODULE_SOURCE.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(code) <= 750, (
        f"cxr_utils.py has {len(code)} lines of code, over 750: shorten the #@save cells"
    )
    for path in (ROOT / "cxr_support").glob("*.py"):
        nodes = list(ast.walk(ast.parse(path.read_text())))
        imported = {a.name for node in nodes if isinstance(node, ast.Import) for a in node.names}
        imported |= {node.module for node in nodes if isinstance(node, ast.ImportFrom)}
        assert "cxr_utils" not in imported, f"cxr_support/{path.name} imports the lessons"
    skipped = {".venv", "runs", "build"}
    sources = [
        p
        for p in ROOT.rglob("*.py")
        if not skipped & set(p.relative_to(ROOT).parts) and p.name != "cxr_utils.py"
    ]
    assert {p.name: n for p in sources if (n := len(p.read_text().splitlines())) > 700} == {}


# a CXR_* setting is shown where code reads its field of the config (CXR_EXTERNAL_DIR: external_dir)
SETTINGS = {variable: field for field, (variable, _) in config_module._ENV.items()}


def code_names(source: str) -> set[str]:
    """The names a code cell's Python uses: its NAME tokens, never its comments or strings."""
    tokens = tokenize.generate_tokens(io.StringIO(generator.python_of(source)).readline)
    return {token.string for token in tokens if token.type == tokenize.NAME}


def unshown_goals(notebook: nbformat.NotebookNode, taught_here: set[str]) -> list[str]:
    """The problems of a notebook's "you will be able to" list: a line without a name in
    backticks, a taught helper that no #@save cell of it defines, any other name that no code
    cell uses (a name only in Markdown, fenced code included, or in a comment does not count)."""
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    goals = markdown.split("**After this notebook you will be able to**", 1)[1].split(
        "**You need**", 1
    )[0]
    items = [line for line in goals.splitlines() if line.startswith("- ")]
    problems = [] if len(items) >= 2 else ["the goals list is empty or missing"]
    shown = set().union(*(code_names(c.source) for c in notebook.cells if c.cell_type == "code"))
    shown |= {variable for variable, field in SETTINGS.items() if field in shown}  # config.field
    for item in items:
        named = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", item)
        problems += [] if named else [f"goal without any name in backticks: {item!r}"]
        for name in named:
            if name in MODULE and name not in taught_here:
                problems.append(f"promises `{name}`; no #@save cell of it has it")
            elif name not in MODULE and name not in shown:
                problems.append(f"promises `{name}`, which no code cell of it uses")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_skill_promised_points_at_its_code(path):
    """Each name in "After this notebook you will be able to" is code the lesson runs.

    A taught helper is defined in a #@save cell of that notebook; any other name (a library call,
    a support function) is used by the Python of one of its code cells, so a learner sees it run.
    A name only mentioned in prose, shown in a fenced block of Markdown or written in a comment
    does not count. Every line of the list names at least one thing in backticks.
    """
    taught_here = {name for cell in TAUGHT[path.name] for name in cell}
    assert unshown_goals(nbformat.read(path, as_version=4), taught_here) == [], path.name


def test_a_goal_shown_only_in_markdown_is_refused():
    """A name in a fenced block of Markdown, or in a code cell's comment, is not code shown."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("**After this notebook you will be able to**\n"
                                      "- use `barrier`;\n- use `timeout` and `print`.\n"
                                      "**You need**: nothing.\n\n"
                                      "```python\ndist.barrier()\ninit(timeout=1)\n```"),
        nbformat.v4.new_code_cell("print('timeout')  # barrier"),
    ]
    assert unshown_goals(notebook, set()) == [
        "promises `barrier`, which no code cell of it uses",
        "promises `timeout`, which no code cell of it uses",
    ]
