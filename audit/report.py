"""index.html: a self-contained, readable view of one results.json.

The page is built from stored data only (never from terminal text), so it can be
regenerated for any past run. It makes no network fetch: CSS is inline, plots are inline
SVG from matplotlib, the only script is an optional inline copy button, and a
Content-Security-Policy forbids everything else. All run data goes through jinja2's
autoescaping; only our own matplotlib SVG is marked safe.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from audit.dtypes import DTYPES, ULP_BUDGET
from audit.results import SEVERITY, record_status, severity_rank, to_float, worst_status

QUANTITIES = ("loss", "grad")
BUDGET = {d: float(ULP_BUDGET[d]) for d in DTYPES}
# Smallest positive subnormal per dtype: the natural linear threshold of the symlog x axis.
TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 5e-324}
STATUS_COLOUR = {
    "crash": "#1f1f1f",
    "error": "#5b2a86",
    "spurious_nan": "#c0392b",
    "spurious_inf": "#e4572e",
    "missing_inf": "#f28e2b",
    "wrong_sign": "#c2185b",
    "spurious_zero": "#d4a017",
    "inaccurate": "#f1d54b",
    "ok": "#59a14f",
}
TARGET_SERIES = (("target 0", "#0072B2", "o"), ("target 1", "#D55E00", "s"),
                 ("soft label", "#009E73", "^"))
MAX_PLOT_POINTS = 300  # per panel; keeps each inline SVG well under 100 kB
WORST_LIMIT = 30
FAILED_OUTCOMES = {"failed", "xpass_strict"}


# ---------------------------------------------------------------- statuses and cells


def anchor(subject: str, dtype: str) -> str:
    """A safe, unique HTML id for a subject+dtype: readable slug plus a short hash."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", f"{subject}-{dtype}").strip("-")[:60]
    digest = hashlib.sha1(f"{subject}\0{dtype}".encode()).hexdigest()[:8]
    return f"d-{slug}-{digest}"


def _skip_reason(
    skipped: list[dict[str, Any]], subject: str, dtype: str, device: str
) -> str | None:
    """Reason from run.skipped; a null field there matches anything."""
    for s in skipped:
        if all(s.get(k) in (None, v) for k, v in
               (("subject", subject), ("dtype", dtype), ("device", device))):
            return str(s.get("reason", "skipped"))
    return None


def _cell(records: list[dict[str, Any]], skip: str | None, href: str | None) -> dict[str, Any]:
    live = [r for r in records if r.get("outcome") != "skipped"]
    if not live:
        if skip is None and records:
            skip = "skipped"
        return {"status": "skipped" if skip else "none", "known": False, "new": False,
                "stale": False, "share": "",
                "label": "skip" if skip else "–", "title": skip or "not run", "href": None,
                "ulp": None}
    status = worst_status(record_status(r) for r in live)
    failing = [r for r in live if record_status(r) != "ok" or r.get("outcome") == "failed"]
    known = bool(failing) and all(r.get("contract") for r in failing)
    max_ulp = max((to_float(r.get("max_ulp"), 0.0) for r in live), key=_nan_high)
    stale = any(r.get("outcome") == "xpass_strict" for r in live)
    counts: dict[str, int] = defaultdict(int)
    for r in live:
        for s, c in (r.get("counts") or {}).items():
            counts[s] += int(c or 0)
    title = f"{status}{' (known deviation)' if known else ''}; max {fmt_ulp(max_ulp)} ulp; " + \
        ", ".join(f"{s} {counts[s]}" for s in SEVERITY if counts.get(s))
    total = sum(counts.values())
    bad = total - counts.get("ok", 0)
    share = "" if not total else ("all ok" if not bad else
                                  f"{100 * bad / total:.2g}% of {total:,} off")
    return {"status": status, "known": known, "new": bool(failing) and not known,
            "stale": stale, "label": fmt_ulp(max_ulp), "share": share,
            "title": title, "href": href, "ulp": max_ulp}


def _nan_high(x: float) -> float:
    return math.inf if math.isnan(x) else x


def build_matrices(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One matrix per device and quantity: rows subjects, columns dtypes."""
    records = doc.get("records") or []
    run = doc.get("run") or {}
    skipped = run.get("skipped") or []
    subjects = sorted({r["subject"] for r in records} |
                      {s["subject"] for s in skipped if s.get("subject")})
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in records)
              or any(s.get("dtype") == d for s in skipped)] or list(DTYPES)
    devices = sorted({r["device"] for r in records} |
                     {s["device"] for s in skipped if s.get("device")} |
                     set(run.get("devices") or {}), key=lambda d: (d != "cpu", d))
    by_key: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_key[r["subject"], r["dtype"], r["device"], r["quantity"]].append(r)
    with_details = {(r["subject"], r["dtype"]) for r in records}
    matrices = []
    for device in devices:
        for quantity in QUANTITIES:
            rows = []
            for subject in subjects:
                cells = []
                for dtype in dtypes:
                    has = (subject, dtype) in with_details
                    href = "#" + anchor(subject, dtype) if has else None
                    cell = _cell(by_key[subject, dtype, device, quantity],
                                 _skip_reason(skipped, subject, dtype, device), href)
                    cells.append({**cell, "subject": subject, "dtype": dtype})
                rows.append({"subject": subject, "cells": cells})
            matrices.append({"device": device, "quantity": quantity, "dtypes": dtypes,
                             "rows": rows, "device_note": (run.get("devices") or {}).get(device)})
    return matrices


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


# ---------------------------------------------------------------- plots


def _svg(fig: Any, prefix: str) -> Markup:
    """Figure -> inline SVG: no prolog, no metadata, ids prefixed so figures never clash."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->\s*", "", text, flags=re.S)
    text = re.sub(r"(\d+\.\d\d)\d+", r"\1", text)  # 1/100 pt is plenty, and halves the size
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', rf"\1{prefix}-\2", text)
    text = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg class="plot" \1', text,
                  count=1)
    return Markup(text)  # our own matplotlib output, no run data in it


PLOT_LIMIT = 1e300  # matplotlib's symlog transform breaks near the float64 extremes


def _plottable(x: float) -> float:
    """Inputs beyond +-1e300 are drawn at +-1e300; tiny float64 subnormals at +-1e-300."""
    if not math.isfinite(x) or x == 0:
        return x
    return math.copysign(min(max(abs(x), 1 / PLOT_LIMIT), PLOT_LIMIT), x)


def _points(records: Sequence[dict[str, Any]]) -> list[tuple[float, float, float, str]]:
    pts = []
    for r in records:
        for p in r.get("points") or []:
            pts.append((_plottable(to_float(p[0])), to_float(p[1]), to_float(p[2], math.inf),
                        str(p[3])))
    return pts


def downsample(pts: list[Any], limit: int = MAX_PLOT_POINTS) -> list[Any]:
    """Keep every non-ok point (up to half the budget), fill the rest with an even stride.

    Deterministic, so two reports of the same run are identical.
    """
    if len(pts) <= limit:
        return pts
    bad = [p for p in pts if p[3] != "ok"]
    bad = bad[:: max(1, math.ceil(len(bad) / (limit // 2)))]
    good = [p for p in pts if p[3] == "ok"]
    room = limit - len(bad)
    return bad + good[:: max(1, math.ceil(len(good) / max(room, 1)))]


def _target_class(y: float) -> int:
    return 0 if y == 0 else 1 if y == 1 else 2


def _ulp_for_plot(u: float, floor: float, cap: float) -> float:
    return cap if not math.isfinite(u) else max(u, floor)


def _decades(lo: float, hi: float, most: int = 6) -> list[float]:
    """At most ``most`` powers of ten spanning [lo, hi] (both > 0), evenly spaced in decades."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    step = max(1, math.ceil((b - a) / (most - 1)))
    return [10.0**e for e in range(b, a - 1, -step)][::-1]


def _tick_text(v: float, _pos: Any = None) -> str:
    """Plain tick labels ("1e-40", "-1e10", "0"): no mathtext, so text stays cheap SVG text."""
    if v == 0:
        return "0"
    e = math.log10(abs(v))
    if abs(e - round(e)) < 1e-9:
        e = round(e)
        body = "1" if e == 0 else "10" if e == 1 else f"1e{e}"
        return ("-" if v < 0 else "") + body
    return f"{v:.3g}"


def _setup_x(ax: Any, xs: list[float], dtype: str) -> str:
    """Log x for positive-only inputs (probabilities), else symlog over the logit.

    Symlog's linear threshold is the smallest magnitude present (at least the dtype's
    smallest subnormal), so ±1e10 and ±1e-40 are both visible. Returns the axis label.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    mags = [abs(x) for x in xs if x != 0 and math.isfinite(x)] or [1.0]
    lo = max(TINY.get(dtype, 1e-45), min(mags), 1 / PLOT_LIMIT)
    hi = min(max(max(mags), 1e-300), PLOT_LIMIT)
    has_neg, has_pos = any(x < 0 for x in xs), any(x > 0 for x in xs)
    if has_pos and not has_neg and 0.0 not in xs:
        ax.set_xscale("log")
        ticks, label = _decades(min(mags), hi, 8), "input (log scale)"
    else:
        ax.set_xscale("symlog", linthresh=lo, linscale=0.4)
        pos = _decades(lo, hi, 7 if has_neg and has_pos else 9)
        if len(pos) > 2:
            pos = pos[1:]  # the decade at the threshold would sit on top of the 0 tick
        ticks = ([-p for p in pos[::-1]] if has_neg else []) + [0.0] + (pos if has_pos else [])
        label = "input (symlog: log beyond ±" + _tick_text(lo) + ")"
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(_tick_text))
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, which="major", alpha=0.25)
    return label


def _setup_ulp_y(ax: Any, floor: float, cap: float) -> None:
    """Log y for ulp errors with plain labels; the cap line stands for ∞/NaN."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_yscale("log")
    ax.set_ylim(floor / 2, cap * 3)
    ax.yaxis.set_major_locator(FixedLocator(_decades(floor, cap, 7)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, _p: "∞" if v >= cap else _tick_text(v)))
    ax.tick_params(axis="y", labelsize=7)


def _ulp_range(ulps: Iterable[float], budget: float) -> tuple[float, float]:
    """(floor, cap): 0 is drawn at the floor, ∞/NaN at the cap, a decade above the data."""
    # huge finite errors (3e38 ulp) are clamped so the cap itself stays finite
    finite = [min(u, 1e290) for u in ulps if math.isfinite(u) and u > 0]
    return 1e-3, 10.0 ** (math.ceil(math.log10(max([*finite, budget * 10]))) + 1)


def detail_plot(records: Sequence[dict[str, Any]], dtype: str, prefix: str) -> Markup | None:
    """Ulp error (log y) and status (categorical y) against the input, one column per quantity.

    Targets 0, 1 and soft labels are separate series; points with a non-finite input
    cannot be placed on the axis and are counted in the panel title instead.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    quantities = [q for q in QUANTITIES if any(r["quantity"] == q and r.get("points")
                                                for r in records)]
    if not quantities:
        return None
    fig = Figure(figsize=(5.6 * len(quantities), 4.8))
    axes = fig.subplots(2, len(quantities), squeeze=False, sharex="col",
                        gridspec_kw={"height_ratios": [3, 1.6], "hspace": 0.3, "wspace": 0.3})
    fig.subplots_adjust(left=0.17 / len(quantities), right=0.98, top=0.86, bottom=0.1)
    budget = BUDGET.get(dtype, 4.0)
    for col, quantity in enumerate(quantities):
        allpts = _points([r for r in records if r["quantity"] == quantity])
        pts = downsample([p for p in allpts if math.isfinite(p[0])])
        hidden = len(allpts) - sum(math.isfinite(p[0]) for p in allpts)
        floor, cap = _ulp_range((p[2] for p in pts), budget)
        shown = [s for s in SEVERITY if s == "ok" or any(p[3] == s for p in pts)]
        ax_u, ax_s = axes[0][col], axes[1][col]
        for k, (_label, colour, marker) in enumerate(TARGET_SERIES):
            sel = [p for p in pts if _target_class(p[1]) == k]
            if not sel:
                continue
            ax_u.plot([p[0] for p in sel], [_ulp_for_plot(p[2], floor, cap) for p in sel],
                      ls="", marker=marker, ms=3.6, color=colour, mew=0, alpha=0.75)
            for status in shown:  # one Line2D per colour: compact SVG, one <g> per series
                xs = [p[0] for p in sel if p[3] == status]
                if xs:
                    ax_s.plot(xs, [shown.index(status)] * len(xs), ls="", marker=marker,
                              ms=4.2, color=STATUS_COLOUR[status], mec="#333", mew=0.3)
        _setup_ulp_y(ax_u, floor, cap)
        ax_u.axhline(budget, color="#555", ls="--", lw=0.8)
        ax_u.axhline(cap, color="#b00", ls=":", lw=0.8)
        note = f"; {hidden} non-finite inputs not shown" if hidden else ""
        ax_u.set_title(f"{quantity}: ulp error{note}", fontsize=10)
        ax_s.set_yticks(range(len(shown)), shown, fontsize=7)
        ax_s.set_ylim(len(shown) - 0.5, -0.5)
        ax_s.set_title(f"{quantity}: status per point", fontsize=9)
        _setup_x(ax_u, [p[0] for p in pts], dtype)
        ax_s.set_xlabel(_setup_x(ax_s, [p[0] for p in pts], dtype), fontsize=8)
    handles = [Line2D([], [], ls="", marker=m, color=c, label=lab) for lab, c, m in TARGET_SERIES]
    handles += [Line2D([], [], color="#555", ls="--", lw=0.8, label=f"budget {budget:g} ulp"),
                Line2D([], [], color="#b00", ls=":", lw=0.8, label="∞ / NaN (0 ulp drawn at 1e-3)")]
    fig.legend(handles=handles, loc="upper center", ncol=5, fontsize=8, frameon=False)
    return _svg(fig, prefix)


def breakdown_plot(records: Sequence[dict[str, Any]], entries: Sequence[dict[str, Any]],
                   framework: str, dtype: str, prefix: str) -> Markup | None:
    """sigmoid_bce vs bce_with_logits loss error against the logit, breakdown logits marked."""
    from matplotlib.figure import Figure

    def pts_of(op: str, target: float) -> list[Any]:
        rs = [r for r in records if r["subject"] == f"{framework}.{op}" and r["dtype"] == dtype
              and r["quantity"] == "loss"]
        return downsample([p for p in _points(rs) if p[1] == target and math.isfinite(p[0])],
                          150)

    series = [(op, t, pts_of(op, t))
              for op in ("sigmoid_bce", "bce_with_logits") for t in (1.0, 0.0)]
    if not any(s[2] for s in series):
        return None
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.12, right=0.98, top=0.8, bottom=0.13)
    allp = [p for s in series for p in s[2]]
    floor, cap = _ulp_range((p[2] for p in allp), BUDGET.get(dtype, 4.0))
    style = {"sigmoid_bce": ("#D55E00", "o"), "bce_with_logits": ("#0072B2", "s")}
    for op, t, pts in series:
        if pts:
            colour, marker = style[op]
            ax.plot([p[0] for p in pts], [_ulp_for_plot(p[2], floor, cap) for p in pts],
                    ls="", marker=marker, ms=3.5, color=colour, mfc=colour if t else "none",
                    mew=0.8, alpha=0.75, label=f"{op}, target {t:g}")
    for e in entries:
        x, t = to_float(e.get("logit")), to_float(e.get("target"))
        if math.isfinite(x):
            ax.axvline(x, color="#333", ls="--" if t == 1 else ":", lw=0.9,
                       label=f"breakdown x = {x:.3g} (target {t:g})")
    _setup_ulp_y(ax, floor, cap)
    ax.axhline(BUDGET.get(dtype, 4.0), color="#555", ls="--", lw=0.7)
    ax.set_xlabel(_setup_x(ax, [p[0] for p in allp], dtype).replace("input", "logit x"),
                  fontsize=8)
    ax.set_ylabel("ulp error of the loss", fontsize=9)
    fig.legend(loc="upper center", ncol=3, fontsize=7, frameon=False)
    return _svg(fig, prefix)


# ---------------------------------------------------------------- sections


def details(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One section per subject+dtype: its records, contracts and plots."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in doc.get("records") or []:
        groups[r["subject"], r["dtype"]].append(r)
    order = {d: i for i, d in enumerate(DTYPES)}
    out = []
    for i, ((subject, dtype), recs) in enumerate(
            sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9)))):
        recs.sort(key=lambda r: (r["device"], r["quantity"], r["check"], r["reduction"]))
        status = worst_status(record_status(r) for r in recs)
        out.append({"subject": subject, "dtype": dtype, "id": anchor(subject, dtype),
                    "status": status, "records": recs,
                    "plot": detail_plot(recs, dtype, f"p{i}")})
    return out


def worst_cases(doc: dict[str, Any], limit: int = WORST_LIMIT) -> list[dict[str, Any]]:
    """Records whose worst point is a finding, most severe first, then largest ulp."""
    rows = [r for r in doc.get("records") or []
            if r.get("worst") and r["worst"].get("status") not in (None, "ok")]
    rows.sort(key=lambda r: (-severity_rank(r["worst"]["status"]),
                             -_nan_high(to_float(r["worst"].get("ulp"), math.inf)),
                             r["subject"], r["dtype"], r["check"]))
    return rows[:limit]


def breakdown_sections(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per framework+dtype: the plot, one sentence per target, the ±1e10 verdict."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in doc.get("breakdown") or []:
        groups[e["framework"], e["dtype"]].append(e)
    order = {d: i for i, d in enumerate(DTYPES)}
    out = []
    for i, ((fw, dtype), entries) in enumerate(
            sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9)))):
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
                    "plot": breakdown_plot(doc.get("records") or [], entries, fw, dtype, f"b{i}")})
    return out


def equivalence_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    order = {d: i for i, d in enumerate(DTYPES)}
    rows = []
    for e in doc.get("equivalence") or []:
        a, b = (e.get("subjects") or ["?", "?"])[:2]
        ac, bc = int(e.get("a_closer", 0)), int(e.get("b_closer", 0))
        closer = a if ac > bc else b if bc > ac else "tie"
        rows.append({**e, "a": a, "b": b, "closer": closer})
    rows.sort(key=lambda e: (e["quantity"], order.get(e["dtype"], 9), e["device"], e["a"], e["b"]))
    return rows


def skipped_groups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """run.skipped folded by device and reason, so 28 identical CUDA skips read as one line."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in (doc.get("run") or {}).get("skipped") or []:
        groups[str(s.get("device") or "any"), str(s.get("reason", ""))].append(
            f"{s.get('subject') or 'all subjects'} {s.get('dtype') or ''}".strip())
    return [{"device": d, "reason": r, "what": w} for (d, r), w in sorted(groups.items())]


# ---------------------------------------------------------------- rendering


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ulp=fmt_ulp, num=fmt_num, counts=fmt_counts, safe_link=safe_link)
    return env


def render_report(doc: dict[str, Any]) -> str:
    """The page as a string (used by write_report and by tests)."""
    return _environment().get_template("report.html.j2").render(
        run=doc.get("run") or {}, doc=doc, matrices=build_matrices(doc), details=details(doc),
        worst=worst_cases(doc), breakdown=breakdown_sections(doc),
        equivalence=equivalence_rows(doc), comparison=doc.get("comparison"),
        skipped=skipped_groups(doc), severity=SEVERITY, colours=STATUS_COLOUR,
        budget=BUDGET, anchor=anchor)


def write_report(doc: dict[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/index.html`` for ``doc`` (atomically) and return its path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "index.html"
    tmp = run_dir / f".index.html.{os.getpid()}.tmp"
    tmp.write_text(render_report(doc), encoding="utf-8")
    os.replace(tmp, path)
    return path
