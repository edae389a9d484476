"""Loss families as records (reference/families.py), and the shape of reference/'s imports.

The registry is the only place that knows which families exist: losses.form dispatches
through it, reference.fast takes every per-family step from a family's `FastPath`, and
a family without one is refused by fast (never evaluated with another family's formula)
while reference.rounded certifies it with mpmath. The import graph of reference/ has no
cycle (function-level imports included) and reaches no framework.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

import reference
from reference import engine, exact, families, fast, losses, vectorized
from reference.families import FAMILIES, Family, get_family, register_family

PACKAGE = Path(reference.__file__).parent
ALLOWED_THIRD_PARTY = {"numba", "mpmath", "numpy", "ml_dtypes", "gmpy2"}


# --------------------------------------------------------------------------- import graph


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package imported by `name`, top-level names of outside imports),
    from every import statement anywhere in the file (inside functions, under
    TYPE_CHECKING, ...). `from X import y` counts X, and X.y too where that is a module.
    A submodule's implicit import of its parent package is not an edge (it would make
    every package with an __init__ that imports its submodules look cyclic)."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [(mod, tuple(a.name for a in node.names))]
        else:
            continue
        for mod, names in targets:
            if mod.split(".")[0] != PACKAGE.name:
                outside.add(mod.split(".")[0])
                continue
            subs = {f"{mod}.{n}" for n in names if f"{mod}.{n}" in known}
            inside |= subs
            if not names or len(subs) < len(names):
                inside.add(mod)  # a name defined in mod itself (or `import mod`)
    inside.discard(name)
    return inside, outside


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = _modules()
    edges, outside = {}, {}
    for name, path in mods.items():
        edges[name], outside[name] = _imports(name, path, set(mods))
    return edges, outside


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_import_graph_of_reference_has_no_cycle():
    edges, _ = _graph()
    assert "reference.fast" in edges["reference.vectorized"]  # the scan sees real edges
    assert "reference.points" in edges["reference.fast"]
    assert _cycle(edges) is None, " -> ".join(_cycle(edges) or [])


def test_the_cycle_detector_sees_function_level_imports(tmp_path):
    """The scan reads imports inside functions: the old fast <-> vectorized pair (both
    directions inside functions) is a cycle to it."""
    mods = {"reference.a": tmp_path / "a.py", "reference.b": tmp_path / "b.py"}
    mods["reference.a"].write_text("def f():\n    from .b import g\n")
    mods["reference.b"].write_text("def g():\n    from . import a\n")
    edges = {}
    for name, path in mods.items():
        edges[name], _ = _imports(name, path, set(mods))
    assert _cycle(edges) == ["reference.a", "reference.b", "reference.a"]


def test_reference_imports_only_mpmath_numpy_ml_dtypes_gmpy2_and_the_stdlib():
    _, outside = _graph()
    allowed = ALLOWED_THIRD_PARTY | set(sys.stdlib_module_names) | {"__future__"}
    bad = {m: sorted(o - allowed) for m, o in outside.items() if o - allowed}
    assert not bad, bad
    assert "numpy" in outside["reference.fast_core"]  # the scan sees real imports


# --------------------------------------------------------------------------- the registry


def test_the_registry_lists_the_two_bce_families_with_their_arguments():
    """The fixed families; parametric ones (focal_with_logits:..., focal:...,
    smoothed:...) are registered on first use by whatever ran before in this process,
    and have no fast path."""
    fixed = {n: f for n, f in FAMILIES.items() if ":" not in n}
    assert {name: f.arguments for name, f in fixed.items()} == {
        "bce_with_logits": ("input", "target", "weight", "pos_weight"),
        "bce": ("input", "target", "weight"),
    }
    assert get_family("bce_with_logits").input_kind == "logit"
    assert get_family("bce").input_kind == "probability"
    for name, family in FAMILIES.items():
        assert family.name == name and family.formula
        assert (family.fast is None) == (name not in fixed)
    assert get_family("bce_with_logits").fast.short is not None
    assert get_family("bce_with_logits").fast.tier2 is not None
    assert get_family("bce").fast.short is None and get_family("bce").fast.tier2 is None
    assert losses.OPS[:2] == tuple(fixed) == ("bce_with_logits", "bce")


def test_an_unknown_family_is_a_value_error_naming_the_valid_ones():
    for name in ("mse", "", "BCE", None):
        with pytest.raises(ValueError, match="bce_with_logits, bce") as info:
            get_family(name)
        assert repr(name) in str(info.value)
    for call in (lambda: losses.value("mse", False, 1.0, 0.0),
                 lambda: reference.rounded("mse", "float32", np.zeros(32), 0.0),
                 lambda: fast.rounded("mse", "float32", np.zeros(32), 0.0),
                 lambda: vectorized.exact_parts("mse", 1.0, 0.0)):
        with pytest.raises(ValueError, match="bce_with_logits, bce"):
            call()


def test_bce_keeps_rejecting_pos_weight():
    with pytest.raises(ValueError, match=r"^bce has no pos_weight$"):
        losses.form("bce", False, 0.5, 1.0, 1.0, 2.0)
    with pytest.raises(ValueError, match=r"^bce has no pos_weight$"):
        reference.rounded("bce", "float32", np.full(64, 0.5), 1.0, pos_weight=2.0)
    assert losses.value("bce", False, 0.5, 1.0, 1.0, 1) == losses.value("bce", False, 0.5, 1.0)


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="already registered"):
        register_family(get_family("bce"))


# --------------------------------------------------------------------------- no fast path


def _bce_without_fast(name: str) -> Family:
    """bce_with_logits' certified form under another name, with no fast hooks."""
    return Family(name=name, arguments=("input", "target", "weight", "pos_weight"),
                  input_kind="logit", form=get_family("bce_with_logits").form, fast=None,
                  formula="bce_with_logits, certified by mpmath only (test family)")


@pytest.fixture
def slow_family():
    name = "test_only_no_fast_path"
    family = register_family(_bce_without_fast(name))
    vectorized.point.cache_clear()
    try:
        yield family
    finally:
        families.unregister_family(name)
        vectorized.point.cache_clear()
    assert name not in FAMILIES


def test_a_family_without_a_fast_path_is_refused_by_fast_and_certified_by_mpmath(slow_family):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(40) * 30, [0.0, -0.0, 700.0, -700.0, np.inf]])
    y = rng.random(x.size)
    name = slow_family.name
    assert name in losses.OPS
    for call in (lambda: fast.rounded(name, "float32", x, y),
                 lambda: fast.rounded_and_parts(name, "float32", x, y),
                 lambda: fast.approx_parts(name, x, y)):
        with pytest.raises(ValueError, match=f"family {name} has no fast path"):
            call()
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        for grad in (False, True):
            fast.reset_stats()
            got = reference.rounded(name, dtype, x, y, weight=1.5, grad=grad)
            assert fast.STATS["points"] == 0  # not one point through the float64 kernels
            want = vectorized._rounded_mpmath(name, dtype, x, y, weight=1.5, grad=grad)
            assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
            # and the mpmath answer is the family's own: here, bce_with_logits' formula
            same = vectorized._rounded_mpmath("bce_with_logits", dtype, x, y, weight=1.5,
                                              grad=grad)
            assert np.array_equal(got.view(np.uint64), same.view(np.uint64))
    hi, lo = vectorized.exact_parts(name, x, y)
    want_hi, want_lo = vectorized.exact_parts("bce_with_logits", x, y)
    assert np.array_equal(hi, want_hi) and np.array_equal(lo, want_lo)


def test_a_family_dispatches_to_its_own_form():
    """losses.form calls the registered form with the family's arguments, in order."""
    seen = []

    def form(grad, x, y):
        seen.append((grad, x, y))
        return engine.Linear(exact.to_tuple(0.25))

    family = register_family(Family(name="test_only_two_args", arguments=("input", "target"),
                                    input_kind="probability", form=form, fast=None,
                                    formula="1/4 (test family)"))
    try:
        assert losses.value(family.name, True, 0.5, 1.0) == exact.to_tuple(0.25)
        assert seen == [(True, 0.5, 1.0)]
        with pytest.raises(ValueError, match=r"^test_only_two_args has no weight$"):
            losses.form(family.name, False, 0.5, 1.0, 2.0)
        got = reference.rounded(family.name, "float32", np.full(20, 0.5), 1.0)
        assert np.all(got == 0.25)
    finally:
        families.unregister_family(family.name)
        vectorized.point.cache_clear()


def test_public_names_of_the_bulk_path_stay_importable():
    from reference.vectorized import (  # noqa: F401
        _rounded_mpmath,
        double_double,
        exact_parts,
        point,
        rounded,
    )

    assert reference.rounded is vectorized.rounded
    assert reference.exact_parts is vectorized.exact_parts
    assert callable(point.cache_clear)
