"""index.html and one page per subject: a self-contained, readable view of one results.json.

The index answers the user's question first: the verdicts (where each loss is safe, in
plain words), a stability map per dtype and the questions people ask; then the summary
matrices, worst cases, equivalence, breakdown, run history and environment. Records and
their plots live on per-subject pages next to index.html, so the index stays light.
Built from stored data only (any past run can be re-rendered); no network fetch: CSS is
inline, plots are PNG data: URIs, the only script is an optional copy button, and a
Content-Security-Policy forbids everything else. Run data goes through jinja2's
autoescaping; only our own figure markup is marked safe.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import re
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from audit import history, invalid_input, questions
from audit.dtypes import DTYPES, ORDER
from audit.figures import (
    BUDGET,
    QUANTITIES,
    STATUS_COLOUR,
    breakdown_plot,
    detail_plot,
    target_map_plot,
)
from audit.results import (
    SEVERITY,
    record_status,
    severity_rank,
    to_float,
    with_verdicts,
    worst_status,
)
from audit.stability_map import segments_from_points, stability_map
from audit.verdict_text import (
    FAMILY_ORDER,
    beyond_text,
    family_of,
    intersect,
    interval_short,
    interval_text,
    quality,
    recommendations,
)

WORST_LIMIT = 30
FAILED_OUTCOMES = {"failed", "xpass_strict"}
FIRST_SCREEN_DTYPES = ("float16", "float32")  # maps beside the verdict table


# ---------------------------------------------------------------- names and links


def anchor(subject: str, dtype: str) -> str:
    """A safe, unique HTML id for a subject+dtype: readable slug plus a short hash."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", f"{subject}-{dtype}").strip("-")[:60]
    digest = hashlib.sha1(f"{subject}\0{dtype}".encode()).hexdigest()[:8]
    return f"d-{slug}-{digest}"


def page_name(subject: str) -> str:
    """The file of a subject's detail page, next to index.html (any subject name is safe)."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", subject).strip("-")[:60]
    return f"subject-{slug}-{hashlib.sha1(subject.encode()).hexdigest()[:8]}.html"


def detail_href(subject: str, dtype: str) -> str:
    return f"{page_name(subject)}#{anchor(subject, dtype)}"


def _subject_order(families: dict[str, str]) -> Any:
    """Sort key: fused losses first, then the two-step pipeline, probabilities, focal."""
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return lambda s: (rank.get(families.get(s, ""), len(rank)), s)


def _families(doc: dict[str, Any]) -> dict[str, str]:
    return {r["subject"]: r.get("family") or "" for r in doc.get("records") or []}


# ---------------------------------------------------------------- statuses and cells


def _skip_reason(skipped: list[dict[str, Any]], subject: str, dtype: str, device: str
                 ) -> str | None:
    """Reason from run.skipped; a null field there matches anything."""
    for s in skipped:
        if all(s.get(k) in (None, v) for k, v in
               (("subject", subject), ("dtype", dtype), ("device", device))):
            return str(s.get("reason", "skipped"))
    return None


def finite_counts(record: dict[str, Any]) -> dict[str, int]:
    """Status counts of the points with finite inputs and weights (all of them for a
    record that does not say: older files)."""
    inf = record.get("inf_counts") or {}
    return {s: int(c) - int(inf.get(s, 0)) for s, c in (record.get("counts") or {}).items()
            if int(c) - int(inf.get(s, 0)) > 0}


def finite_status(record: dict[str, Any]) -> str:
    """The worst status among finite inputs (record_status where the split is unknown)."""
    if "inf_counts" not in record:
        return record_status(record)
    return worst_status(finite_counts(record))


def _cell(records: list[dict[str, Any]], skip: str | None, href: str | None,
          safe: str | None) -> dict[str, Any]:
    live = [r for r in records if r.get("outcome") != "skipped"]
    if not live:
        if skip is None and records:
            skip = "skipped"
        return {"status": "skipped" if skip else "none", "known": False, "new": False,
                "stale": False, "share": "", "exact": "", "safe": "",
                "label": "skip" if skip else "–", "title": skip or "not run", "href": None}
    status = worst_status(finite_status(r) for r in live)
    failing = [r for r in live if record_status(r) != "ok" or r.get("outcome") == "failed"]
    known = bool(failing) and all(r.get("contract") for r in failing)
    max_ulp = max((to_float(r.get("max_ulp"), 0.0) for r in live), key=_nan_high)
    stale = any(r.get("outcome") == "xpass_strict" for r in live)
    counts: dict[str, int] = defaultdict(int)
    for r in live:
        for s, c in finite_counts(r).items():
            counts[s] += c
    total = sum(counts.values())
    n = sum(int(r.get("n") or 0) for r in live)
    exact = sum(float(r.get("correctly_rounded") or 0) * int(r.get("n") or 0) for r in live)
    title = f"{status}{' (known deviation)' if known else ''} on finite inputs; max " \
            f"{fmt_ulp(max_ulp)} ulp; " + ", ".join(f"{s} {counts[s]}" for s in SEVERITY
                                                    if counts.get(s))
    share = f"{_pct(counts.get('ok', 0), total)} ok" if total else ""
    return {"status": status, "known": known, "new": bool(failing) and not known,
            "stale": stale, "label": share or fmt_ulp(max_ulp), "share": share,
            "exact": f"{_pct(exact, n)} exact" if n else "", "safe": safe or "",
            "title": title, "href": href}


def _inf_cell(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The points with an infinite input or weight, kept out of the main cell."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        for s, c in (r.get("inf_counts") or {}).items():
            counts[s] += int(c)
    total = sum(counts.values())
    if not total:
        return None
    status = worst_status(s for s, c in counts.items() if c)
    return {"status": status, "label": f"{_pct(counts.get('ok', 0), total)} ok",
            "title": ", ".join(f"{s} {counts[s]}" for s in SEVERITY if counts.get(s))}


def _pct(part: float, whole: float) -> str:
    """A share that never rounds a failure away: 99.97% shows as '>99.9%', not 100%."""
    if not whole:
        return "–"
    p = 100 * part / whole
    if p == 100 or p == 0:
        return f"{p:.0f}%"
    return ">99.9%" if p > 99.9 else "<0.1%" if p < 0.1 else f"{p:.1f}%"


def _nan_high(x: float) -> float:
    return math.inf if math.isnan(x) else x


def build_matrices(doc: dict[str, Any], safe: dict[tuple, str] | None = None
                   ) -> list[dict[str, Any]]:
    """One matrix per device, execution and quantity: rows subjects, columns dtypes; a
    device or execution with nothing measured is one entry with its reason (`collapsed`)."""
    records = doc.get("records") or []
    run = doc.get("run") or {}
    skipped = run.get("skipped") or []
    fams = _families(doc)
    subjects = sorted({r["subject"] for r in records} |
                      {s["subject"] for s in skipped if s.get("subject")},
                      key=_subject_order(fams))
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in records)
              or any(s.get("dtype") == d for s in skipped)] or list(DTYPES)
    devices = sorted({r["device"] for r in records} |
                     {s["device"] for s in skipped if s.get("device")} |
                     set(run.get("devices") or {}), key=lambda d: (d != "cpu", d))
    by_key: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_key[r["subject"], r["dtype"], r["device"], r.get("execution", "eager"),
               r["quantity"]].append(r)
    matrices = []
    for device in devices:
        note = (run.get("devices") or {}).get(device)
        here = [r for r in records if r["device"] == device]
        executions = sorted({r.get("execution", "eager") for r in here} or {"eager"},
                            key=lambda e: (e != "eager", e))
        for execution in executions:
            live = [r for r in here if r.get("execution", "eager") == execution
                    and r.get("outcome") != "skipped"]
            if not live:
                reasons = sorted({str(s.get("reason")) for s in skipped
                                  if s.get("device") in (None, device)})
                matrices.append({"device": device, "execution": execution, "collapsed": True,
                                 "reason": note or "; ".join(reasons) or "nothing measured"})
                continue
            for quantity in QUANTITIES:
                rows = []
                for subject in subjects:
                    cells, inf = [], []
                    for dtype in dtypes:
                        recs = by_key[subject, dtype, device, execution, quantity]
                        href = detail_href(subject, dtype) if recs else None
                        skip = _skip_reason(skipped, subject, dtype, device) \
                            if execution == "eager" else None
                        cell = _cell(recs, skip, href, (safe or {}).get(
                            (subject, dtype, device, execution, quantity)))
                        cells.append({**cell, "subject": subject, "dtype": dtype})
                        inf.append(_inf_cell(recs))
                    if execution == "eager" or any(c["status"] != "none" for c in cells):
                        rows.append({"subject": subject, "cells": cells,
                                     "inf": inf if any(inf) else None})
                matrices.append({"device": device, "execution": execution,
                                 "quantity": quantity, "dtypes": dtypes, "rows": rows,
                                 "collapsed": False, "device_note": note})
    return matrices


# ---------------------------------------------------------------- verdicts and maps


def _row_label(subject: str, device: str, execution: str) -> str:
    extra = [v for v, plain in ((device, "cpu"), (execution, "eager")) if v != plain]
    return subject + (f" ({', '.join(extra)})" if extra else "")


def verdict_view(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The verdicts table (loss, targets 0 and 1 per dtype: the first device, eager; the
    other devices and executions in a second one), every verdict in words, the
    recommendations and the maps; None for a run without verdicts (older files)."""
    verdicts = doc.get("verdicts") or []
    if not verdicts:
        return None
    fams = _families(doc)
    dtypes = sorted({v["dtype"] for v in verdicts}, key=lambda d: ORDER.get(d, 9))
    keys = sorted({(v["subject"], v["device"], v["execution"]) for v in verdicts},
                  key=lambda k: (_subject_order(fams)(k[0]), k[1] != "cpu", k[1],
                                 k[2] != "eager", k[2]))
    first_device = min((k[1] for k in keys), key=lambda d: (d != "cpu", d))
    main = [k for k in keys if k[1] == first_device and k[2] == "eager"]
    index = {(v["subject"], v["dtype"], v["device"], v["execution"], v["quantity"],
              float(v["target"])): v for v in verdicts}
    every = [{**v, "text": interval_text(v, family_of(v["subject"],
                                                      fams.get(v["subject"])).variable),
              "beyond": beyond_text(v, family_of(v["subject"], fams.get(v["subject"])).variable)}
             for v in verdicts]
    maps = [{"dtype": d, "figure": stability_map(map_rows(doc, d, main, fams), d)}
            for d in dtypes]
    return {"dtypes": dtypes, "device": first_device,
            "rows": [_verdict_row(k, dtypes, index, fams) for k in main],
            "other_rows": [_verdict_row(k, dtypes, index, fams) for k in keys if k not in main],
            "every": every, "recommendations": recommendations(verdicts, fams, dtypes),
            "maps_first": [m for m in maps if m["dtype"] in FIRST_SCREEN_DTYPES and m["figure"]],
            "maps_rest": [m for m in maps if m["dtype"] not in FIRST_SCREEN_DTYPES
                          and m["figure"]]}


def _verdict_row(key: tuple[str, str, str], dtypes: list[str], index: dict[tuple, dict],
                 fams: dict[str, str]) -> dict[str, Any]:
    subject, device, execution = key
    family = family_of(subject, fams.get(subject))
    cells = []
    for dtype in dtypes:
        lines = []
        for t in (0.0, 1.0):
            v = index.get((subject, dtype, device, execution, "loss", t))
            if v is not None:
                words = interval_text(v, family.variable)
                lines.append({"target": t, "text": interval_short(v),
                              "quality": quality(v, family),
                              "estimated": v["basis"] != "exhaustive",
                              "title": "; ".join([f"safe for {words}", *beyond_text(
                                  v, family.variable)])})
        cells.append({"dtype": dtype, "lines": lines,
                      "href": detail_href(subject, dtype) if lines else None})
    return {"label": _row_label(subject, device, execution), "subject": subject,
            "cells": cells}


def map_rows(doc: dict[str, Any], dtype: str, keys: list[tuple[str, str, str]],
             fams: dict[str, str]) -> list[dict[str, Any]]:
    """The stability map's rows of one dtype: the loss records' status runs per target."""
    by_key = {}
    for r in doc.get("records") or []:
        if r["dtype"] == dtype and r.get("check") == "values" and r.get("stability"):
            by_key[r["subject"], r["device"], r.get("execution", "eager")] = r
    rows = []
    for key in keys:
        r = by_key.get(key)
        if r is None:
            continue
        strips = []
        for e in sorted(r["stability"]["targets"], key=lambda e: e["target"]):
            segs = e.get("segments") or segments_from_points(r.get("points") or [],
                                                             float(e["target"]))
            strips.append({"target": float(e["target"]), "segments": segs, "safe": e["safe"]})
        probability = family_of(key[0], fams.get(key[0])).input_kind == "probability"
        rows.append({"label": _row_label(*key) + (" (q)" if probability else ""),
                     "probability": probability, "strips": strips})
    return rows


def safe_texts(doc: dict[str, Any]) -> dict[tuple, str]:
    """(subject, dtype, device, execution, quantity) -> the safe range, targets 0 and 1
    together."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for v in doc.get("verdicts") or []:
        groups[v["subject"], v["dtype"], v["device"], v["execution"], v["quantity"]].append(v)
    fams = _families(doc)
    return {k: "safe: " + interval_text(intersect(vs), family_of(k[0], fams.get(k[0])).variable)
            for k, vs in groups.items()}


# ---------------------------------------------------------------- formatting


def fmt_ulp(v: Any) -> str:
    """Short ulp text: 0, 0.49, 3.2, 1.2e6, ∞."""
    x = to_float(v)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞"
    if x == 0:
        return "0"
    if x < 0.01:
        return f"{x:.0e}".replace("e-0", "e-")
    if x < 1000:
        return f"{x:.3g}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant}e{int(exp)}"


def fmt_num(v: Any) -> str:
    """A stored number as a person reads it: shortest repr, or inf/-inf/nan, or —."""
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return repr(float(v))


def fmt_counts(counts: dict[str, int] | None) -> str:
    return " · ".join(f"{s} {counts[s]}" for s in SEVERITY[::-1] if (counts or {}).get(s))


def safe_link(url: Any) -> str | None:
    """Only http(s) links become anchors; anything else (javascript:, data:) stays text."""
    return url if isinstance(url, str) and re.match(r"https?://", url) else None


# ---------------------------------------------------------------- sections


def details(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One page per subject: a section per dtype with its records, contracts and plot."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in doc.get("records") or []:
        groups[r["subject"]][r["dtype"]].append(r)
    fams = _families(doc)
    said: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for v in doc.get("verdicts") or []:
        variable = family_of(v["subject"], fams.get(v["subject"])).variable
        said[v["subject"], v["dtype"]].append({**v, "text": interval_text(v, variable),
                                               "beyond": beyond_text(v, variable)})
    for told in said.values():  # the loss first, the first device and eager first
        told.sort(key=lambda v: (v["quantity"] != "loss", v["device"] != "cpu",
                                 v["execution"] != "eager", v["execution"], v["target"]))
    pages = []
    for subject in sorted(groups, key=_subject_order(fams)):
        sections = []
        for dtype, recs in sorted(groups[subject].items(), key=lambda kv: ORDER.get(kv[0], 9)):
            recs.sort(key=lambda r: (r["device"], r.get("execution", "eager"), r["quantity"],
                                     r["check"], r["reduction"]))
            sections.append({"subject": subject, "dtype": dtype, "id": anchor(subject, dtype),
                             "status": worst_status(record_status(r) for r in recs),
                             "records": recs, "verdicts": said[subject, dtype]})
        pages.append({"subject": subject, "file": page_name(subject), "sections": sections,
                      "status": worst_status(s["status"] for s in sections)})
    return pages


def worst_cases(doc: dict[str, Any], limit: int = WORST_LIMIT) -> dict[str, list]:
    """Findings: the worst record of each subject first (most severe, then largest ulp),
    then the rest, `limit` rows in all."""
    rows = [r for r in doc.get("records") or []
            if r.get("worst") and r["worst"].get("status") not in (None, "ok")]
    rows.sort(key=lambda r: (-severity_rank(r["worst"]["status"]),
                             -_nan_high(to_float(r["worst"].get("ulp"), math.inf)),
                             r["subject"], r["dtype"], r["check"]))
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        first.setdefault(r["subject"], r)
    firsts = list(first.values())[:limit]
    picked = {id(r) for r in firsts}
    rest = [r for r in rows if id(r) not in picked][: max(0, limit - len(firsts))]
    return {"first": firsts, "rest": rest}


def breakdown_sections(doc: dict[str, Any], plots_for: str | None = None
                       ) -> list[dict[str, Any]]:
    """Per framework+dtype: one sentence per target, the ±1e10 verdict, and for framework
    `plots_for` the plot (drawn on its two-step subject's page: the index stays light)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in doc.get("breakdown") or []:
        groups[e["framework"], e["dtype"]].append(e)
    out = []
    for (fw, dtype), entries in sorted(groups.items(),
                                       key=lambda kv: (kv[0][0], ORDER.get(kv[0][1], 9))):
        budget = BUDGET.get(dtype, 4.0)
        rows = []
        for e in sorted(entries, key=lambda e: -to_float(e.get("target"), 0)):
            logit = to_float(e.get("logit"))
            v, g = to_float(e.get("value_ulp_at_1e10")), to_float(e.get("grad_ulp_at_1e10"))
            sentence = (f"{fw} BCELoss(sigmoid(x)) in {dtype} loses all precision beyond "
                        f"x = {logit:.3g} (target {fmt_num(e.get('target'))})"
                        if math.isfinite(logit) else
                        f"{fw} BCELoss(sigmoid(x)) in {dtype} does not break down in the tested "
                        f"range (target {fmt_num(e.get('target'))})")
            rows.append({**e, "sentence": sentence, "stable": v <= budget and g <= budget})
        out.append({"framework": fw, "dtype": dtype, "rows": rows, "budget": budget,
                    "stable": all(r["stable"] for r in rows),
                    "page": detail_href(f"{fw}.sigmoid_bce", dtype),
                    "plot": breakdown_plot(doc.get("records") or [], entries, fw, dtype)
                    if fw == plots_for else None})
    return out


def equivalence_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Cross-framework comparisons (pairs of subjects on the same inputs)."""
    rows = []
    for e in doc.get("equivalence") or []:
        if e.get("executions"):
            continue
        a, b = (e.get("subjects") or ["?", "?"])[:2]
        rows.append({**e, "a": a, "b": b, "closer": _closer(e, a, b)})
    rows.sort(key=lambda e: (e["quantity"], ORDER.get(e["dtype"], 9), e["device"], e["a"],
                             e["b"]))
    return rows


def execution_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One subject eager vs compiled / autocast on the same inputs: where they differ, by
    how much, which is closer to the truth, and the widest gap's two repro commands."""
    rows = []
    for e in doc.get("equivalence") or []:
        if not e.get("executions"):
            continue
        subject = (e.get("subjects") or ["?"])[0]
        other = e["executions"][1]
        rows.append({**e, "subject": subject, "execution": other,
                     "closer": _closer(e, "eager", other)})
    rows.sort(key=lambda e: (e["n_differ"] == 0, e["subject"], e["execution"],
                             ORDER.get(e["dtype"], 9), e["quantity"]))
    return rows


def _closer(e: dict[str, Any], a: str, b: str) -> str:
    ac, bc = int(e.get("a_closer", 0)), int(e.get("b_closer", 0))
    return a if ac > bc else b if bc > ac else "tie"


def skipped_groups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """run.skipped folded by device and reason, so 28 identical CUDA skips read as one line."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in (doc.get("run") or {}).get("skipped") or []:
        groups[str(s.get("device") or "any"), str(s.get("reason", ""))].append(
            f"{s.get('subject') or 'all subjects'} {s.get('dtype') or ''}".strip())
    return [{"device": d, "reason": r, "what": w} for (d, r), w in sorted(groups.items())]


def randomness(run: dict[str, Any]) -> str:
    """The header's word on Hypothesis' examples: derandomized (ci), a seed, or random."""
    if run.get("seed") is not None:
        return f"seed {run['seed']}"
    derandomized = run.get("derandomized")
    if derandomized or (derandomized is None and run.get("profile") in ("ci", "test")):
        return "derandomized"
    return "seed random"


# ---------------------------------------------------------------- rendering


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ulp=fmt_ulp, num=fmt_num, counts=fmt_counts, safe_link=safe_link,
                       short=questions.short_exact)
    return env


def _common(doc: dict[str, Any]) -> dict[str, Any]:
    return {"run": doc.get("run") or {}, "doc": doc, "severity": SEVERITY,
            "colours": STATUS_COLOUR, "budget": BUDGET, "anchor": anchor,
            "detail_href": detail_href,
            "modes": sorted({str(r.get("mode")) for r in doc.get("records") or []}),
            "randomness": randomness(doc.get("run") or {})}


def render_report(doc: dict[str, Any], run_dir: str | os.PathLike[str] | None = None) -> str:
    """The index page as a string (used by write_report and by tests); `run_dir` (where
    the run lives) lets it show the trend of the retained runs before it."""
    doc = with_verdicts(doc)
    pages = details(doc)
    return _environment().get_template("report.html.j2").render(
        **_common(doc), verdicts=verdict_view(doc),
        matrices=build_matrices(doc, safe_texts(doc)), pages=pages, worst=worst_cases(doc),
        breakdown=breakdown_sections(doc), equivalence=equivalence_rows(doc),
        executions=execution_rows(doc), invalid=invalid_input.rows(doc),
        comparison=doc.get("comparison"), skipped=skipped_groups(doc),
        answers={"big": questions.sigmoid_at_1e10(doc), "agree": questions.agreement(doc),
                 "examples": questions.worked_examples(doc)},
        history=history.history(run_dir, doc))


def render_subject(doc: dict[str, Any], page: dict[str, Any]) -> str:
    """One subject's detail page: its records per dtype with their plots."""
    framework = page["subject"].split(".")[0]
    breakdowns = {b["dtype"]: b for b in breakdown_sections(doc, plots_for=framework)
                  if b["framework"] == framework} \
        if page["subject"] == f"{framework}.sigmoid_bce" else {}
    for section in page["sections"]:
        section["plot"] = detail_plot(section["records"], section["dtype"],
                                      f"{section['subject']} {section['dtype']}")
        section["breakdown"] = breakdowns.get(section["dtype"])
        section["target_maps"] = [target_map_plot(r) for r in section["records"]
                                  if r.get("target_map")]
    return _environment().get_template("subject.html.j2").render(**_common(doc), page=page)


def write_report(doc: dict[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/index.html`` and the subject pages for ``doc`` (each atomically)
    and return the index's path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = with_verdicts(doc)
    pages = details(doc)
    jobs = min(len(pages), os.cpu_count() or 1)
    if jobs > 1:
        # the subject pages' plots are most of a report's time, and a run ends with every
        # core idle: render them in fresh (spawned) processes, never forked from a pytest
        # process with threads; a worker that dies is an error here, not a hang
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_receive,
                                 initargs=(doc, pages, run_dir)) as pool:
            biggest = sorted(range(len(pages)), key=lambda i: -sum(
                len(sec["records"]) for sec in pages[i]["sections"]))
            list(pool.map(_write_subject_page, biggest))
    else:
        for page in pages:
            _write(run_dir / page["file"], render_subject(doc, page))
    return _write(run_dir / "index.html", render_report(doc, run_dir))


_RECEIVED: tuple[dict[str, Any], list[dict[str, Any]], Path] | None = None


def _receive(doc: dict[str, Any], pages: list[dict[str, Any]], run_dir: Path) -> None:
    global _RECEIVED
    _RECEIVED = (doc, pages, run_dir)


def _write_subject_page(i: int) -> None:
    assert _RECEIVED is not None
    doc, pages, run_dir = _RECEIVED
    _write(run_dir / pages[i]["file"], render_subject(doc, pages[i]))


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

