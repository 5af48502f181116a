"""The package's import graph, read from its source with `ast`: no module reaches itself through imports, at the top
of a file or inside a function, and the modeling file imports only what a model needs. Imports by name at run time
(`importlib.import_module`, the package's lazy attributes in __init__.py) are not in the graph."""

import ast
from pathlib import Path

import modeling_data2vec_unified

PACKAGE = modeling_data2vec_unified.__name__


ROOT = Path(modeling_data2vec_unified.__file__).parent


# what modeling_data2vec.py may import from the package, and why: at the top of the file ...
MODELING_IMPORTS = {
    "configuration_data2vec": "its config",
    "input_checks": "the checks of its inputs (shapes, ids, attention masks, image layout)",
    "checkpoint_files": "from_pretrained: finding a checkpoint, reading its config.json, naming unreadable weights, "
                        "handing transformers' Data2Vec* checkpoints to their conversion",
}


# ... and inside the methods that need them
MODELING_LAZY_IMPORTS = {
    "sharing": "save_pretrained / push_to_hub: the code and the model card a saved folder carries",
}


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package in folder `root` by dotted name (a package by its own name, for its __init__.py)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        names[".".join((root.name, *parts))] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST, top_level_only: bool = False):
    """The Import / ImportFrom nodes of a module, at the top level and (unless `top_level_only`) inside functions and
    classes; `if TYPE_CHECKING:` blocks never run and are left out."""
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(reversed(node.orelse))
        elif top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        else:
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


def imported_modules(name: str, path: Path, modules: dict, top_level_only: bool = False) -> set[str]:
    """The package's modules that importing `name` runs, relative and absolute imports alike: the imported module and
    the packages above it that `name` is not inside of (their __init__ runs first)."""
    top = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in import_nodes(ast.parse(path.read_text()), top_level_only):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        for alias in node.names:  # `from . import x`: x may be a module; `from .x import y`: y is a name of x
            targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    found = set()
    for target in targets:
        if not (target == top or target.startswith(top + ".")):
            continue
        parts = target.split(".")
        for depth in range(2, len(parts) + 1):  # the package itself is always importing already
            ancestor = ".".join(parts[:depth])
            if ancestor in modules and not name.startswith(ancestor + ".") and ancestor != name:
                found.add(ancestor)
        if target == top and name != top:
            found.add(top)  # an explicit import of the package itself runs its __init__
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per group of modules that reach each other
    (Tarjan's strongly connected components)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A path that leaves the group's first module and returns to it, inside the group (breadth first: a shortest)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".") if name != PACKAGE else "__init__"


FAKE_PACKAGE = {  # every kind of import the graph must see, in a package made up for the test
    "__init__.py": "from .a import A\n",
    "a.py": "from typing import TYPE_CHECKING\nfrom .b import B\nif TYPE_CHECKING:\n    from .c import C\nA = 1\n",
    "b.py": "def f():\n    from . import c\nB = 1\n",  # inside a function, a module by `from . import`
    "c.py": "def g():\n    import pkg\n",  # absolute: the package's __init__
    "d.py": "from .sub.e import E\n",  # runs sub/__init__.py, then sub/e.py
    "sub/__init__.py": "",
    "sub/e.py": "from .. import d\nE = 1\n",  # relative, two levels up
}


def _fake_package(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    for name, source in FAKE_PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root


def test_the_graph_reads_every_kind_of_import(tmp_path):
    """The check itself: top-level and function-level imports, relative and absolute, the packages an import runs,
    not the imports under `if TYPE_CHECKING:` (they never run); and each cycle named module by module, in order."""
    graph = import_graph(_fake_package(tmp_path))
    assert graph == {
        "pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg"},
        "pkg.d": {"pkg.sub", "pkg.sub.e"}, "pkg.sub": set(), "pkg.sub.e": {"pkg.d"},
    }
    assert find_cycles(graph) == [["pkg", "pkg.a", "pkg.b", "pkg.c", "pkg"], ["pkg.d", "pkg.sub.e", "pkg.d"]]


def test_no_import_cycles():
    """No module of the package reaches itself through imports. A cycle that a lazy (function-level) import hides
    still couples the modules both ways; where one is found, the message names every module on it."""
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(map(short, c)) for c in cycles)


def test_the_modeling_file_imports_only_what_a_model_needs():
    """modeling_data2vec.py (the models, and what a `trust_remote_code` folder runs) imports from the package only
    its config, the input checks and the checkpoint-file helpers, plus, inside the methods that need them, the sharing
    helpers: no conversion, no masks, no collator, no training code."""
    modules = module_names()
    name = f"{PACKAGE}.modeling_data2vec"
    top = {short(m) for m in imported_modules(name, modules[name], modules, top_level_only=True)}
    everything = {short(m) for m in imported_modules(name, modules[name], modules)}
    assert top <= set(MODELING_IMPORTS), sorted(top - set(MODELING_IMPORTS))
    assert everything <= set(MODELING_IMPORTS) | set(MODELING_LAZY_IMPORTS), sorted(
        everything - set(MODELING_IMPORTS) - set(MODELING_LAZY_IMPORTS))
