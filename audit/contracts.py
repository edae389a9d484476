"""Known framework deviations, declared as data, judged strictly.

One file per framework in audit/contracts_data/<framework>.toml, plus any user files
(`--contracts FILE`, repeatable), merged into one list.

A contract says: for these subjects / checks / dtypes / devices / reductions, points in
this region show this status, because <reason> (<link>). Judging a check on its fixed
inputs:
- a non-ok point that no contract explains is a new finding: the test fails;
- a contract that explains no point of a check it applies to no longer holds (the
  framework changed, or the contract was wrong): the test fails too.
A contract with `found_by = "search"` declares what only a Hypothesis search reached
(the fixed inputs never show it): it explains drawn points only (searches are judged
non-strictly), never a fixed input's; its reason says where the search found it.
Regions are small boolean expressions over the point, e.g.
`x > sigmoid_saturates and y == 1`, with names x (input), y (target), w, p, the dtype
thresholds of audit.regions, `max` (largest finite) and `tiny` (smallest subnormal).
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from audit.batch import ROW_VARIABLES, Batch
from audit.regions import thresholds
from reference.formats import get_format

CONTRACTS_DIR = Path(__file__).with_name("contracts_data")
_USER_FILES: list[Path] = []


class ContractsError(ValueError):
    """A contracts file that cannot be read or holds a bad entry (a user mistake)."""


def add_files(paths: Iterable[str | Path]) -> list[Path]:
    """Add users' contracts files (--contracts); each is parsed now, so a bad one is an
    error before the run starts."""
    added = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise ContractsError(f"--contracts {p}: no such file")
        _parse(path)
        if path.resolve() not in [f.resolve() for f in _USER_FILES]:
            _USER_FILES.append(path)
        added.append(path)
    return added


def user_files() -> list[Path]:
    return list(_USER_FILES)


def files() -> list[Path]:
    """Every contracts file in force: the built-in ones, then the users'."""
    return sorted(CONTRACTS_DIR.glob("*.toml")) + list(_USER_FILES)


def _parse(path: Path) -> dict:
    try:
        stat = path.stat()
        return _parsed(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ContractsError(f"{path}: cannot read contracts: {e}") from None


@functools.lru_cache(maxsize=64)
def _parsed(path: str, mtime_ns: int, size: int) -> dict:
    """A file's TOML, parsed once per version of it (cases ask for contracts often)."""
    return tomllib.loads(Path(path).read_text(encoding="utf-8"))


def _entries(kind: str, paths: Iterable[Path] | None = None) -> list[dict]:
    return [e for p in (files() if paths is None else paths) for e in _parse(p).get(kind, [])]


@dataclass(frozen=True)
class Contract:
    id: str
    subjects: tuple[str, ...]
    checks: tuple[str, ...]
    dtypes: tuple[str, ...]
    status: tuple[str, ...]
    region: str
    reason: str
    devices: tuple[str, ...] = ("*",)
    reductions: tuple[str, ...] = ("*",)
    # eager, compiled, autocast_* (globs). Measured in eager, a contract also holds under
    # autocast (on the CPU the losses stay in float32: the same kernels) and under an
    # execution declared [[identical]] to eager (audit.plugin.Audit.applicable)
    executions: tuple[str, ...] = ("eager", "autocast_*")
    link: str | None = None
    max_ulp: float | None = None  # for "inaccurate": the declared worst error
    found_by: str = "fixed"  # "search": judged on drawn points only (never unobserved)
    _tree: ast.Expression = field(default=None, repr=False, compare=False)  # type: ignore

    def applies(self, subject: str, check: str, dtype: str, device: str, reduction: str,
                execution: str = "eager") -> bool:
        def any_match(value: str, patterns: Iterable[str]) -> bool:
            return any(fnmatch(value, p) for p in patterns)
        return (any_match(subject, self.subjects) and any_match(check, self.checks)
                and any_match(dtype, self.dtypes) and any_match(device, self.devices)
                and any_match(reduction, self.reductions)
                and any_match(execution, self.executions))

    def contains(self, points: Batch | dict[str, np.ndarray], dtype: str) -> np.ndarray:
        """Boolean mask of the points inside the region."""
        variables = points.variables() if isinstance(points, Batch) else points
        names = _names(dtype) | variables
        out = _Evaluator(names).visit(self._tree.body)
        return np.broadcast_to(np.asarray(out, dtype=bool), variables["y"].shape)

    def as_record(self) -> dict:
        region = self.region if self.max_ulp is None else \
            f"{self.region} (at most {self.max_ulp:g} ulp)"
        return {"id": self.id, "status": "|".join(self.status), "region": region,
                "reason": self.reason, "link": self.link}


def _names(dtype: str) -> dict[str, float]:
    fmt = get_format(dtype)
    t = thresholds(dtype)
    return {**vars(t), "max": fmt.max_finite, "tiny": math.ldexp(1.0, fmt.quantum_exp),
            "inf": math.inf}


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}
_CMPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
         ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}


class _Evaluator(ast.NodeVisitor):
    """Evaluates the tiny region language on numpy arrays; anything else is rejected."""

    def __init__(self, names: dict) -> None:
        self.names = names

    def generic_visit(self, node: ast.AST):
        raise ValueError(f"unsupported syntax in region: {ast.dump(node)}")

    def visit_BoolOp(self, node: ast.BoolOp):
        values = [np.asarray(self.visit(v), dtype=bool) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = values[0]
        for v in values[1:]:
            out = combine(out, v)
        return out

    def visit_UnaryOp(self, node: ast.UnaryOp):
        v = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return np.logical_not(v)
        if isinstance(node.op, ast.USub):
            return -v
        raise ValueError("unsupported unary operator in region")

    def visit_BinOp(self, node: ast.BinOp):
        return _BINOPS[type(node.op)](self.visit(node.left), self.visit(node.right))

    def visit_Compare(self, node: ast.Compare):
        left = self.visit(node.left)
        out = True
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comp)
            out = np.logical_and(out, _CMPS[type(op)](left, right))
            left = right
        return out

    def visit_Call(self, node: ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in ("abs", "isnan", "isinf"):
            fn = {"abs": np.abs, "isnan": np.isnan, "isinf": np.isinf}[node.func.id]
            return fn(self.visit(node.args[0]))
        raise ValueError("only abs(), isnan(), isinf() may be called in a region")

    def visit_Name(self, node: ast.Name):
        try:
            return self.names[node.id]
        except KeyError:
            raise ValueError(f"unknown name {node.id!r} in region") from None

    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, (int, float)):
            return float(node.value)
        raise ValueError("only numbers may appear as constants in a region")


def _tuple(v: str | list[str]) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


def load(paths: Iterable[Path] | None = None) -> list[Contract]:
    """Parse and validate the contracts files (a bad entry is an error, never ignored)."""
    out = []
    seen = set()
    for entry in _entries("contract", paths):
        try:
            out.append(_contract(entry, seen))
        except (KeyError, ValueError, SyntaxError) as e:
            what = entry.get("id", "an entry without id") if isinstance(entry, dict) else entry
            raise ContractsError(f"contract {what!r}: {type(e).__name__}: {e}") from None
    return out


def _contract(entry: dict, seen: set[str]) -> Contract:
    """One validated Contract from a TOML entry."""
    cid = entry["id"]
    if cid in seen:
        raise ValueError(f"duplicate contract id {cid!r}")
    seen.add(cid)
    tree = ast.parse(entry["region"], mode="eval")
    c = Contract(id=cid, subjects=_tuple(entry["subjects"]), checks=_tuple(entry["checks"]),
                 dtypes=_tuple(entry["dtypes"]), status=_tuple(entry["status"]),
                 region=entry["region"], reason=entry["reason"],
                 devices=_tuple(entry.get("devices", "*")),
                 reductions=_tuple(entry.get("reductions", "*")),
                 executions=_tuple(entry.get("executions", ["eager", "autocast_*"])),
                 link=entry.get("link"), max_ulp=entry.get("max_ulp"),
                 found_by=entry.get("found_by", "fixed"), _tree=tree)
    if c.found_by not in ("fixed", "search"):
        raise ValueError(f"found_by must be 'fixed' or 'search', not {c.found_by!r}")
    c.contains({"x": np.zeros(1), "y": np.zeros(1), "w": np.ones(1), "p": np.ones(1),
                **{n: np.zeros(1) for n in ROW_VARIABLES}},
               "float32")  # validates the expression now, not mid-run
    return c


@dataclass
class Verdict:
    """Outcome of judging one check's points against the contracts."""

    unexplained: np.ndarray                 # mask of non-ok points no contract covers
    matched: list[Contract]                 # contracts that explained >= 1 point
    unobserved: list[Contract]              # applicable contracts that explained none
    explained_by: np.ndarray                # per point: contract id or ""

    @property
    def passed(self) -> bool:
        return not self.unexplained.any() and not self.unobserved


def judge(status: np.ndarray, points: Batch | dict[str, np.ndarray], applicable: list[Contract],
          dtype: str, strict: bool = True, ulp: np.ndarray | None = None) -> Verdict:
    """Match non-ok points to contracts. `strict`: unobserved contracts are failures
    (only on deterministic inputs; Hypothesis draws are judged with strict=False).
    A contract with `max_ulp` explains only points whose ulp error stays within it."""
    bad = status != "ok"
    explained_by = np.full(status.shape, "", dtype=object)
    matched, unobserved = [], []
    for c in applicable:
        if strict and c.found_by == "search":  # fixed inputs: only fixed-input contracts
            continue
        hit = bad & (explained_by == "") & c.contains(points, dtype) & \
            np.isin(status, list(c.status))
        if c.max_ulp is not None and ulp is not None:
            hit &= ulp <= c.max_ulp
        explained_by[hit] = c.id
        (matched if hit.any() else unobserved).append(c)
    return Verdict(bad & (explained_by == ""), matched, unobserved if strict else [],
                   explained_by)


def load_breakdowns(paths: Iterable[Path] | None = None) -> list[dict]:
    """The declared [[breakdown]] logits of the two-step sigmoid_bce pipelines."""
    return _entries("breakdown", paths)


def load_identical(paths: Iterable[Path] | None = None) -> list[dict]:
    """Declared [[identical]] subject pairs: the same kernel underneath, bit for bit; an
    entry with `executions` = ["eager", E] declares one subject's E identical to eager."""
    return _entries("identical", paths)


def identical_execution(subject: str, execution: str, dtype: str, device: str,
                        quantity: str, paths: Iterable[Path] | None = None) -> bool:
    """Is `execution` of `subject` declared bit-identical to eager there?"""
    return any(i.get("executions") == ["eager", execution] and i["subjects"] == [subject]
               and dtype in i["dtypes"] and device in i.get("devices", ["cpu"])
               and quantity in i.get("quantities", ["loss", "grad"])
               for i in load_identical(paths))
