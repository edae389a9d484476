"""`python -m audit probe` for the row families (DESIGN.md section 10):

    python -m audit probe torch.cross_entropy --dtype float32 --logits=1e4,0,0 --label 1 [--grad]
    python -m audit probe tf.cross_entropy --dtype float16 --logits=0,-inf,3 --probs=0.5,0,0.5
    python -m audit probe jax.log_softmax --dtype bfloat16 --logits=0*100000
    python -m audit probe keras.categorical --dtype float32 --probs-row=0.5,0.25,0.25 --label 1

Subjects of the cross_entropy_probs family (rows of class probabilities, from_logits=False)
take their input row as --probs-row=P1,...,PK instead of --logits; the target is still
--label K or --probs=T1,...,TK, and --grad grades d loss / d p.

One JSON object, the fields of the scalar probe (input = the logits, target = the class
index or the probabilities) plus classes and, for gradients and log_softmax, one
observed / expected / exact / ulp / status per component and the worst of them. Lists
take runs as V*N (0*99999: 99999 zeros). A class index outside [0, K) (other than
--ignore-index), a length mismatch or a bad number is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from audit import softmax_family as sf
from audit import workers
from audit.cli_params import check_dtype_device
from audit.dtypes import ulp_budget
from audit.grading import CRASH, grade
from audit.results import to_json_value
from reference.cli import UsageError, attach_values, parse_number

MAX_CLASSES = 1 << 20


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def wants(argv: list[str]) -> bool:
    """Is this probe one of a row subject (or does it give --logits)?"""
    from audit.subjects import ROW_SUBJECTS

    return any(a.startswith(("--logits", "--probs-row")) for a in argv) or \
        any(a in ROW_SUBJECTS for a in argv)


def parse_row(text: str, dtype: str, what: str) -> np.ndarray:
    """A comma list of numbers (V*N repeats V N times), each rounded to the dtype."""
    out: list[float] = []
    for item in text.split(","):
        value, star, count = item.strip().partition("*")
        n = 1
        if star:
            try:
                n = int(count)
            except ValueError:
                raise UsageError(f"{what}: {item.strip()!r}: the count after * must be a "
                                 "whole number") from None
            if not 1 <= n <= MAX_CLASSES:
                raise UsageError(f"{what}: {item.strip()!r}: the count must be in "
                                 f"[1, {MAX_CLASSES}]")
        try:
            v = parse_number(value, dtype)
        except UsageError as e:
            raise UsageError(f"{what}: {e}") from None
        out += [v] * n
        if len(out) > MAX_CLASSES:
            raise UsageError(f"{what}: more than {MAX_CLASSES} values")
    return np.array(out, dtype=np.float64)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m audit probe")
    p.add_argument("subject")
    p.add_argument("--dtype", required=True)
    p.add_argument("--logits", default=None, help="L1,...,LK (use = for a leading minus)")
    p.add_argument("--probs-row", default=None, metavar="P1,...,PK",
                   help="the input row of class probabilities, for the cross_entropy_probs "
                        "subjects (keras.categorical) in place of --logits")
    p.add_argument("--label", default=None, help="the class index")
    p.add_argument("--probs", default=None, help="P1,...,PK: class probabilities")
    p.add_argument("--weight", default=None, help="W1,...,WK: class weights")
    p.add_argument("--label-smoothing", default=None, metavar="E")
    p.add_argument("--ignore-index", default=None, metavar="I")
    p.add_argument("--grad", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-ulp", default=None)
    return p


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, not {text!r}") from None


def _input_row(args: argparse.Namespace, family: str) -> np.ndarray:
    """The row the subject takes: --probs-row for rows of probabilities, else --logits."""
    probs_in = family == sf.PROBS_FAMILY
    want, other = ("--probs-row", "--logits") if probs_in else ("--logits", "--probs-row")
    text = args.probs_row if probs_in else args.logits
    if (args.logits if probs_in else args.probs_row) is not None:
        raise UsageError(f"{args.subject} takes its input row as {want}=..., not {other}")
    if text is None:
        raise UsageError(f"{args.subject} needs its input row: {want}=V1,...,VK")
    return parse_row(text, args.dtype, want)


def block_of(args: argparse.Namespace, family: str) -> sf.Block:
    """The one-row block a probe's arguments describe (usage errors: one line)."""
    logits = _input_row(args, family)
    k = logits.size
    if not sf.FAMILIES[family].targets:
        for opt in ("label", "probs", "weight", "label_smoothing", "ignore_index"):
            if getattr(args, opt) is not None:
                raise UsageError(f"{args.subject} ({family}) takes no --{opt.replace('_', '-')}")
        if args.grad:
            raise UsageError(f"{args.subject}: gradients are graded for cross_entropy only")
        return sf.Block(logits[None, :], np.array(["probe"], dtype=object))
    if (args.label is None) == (args.probs is None):
        raise UsageError("give the target as --label K or --probs=P1,...,PK (one of them)")
    ignore = None if args.ignore_index is None else _int(args.ignore_index, "--ignore-index")
    labels = probs = None
    if args.label is not None:
        c = _int(args.label, "--label")
        if not 0 <= c < k and c != ignore:
            raise UsageError(f"--label {c}: a class index must be in [0, {k}) for {k} logits")
        labels = np.array([c], dtype=np.int64)
    else:
        probs = parse_row(args.probs, args.dtype, "--probs")
        if probs.size != k:
            raise UsageError(f"--probs has {probs.size} values for {k} logits")
        probs = probs[None, :]
    weight = None
    if args.weight is not None:
        weight = parse_row(args.weight, args.dtype, "--weight")
        if weight.size != k:
            raise UsageError(f"--weight has {weight.size} values for {k} logits")
    e = 0.0
    if args.label_smoothing is not None:
        e = parse_number(args.label_smoothing, args.dtype)
        if not 0 <= e <= 1:
            raise UsageError(f"--label-smoothing must be in [0, 1], not {args.label_smoothing!r}")
    return sf.Block(logits[None, :], np.array(["probe"], dtype=object), labels=labels,
                    probs=probs, weight=weight, smoothing=e, ignore_index=ignore)


def _check_takes(subject: object, b: sf.Block) -> None:
    kinds = [k for k, on in (("weighted", b.weight is not None),
                             ("smoothed", bool(b.smoothing)),
                             ("ignored", b.ignore_index is not None)) if on]
    for kind in kinds:
        check = next(c for c, (_, k) in sf.CHECKS.items() if k == kind)
        reason = sf.not_taken(subject, check)
        if reason is not None:
            raise UsageError(f"{subject.name} cannot run this: {reason}")


def cmd_probe(argv: list[str]) -> int:
    from audit.checks import error_text
    from audit.subjects import ROW_SUBJECTS, get
    from reference.cli import exact_decimal
    from reference.vectorized import double_double

    parser = _parser()
    args = parser.parse_args(attach_values(argv, parser))
    check_dtype_device(args.dtype, args.device)
    if args.subject not in ROW_SUBJECTS:
        try:
            get(args.subject)
        except KeyError as e:
            raise UsageError(str(e.args[0])) from None
        raise UsageError(f"{args.subject} takes --input/--target, not --logits "
                         f"(row subjects: {', '.join(ROW_SUBJECTS)})")
    subject = ROW_SUBJECTS[args.subject]
    b = block_of(args, subject.family)
    _check_takes(subject, b)
    reason = subject.skip_reason(args.dtype, args.device)
    if reason is not None:
        raise UsageError(f"{subject.name} cannot run here: {reason}")
    budget = ulp_budget(args.dtype)
    if args.max_ulp is not None:
        try:
            budget = float(args.max_ulp)
        except ValueError:
            budget = math.nan
        if not math.isfinite(budget) or budget < 0:
            raise UsageError(f"--max-ulp must be a finite number >= 0, not {args.max_ulp!r}")
    grad = args.grad
    error, crashed = None, False
    shape = sf._shape(subject.family, b, grad)
    try:
        observed = sf.call(subject, args.dtype, args.device, b, grad).reshape(-1)
    except workers.WorkerUnavailable as e:
        raise UsageError(f"{subject.name} cannot run here: {e}") from None
    except Exception as e:  # the framework raised, or its worker died: the finding
        observed = np.full(int(np.prod(shape)), math.nan)
        error, crashed = error_text(e), isinstance(e, workers.WorkerCrash)
    ts = sf._row_tuples(subject.family, b, grad, 0)
    parts = [double_double(t) for t in ts]
    from reference.formats import round_to

    expected = np.array([round_to(t, args.dtype) for t in ts])
    hi, lo = np.array([p[0] for p in parts]), np.array([p[1] for p in parts])
    g = grade(None if error else observed, expected, hi, lo, args.dtype, budget)
    if crashed:
        g.code[:] = CRASH
    many = len(ts) > 1 or sf.FAMILIES[subject.family].per_class or grad
    worst = int(np.lexsort((-np.nan_to_num(g.ulp, nan=np.inf), g.code))[0])

    def one(values: list) -> object:
        return values if many else values[0]

    result = {
        "subject": subject.name, "family": subject.family, "dtype": args.dtype,
        "device": args.device, "execution": "eager",
        "quantity": "grad" if grad else "loss", "reduction": "none", "classes": b.k,
        "input": [to_json_value(float(v)) for v in b.logits[0]],
        "target": None if not sf.FAMILIES[subject.family].targets else (
            int(b.labels[0]) if b.labels is not None else
            [to_json_value(float(v)) for v in b.probs[0]]),
        "weight": 1.0 if b.weight is None else [to_json_value(float(v)) for v in b.weight],
        "pos_weight": 1.0, "label_smoothing": b.smoothing, "ignore_index": b.ignore_index,
        "observed": None if error else one([to_json_value(float(v)) for v in observed]),
        "expected": one([to_json_value(float(v)) for v in expected]),
        "exact": one([exact_decimal(t) for t in ts]),
        "ulp": one([to_json_value(float(v)) for v in g.ulp]),
        "ordinal": one([None if v < 0 else int(v) for v in g.ordinal]),
        "status": one([str(s) for s in g.status]), "error": error,
        "observed_hex": None if error else one(
            [float(v).hex() if math.isfinite(v) else None for v in observed]),
    }
    if many:
        result["worst"] = {"component": worst, "status": str(g.status[worst]),
                           "ulp": to_json_value(float(g.ulp[worst]))}
    print(json.dumps(result))
    return 0
