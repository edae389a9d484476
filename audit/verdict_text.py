"""Verdicts in plain language: safe ranges, what happens beyond them, one line per dtype.

Written for someone who has never heard of ulps: "safe" means the framework returns the
correctly rounded value (within the dtype's small error budget) for every input we graded
there. Everything here reads results.json's `verdicts` (audit/verdicts.py), never points.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from audit import families
from audit.results import to_float

# what a status means for the value, completing "the loss ..." / "the gradient ..."
PLAIN = {
    "crash": "crashes the framework",
    "error": "raises an error",
    "spurious_nan": "is NaN",
    "spurious_inf": "overflows to infinity",
    "missing_inf": "is finite where it should be infinite",
    "wrong_sign": "has the wrong sign",
    "spurious_zero": "underflows to 0",
    "inaccurate": "is less accurate than the format allows",
}
QUANTITY = {"loss": "loss", "grad": "gradient"}
# how a family is called in a recommendation (subjects of a user family: by their name)
FAMILY_LABEL = {
    "bce_with_logits": "the fused loss on logits",
    "sigmoid_bce": "BCELoss(sigmoid(x))",
    "bce": "BCE on probabilities",
    "focal_with_logits": "focal loss on logits",
    "focal": "focal loss on probabilities",
}
FAMILY_ORDER = tuple(FAMILY_LABEL)


def fmt_input(v: Any) -> str:
    """An input as a person reads it: 4 significant digits, ∞, 3.403e38, 5.96e-8."""
    x = to_float(v)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        text = f"{x:.4g}"
    else:
        mant, exp = f"{x:.3e}".split("e")
        text = f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return text.replace("-", "−")


def family_of(subject: str, family: str | None = None) -> families.Family:
    """The subject's family record (a record's `family` field; logits when unknown)."""
    try:
        return families.get(family or "bce_with_logits")
    except ValueError:
        return families.get("bce_with_logits")


def _bound(side: dict | None, end: Any, lower: bool) -> str | float | None:
    """None: nothing fails on this side; "finite": only the infinite input does; else
    the safe end."""
    if side is None:
        return None
    x = to_float(side["input"])
    if math.isinf(x) and (x < 0) == lower:
        return "finite"
    return to_float(end)


def interval_text(v: dict[str, Any], variable: str = "x") -> str:
    """'every x', 'every finite x', 'x ≤ 16.6', '−0.54 ≤ x ≤ 3', or 'no input'."""
    if v.get("safe") is None:
        return f"no {variable}"
    lo, hi = v["safe"]
    a, b = _bound(v.get("below"), lo, True), _bound(v.get("above"), hi, False)
    if isinstance(a, str | type(None)) and isinstance(b, str | type(None)):
        return f"every {variable}" if a is None and b is None else f"every finite {variable}"
    if isinstance(a, str | type(None)):
        return f"{variable} ≤ {fmt_input(b)}"
    if isinstance(b, str | type(None)):
        return f"{variable} ≥ {fmt_input(a)}"
    return f"{fmt_input(a)} ≤ {variable} ≤ {fmt_input(b)}"


def beyond_text(v: dict[str, Any], variable: str = "x") -> list[str]:
    """What happens beyond each end, e.g. 'below x = −17.3: the loss underflows to 0
    (first at x = −17.34)'; [] when nothing fails."""
    q = QUANTITY.get(v.get("quantity", "loss"), "value")
    if v.get("safe") is None and v.get("below") is not None:
        b = v["below"]
        return [f"at {variable} = {fmt_input(b['input'])} already: the {q} "
                f"{PLAIN.get(b['status'], b['status'])}"]
    out = []
    for key, word, end in (("below", "below", 0), ("above", "above", 1)):
        side = v.get(key)
        if side is None:
            continue
        what = PLAIN.get(side["status"], side["status"])
        x = to_float(side["input"])
        if math.isinf(x):
            out.append(f"at {variable} = {fmt_input(x)}: the {q} {what}")
        else:
            out.append(f"{word} {variable} = {fmt_input(v['safe'][end])}: the {q} {what} "
                       f"(first at {variable} = {fmt_input(x)})")
    return out


def intersect(vs: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict of several hard targets together: inputs safe for all of them."""
    if any(v.get("safe") is None for v in vs):
        failing = next(v for v in vs if v.get("safe") is None)
        return {**failing, "safe": None}
    lo_v = max(vs, key=lambda v: to_float(v["safe"][0]))
    hi_v = min(vs, key=lambda v: to_float(v["safe"][1]))
    if to_float(lo_v["safe"][0]) > to_float(hi_v["safe"][1]):
        return {**lo_v, "safe": None}
    return {**vs[0], "safe": [lo_v["safe"][0], hi_v["safe"][1]], "below": lo_v.get("below"),
            "above": hi_v.get("above"),
            "basis": "exhaustive" if all(v["basis"] == "exhaustive" for v in vs) else "grid"}


def _as_logit(value: float, family: families.Family) -> float:
    """A probability input at its logit ln(q / (1 - q)): families become comparable."""
    if family.input_kind != "probability":
        return value
    if value <= 0:
        return -math.inf
    if value >= 1:
        return math.inf
    return math.log(value) - math.log1p(-value)


def reach(v: dict[str, Any], family: families.Family) -> float:
    """How far the safe range reaches from the centre on its shorter side, in logits
    (inf: every finite input; -1: nowhere)."""
    if v.get("safe") is None:
        return -1.0
    reach_lo = math.inf if isinstance(_bound(v.get("below"), 0, True), str | type(None)) \
        else -_as_logit(to_float(v["safe"][0]), family)
    reach_hi = math.inf if isinstance(_bound(v.get("above"), 0, False), str | type(None)) \
        else _as_logit(to_float(v["safe"][1]), family)
    return min(reach_lo, reach_hi)


def quality(v: dict[str, Any], family: families.Family) -> str:
    """'all' (every finite input), 'part', or 'narrow' (nowhere, or within a logit of 0)."""
    r = reach(v, family)
    return "all" if math.isinf(r) else "part" if r >= 1 else "narrow"


def loss_verdicts(verdicts: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """(subject, dtype, device, execution) -> the loss verdict for targets 0 and 1 together."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for v in verdicts:
        if v["quantity"] == "loss":
            groups[v["subject"], v["dtype"], v["device"], v["execution"]].append(v)
    return {k: intersect(vs) for k, vs in groups.items()}


def interval_short(v: dict[str, Any]) -> str:
    """The table's form of interval_text: 'all', 'all finite', '≥ −0.54', '[−3, 7.6]'."""
    if v.get("safe") is None:
        return "none"
    lo, hi = v["safe"]
    a, b = _bound(v.get("below"), lo, True), _bound(v.get("above"), hi, False)
    open_a, open_b = isinstance(a, str | type(None)), isinstance(b, str | type(None))
    if open_a and open_b:
        return "all" if a is None and b is None else "all finite"
    if open_a:
        return f"≤ {fmt_input(b)}"
    if open_b:
        return f"≥ {fmt_input(a)}"
    return f"[{fmt_input(a)}, {fmt_input(b)}]"


# what a user holds -> the families that take it, the recommended one first
INPUT_GROUPS = (("logits", ("bce_with_logits", "sigmoid_bce")), ("probabilities", ("bce",)))


def recommendations(verdicts: list[dict[str, Any]], family_names: dict[str, str],
                    dtypes: Iterable[str]) -> list[dict[str, str]]:
    """One plain line per dtype: for logits and for probabilities, the loss with the
    widest safe range for targets 0 and 1 together (first device, eager), and how far the
    two-step BCELoss(sigmoid(x)) gets at best."""
    combined = loss_verdicts(verdicts)
    out = []
    for dtype in dtypes:
        devices = sorted({k[2] for k in combined if k[1] == dtype}, key=lambda d: d != "cpu")
        rows = {k[0]: v for k, v in combined.items()
                if k[1] == dtype and k[3] == "eager" and devices and k[2] == devices[0]}
        parts = []
        for kind, fams in INPUT_GROUPS:
            best_of = {}
            for fam in fams:
                members = [s for s in rows if family_names.get(s) == fam]
                if members:
                    record = family_of(members[0], fam)
                    top = max(reach(rows[s], record) for s in members)
                    best_of[fam] = (top, sorted(s for s in members
                                                if reach(rows[s], record) == top), record)
            if not best_of:
                continue
            fam = max(best_of, key=lambda f: (best_of[f][0], -fams.index(f)))
            _, best, record = best_of[fam]
            text = f"{kind}: {', '.join(best)} ({FAMILY_LABEL[fam]}), safe for " \
                   f"{interval_text(rows[best[0]], record.variable)}"
            for other in fams:
                if other != fam and other in best_of:
                    _, o_best, o_rec = best_of[other]
                    text += f"; {FAMILY_LABEL[other]} at best for " \
                            f"{interval_text(rows[o_best[0]], o_rec.variable)} ({o_best[0]})"
            parts.append(text)
        if parts:
            out.append({"dtype": dtype, "device": devices[0], "text": ". ".join(
                p[0].upper() + p[1:] for p in parts) + "."})
    return out
