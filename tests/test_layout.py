"""The package layout shows the design: no import cycle, dependencies pointing one way
(physics never imports the training loop, a Config or files), small modules."""

import ast
import os

from conftest import REPO

PKG = os.path.join(REPO, "crossbar_ep")
PHYSICS = ("model", "devices", "circuit", "crossbar")
ABOVE_PHYSICS = ("crossbar_ep.runs", "crossbar_ep.config", "crossbar_ep.io", "crossbar_ep.cli",
                 "crossbar_ep.plots", "crossbar_ep.api")
MODEL_MUST_NOT = ("crossbar_ep.devices", "crossbar_ep.circuit", "crossbar_ep.crossbar")
MAX_LINES = 500


def _modules() -> dict:
    """dotted module name -> path, for every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), REPO)[:-3].replace(os.sep, ".")
                out[rel[:-9] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


def _imports(path: str, top_level_only: bool) -> set:
    tree = ast.parse(open(path, encoding="utf-8").read())
    if top_level_only:   # module level, including `if TYPE_CHECKING:` and `try:` blocks
        nodes, todo = [], list(tree.body)
        while todo:
            node = todo.pop()
            nodes.append(node)
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                todo.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("crossbar_ep")}


def test_no_import_cycle_between_modules():
    mods = _modules()
    graph = {m: {d for d in _imports(p, top_level_only=True) if d in mods and d != m}
             for m, p in mods.items()}
    # a package's __init__ importing its own submodules is not a cycle of the design
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in graph[m]:
            if m.startswith(d + ".") or d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_physics_never_imports_the_training_loop_configs_or_files():
    mods = _modules()
    assert "crossbar_ep.model.operators" in _imports(mods["crossbar_ep.crossbar.array"], True)
    bad = []
    for m, p in mods.items():
        parts = m.split(".")
        if len(parts) > 1 and parts[1] in PHYSICS:
            above = ABOVE_PHYSICS + (MODEL_MUST_NOT if parts[1] == "model" else ())
            for d in _imports(p, top_level_only=False):
                if d.startswith(above):
                    bad.append(f"{m} imports {d}")
    assert not bad, bad


def test_modules_are_small():
    big = {m: n for m, p in _modules().items()
           if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def _private_uses(path: str, mods: dict) -> list:
    """``name`` imported from another crossbar_ep module, or read as ``module._name``,
    where the name starts with one underscore (dunder names such as __version__ are public)."""
    def private(n):
        return n.startswith("_") and not (n.startswith("__") and n.endswith("__"))

    tree = ast.parse(open(path, encoding="utf-8").read())
    bound, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("crossbar_ep"):
                    bound[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                        a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.startswith("crossbar_ep"):
            for a in node.names:
                if private(a.name):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                elif f"{node.module}.{a.name}" in mods:
                    bound[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            chain, v = [node.attr], node.value
            while isinstance(v, ast.Attribute):
                chain.append(v.attr)
                v = v.value
            if isinstance(v, ast.Name) and v.id in bound:
                target = ".".join([bound[v.id], *reversed(chain[1:])])
                if target in mods:
                    found.append(f"line {node.lineno}: {target}.{node.attr}")
    return found


def test_no_private_names_cross_module_borders():
    """A module's private names (one leading underscore) are its own: what another module
    needs is public, with a docstring.  This keeps modules cut by concern rather than by a
    line count (a split that needs the other half's private helpers is the wrong split)."""
    mods = _modules()
    bad = {m: uses for m, p in mods.items() if (uses := _private_uses(p, mods))}
    assert not bad, f"private names used across modules: {bad}"
