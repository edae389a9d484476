"""The questions people ask, answered from a run's measured data (never typed in):

- is BCELoss(sigmoid(x)) stable at x = 1e10? (records' `specials`, per framework and dtype)
- do torch and TF agree, and where not, who is right? (`equivalence` entries)
- what do the documents' 3x3 worked examples give? (`examples` of the worked_examples check)
"""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from typing import Any

from audit.dtypes import ORDER
from audit.results import to_float
from audit.verdict_text import fmt_input
from reference.formats import round_to

BIG = 1e10


def short_exact(text: Any, digits: int = 4) -> str:
    """'4.248354255291589e-4342944820' -> '4.248e-4342944820': an exact decimal shortened
    with Decimal (its exponent may lie far outside float64's)."""
    try:
        d = Decimal(str(text).strip())
    except InvalidOperation:
        return str(text)
    if not d.is_finite():
        return fmt_input(str(text))
    if d == 0 or -3 <= d.adjusted() < 5:
        plain = f"{d:.{digits}g}"
        plain = plain.rstrip("0").rstrip(".") if "." in plain and "e" not in plain else plain
        return plain.replace("-", "−")
    mant, exp = f"{d:.{digits - 1}e}".split("e")
    mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
    return f"{mant}e{int(exp)}".replace("-", "−")


def _framework(subject: str) -> str:
    return subject.split(".", 1)[0]


def _at_big(doc: dict[str, Any], family: str) -> dict[tuple, dict[str, Any]]:
    """(framework, dtype, quantity, target) -> the graded special point at x = 1e10 (the
    dtype's value of it) of the family's subjects, first device, eager."""
    found: dict[tuple, dict[str, Any]] = {}
    for r in doc.get("records") or []:
        if r.get("family") != family or r.get("execution", "eager") != "eager" or \
                r.get("device") != "cpu":
            continue
        big = round_to(BIG, r["dtype"])
        for p in r.get("specials") or []:
            if to_float(p["input"]) == big and to_float(p["target"]) in (0.0, 1.0):
                key = (_framework(r["subject"]), r["dtype"], r["quantity"],
                       to_float(p["target"]))
                found[key] = {**p, "subject": r["subject"]}
    return found


def sigmoid_at_1e10(doc: dict[str, Any]) -> dict[str, Any] | None:
    """Per framework and dtype: what BCELoss(sigmoid(x)) and the fused loss return at
    x = 1e10 for targets 0 and 1, and a one-paragraph answer."""
    two, fused = _at_big(doc, "sigmoid_bce"), _at_big(doc, "bce_with_logits")
    loss = {k: v for k, v in two.items() if k[2] == "loss"}
    if not loss:
        return None
    frameworks = sorted({k[0] for k in loss})
    dtypes = sorted({k[1] for k in loss}, key=lambda d: ORDER.get(d, 9))
    rows = []
    for fw in frameworks:
        cells = []
        for dtype in dtypes:
            cell = {t: loss.get((fw, dtype, "loss", t)) for t in (0.0, 1.0)}
            cell.update({f"fused{t:g}": fused.get((fw, dtype, "loss", t)) for t in (0.0, 1.0)})
            cells.append({"dtype": dtype, **{f"t{t:g}": cell[t] for t in (0.0, 1.0)},
                          "grad0": two.get((fw, dtype, "grad", 0.0)),
                          "grad1": two.get((fw, dtype, "grad", 1.0)),
                          "fused0": cell["fused0"], "fused1": cell["fused1"]})
        rows.append({"framework": fw, "cells": cells})
    return {"dtypes": dtypes, "rows": rows, "answer": _answer_1e10(loss, fused)}


def _answer_1e10(loss: dict[tuple, dict], fused: dict[tuple, dict]) -> str:
    parts = []
    bad_any = False
    for t in (0.0, 1.0):
        cells = {k: v for k, v in loss.items() if k[3] == t}
        bad = {k: v for k, v in cells.items() if v["status"] != "ok"}
        if bad:  # the example: float32 and torch first, the case people ask about
            bad_any = True
            k, v = min(bad.items(), key=lambda kv: (kv[0][1] != "float32", kv[0][0] != "torch",
                                                    kv[0]))
            got = "raises an error" if v["observed"] is None else \
                f"returns {fmt_input(v['observed'])}"
            parts.append(f"with target {t:g} it is wrong in {len(bad)} of {len(cells)} "
                         f"framework/dtype pairs, e.g. {k[0]} {k[1]} {got} where the exact "
                         f"loss is {short_exact(v['exact'])}")
        elif cells:
            v = next(iter(cells.values()))
            parts.append(f"with target {t:g} it is right everywhere (it returns "
                         f"{fmt_input(v['observed'])}; the exact loss "
                         f"{short_exact(v['exact'])} rounds to {fmt_input(v['expected'])})")
    fused_loss = [v for k, v in fused.items() if k[2] == "loss"]
    good = sum(v["status"] == "ok" for v in fused_loss)
    tail = f" The fused loss is right there in {good} of {len(fused_loss)} cases." \
        if fused_loss else ""
    return ("No: " if bad_any else "Yes: ") + "; ".join(parts) + "." + tail


def agreement(doc: dict[str, Any], a: str = "torch", b: str = "tf") -> dict[str, Any] | None:
    """Do frameworks a and b agree on the fused loss, and where not, who is closer to
    the exact value? From the equivalence entries of their bce_with_logits subjects."""
    want = {f"{a}.bce_with_logits", f"{b}.bce_with_logits"}
    rows = []
    for e in doc.get("equivalence") or []:
        subjects = list(e.get("subjects") or [])
        if "executions" in e or set(subjects) != want:
            continue
        flip = subjects[0] != f"{a}.bce_with_logits"
        ac, bc = (e["b_closer"], e["a_closer"]) if flip else (e["a_closer"], e["b_closer"])
        n, differ = int(e["n"]), int(e["n_differ"])
        w = e.get("worst") or {}
        wa, wb = (w.get("b_observed"), w.get("a_observed")) if flip else \
            (w.get("a_observed"), w.get("b_observed"))
        rows.append({"dtype": e["dtype"], "device": e["device"], "quantity": e["quantity"],
                     "n": n, "differ": differ, "a_closer": ac, "b_closer": bc,
                     "ties": max(0, int(e["ties"]) - (n - differ)),
                     "max_apart": e.get("max_ulp_between"), "worst": w, "worst_a": wa,
                     "worst_b": wb,
                     "closer": a if ac > bc else b if bc > ac else "neither"})
    if not rows:
        return None
    rows.sort(key=lambda r: (r["quantity"], ORDER.get(r["dtype"], 9), r["device"]))
    n = sum(r["n"] for r in rows)
    differ = sum(r["differ"] for r in rows)
    ac, bc = sum(r["a_closer"] for r in rows), sum(r["b_closer"] for r in rows)
    if not differ:
        answer = f"Yes: {a} and {b} return identical values on all {n:,} graded points."
    else:
        who = a if ac > bc else b if bc > ac else "neither"
        answer = (f"Mostly: they agree bit for bit on {100 * (n - differ) / n:.1f}% of "
                  f"{n:,} graded points (loss and gradient, every dtype); where they differ "
                  f"({differ:,}), {b} is closer to the exact value {bc:,} times and {a} "
                  f"{ac:,} times, so {who} is more often right.")
    return {"a": a, "b": b, "rows": rows, "answer": answer}


def worked_examples(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The documents' worked examples: each framework's mean, the exact mean, the hand
    value and its 4-decimal recomputation."""
    per: dict[str, dict[str, Any]] = {}
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in doc.get("records") or []:
        for ex in r.get("examples") or []:
            per.setdefault(ex["name"], ex)
            rows[ex["name"]].append({**ex, "subject": r["subject"], "dtype": r["dtype"],
                                     "device": r["device"]})
    if not per:
        return None
    examples = []
    for name, ex in per.items():
        exact = ex["exact"]
        drift = ex["hand"] - float(exact)  # a decimal string of the exact mean
        examples.append({"name": name, "exact": exact, "expected": ex["expected"],
                         "hand": ex["hand"], "hand_rounded": ex["hand_rounded"],
                         "drift": drift, "rows": rows[name],
                         "all_ok": all(x["status"] == "ok" for x in rows[name])})
    values = "; ".join(f"{e['hand']!r} by hand, {short_exact(e['exact'], 8)} exact"
                       for e in examples)
    fine = all(e["all_ok"] for e in examples)
    redone = " and ".join(f"{e['hand_rounded']!r} (the document's value exactly)"
                          if abs(e["hand_rounded"] - e["hand"]) < 1e-12
                          else f"{e['hand_rounded']:.6g}" for e in examples)
    answer = (f"{'Every' if fine else 'Not every'} framework returns the exact mean to "
              f"float32 precision ({values}). The hand values drift by 4-decimal rounding: "
              f"with every sigmoid rounded to 4 decimals the means become {redone}; that "
              f"drift (up to {max(abs(e['drift']) for e in examples):.1e}) is far above "
              f"float32 rounding.")
    return {"examples": examples, "answer": answer}


def bounded(x: Any) -> bool:
    """Whether a stored number is finite (for templates)."""
    return math.isfinite(to_float(x))
