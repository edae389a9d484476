"""`python -m audit` (DESIGN.md section 7): subjects, probe, and the other tools' entry.

User mistakes (unknown subject, bad dtype, unparsable number, bad option) are one line
on stderr and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys

import numpy as np

from audit import runners, workers
from audit.cli_params import add_param_options, check_dtype_device, family_params
from audit.dtypes import DTYPES, ulp_budget
from audit.results import to_json_value
from reference.cli import UsageError, attach_values, parse_number

COMMANDS = ("subjects", "probe", "sweep", "merge", "table", "bench", "compare",
            "draft-contracts", "rebuild")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def _subject(name: str):
    from audit import subjects

    try:
        return subjects.get(name)
    except KeyError as e:
        raise UsageError(str(e.args[0]) if e.args else f"unknown subject {name!r}") from None


def cmd_subjects(argv: list[str]) -> int:
    """List subjects with their family, dtypes and arguments (no framework is imported:
    availability is whether the framework is installed)."""
    from audit import subjects

    _Parser(prog="python -m audit subjects").parse_args(argv)
    print("devices: cpu (available), cuda (" + (runners.cuda_hint() or "may be available: "
                                                "the framework decides") + ")")
    # the row subjects (one row of K logits a point: probe --logits) after the scalar ones
    for s in [*subjects.SUBJECTS.values(), *subjects.ROW_SUBJECTS.values()]:
        missing = runners.get(s.framework).missing()
        state = "available" if missing is None else f"skipped: {missing}"
        extras = [a for a, ok in (("weight", s.weight), ("pos_weight", s.pos_weight)) if ok]
        where = "" if s.module.startswith("audit.subjects.") else f" module={s.module}"
        print(f"{s.name:22s} {s.api}\n{'':22s} family={s.family} dtypes={','.join(s.dtypes)} "
              f"reductions={','.join(s.reductions)} args={','.join(extras) or '-'}"
              f"{where} [{state}]")
    return 0


def _probe_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m audit probe")
    p.add_argument("subject")
    p.add_argument("--dtype", required=True)
    p.add_argument("--input", required=True, help="a number, or a comma list with --reduction")
    p.add_argument("--target", required=True)
    p.add_argument("--weight", default="1")
    p.add_argument("--pos-weight", default="1")
    p.add_argument("--grad", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reduction", default="none", choices=("none", "mean", "sum",
                                                          "keras_default"))
    p.add_argument("--max-ulp", type=budget_number, default=None)
    add_param_options(p)
    return p


def budget_number(text: str) -> float:
    """An ulp budget: a finite number >= 0 (argparse type; 0 is a budget, not 'unset')."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return v


def _numbers(text: str, dtype: str) -> np.ndarray:
    return np.array([parse_number(t, dtype) for t in text.split(",")], dtype=np.float64)


def cmd_probe(argv: list[str]) -> int:
    """Evaluate one point (or one batch with --reduction) and grade it, as JSON."""
    from audit.checks import PAD
    from audit.grading import grade
    from reference.cli import exact_decimal

    parser = _probe_parser()
    args = parser.parse_args(attach_values(argv, parser))
    check_dtype_device(args.dtype, args.device)
    subject = _subject(args.subject)
    xs, ys = _numbers(args.input, args.dtype), _numbers(args.target, args.dtype)
    w, p = parse_number(args.weight, args.dtype), parse_number(args.pos_weight, args.dtype)
    if args.reduction == "none" and (xs.size != 1 or ys.size != 1):
        raise UsageError("--input and --target take one number each (lists need --reduction)")
    if args.reduction != "none" and args.grad:
        raise UsageError("--grad is graded elementwise; use it without --reduction")
    if xs.size != ys.size and ys.size != 1:
        raise UsageError("--input and --target lists must have the same length")
    ys = np.broadcast_to(ys, xs.shape).copy()
    reason = subject.skip_reason(args.dtype, args.device, weight=w != 1.0,
                                 pos_weight=p != 1.0, reduction=args.reduction,
                                 execution=args.execution)
    if reason is not None:
        raise UsageError(f"{subject.name} cannot run here: {reason}")
    params = family_params(subject, args)
    returned: list[str] = []
    observed, error, crashed = _observe(subject, args, xs, ys, w, p, PAD, params, returned)
    # autocast: graded in the dtype the framework really returned
    dtype = returned[0] if returned and returned[0] in DTYPES else args.dtype
    t = _reference(subject.family_record.reference_op(params), args, xs, ys, w, p)
    hi, lo, expected = _parts(t, dtype)
    budget = args.max_ulp if args.max_ulp is not None else ulp_budget(dtype)
    g = grade(None if error else np.array([observed]), np.array([expected]), np.array([hi]),
              np.array([lo]), dtype, budget)
    if crashed:
        g.set_error(0, crash=True)
    result = {
        "subject": subject.name, "family": subject.family, "dtype": args.dtype,
        "device": args.device, "execution": args.execution,
        **({"computed_dtype": dtype} if dtype != args.dtype else {}),
        "quantity": "grad" if args.grad else "loss", "reduction": args.reduction,
        "input": to_json_value(float(xs[0])) if xs.size == 1 else [to_json_value(v) for v in xs],
        "target": to_json_value(float(ys[0])) if ys.size == 1 else [to_json_value(v) for v in ys],
        "weight": to_json_value(w), "pos_weight": to_json_value(p),
        "observed": None if error else to_json_value(observed),
        "expected": to_json_value(expected), "exact": exact_decimal(t),
        "ulp": to_json_value(float(g.ulp[0])),
        "ordinal": None if g.ordinal[0] < 0 else int(g.ordinal[0]),
        "bits": float(g.bits[0]), "status": str(g.status[0]), "error": error,
        "observed_hex": None if error or not math.isfinite(observed) else observed.hex(),
        **({"params": params} if params else {}),
    }
    print(json.dumps(result))
    return 0


def _observe(subject, args, xs, ys, w, p, pad, params=None, returned=None):
    """Observed value; the point is repeated to a full vector batch like the audit's."""
    kw = {"weight": None if w == 1.0 else np.full(xs.size if args.reduction != "none" else pad, w),
          "pos_weight": None if p == 1.0 else np.full(
              xs.size if args.reduction != "none" else pad, p)}
    from audit.checks import error_text

    try:
        if args.reduction == "none":
            out = subject.evaluate(args.dtype, args.device, np.repeat(xs, pad),
                                   np.repeat(ys, pad), grad=args.grad, params=params,
                                   execution=args.execution, returned=returned, **kw)
            return float(np.asarray(out)[0]), None, False
        out = subject.evaluate(args.dtype, args.device, xs, ys, reduction=args.reduction,
                               params=params, execution=args.execution, returned=returned,
                               **kw)
        return float(np.asarray(out)), None, False
    except workers.WorkerUnavailable as e:
        raise UsageError(f"{subject.name} cannot run here: {e}") from None
    except Exception as e:  # the framework raised, or its process died: the finding
        return math.nan, error_text(e), isinstance(e, workers.WorkerCrash)


def _reference(op, args, xs, ys, w, p):
    import reference

    if args.reduction == "none":
        t = reference.vectorized.point(op, args.grad, float(xs[0]), float(ys[0]), w, p)
    else:
        red = "mean" if args.reduction == "keras_default" else args.reduction
        t = reference.reduce(op, red, xs, ys, weight=w, pos_weight=p)._mpf_
    return t


def _parts(t, dtype):
    """(hi, lo, rounded) of an exact tuple: the double-double grading works on."""
    import reference
    from reference.vectorized import double_double

    return (*double_double(t), reference.round_to(t, dtype))


def take_subject_modules(argv: list[str]) -> list[str]:
    """Load every `--subject-module M` / `--subject-module=M` of any verb (a user's
    losses) and return argv without them; a module that does not import is a usage
    error naming it."""
    from audit import subjects

    rest, specs = [], []
    it = iter(argv)
    for a in it:
        if a == "--subject-module":
            value = next(it, None)
            if value is None:
                raise UsageError("--subject-module needs a module name or a .py path")
            specs.append(value)
        elif a.startswith("--subject-module="):
            specs.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    try:
        for spec in specs:
            subjects.load_modules(spec)
    except subjects.SubjectError as e:
        raise UsageError(str(e)) from None
    return rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _dispatch(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m audit subjects | head`: the reader left
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(argv: list[str]) -> int:
    argv = take_subject_modules(argv)
    if not argv:
        raise UsageError(f"missing command; expected one of {', '.join(COMMANDS)}")
    if argv[0] in ("-h", "--help"):
        print("usage: python -m audit {" + ",".join(COMMANDS) + "} ...")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "subjects":
        return cmd_subjects(rest)
    if command == "probe":
        from audit import softmax_probe

        if softmax_probe.wants(rest):  # a row of logits (DESIGN.md section 10)
            return softmax_probe.cmd_probe(rest)
        return cmd_probe(rest)
    if command == "compare":
        from audit import compare

        return compare.main(rest)
    if command == "draft-contracts":
        from audit import draft_contracts

        return draft_contracts.main(rest)
    if command in ("sweep", "merge", "table", "bench"):
        from audit import tools

        return getattr(tools, f"cmd_{command}")(rest)
    if command == "rebuild":
        return cmd_rebuild(rest)
    raise UsageError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")


def cmd_rebuild(argv: list[str]) -> int:
    """Rebuild results.json and index.html of a run from its records (a run killed with
    SIGKILL left them in <run>/.records/)."""
    p = _Parser(prog="python -m audit rebuild")
    p.add_argument("run_dir", help="the run folder (holding .records/)")
    args = p.parse_args(argv)
    from audit import session

    rebuild = getattr(session, "rebuild", None)
    if rebuild is None:
        raise UsageError("rebuild is not available in this version")
    try:
        path = rebuild(args.run_dir)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        raise UsageError(f"rebuild {args.run_dir}: {e}") from None
    print(f"report: {path}")
    return 0
