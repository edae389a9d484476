"""The stability map: per dtype, one row per subject along the input axis, every input
range coloured by its status and the safe interval outlined, so the eye sees in one
picture where each framework breaks.

All subjects share one logit axis: a probability input q sits at its logit
ln(q / (1 - q)) (what BCELoss(sigmoid(x)) receives), so the two-step pipeline, BCE on
probabilities and the fused loss line up. The axis is linear within ±1e-4, one decade per
unit up to ±1e4, compressed from there to the dtype's largest value, and ±∞ get slots of
their own at the ends. Ranges come from the records' status runs (audit/verdicts.py
`segments`); a sweep record without them is drawn from its sampled points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from audit.figures import STATUS_COLOUR, image
from audit.results import SEVERITY, to_float
from reference.formats import get_format

LINEAR = 1e-4  # linear below this |x|
KNEE = 1e4  # decades up to here, compressed beyond
TAIL = 2.0  # axis units from KNEE to the largest finite value
INF_AT, INF_HALF = 11.6, 0.3  # the slot of ±∞ (the finite axis ends at ±11)
ROW_INCH = 0.2
WIDTH_INCH = 6.24  # 624 px at DPI: shown at its natural size
DPI = 100


def position(x: float, dtype: str) -> float:
    """Where input x (a logit) sits on the map's axis."""
    a = abs(x)
    if math.isinf(a):
        t = INF_AT
    elif a <= LINEAR:
        t = a / LINEAR
    elif a <= KNEE:
        t = 1 + math.log10(a / LINEAR)
    else:
        top = get_format(dtype).max_finite
        t = 9 + TAIL * min(1.0, math.log10(a / KNEE) / math.log10(top / KNEE))
    return math.copysign(t, x)


def as_logit(q: float, probability: bool) -> float:
    if not probability:
        return q
    if q <= 0:
        return -math.inf
    if q >= 1:
        return math.inf
    return math.log(q) - math.log1p(-q)


def segments_from_points(points: Sequence[Sequence[Any]], target: float) -> list[list]:
    """Status runs from a record's sampled points (sweeps keep no runs): an estimate."""
    pts = sorted((to_float(p[0]), str(p[3])) for p in points
                 if to_float(p[1]) == target and not math.isnan(to_float(p[0])))
    runs: list[list] = []
    for x, status in pts:
        if runs and runs[-1][2] == status:
            runs[-1][1] = x
            runs[-1][3] += 1
            runs[-1][4] += status == "ok"
        else:
            runs.append([x, x, status, 1, int(status == "ok")])
    return runs


def _spans(segs: list[list], dtype: str, probability: bool) -> list[tuple[float, float, list]]:
    """(left, right, segment) on the axis; neighbours meet halfway between their ends,
    ±∞ keep their own slots."""
    placed = [(position(as_logit(to_float(s[0]), probability), dtype),
               position(as_logit(to_float(s[1]), probability), dtype), s) for s in segs]
    out = []
    for i, (a, b, s) in enumerate(placed):
        if abs(a) == INF_AT and a == b:
            out.append((a - INF_HALF, a + INF_HALF, s))
            continue
        left = a if i == 0 or abs(placed[i - 1][1]) == INF_AT else (placed[i - 1][1] + a) / 2
        nxt = placed[i + 1][0] if i + 1 < len(placed) else None
        right = b if nxt is None or abs(nxt) == INF_AT else (b + nxt) / 2
        out.append((max(left, -11.0), min(right, 11.0), s))
    return out


TICKS = ((-math.inf, "−∞"), (-KNEE, "−1e4"), (-100.0, "−100"), (-1.0, "−1"),
         (-0.01, "−0.01"), (0.0, "0"), (0.01, "0.01"), (1.0, "1"), (100.0, "100"),
         (KNEE, "1e4"), (math.inf, "∞"))


def stability_map(rows: list[dict[str, Any]], dtype: str) -> Markup | None:
    """The map of one dtype. rows: {"label", "probability", "strips": [{"target",
    "segments", "safe"}]} top to bottom (loss, targets 1 then 0)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    rows = [r for r in rows if r["strips"]]
    if not rows:
        return None
    fig = Figure(figsize=(WIDTH_INCH, ROW_INCH * len(rows) + 0.58))
    ax = fig.subplots()
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.27, right=0.99, top=1 - 0.3 / height, bottom=0.28 / height)
    seen = set()
    for i, row in enumerate(rows):
        for k, strip in enumerate(row["strips"]):
            y0 = i + 0.06 + 0.46 * k
            for left, right, s in _spans(strip["segments"], dtype, row["probability"]):
                mixed = s[2] != "ok" and s[4] > 0
                seen.add(s[2])
                ax.add_patch(Rectangle((left, y0), max(right - left, 0.04), 0.4, lw=0,
                                       color=STATUS_COLOUR.get(s[2], "#999"),
                                       alpha=0.55 if mixed else 1.0))
            safe = strip.get("safe")
            if safe is not None:
                lo, hi = (position(as_logit(to_float(v), row["probability"]), dtype)
                          for v in safe)
                lo = lo - INF_HALF if abs(lo) == INF_AT else lo
                hi = hi + INF_HALF if abs(hi) == INF_AT else hi
                ax.add_patch(Rectangle((lo, y0 - 0.03), hi - lo, 0.46, fill=False, lw=1.1,
                                       ec="#111"))
            ax.text(-12.1, y0 + 0.2, f"y={strip['target']:g}", fontsize=4.5, va="center",
                    ha="right", color="#555")
    ax.set_xlim(-12.0, 12.0)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([i + 0.5 for i in range(len(rows))], [r["label"] for r in rows], fontsize=6.5)
    ax.tick_params(axis="y", length=0, pad=18)
    ax.set_xticks([position(v, dtype) for v, _ in TICKS], [t for _, t in TICKS], fontsize=6)
    ax.tick_params(axis="x", length=2, pad=1)
    ax.axvline(0, color="#777", lw=0.5, ls=":")
    for x in (-11.0, 11.0):
        ax.axvline(x, color="#bbb", lw=0.5)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    handles = [Patch(color=STATUS_COLOUR[s], label=s) for s in SEVERITY if s in seen]
    handles.append(Patch(fill=False, ec="#111", label="safe range"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=6,
               frameon=False, handlelength=1.0, columnspacing=0.8, handletextpad=0.4)
    return image(fig, f"stability map, {dtype}: status along the logit axis per subject",
                 css="map", dpi=DPI)
