"""Run history: each subject's share of graded points within budget and its safe loss
range across the retained runs (the sibling ``reports/<run>/results.json`` of the same
kind), with the framework versions each ran, so a change reads as a trend next to the
upgrade that caused it. Only runs before this one count: a past report stays as it was.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from audit import results
from audit.dtypes import DTYPES
from audit.verdict_text import family_of, interval_text, loss_verdicts

MAX_RUNS = 8  # this run and up to 7 before it
FRAMEWORKS = ("torch", "tensorflow", "tf", "keras", "jax", "paddle")


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """A run's trend numbers: per (subject, dtype) the share within budget of its plain
    checks (values and grads, first device, eager) and its loss safe range (targets 0
    and 1 together), plus the framework versions."""
    ok: dict[tuple[str, str], int] = defaultdict(int)
    n: dict[tuple[str, str], int] = defaultdict(int)
    families: dict[str, str] = {}
    for r in doc.get("records") or []:
        if r.get("check") in ("values", "grads") and r.get("device") == "cpu" and \
                r.get("execution", "eager") == "eager":
            key = (r["subject"], r["dtype"])
            ok[key] += int((r.get("counts") or {}).get("ok", 0))
            n[key] += int(r.get("n") or 0)
            families[r["subject"]] = r.get("family") or ""
    safe = {}
    verdicts = results.with_verdicts(doc).get("verdicts") or []  # older runs: from records
    for (subject, dtype, device, execution), v in loss_verdicts(verdicts).items():
        if device == "cpu" and execution == "eager":
            safe[subject, dtype] = interval_text(v, family_of(subject,
                                                              families.get(subject)).variable)
    versions = (doc.get("run") or {}).get("versions") or {}
    return {"id": (doc.get("run") or {}).get("id", "?"),
            "versions": {k: str(v) for k, v in versions.items() if k in FRAMEWORKS},
            "cells": {k: {"share": ok[k] / n[k] if n[k] else None, "safe": safe.get(k)}
                      for k in n}}


def earlier_runs(run_dir: str | os.PathLike[str], doc: dict[str, Any],
                 limit: int = MAX_RUNS - 1) -> list[dict[str, Any]]:
    """Summaries of the newest `limit` runs before `run_dir` of the same kind, oldest first."""
    run_dir = Path(run_dir)
    kind = results.run_kind(doc)
    try:
        siblings = sorted((p for p in run_dir.parent.iterdir()
                           if results.is_run_id(p.name) and p.name < run_dir.name
                           and not p.is_symlink() and (p / results.RESULTS_NAME).is_file()),
                          key=lambda p: p.name, reverse=True)
    except OSError:
        return []
    found = []
    for p in siblings:
        try:
            old = results.load_results(p, check=False)
        except results.ResultsError:
            continue
        if old.get("records") and results.run_kind(old) == kind:
            found.append(summarize(old))
            if len(found) == limit:
                break
    return found[::-1]


def history(run_dir: str | os.PathLike[str] | None, doc: dict[str, Any]) -> dict | None:
    """The trend table of this run and the retained runs before it; None without any."""
    if run_dir is None:
        return None
    runs = [*earlier_runs(run_dir, doc), summarize(doc)]
    if len(runs) < 2:
        return None
    order = {d: i for i, d in enumerate(DTYPES)}
    keys = sorted({k for run in runs for k in run["cells"]},
                  key=lambda k: (k[0], order.get(k[1], 9)))
    rows = []
    for key in keys:
        cells, previous = [], None
        for run in runs:
            cell = run["cells"].get(key)
            changed = cell is not None and previous is not None and cell != previous
            cells.append(None if cell is None else {**cell, "changed": changed})
            previous = cell if cell is not None else previous
        rows.append({"subject": key[0], "dtype": key[1], "cells": cells})
    heads = []
    for i, run in enumerate(runs):
        before = runs[i - 1]["versions"] if i else run["versions"]
        heads.append({"id": run["id"], "versions": run["versions"],
                      "upgraded": sorted(k for k, v in run["versions"].items()
                                         if before.get(k) not in (None, v))})
    return {"runs": heads, "rows": rows}
