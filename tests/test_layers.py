"""Imports point down (DESIGN.md): a module imports only from lower layers or from its own package; no cycles.

    cli -> webui -> tools, check, demo -> train, export, planner -> eval -> inference -> model, data -> arith,
    launcher -> config -> stages -> registry, run_info -> types, errors, logging

The graph is read with `ast` from every import in src/lmforge, at module level or inside functions (a lazy
import is still a dependency), `if TYPE_CHECKING:` blocks excepted (annotations only). A failure names the
file and line of each offending import.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "lmforge"

LAYERS: dict[str, int] = {
    # 0: plain data and helpers every layer may use
    "__init__": 0, "errors": 0, "types": 0, "logging": 0,
    "registry": 0.1, "run_info": 0.1, "hub_cache": 0.05,
    "stages": 0.2,
    "config": 1,
    "arith": 2, "launcher": 2,
    "model": 3, "data": 3,
    "inference": 4,
    "eval": 5,
    "train": 6, "export": 6, "planner": 6,
    "tools": 7, "check": 7, "demo": 7,
    "webui": 7.5,  # the browser's front door over the tools (data preview), check and the engine
    "cli": 8,
}
"""Each top-level package or module of lmforge and its layer; a module may import a strictly lower layer."""


def top_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_edges() -> list[tuple[str, str, str]]:
    """(importing module, imported lmforge module, 'file:line') for every lmforge import."""
    edges = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        source = module_name(path)
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base]
            for target in targets:
                if target == "lmforge" or target.startswith("lmforge."):
                    edges.append((source, target, f"{path.relative_to(SRC.parents[1])}:{node.lineno}"))
    return edges


def test_every_top_level_package_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert sorted(names - set(LAYERS)) == [], "give each new top-level package a layer in tests/test_layers.py"


def test_imports_point_down():
    upward = [f"{where}: {source} imports {target} (layer {LAYERS[top_level(source)]} -> {LAYERS[top_level(target)]})"
              for source, target, where in import_edges()
              if top_level(source) != top_level(target) and top_level(source) != "__init__"
              and LAYERS[top_level(target)] >= LAYERS[top_level(source)]]
    assert upward == [], "imports that point up or sideways:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for source, target, _ in import_edges():
        if source != target:
            graph.setdefault(source, set()).add(target)
    # a package's __init__ importing its own submodules (re-exporting them) is not a cycle of dependencies
    graph = {s: {t for t in ts if not t.startswith(s + ".")} for s, ts in graph.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_planted_upward_import(tmp_path, monkeypatch):
    """The checker itself: an upward import in a throwaway tree is reported with its file and line."""
    fake = tmp_path / "lmforge"
    (fake / "config").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "config" / "__init__.py").write_text("")
    (fake / "config" / "bad.py").write_text("import json\n\n\ndef f():\n    from lmforge.train.trainer import BaseTrainer\n")
    monkeypatch.setitem(import_edges.__globals__, "SRC", fake)
    edges = import_edges()
    assert [(s, t) for s, t, _ in edges] == [("lmforge.config.bad", "lmforge.train.trainer")]
    assert edges[0][2].endswith("lmforge/config/bad.py:5")
