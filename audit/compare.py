"""Compare two runs: what got worse, what got better (``python -m audit compare OLD NEW``;
``compare NEW`` compares with the newest earlier run of the same kind, ``compare`` alone
does that for reports/latest).

Records are matched by (subject, check, quantity, dtype, device, reduction). A record
regresses when its worst status becomes more severe, when its max ulp error more than
doubles and ends above the dtype's budget, or when its test outcome turns into a
failure; an improvement is the mirror image. The exit status makes this usable in CI:
1 if anything regressed, 0 otherwise, 2 for unreadable or invalid input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from audit.dtypes import ULP_BUDGET
from audit.results import (
    LATEST_NAME,
    ResultsError,
    find_previous,
    load_results,
    record_status,
    run_kind,
    severity_rank,
    to_float,
    to_json_value,
)

KEY_FIELDS = ("subject", "check", "quantity", "dtype", "device", "reduction")
FAILING = frozenset({"failed", "xpass_strict"})
ULP_FACTOR = 2.0

Key = tuple[str, ...]


def record_key(record: dict[str, Any]) -> Key:
    return tuple(str(record.get(f)) for f in KEY_FIELDS)


def _max_ulp(record: dict[str, Any]) -> float:
    """NaN max ulp means a NaN was observed somewhere: as bad as infinite."""
    u = to_float(record.get("max_ulp"), 0.0)
    return math.inf if math.isnan(u) else u


def _state(record: dict[str, Any]) -> dict[str, Any]:
    return {"status": record_status(record), "max_ulp": to_json_value(_max_ulp(record)),
            "outcome": record.get("outcome")}


def _by_key(doc: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    """Records by key; if a key repeats, the worse record stands for it."""
    out: dict[Key, dict[str, Any]] = {}
    for r in doc.get("records") or []:
        k = record_key(r)
        if k not in out or (severity_rank(record_status(r)), _max_ulp(r)) > (
                severity_rank(record_status(out[k])), _max_ulp(out[k])):
            out[k] = r
    return out


def _worse(a: dict[str, Any], b: dict[str, Any], budget: float,
           *, improved: bool = False) -> list[str]:
    """Why ``b`` is worse than ``a`` (empty if it is not). Used in both directions: for
    an improvement (``improved=True``, ``a`` the new record and ``b`` the old one) the
    reasons still read old -> new, e.g. ``status spurious_zero -> ok``."""

    def change(what: str, x: Any, y: Any) -> str:
        return f"{what} {y} -> {x}" if improved else f"{what} {x} -> {y}"

    reasons = []
    sa, sb = record_status(a), record_status(b)
    if severity_rank(sb) > severity_rank(sa):
        reasons.append(change("status", sa, sb))
    ua, ub = _max_ulp(a), _max_ulp(b)
    if ub > ULP_FACTOR * ua and ub > budget:
        reasons.append(change("max ulp", to_json_value(ua), to_json_value(ub)))
    oa, ob = a.get("outcome"), b.get("outcome")
    if ob in FAILING and oa not in FAILING:
        reasons.append(change("outcome", oa, ob))
    return reasons


def _entry(key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None,
           reasons: list[str]) -> dict[str, Any]:
    return {**dict(zip(KEY_FIELDS, key, strict=True)),
            "old": _state(old) if old else None, "new": _state(new) if new else None,
            "reasons": reasons}


def compare(old_doc: dict[str, Any], new_doc: dict[str, Any],
            budgets: dict[str, float] | None = None) -> dict[str, Any]:
    """Regressions, improvements, new and removed records of ``new_doc`` against ``old_doc``.

    ``budgets`` maps dtype -> ulp budget (default: DESIGN.md section 5). Records that
    were skipped on either side are not judged. The result is JSON-ready.
    """
    budgets = {**ULP_BUDGET, **(budgets or {})}
    old, new = _by_key(old_doc), _by_key(new_doc)
    result: dict[str, Any] = {
        "previous": str((old_doc.get("run") or {}).get("id", "?")),
        "current": str((new_doc.get("run") or {}).get("id", "?")),
        "regressions": [], "improvements": [], "new": [], "removed": []}
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            result["new" if a is None else "removed"].append(_entry(key, a, b, []))
            continue
        if "skipped" in (a.get("outcome"), b.get("outcome")):
            continue
        budget = budgets.get(str(b.get("dtype")), 4.0)
        if worse := _worse(a, b, budget):
            result["regressions"].append(_entry(key, a, b, worse))
        elif better := _worse(b, a, budget, improved=True):
            result["improvements"].append(_entry(key, a, b, better))
    return result


def attach_comparison(doc: dict[str, Any], previous_doc: dict[str, Any] | None) -> dict | None:
    """Fill ``doc["comparison"]`` against the previous run (None when there is none)."""
    if previous_doc is None:
        doc["comparison"] = None
        return None
    found = compare(previous_doc, doc)
    doc["comparison"] = {k: found[k] for k in
                         ("previous", "regressions", "improvements", "new", "removed")}
    return doc["comparison"]


# ---------------------------------------------------------------- command line


def _fmt_state(state: dict[str, Any] | None) -> str:
    if not state:
        return "-"
    return f"{state['status']} {state['max_ulp']} ulp ({state['outcome']})"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of the changes, widest columns sized to their content."""
    header = ("change", *KEY_FIELDS, "before", "after", "why")
    rows = [header]
    for kind, items in (("REGRESSION", result["regressions"]),
                        ("improvement", result["improvements"]),
                        ("new", result["new"]), ("removed", result["removed"])):
        for e in items:
            rows.append((kind, *(str(e[f]) for f in KEY_FIELDS), _fmt_state(e["old"]),
                         _fmt_state(e["new"]), "; ".join(e["reasons"])))
    summary = (f"{len(result['regressions'])} regressions, "
               f"{len(result['improvements'])} improvements, {len(result['new'])} new, "
               f"{len(result['removed'])} removed ({result['previous']} -> {result['current']})")
    if len(rows) == 1:
        return summary
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
             for r in rows]
    return "\n".join([*lines, "", summary])


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise _UsageError(message)


def _run_dir_of(path: str | os.PathLike[str]) -> Path:
    """The run folder of a results.json path or run folder, ``latest`` resolved."""
    p = Path(path)
    return (p if p.is_dir() else p.parent).resolve()


def baseline(new: str | os.PathLike[str], new_doc: dict[str, Any]) -> Path:
    """The default OLD of ``compare NEW``: the newest earlier run next to NEW of the same
    kind (a pytest audit, or a sweep of the same mode) with at least one record."""
    run_dir = _run_dir_of(new)
    found = find_previous(run_dir, like=new_doc)
    if found is None:
        raise _UsageError(f"no earlier {run_kind(new_doc)} run with records next to {new} "
                          f"(in {run_dir.parent}) to compare with; name OLD explicitly")
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m audit compare [[OLD] NEW] [--json]``; OLD/NEW: results.json or a run
    dir. NEW defaults to reports/latest, OLD to the newest earlier run of NEW's kind."""
    parser = _Parser(prog="python -m audit compare",
                     usage="python -m audit compare [-h] [--json] [[OLD] NEW]",
                     description="Compare two audit runs; exit 1 if NEW regressed.")
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="results.json or report directories: the earlier run (default: "
                             "the newest earlier run of the same kind as NEW) and the later "
                             "one (default: reports/latest)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if len(args.runs) > 2:
            raise _UsageError(f"expected at most two runs (OLD NEW), got {len(args.runs)}")
        new = args.runs[-1] if args.runs else str(Path("reports") / LATEST_NAME)
        if not args.runs and not Path(new).exists():
            raise _UsageError("no run given and no reports/latest here; "
                              "usage: python -m audit compare [[OLD] NEW]")
        new_doc = load_results(new)
        old = args.runs[0] if len(args.runs) == 2 else baseline(new, new_doc)
        old_doc = load_results(old)
    except (_UsageError, ResultsError) as exc:
        message = " ".join(str(exc).split())  # always one line
        print(f"python -m audit compare: error: {message}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    result = compare(old_doc, new_doc)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        if len(args.runs) < 2:
            print(f"comparing {new} with {old} (the newest earlier {run_kind(new_doc)} run)\n")
        print(format_table(result))
    return 1 if result["regressions"] else 0


if __name__ == "__main__":
    sys.exit(main())
