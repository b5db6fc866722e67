"""The house's layer rule, read from the source (ast), imports inside functions included.

DESIGN.md "Layout": errors/atomic/quiet sit below everything, then wire -> rig -> data -> model ->
serve | motion -> render | demo | addon_build -> cli. A module imports only from layers before its
own (or its own layer); layers on one rank do not import each other; `engine` never imports
`blender_addon`; the add-on imports only `engine.wire`, `engine.rig` and `engine.atomic` (what the zip ships, through `_engine.py`); and no
two modules import each other, directly or round a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Rank of each layer: a module may import a layer of lower rank, or its own layer.
RANKS = {"base": 0, "wire": 1, "rig": 2, "data": 3, "model": 4, "serve": 5, "motion": 5,
         "render": 6, "demo": 6, "addon_build": 6, "cli": 7}
ADDON_MAY_USE = ("engine.wire", "engine.rig", "engine.atomic")   # what `pix2dance addon` ships


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for base in ("engine", "blender_addon"):
        for path in sorted((ROOT / base).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, at any depth, resolved to a module of ours when it is one."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:     # `from engine.data import dataset` imports a module
                sub = f"{module}.{alias.name}"
                found.append((node.lineno, sub if sub in known else module))
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "engine":
        return None
    if len(parts) == 1 or parts[1] in ("errors", "atomic", "quiet"):
        return "base"
    return parts[1]


def edges() -> dict[str, list[tuple[int, str]]]:
    mods = modules()
    known = set(mods)
    return {name: [(line, m) for line, m in imports(name, path, known) if m.split(".")[0] in ("engine", "blender_addon")]
            for name, path in mods.items()}


def test_every_engine_module_has_a_layer():
    assert {layer(m) for m in modules() if m.startswith("engine")} <= set(RANKS)


def test_imports_follow_the_layer_order():
    bad = []
    for name, targets in edges().items():
        for line, target in targets:
            where = f"{name}:{line} imports {target}"
            if name.startswith("blender_addon"):
                if target.startswith("engine") and not target.startswith(ADDON_MAY_USE):
                    bad.append(where)
                continue
            if target.startswith("blender_addon"):
                bad.append(where + " (engine never imports the add-on)")
                continue
            mine, theirs = layer(name), layer(target)
            if mine != theirs and RANKS[theirs] >= RANKS[mine]:
                bad.append(where)
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_addon_reaches_the_engine_only_through_one_module():
    bad = [f"{name}:{line} imports {t}" for name, targets in edges().items() if name.startswith("blender_addon")
           and name != "blender_addon._engine" for line, t in targets if t.startswith("engine")]
    assert not bad, "the add-on imports engine code only via blender_addon/_engine.py:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = edges()
    graph = {name: {t for _, t in targets if t in found and t != name} for name, targets in found.items()}
    cycles, index, low, stack, on, counter = [], {}, {}, [], set(), [0]

    def visit(v):                       # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from engine.model import train\n    from . import sibling\n")
    found = imports("engine.data.probe", path, {"engine.model.train", "engine.data.sibling"})
    assert (2, "engine.model.train") in found and (3, "engine.data.sibling") in found
