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

from audit.jsonnum import (  # noqa: F401 -- re-exported: results.to_json_value etc.
    _NONFINITE,
    ResultsError,
    from_json_value,
    to_float,
    to_json_value,
)

SCHEMA_VERSION = 2  # 2: status crash, structured inputs, family
RESULTS_NAME = "results.json"
LATEST_NAME = "latest"
PARTS_NAME = ".records"  # a pytest run's per-process record lines (audit/session.py)
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


def _reject_constant(name: str) -> Any:
    raise ResultsError(f"bare {name} is not allowed in results.json; use the strings inf/-inf/nan")


def _nonfinite_paths(node: Any, path: str = "$") -> list[str]:
    """JSON paths of float NaN/inf values, which JSON Schema would accept as numbers."""
    if isinstance(node, float):
        return [] if math.isfinite(node) else [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() if isinstance(v, dict | list | tuple | float)
                for p in _nonfinite_paths(v, f"{path}.{k}")]
    if isinstance(node, list | tuple):
        return [p for i, v in enumerate(node) if isinstance(v, dict | list | tuple | float)
                for p in _nonfinite_paths(v, f"{path}[{i}]")]
    return []


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json, schema_version 2 (and 1)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(schema())


# The large, regular parts of a run (every graded point of every record, and the sweeps'
# ulp histograms) are checked by hand: an item passes only if it is certainly valid under
# results.schema.json (exact types, no coercion), so the schema stays the one contract;
# a record with any item in doubt is left whole to jsonschema, which names the problem.
_NUM_STR = frozenset({"inf", "-inf", "nan"})
_ULP_STR = frozenset({"inf", "nan"})
_STATUSES = frozenset(SEVERITY)


def _num_ok(v: Any) -> bool:
    t = type(v)
    return t is float or t is int or (t is str and v in _NUM_STR)


def _fast_points(points: list[Any], path: str, nonfinite: list[str]) -> bool:
    """True if every point is a valid ``[input, target, ulp, status]`` row."""
    for j, p in enumerate(points):
        if type(p) is not list or len(p) != 4:
            return False
        x, y, u, s = p
        tu = type(u)
        if not (_num_ok(x) and _num_ok(y) and type(s) is str and s in _STATUSES
                and (((tu is float or tu is int) and u >= 0) or (tu is str and u in _ULP_STR))):
            return False
        for k in (0, 1, 2):
            v = p[k]
            if type(v) is float and v - v != 0.0:  # inf or nan
                nonfinite.append(f"{path}[{j}][{k}]")
    return True


def _fast_histogram(hist: Any, path: str, nonfinite: list[str]) -> bool:
    if type(hist) is not dict:
        return False
    edges, counts = hist.get("edges"), hist.get("counts")
    if type(edges) is not list or type(counts) is not list:
        return False
    for j, v in enumerate(edges):
        if not _num_ok(v):
            return False
        if type(v) is float and v - v != 0.0:
            nonfinite.append(f"{path}.edges[{j}]")
    for v in counts:
        t = type(v)
        if not ((t is int or (t is float and v.is_integer())) and v >= 0):
            return False
    return True


def _lighten(doc: Any, nonfinite: list[str]) -> Any:
    """``doc`` with the points and histograms that passed the hand check emptied."""
    if type(doc) is not dict or type(doc.get("records")) is not list:
        return doc
    records = []
    for i, r in enumerate(doc["records"]):
        if type(r) is not dict:
            records.append(r)
            continue
        base, found, light = f"$.records[{i}]", [], dict(r)
        points = r.get("points")
        if type(points) is list:
            if not _fast_points(points, f"{base}.points", found):
                records.append(r)
                continue
            light["points"] = []
        hist = r.get("ulp_histogram")
        if hist is not None:
            if not _fast_histogram(hist, f"{base}.ulp_histogram", found):
                records.append(r)
                continue
            light["ulp_histogram"] = {**hist, "edges": [], "counts": []}
        nonfinite += found
        records.append(light)
    return {**doc, "records": records}


def validate(doc: Any) -> None:
    """Raise :class:`ResultsError` naming the first problems if ``doc`` is not a valid run.

    Besides the schema this rejects float NaN/inf, which the schema's "number" admits
    but which would be written as bare ``NaN``/``Infinity`` (not JSON). A full run
    (some 10^5 points) takes a fraction of a second: see :func:`_lighten`.
    """
    nonfinite: list[str] = []
    light = _lighten(doc, nonfinite)
    bad = nonfinite + _nonfinite_paths(light)
    if bad:
        bad.sort(key=_path_order)
        raise ResultsError(f"non-finite float at {', '.join(bad[:5])}; use 'inf'/'-inf'/'nan'")
    errors = sorted(_validator().iter_errors(light), key=lambda e: _path_order(e.json_path))
    if errors:
        lines = [f"{e.json_path}: {e.message}" for e in errors[:5]]
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ResultsError("invalid results: " + "; ".join(lines) + more)


def _path_order(path: str) -> list[Any]:
    """Sort key of a JSON path: indices numerically, names as text."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t)
            for t in re.findall(r"[^.\[\]$]+", path)]


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


def with_verdicts(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its top-level ``verdicts`` (DESIGN.md section 8) derived from the
    records' ``stability`` when it has none; unchanged when no record carries one."""
    if not isinstance(doc, dict) or "verdicts" in doc or not isinstance(doc.get("records"),
                                                                        list):
        return doc
    from audit.verdicts import document_verdicts

    found = document_verdicts(r for r in doc["records"] if isinstance(r, dict))
    return {**doc, "verdicts": found} if found else doc


def write_results(doc: dict[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/results.json`` atomically (a reader never sees half a file), with
    its verdicts (:func:`with_verdicts`: every writer of a run gets them)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / RESULTS_NAME
    tmp = run_dir / f".{RESULTS_NAME}.{os.getpid()}.tmp"
    tmp.write_text(dumps(with_verdicts(doc)), encoding="utf-8")
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
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text (byte {exc.start})") from None
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
    elif not isinstance(doc, dict):
        raise ResultsError(f"{path}: not a results document (a JSON {type(doc).__name__})")
    return doc


def make_run_id(now: datetime | None = None) -> str:
    """UTC timestamp id, e.g. ``20261123T150600Z``; sorts in time order."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


RUN_ID = re.compile(r"\d{8}T\d{6}Z(-\d{2,})?")
KEEP_REPORTS = 20  # runs kept in reports/ (pytest --keep-reports N)


def is_run_id(name: str) -> bool:
    """Whether ``name`` is a run folder name made by :func:`new_run_dir`."""
    return RUN_ID.fullmatch(name) is not None


def new_run_dir(base: str | os.PathLike[str] = "reports", run_id: str | None = None,
                *, latest: bool = True) -> Path:
    """Create ``base/<run_id>/`` and (unless ``latest=False``) point ``base/latest`` at it.

    Two runs in the same second get ``<id>``, ``<id>-01``, ... (the directory is created
    exclusively, so concurrent runs cannot share one). ``latest`` is a relative symlink,
    replaced with ``os.replace`` so a reader sees the old or the new run, never neither.
    The run's id is the returned directory's name. The pytest run creates its folder
    with ``latest=False`` and points ``latest`` at it once its report is written.
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
        if latest:
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


def run_kind(doc: dict[str, Any]) -> str:
    """What made a run, for choosing its baseline: ``"pytest"`` (the audit) or
    ``"sweep:<modes>"`` (``python -m audit sweep`` / ``merge``: exhaustive or sampled)."""
    run = doc.get("run") if isinstance(doc.get("run"), dict) else {}
    words = str(run.get("command") or "").split()
    records = doc.get("records") if isinstance(doc.get("records"), list) else []
    modes = sorted({str(r.get("mode")) for r in records if isinstance(r, dict)})
    if words[:1] == ["pytest"] or (not words and "grid" in modes):
        return "pytest"
    tool = words[3] if words[:3] == ["python", "-m", "audit"] and len(words) > 3 else \
        (words[0] if words else "?")
    tool = "sweep" if tool in ("sweep", "merge") else tool
    return f"{tool}:{'+'.join(modes)}"


def find_previous(run_dir: str | os.PathLike[str], like: dict[str, Any] | None = None
                  ) -> Path | None:
    """The baseline of ``run_dir``: the newest sibling run before it (by name; run ids
    are timestamps) whose results.json is readable, has at least one record and, when
    ``like`` (a run document) is given, is of the same :func:`run_kind`."""
    run_dir = Path(run_dir)
    try:
        siblings = sorted((p for p in run_dir.parent.iterdir()
                           if p.name < run_dir.name and not p.is_symlink() and p.is_dir()
                           and (p / RESULTS_NAME).is_file()),
                          key=lambda p: p.name, reverse=True)
    except OSError:
        return None
    kind = run_kind(like) if like is not None else None
    for p in siblings:
        try:
            doc = load_results(p, check=False)
        except ResultsError:
            continue
        if doc.get("records") and (kind is None or run_kind(doc) == kind):
            return p
    return None


def prune_runs(base: str | os.PathLike[str], keep: int = KEEP_REPORTS,
               protect: Iterable[Path] = ()) -> list[Path]:
    """Remove all but the newest ``keep`` run folders of ``base`` (folders named by
    :func:`make_run_id`; nothing else there is touched). Never removed: ``protect``, the
    folder ``latest`` points at, and a run still being written (records touched in the
    last hour). Returns the folders removed."""
    import shutil
    import time

    base = Path(base)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    try:
        runs = sorted((p for p in base.iterdir()
                       if is_run_id(p.name) and p.is_dir() and not p.is_symlink()),
                      key=lambda p: p.name, reverse=True)
    except OSError:
        return []
    kept = {p.resolve() for p in protect}
    latest = base / LATEST_NAME
    if latest.is_symlink():
        kept.add(latest.resolve())
    removed = []
    for p in runs[keep:]:
        if p.resolve() in kept:
            continue
        parts = p / PARTS_NAME
        try:
            live = parts.is_dir() and time.time() - max(
                [parts.stat().st_mtime, *(f.stat().st_mtime for f in parts.iterdir())]) < 3600
        except OSError:
            live = False
        if live and not (p / RESULTS_NAME).is_file():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
