"""Figures of the report as compact inline PNG images (data: URIs, no network fetch).

Error against input per subject and dtype (the detail pages) and the BCELoss(sigmoid(x))
breakdown plot. PNG at a modest DPI keeps the page light: a scatter of a few hundred
points as SVG costs ~100 kB, as PNG ~25 kB, and the browser decodes it off the main path.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from markupsafe import Markup, escape

from audit.dtypes import DTYPES, ULP_BUDGET
from audit.results import SEVERITY, to_float

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
MAX_PLOT_POINTS = 300  # per panel
DPI = 80


def image(fig: Any, alt: str, css: str = "plot", dpi: int = DPI) -> Markup:
    """Figure -> <img> with an inline PNG (the page's CSP allows only data: images)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    size = fig.get_size_inches() * dpi
    return Markup(f'<img class="{css}" width="{int(size[0])}" height="{int(size[1])}" '
                  f'alt="{escape(alt)}" src="data:image/png;base64,{data}">')


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


def detail_plot(records: Sequence[dict[str, Any]], dtype: str, title: str) -> Markup | None:
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
    return image(fig, f"ulp error and status against the input: {title}")


def breakdown_plot(records: Sequence[dict[str, Any]], entries: Sequence[dict[str, Any]],
                   framework: str, dtype: str) -> Markup | None:
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
    return image(fig, f"{framework} {dtype}: sigmoid_bce and bce_with_logits loss error",
                 css="plot breakdown")


def target_map_figure(record: dict[str, Any]) -> Any:
    """The logit x target map of a `--targets all` record (audit/target_map.py): share of
    points not ok per cell (colour), white where no point falls; the title says where the
    largest error is."""
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    m = record["target_map"]
    n, bad = np.array(m["n"], float), np.array(m["bad"], float)
    keep_x = np.flatnonzero(n.sum(axis=1) > 0)
    keep_y = np.flatnonzero(n.sum(axis=0) > 0)
    n, bad = n[np.ix_(keep_x, keep_y)], bad[np.ix_(keep_x, keep_y)]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, bad / n, np.nan)
    share = np.where(share == 0, np.nan, share)  # all ok: left blank (white), like no data
    xs = [m["x_bins"][i] for i in keep_x]
    ys = [m["y_bins"][i] for i in keep_y]
    fig = Figure(figsize=(9.5, 4.6))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.09, right=0.9, top=0.88, bottom=0.2)
    img = ax.imshow(share.T, origin="lower", aspect="auto", interpolation="nearest",
                    cmap="magma_r", norm=LogNorm(vmin=max(1e-6, np.nanmin(share)
                                                          if np.isfinite(share).any()
                                                          else 1e-6), vmax=1.0))
    step_x = max(1, len(xs) // 14)
    ax.set_xticks(range(0, len(xs), step_x), [xs[i] for i in range(0, len(xs), step_x)],
                  rotation=45, ha="right", fontsize=7)
    step_y = max(1, len(ys) // 12)
    ax.set_yticks(range(0, len(ys), step_y), [ys[i] for i in range(0, len(ys), step_y)],
                  fontsize=7)
    ax.set_xlabel("logit x (sign and binade)", fontsize=8)
    ax.set_ylabel("target y (binade of y, or of 1 - y)", fontsize=8)
    total = int(n.sum())
    wrong = int(bad.sum())
    ax.set_title(f"{record['subject']} {record['dtype']} {record['quantity']}: "
                 f"{wrong:,} of {total:,} points not ok ({wrong / max(total, 1):.2%}); "
                 f"colour: share not ok per cell", fontsize=9)
    bar = fig.colorbar(img, ax=ax, fraction=0.03, pad=0.01)
    ticks = [t for t in (1e-6, 1e-4, 1e-2, 1.0) if t >= img.norm.vmin]
    bar.set_ticks(ticks, labels=[f"{t:.0e}" if t < 1 else "all" for t in ticks], fontsize=7)
    return fig


def target_map_plot(record: dict[str, Any]) -> Markup:
    fig = target_map_figure(record)
    return image(fig, f"{record['subject']} {record['dtype']} {record['quantity']} "
                      f"logit x target map")
