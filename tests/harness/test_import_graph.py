"""The import picture of audit/ has no cycle (function-level imports included), and the
grading side never imports a framework: only runners and subject modules name one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORK_MODULES = {"torch", "tensorflow", "keras", "jax", "paddle", "optax"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "audit").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(audit modules imported, top-level third-party names imported) by one module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    mods, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            external.add(t.split(".")[0])
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                mods.add(t)
    return mods, external


def test_audit_has_no_import_cycle() -> None:
    modules = _modules()
    graph = {n: _imports(n, p, set(modules))[0] for n, p in modules.items()}
    # a package importing its own submodules to load them is not a cycle of logic
    for n in graph:
        graph[n] = {m for m in graph[n] if not m.startswith(n + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append([*stack[stack.index(m):], m])
            elif m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


def test_only_runners_and_subject_modules_name_a_framework() -> None:
    modules = _modules()
    for name, path in modules.items():
        _, external = _imports(name, path, set(modules))
        named = external & FRAMEWORK_MODULES
        allowed = name.startswith(("audit.runners.", "audit.subjects."))
        assert allowed or not named, f"{name} imports {sorted(named)}"
