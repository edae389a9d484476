"""results.json: the one stored form of a run (DESIGN.md section 8).

The report, the history comparison and any script read runs from this file, never from
terminal text. Non-finite numbers travel as the strings "inf", "-inf", "nan" (as in the
CLI), so the file is strict JSON that every parser accepts. This module owns the
conversion, the schema check, and the ``reports/<run>/`` + ``reports/latest`` layout.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: status crash, structured inputs, family
RESULTS_NAME = "results.json"
LATEST_NAME = "latest"
SCHEMA_PATH = Path(__file__).with_name("results.schema.json")

# Most severe first; the order used to colour cells and rank findings (DESIGN.md section 5).
SEVERITY = (
    "crash",
    "error",
    "spurious_nan",
    "spurious_inf",
    "missing_inf",
    "wrong_sign",
    "spurious_zero",
    "inaccurate",
    "ok",
)
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ResultsError(ValueError):
    """A results file that cannot be read or does not match the schema."""


def severity_rank(status: str | None) -> int:
    """Larger is worse; unknown or missing statuses rank below ``ok``."""
    try:
        return len(SEVERITY) - SEVERITY.index(status)  # type: ignore[arg-type]
    except ValueError:
        return 0


def worst_status(statuses: Iterable[str]) -> str:
    """The most severe of ``statuses`` (``ok`` when there are none)."""
    return max(statuses, key=severity_rank, default="ok")


def record_status(record: dict[str, Any]) -> str:
    """Worst status among a record's graded points (``counts``) and its worst point.

    This, not the pytest outcome, is what a record "is": a known deviation that xfails
    is still ``inaccurate``; the contract says whether it is new.
    """
    present = [s for s, c in (record.get("counts") or {}).items() if c]
    status = (record.get("worst") or {}).get("status")
    return worst_status([*present, status] if status else present)


def to_json_value(x: Any) -> Any:
    """A number as stored: finite floats stay numbers, non-finite become strings.

    ``None`` and ints pass through so optional fields (``observed`` of an error) survive.
    """
    if x is None or isinstance(x, bool | int | str):
        return x
    f = float(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def from_json_value(v: Any) -> Any:
    """Inverse of :func:`to_json_value`: the strings "inf"/"-inf"/"nan" become floats."""
    if isinstance(v, str):
        key = v.strip().lower()
        if key in _NONFINITE:
            return _NONFINITE[key]
        raise ResultsError(f"not a number: {v!r}")
    if v is None or isinstance(v, bool):
        return v
    return float(v) if isinstance(v, float) else v


def to_float(v: Any, default: float = math.nan) -> float:
    """A stored number as a float for sorting and plotting; ``None`` gives ``default``."""
    if v is None:
        return default
    try:
        return float(from_json_value(v))
    except (ResultsError, TypeError, ValueError):
        return default


def _reject_constant(name: str) -> Any:
    raise ResultsError(f"bare {name} is not allowed in results.json; use the strings inf/-inf/nan")


def _nonfinite_paths(node: Any, path: str = "$") -> list[str]:
    """JSON paths of float NaN/inf values, which JSON Schema would accept as numbers."""
    if isinstance(node, float) and not math.isfinite(node):
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _nonfinite_paths(v, f"{path}.{k}")]
    if isinstance(node, list | tuple):
        return [p for i, v in enumerate(node) for p in _nonfinite_paths(v, f"{path}[{i}]")]
    return []


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json, schema_version 2 (and 1)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


def validate(doc: Any) -> None:
    """Raise :class:`ResultsError` naming the first problems if ``doc`` is not a valid run.

    Besides the schema this rejects float NaN/inf, which the schema's "number" admits
    but which would be written as bare ``NaN``/``Infinity`` (not JSON).
    """
    bad = _nonfinite_paths(doc)
    if bad:
        raise ResultsError(f"non-finite float at {', '.join(bad[:5])}; use 'inf'/'-inf'/'nan'")
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{e.json_path}: {e.message}" for e in errors[:5]]
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ResultsError("invalid results: " + "; ".join(lines) + more)


def dumps(doc: Any) -> str:
    """Strict JSON text of ``doc``; fails loudly instead of writing bare NaN.

    Indented for people, except each record's ``points`` which go on one line each
    record (thousands of tiny arrays would otherwise take most of the file).
    """
    text = json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False)
    return _POINT_ROW.sub(_compact_rows, text) + "\n"


# A "points" array as json.dumps(indent=1) lays it out: rows of scalars, one per line.
_POINT_ROW = re.compile(r'"points": \[(?:\s*\[[^\[\]{}]*\],?)*\s*\]')


def _compact_rows(match: re.Match[str]) -> str:
    return re.sub(r"\s+", "", match.group(0)).replace('"points":', '"points": ')


def write_results(doc: dict[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/results.json`` atomically (a reader never sees half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULTS_NAME
    tmp = run_dir / f".{RESULTS_NAME}.{os.getpid()}.tmp"
    tmp.write_text(dumps(doc), encoding="utf-8")
    os.replace(tmp, target)
    return target


def resolve_results_path(path_or_dir: str | os.PathLike[str]) -> Path:
    """Accept either a results.json file or a run directory (``reports/latest`` too)."""
    p = Path(path_or_dir)
    return p / RESULTS_NAME if p.is_dir() else p


def load_results(path_or_dir: str | os.PathLike[str], *, check: bool = True) -> dict[str, Any]:
    """Read a run; raise :class:`ResultsError` (one readable line) if unreadable or invalid."""
    path = resolve_results_path(path_or_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None
    if check:
        try:
            validate(doc)
        except ResultsError as exc:
            raise ResultsError(f"{path}: {exc}") from None
    return doc


def make_run_id(now: datetime | None = None) -> str:
    """UTC timestamp id, e.g. ``20261123T150600Z``; sorts in time order."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(base: str | os.PathLike[str] = "reports", run_id: str | None = None) -> Path:
    """Create ``base/<run_id>/`` and atomically point ``base/latest`` at it.

    Two runs in the same second get ``<id>``, ``<id>-01``, ... (the directory is created
    exclusively, so concurrent runs cannot share one). ``latest`` is a relative symlink,
    replaced with ``os.replace`` so a reader sees the old or the new run, never neither.
    The run's id is the returned directory's name.
    """
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stem = run_id or make_run_id()
    for n in range(1000):
        run_dir = base / (stem if n == 0 else f"{stem}-{n:02d}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        point_latest(base, run_dir)
        return run_dir
    raise ResultsError(f"too many runs named {stem} in {base}")


def point_latest(base: Path, run_dir: Path) -> None:
    """Re-point ``base/latest`` at ``run_dir``; a real directory there is moved aside."""
    latest = base / LATEST_NAME
    if latest.is_dir() and not latest.is_symlink():
        latest.rename(base / f"{LATEST_NAME}.replaced-{make_run_id()}-{os.getpid()}")
    tmp = base / f".{LATEST_NAME}.{os.getpid()}.{run_dir.name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, latest)


def find_previous(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest sibling run before ``run_dir`` that has a results.json, for comparison."""
    run_dir = Path(run_dir)
    siblings = [
        p
        for p in run_dir.parent.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and p.name < run_dir.name
        and (p / RESULTS_NAME).is_file()
    ]
    return max(siblings, key=lambda p: p.name, default=None)
