"""The report's "what each framework does with an invalid target" table, from the
validation records' summaries (audit.records.validation_summary).

One row per subject and execution (dtypes that behave alike share a row); one column per
invalid input: each target value outside [0, 1], probabilities outside [0, 1], negative
and NaN weights, mismatched shapes. A cell says what a user gets back: the call is
rejected (the message on hover), NaN, or a silent number (the exact formula's, or another
and how far from it).
"""

from __future__ import annotations

import math
from typing import Any

from audit.dtypes import ORDER
from audit.jsonnum import to_float

# (column heading, kind in the summary, the by_value keys it covers)
COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("target −0.5", "target", ("-0.5",)),
    ("target 1.5", "target", ("1.5",)),
    ("target ±inf", "target", ("inf", "-inf")),
    ("target NaN", "target", ("nan",)),
    ("probability outside [0, 1]", "probability", ("-0.5", "1.5", "inf", "-inf")),
    ("weight −1", "weight", ("-1.0",)),
    ("weight NaN", "weight", ("nan",)),
    ("pos_weight −1", "pos_weight", ("-1.0",)),
    ("pos_weight NaN", "pos_weight", ("nan",)),
)
COUNTS = ("n", "rejected", "nan", "ok", "wrong", "expected_nan")
# the cell's class, most alarming first: a silent wrong number, NaN, rejected
KINDS = ("silent", "nan", "rejected", "formula")


def _sum(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {k: sum(int(p.get(k) or 0) for p in parts) for k in COUNTS}
    ulps = [to_float(p.get("max_ulp"), math.nan) for p in parts if p.get("max_ulp") is not None]
    total["max_ulp"] = max(ulps) if ulps else None
    total["message"] = next((p["message"] for p in parts if p.get("message")), None)
    total["example"] = next((p["example"] for p in parts if p.get("example")), None)
    return total


def _example(e: dict[str, Any] | None) -> str:
    if not e:
        return ""
    return (f"e.g. x = {e.get('input')}, y = {e.get('target')}: returns {e.get('observed')} "
            f"(exact formula: {e.get('expected')})")


def cell(c: dict[str, Any]) -> dict[str, str]:
    """What one column's points give back: `text`, `kind` (a KINDS entry), `title`."""
    n, rejected, nan = c["n"], c["rejected"], c["nan"]
    ok, wrong = c["ok"], c["wrong"]
    title = c["message"] or _example(c.get("example"))
    if rejected == n:
        return {"text": "rejected", "kind": "rejected", "title": c["message"] or ""}
    parts = []
    if rejected:
        parts.append(f"{rejected}/{n} rejected")
    if nan:
        as_formula = nan == n == c["expected_nan"]  # e.g. a NaN target: NaN is right
        parts.append("NaN (so is the formula)" if as_formula else
                     "NaN" if nan == n else f"{nan}/{n} NaN")
    if ok:
        word = "the formula's number" if ok == n else f"{ok}/{n} the formula's number"
        parts.append(word if c["expected_nan"] == 0 else word.replace("number", "value"))
    if wrong:
        ulp = c["max_ulp"]
        far = "" if ulp is None else (" (inf ulp off)" if math.isinf(ulp) else
                                      f" ({ulp:.3g} ulp off)")
        parts.append(("another number" if wrong == n else f"{wrong}/{n} another number") + far)
    kind = ("silent" if wrong or (ok and c["expected_nan"] < ok) else
            "formula" if nan == n == c["expected_nan"] else
            "nan" if nan else "rejected" if rejected else "formula")
    return {"text": ", ".join(parts), "kind": kind, "title": title}


def _shapes_cell(text: Any) -> dict[str, str] | None:
    if not text:
        return None
    s = str(text)
    kind = "rejected" if s.startswith("rejected") else "silent"
    head = s.split(":", 1)[0]
    return {"text": head, "kind": kind, "title": s}


def _cells(summary: dict[str, Any]) -> tuple:
    out = []
    for _, kind, keys in COLUMNS:
        by_value = (summary.get(kind) or {}).get("by_value") or {}
        parts = [by_value[k] for k in keys if k in by_value]
        out.append(cell(_sum(parts)) if parts else None)
    out.append(_shapes_cell(summary.get("shapes")))
    return tuple(None if c is None else (c["text"], c["kind"], c["title"]) for c in out)


def rows(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The table: `columns` (headings, shapes last) and `rows`, each with subject,
    execution, dtypes and cells (None where the subject has no such input)."""
    groups: dict[tuple, list[str]] = {}
    for r in doc.get("records") or []:
        summary = r.get("validation")
        if r.get("check") != "validation" or not isinstance(summary, dict):
            continue
        key = (str(r.get("subject")), str(r.get("execution") or "eager"),
               str(r.get("device")), _cells(summary))
        groups.setdefault(key, []).append(str(r.get("dtype")))
    if not groups:
        return None
    used = [any(k[3][i] is not None for k in groups) for i in range(len(COLUMNS) + 1)]
    headings = [c[0] for c in COLUMNS] + ["mismatched shapes"]
    table = []
    for (subject, execution, device, cells), dtypes in groups.items():
        table.append({
            "subject": subject, "execution": execution, "device": device,
            "dtypes": sorted(set(dtypes), key=lambda d: ORDER.get(d, 9)),
            "cells": [None if c is None else {"text": c[0], "kind": c[1], "title": c[2]}
                      for c, u in zip(cells, used, strict=True) if u]})
    table.sort(key=lambda t: (t["subject"], t["execution"] != "eager", t["execution"],
                              t["device"], ORDER.get(t["dtypes"][0], 9)))
    return {"columns": [h for h, u in zip(headings, used, strict=True) if u], "rows": table}
