"""`python -m audit draft-contracts`: measured findings -> contracts.toml entries.

Contracts must come from measurements, never guesses. This runs the audit checks in
process, and for every non-ok status writes an entry whose region is the union of the
runs of failing logits on the fixed grid, each widened to its neighbouring passing grid
points (so a drawn point between two failing grid points is still covered), split by
target class. A maintainer reviews the output, keeps the reasons honest, and commits.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import numpy as np

from audit import subjects
from audit.batch import Batch
from audit.checks import (
    CHECKS,
    SMOOTHED_CHECKS,
    Case,
    run_case,
    run_reduced_case,
    validation_reason,
)
from audit.dtypes import DTYPES, ulp_budget
from audit.families import DEFAULT_SMOOTHING
from audit.runners import DEVICES, EXECUTIONS
from reference.cli import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

TORCH_LOSS = "https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/Loss.cpp"
TF_NN = "https://github.com/tensorflow/tensorflow/blob/master/tensorflow/python/ops/nn_impl.py"
KERAS_NN = ("https://github.com/keras-team/keras/blob/master/keras/src/backend/tensorflow/"
            "nn.py")

# (subject, quantity or "*", status or "*") -> (reason, link). First match wins.
REASONS: list[tuple[tuple[str, str, str], tuple[str, str | None]]] = [
    (("torch.bce_with_logits", "loss", "spurious_nan"),
     ("(1-y)*x - log_sigmoid(x) evaluates inf - inf (or 0 * inf) at infinite logits", TORCH_LOSS)),
    (("torch.bce_with_logits", "loss", "*"),
     ("loss = (1-y)*x - log_sigmoid(x): the two terms cancel for large |x|, so the small "
      "true loss (and soft-label tails) is lost", TORCH_LOSS)),
    (("torch.bce_with_logits", "grad", "*"),
     ("gradient sigmoid(x) - y is formed as a difference: it cancels to 0 or loses all "
      "bits when sigmoid(x) rounds to y, and is NaN at infinite logits", TORCH_LOSS)),
    (("torch.bce", "loss", "*"),
     ("BCELoss clamps log(q) and log(1-q) at -100, and evaluates log(1-q) from a rounded "
      "1-q", TORCH_LOSS)),
    (("torch.bce", "grad", "*"),
     ("BCELoss gradient divides by clamp(q*(1-q), 1e-12): wrong near 0 and 1, and NaN in "
      "float16 where 1e-12 underflows", TORCH_LOSS)),
    (("torch.sigmoid_bce", "*", "*"),
     ("two-step BCELoss(sigmoid(x)): sigmoid saturates to 0/1 in the dtype, then the loss "
      "is clamped at 100 and the gradient vanishes", TORCH_LOSS)),
    (("tf.bce_with_logits", "loss", "spurious_nan"),
     ("max(x,0) - x*z + log1p(exp(-|x|)) evaluates inf - inf at infinite logits", TF_NN)),
    (("tf.bce_with_logits", "*", "*"),
     ("max(x,0) - x*z + log1p(exp(-|x|)) cancels for soft labels and large |x|; TF's CPU "
      "kernels flush subnormals to zero", TF_NN)),
    (("tf.sigmoid_bce", "*", "*"),
     ("two-step keras binary_crossentropy(tf.sigmoid(x)): probabilities clipped to "
      "[eps, 1-eps] (eps=1e-7, which rounds to 0/1 in 16-bit types)", KERAS_NN)),
    (("keras.bce_with_logits", "*", "*"),
     ("keras with from_logits=True calls tf.nn.sigmoid_cross_entropy_with_logits: same "
      "formula and flush-to-zero as tf.bce_with_logits", KERAS_NN)),
    (("keras.bce", "*", "*"),
     ("keras clips probabilities to [eps, 1-eps] with eps=1e-7 (rounds to 0 and 1 in "
      "float16/bfloat16), caps the loss near 16.1 and zeroes clipped gradients", KERAS_NN)),
    (("keras.sigmoid_bce", "*", "*"),
     ("keras.ops.sigmoid tags its output with the logits and binary_crossentropy silently "
      "uses them: the fused loss's deviations", KERAS_NN)),
]


def reason_for(subject: str, quantity: str, status: str) -> tuple[str, str | None]:
    for (s, q, st), reason in REASONS:
        if s == subject and q in ("*", quantity) and st in ("*", status):
            return reason
    return ("measured deviation (cause not analysed yet)", None)


def _fmt(v: float) -> str:
    return repr(float(v)) if np.isfinite(v) else ("inf" if v > 0 else "-inf")


def _runs(xs: np.ndarray, bad: np.ndarray, hull: bool = False
          ) -> list[tuple[float | None, float | None]]:
    """Exclusive bounds around each run of bad x values (None = unbounded); one hull
    over all runs when `hull` (or when the runs are fragmented)."""
    out = []
    i = 0
    while i < xs.size:
        if not bad[i]:
            i += 1
            continue
        j = i
        while j + 1 < xs.size and bad[j + 1]:
            j += 1
        lo = xs[i - 1] if i > 0 else None
        hi = xs[j + 1] if j + 1 < xs.size else None
        out.append((lo, hi))
        i = j + 1
    if len(out) > 4 or (hull and out):  # one hull, still widened to the passing neighbours
        out = [(out[0][0], out[-1][1])]
    return out


def _interval(lo: float | None, hi: float | None) -> str:
    parts = []
    if lo is not None:
        parts.append(f"x > {_fmt(lo)}")
    if hi is not None:
        parts.append(f"x < {_fmt(hi)}")
    return " and ".join(parts) or "x == x or isnan(x)"


TARGET_CLASSES = (("y == 0", lambda y: y == 0), ("y == 1", lambda y: y == 1),
                  ("y > 0 and y < 1", lambda y: (y > 0) & (y < 1)))


def region(points: Batch, mask: np.ndarray, hull: bool = False) -> str:
    """Readable region covering every masked point.

    `hull`: inaccuracy is scattered (a few ulps here and there), so grid points cannot
    delimit it; its region is the hull of the failing logits per target class, so a
    search drawing between grid points stays inside."""
    pieces = []
    for cond, select in TARGET_CLASSES:
        cls = select(points.target)
        if not (mask & cls).any():
            continue
        xs = np.unique(points.input[cls])
        bad_x = np.unique(points.input[mask & cls])
        runs = _runs(xs, np.isin(xs, bad_x), hull)
        xs_cond = " or ".join(f"({_interval(lo, hi)})" for lo, hi in runs)
        pieces.append(f"({cond}) and ({xs_cond})" if len(runs) > 1 else
                      f"{cond} and {xs_cond}")
    if len(pieces) == 1:
        return pieces[0]
    return " or ".join(f"({p})" for p in pieces)


def target_classes(points: Batch, mask: np.ndarray) -> str:
    """The target classes (y == 0, y == 1, soft) that hold masked points, any logit."""
    conds = [cond for cond, select in TARGET_CLASSES if (mask & select(points.target)).any()]
    return " or ".join(f"({c})" for c in conds) if len(conds) > 1 else conds[0]


# the validation check's kinds of invalid input (audit.checks.validation_points)
INVALID_REGIONS = ("y < 0 or y > 1 or isnan(y)", "x < 0 or x > 1 or isnan(x)",
                   "w < 0 or isnan(w)", "p < 0 or isnan(p)")


def validation_region(points: Batch, mask: np.ndarray) -> str:
    """The kinds of invalid input (target, probability, weight, pos_weight) that hold
    masked points."""
    kinds = sorted(set(points.extra["kind"][mask].astype(int).tolist()))
    conds = [INVALID_REGIONS[k] for k in kinds]
    return " or ".join(f"({c})" for c in conds) if len(conds) > 1 else conds[0]


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def draft(cases: list[Case]) -> str:
    out = []
    for case in cases:
        subject = subjects.get(case.subject)
        weighted = case.check.startswith("weighted")
        if weighted and not (subject.weight or subject.pos_weight):
            continue
        if case.check == "validation" and validation_reason(subject) is not None:
            continue
        if subject.skip_reason(case.dtype, case.device, reduction=case.reduction,
                               weight=weighted and subject.weight,
                               pos_weight=weighted and subject.pos_weight,
                               execution=case.execution):
            continue
        run = run_reduced_case if case.check == "reduced" else run_case
        res = run(subject, case, ulp_budget(case.dtype))
        status = res.graded.status
        for st in sorted(set(status.tolist()) - {"ok"}):
            mask = status == st
            max_ulp = None
            if case.check == "reduced":
                reg = "x == x or isnan(x)"
            elif case.check == "validation":
                reg = validation_region(res.points, mask)
            elif st == "inaccurate":
                # scattered by nature: every logit of the target classes where it was seen,
                # bounded instead by a declared worst error (4x the measured, power of 2)
                reg = target_classes(res.points, mask)
                worst = float(np.max(res.graded.ulp[mask]))
                max_ulp = float(2.0 ** np.ceil(np.log2(4 * worst))) if np.isfinite(worst) \
                    else None
            else:
                reg = region(res.points, mask)
            reason, link = reason_for(case.subject, case.quantity, st)
            red = "" if case.reduction == "none" else f" {case.reduction}"
            ex = "" if case.execution == "eager" else f" {case.execution}"
            cid = f"{case.subject}[{case.dtype}-{case.device}] {case.check}{red}{ex} -> {st}"
            lines = [
                "[[contract]]",
                f"id = {_toml_str(cid)}",
                f"subjects = [{_toml_str(case.subject)}]",
                f"checks = [{_toml_str(case.check)}]",
                f"dtypes = [{_toml_str(case.dtype)}]",
                f"devices = [{_toml_str(case.device)}]",
                f"reductions = [{_toml_str(case.reduction)}]",
                *([f"executions = [{_toml_str(case.execution)}]"]
                  if case.execution != "eager" else []),
                f"status = [{_toml_str(st)}]",
                f"region = {_toml_str(reg)}",
                *([f"max_ulp = {max_ulp!r}"] if max_ulp is not None else []),
                f"reason = {_toml_str(f'{reason} ({int(mask.sum())} of {mask.size} points)')}",
            ]
            if link:
                lines.append(f"link = {_toml_str(link)}")
            out.append("\n".join(lines) + "\n")
            print(f"{cid}", file=sys.stderr)
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = _Parser(prog="python -m audit draft-contracts")
    p.add_argument("--subjects", default=None)
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--checks", default=",".join(CHECKS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--execution", default="eager", choices=EXECUTIONS)
    args = p.parse_args(argv)
    if args.device not in DEVICES:
        raise UsageError(f"--device: unknown device {args.device!r}; expected one of "
                         f"{', '.join(DEVICES)}")
    lists = {}
    for option, value, valid in (("--dtypes", args.dtypes, DTYPES),
                                 ("--checks", args.checks, tuple(CHECKS))):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise UsageError(f"{option} is empty; expected some of {', '.join(valid)}")
        bad = [v for v in items if v not in valid]
        if bad:
            raise UsageError(f"{option}: unknown {bad[0]!r}; expected some of {', '.join(valid)}")
        lists[option] = items
    if args.subjects is not None and not args.subjects.strip(" ,"):
        raise UsageError("--subjects is empty; name at least one subject")
    try:
        chosen = subjects.select(subjects=args.subjects)
    except (KeyError, ValueError) as e:
        raise UsageError(str(e.args[0] if e.args else e)) from None
    cases = []
    for s in chosen:
        for dtype in lists["--dtypes"]:
            for check in lists["--checks"]:
                if check in SMOOTHED_CHECKS:  # the audit's default E, where the loss takes it
                    if s.label_smoothing:
                        cases.append(Case(s.name, check, dtype, args.device, "none",
                                          DEFAULT_SMOOTHING))
                    continue
                reds = [r for r in s.reductions if r != "none"] if check == "reduced" else ["none"]
                cases += [Case(s.name, check, dtype, args.device, r, execution=args.execution)
                          for r in reds]
    print(draft(cases))
    return 0
