"""cxr_support is built in layers: no import cycle, no import hidden in a function, as documented.

The import graph is read from the source, every import statement wherever it stands (in a
function too), not from what Python happens to load. The layers are those that the package's
docstring lists: generic modules first, then concerns, each after every module it imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import cxr_support

PACKAGE = Path(cxr_support.__file__).resolve().parent
NAME = "cxr_support"
INIT = "__init__"


def package_sources(folder: Path = PACKAGE) -> dict[str, str]:
    """{module name: source} of the package's modules (the package itself is ``__init__``)."""
    return {path.stem: path.read_text() for path in sorted(folder.glob("*.py"))}


def imported_modules(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The package's modules that one import statement names (``__init__`` for the package)."""
    if isinstance(node, ast.Import):
        dotted = [alias.name.split(".") for alias in node.names]
        return {parts[1] if len(parts) > 1 else INIT for parts in dotted if parts[0] == NAME}
    if node.level > 1:
        return set()  # above the package: not ours
    module = node.module or ""
    if node.level == 0 and module.split(".")[0] != NAME:
        return set()
    inside = module.split(".")[1:] if node.level == 0 else module.split(".") if module else []
    if inside:  # from cxr_support.x import y, from .x import y
        return {inside[0]}
    return {a.name if a.name in modules else INIT for a in node.names}  # from cxr_support import x


def package_imports(sources: dict[str, str]) -> list[tuple[str, str, int, str | None]]:
    """Every import of the package: (importer, imported, line, enclosing function or None)."""
    modules = set(sources)
    found = []
    for name, source in sources.items():
        tree = ast.parse(source)
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
        functions = [node for node in ast.walk(tree) if isinstance(node, kinds)]
        inside = {id(inner): f.name for f in functions for inner in ast.walk(f) if inner is not f}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in sorted(imported_modules(node, modules)):
                    found.append((name, target, node.lineno, inside.get(id(node))))
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, from all of its import statements."""
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for importer, imported, _, _ in package_imports(sources):
        if imported != importer:
            graph[importer].add(imported)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None when the graph has none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" when fully explored

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def hidden_imports(sources: dict[str, str]) -> list[str]:
    """Each import of the package made inside a function, as 'module.py:line: f() imports x'."""
    found = package_imports(sources)
    return [f"{importer}.py:{line}: {function}() imports {imported}"
            for importer, imported, line, function in found if function is not None]


def documented_layers(docstring: str) -> tuple[list[str], list[list[str]]]:
    """(generic modules, every listed module group in order) from the package docstring's lists."""
    generic_part, _, concern_part = docstring.partition("\nConcerns")
    groups, generic = [], []
    for part, is_generic in ((generic_part, True), (concern_part, False)):
        for line in part.splitlines():
            if line.startswith("- "):
                names = re.findall(r"``(\w+)``", line[2:].split(":")[0])
                groups.append(names)
                generic += names if is_generic else []
    return generic, groups


def test_the_package_has_no_import_cycle():
    """No chain of imports leads from a module back to itself."""
    cycle = find_cycle(import_graph(package_sources()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_package_import_hides_in_a_function():
    """Modules of the package are imported at the top of a file, never inside a function."""
    assert hidden_imports(package_sources()) == []


def test_the_documented_layers_hold():
    """Each module listed once; generic ones import none of the package, others earlier ones."""
    sources = package_sources()
    generic, groups = documented_layers(cxr_support.__doc__ or "")
    listed = [name for group in groups for name in group]
    assert sorted(listed) == sorted(set(sources) - {INIT}), "list each module once in __init__.py"
    position = {name: index for index, group in enumerate(groups) for name in group}
    graph = import_graph(sources)
    for name in generic:
        assert graph[name] == set(), f"{name} is generic but imports {sorted(graph[name])}"
    upward = {name: sorted(i for i in imported if position.get(i, -1) >= position[name])
              for name, imported in graph.items() if name != INIT}
    assert {name: up for name, up in upward.items() if up} == {}, "imports of modules listed later"


def test_the_checks_catch_a_cycle_and_a_hidden_import():
    """A cycle closed by an import inside a function is found twice: as a cycle and as hidden."""
    sources = {
        INIT: "",
        "low": "import os\n",
        "high": "from cxr_support import low\nfrom cxr_support.middle import thing\n",
        "middle": "from cxr_support.low import x\n\n\ndef f():\n    from .high import y\n",
    }
    assert find_cycle(import_graph(sources)) == ["high", "middle", "high"]
    assert hidden_imports(sources) == ["middle.py:5: f() imports high"]
    sources["middle"] = "from . import low\nimport cxr_support.low\n"
    assert find_cycle(import_graph(sources)) is None
    assert import_graph(sources)["middle"] == {"low"}



def defined_names(source: str) -> set[str]:
    """The names a module defines at its top level (functions, classes, assigned names), and
    those it re-exports explicitly: ``from x import y as y``, or listed in ``__all__``."""
    found: set[str] = set()
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                found |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            found |= {a.name for a in node.names if a.asname == a.name}
    listed = [n for n in tree.body if isinstance(n, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
    for node in listed:
        found |= {e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant)}
    return found - {"__all__"}


def public_homes(sources: dict[str, str]) -> dict[str, list[str]]:
    """{public name: the modules of the package that define or re-export it}."""
    homes: dict[str, list[str]] = {}
    for module, source in sources.items():
        for name in sorted(defined_names(source)):
            if not name.startswith("_"):
                homes.setdefault(name, []).append(module)
    return homes


def project_code() -> dict[str, str]:
    """{file: Python source} of the project: modules, scripts, tests, and notebooks' code cells."""
    import nbformat

    skipped = {".venv", "build", "runs", ".git"}
    root = PACKAGE.parent
    code = {str(p.relative_to(root)): p.read_text() for p in root.rglob("*.py")
            if not skipped & set(p.relative_to(root).parts)}
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        for index, cell in enumerate(c for c in cells if c.cell_type == "code"):
            lines = [line[: len(line) - len(line.lstrip())] + "pass"  # a magic or shell line
                     if line.lstrip().startswith(("%", "!")) else line
                     for line in cell.source.splitlines()]
            code[f"{path.relative_to(root)}, code cell {index}"] = "\n".join(lines)
    return code


def imports_from_elsewhere(code: dict[str, str], homes: dict[str, list[str]]) -> list[str]:
    """Each ``from cxr_support.M import N`` where N is defined in another module than M."""
    found = []
    for where, source in code.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(NAME + "."):
                module = node.module.split(".")[1]
                found += [f"{where}: {a.name} from {module}, defined in {homes.get(a.name)}"
                          for a in node.names if module not in homes.get(a.name, [module])]
    return found


def test_every_public_name_has_one_home():
    """A public name of the package is defined in one module, never re-exported by another
    (``from x import y as y`` or ``__all__``), and imported from that module wherever it is
    imported: a name that another module merely imports is not exported by it (the rule of
    type checkers' ``no_implicit_reexport``), so importing it from there is an error here."""
    homes = public_homes(package_sources())
    assert {name: where for name, where in homes.items() if len(where) > 1} == {}
    assert imports_from_elsewhere(project_code(), homes) == []


def test_the_one_home_checks_catch_a_second_home():
    """A name defined twice, a re-export, and an import from a module that only imports it."""
    sources = {
        INIT: "",
        "names": "CLASS_NAMES = ('A', 'B')\nLIMIT = 1\n",
        "dataset": "from cxr_support.names import CLASS_NAMES\nLIMIT = 2\n",
        "plots": "from cxr_support.names import CLASS_NAMES as CLASS_NAMES\n",
    }
    homes = public_homes(sources)
    assert homes == {"CLASS_NAMES": ["names", "plots"], "LIMIT": ["names", "dataset"]}
    code = {"nb.ipynb": "from cxr_support.dataset import CLASS_NAMES\n"
                        "from cxr_support.names import CLASS_NAMES"}
    assert imports_from_elsewhere(code, {"CLASS_NAMES": ["names"]}) == [
        "nb.ipynb: CLASS_NAMES from dataset, defined in ['names']"]
