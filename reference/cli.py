"""`python -m reference OP --dtype D --input X --target Y [...]` and `python -m reference bench`."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from fractions import Fraction

import mpmath

from . import losses
from .formats import FORMATS, round_to


class UsageError(ValueError):
    """A user mistake: reported as one line, exit status 2."""


_HEX = re.compile(r"([+-]?)0x([0-9a-f]*)(?:\.([0-9a-f]*))?(?:p([+-]?\d+))?")


def _hex_fraction(s: str) -> Fraction:
    """Exact value of a C99 hex float literal (never pre-rounded to a double)."""
    m = _HEX.fullmatch(s)
    if not m or not (m.group(2) or m.group(3)):
        raise ValueError(s)
    digits = (m.group(2) or "") + (m.group(3) or "")
    value = Fraction(int(digits, 16), 16 ** len(m.group(3) or "")) * \
        Fraction(2) ** int(m.group(4) or 0)
    return -value if m.group(1) == "-" else value


def parse_number(text: str, dtype: str) -> float:
    """Decimal, hex float (0x1.8p+3), inf, -inf or nan, rounded exactly once to dtype."""
    s = text.strip().lower()
    if s in ("nan", "+nan", "-nan"):
        return math.nan
    if s in ("inf", "+inf", "infinity", "+infinity"):
        return math.inf
    if s in ("-inf", "-infinity"):
        return -math.inf
    try:
        value = _hex_fraction(s) if "0x" in s else Fraction(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise UsageError(f"cannot parse number {text!r} (decimal, hex float, inf, -inf or nan)"
                         ) from None
    if value == 0 and s.startswith("-"):
        return -0.0
    return round_to(value, dtype)


def json_number(x: float) -> float | str:
    """JSON value of a float: itself when finite, else "inf", "-inf" or "nan"."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def exact_decimal(t: tuple, digits: int = 40) -> str:
    """Decimal string of an exact value with `digits` significant digits."""
    v = mpmath.mp.make_mpf(t)  # exact: mpmath.mpf(t) would round to 53 bits
    if mpmath.isnan(v):
        return "nan"
    if mpmath.isinf(v):
        return "inf" if v > 0 else "-inf"
    return mpmath.nstr(v, digits, min_fixed=-4, max_fixed=6, strip_zeros=False)


def evaluate_json(op: str, dtype: str, inp: float, target: float, weight: float = 1.0,
                  pos_weight: float = 1.0, grad: bool = False) -> dict:
    """The record `python -m reference` prints."""
    t = losses.value(op, grad, inp, target, weight, pos_weight)
    r = round_to(t, dtype)
    return {
        "op": op, "dtype": dtype, "quantity": "grad" if grad else "loss",
        "input": json_number(inp), "target": json_number(target),
        "weight": json_number(weight), "pos_weight": json_number(pos_weight),
        "exact": exact_decimal(t), "rounded": json_number(r),
        "hex": r.hex() if math.isfinite(r) else json_number(r),
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m reference",
                     description="Certified bce values (mpmath ground truth).")
    parser.add_argument("op", help="bce_with_logits | bce | bench")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--input")
    parser.add_argument("--target")
    parser.add_argument("--weight", default="1")
    parser.add_argument("--pos-weight", default="1")
    parser.add_argument("--grad", action="store_true")
    parser.add_argument("--points", type=int, default=20000, help="bench: points per run")
    return parser


def attach_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Turn `--input -1e10` into `--input=-1e10`: argparse reads "-1e10" as an option."""
    takes_value = {s for a in parser._actions if a.nargs is None and a.option_strings
                   for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(attach_values(sys.argv[1:] if argv is None else argv, parser))
        if args.op == "bench":
            from .bench import run

            run(args.points)
            return 0
        if args.op not in losses.OPS:
            raise UsageError(f"unknown op {args.op!r}; expected one of {', '.join(losses.OPS)}")
        if args.dtype not in FORMATS:
            raise UsageError(f"unknown dtype {args.dtype!r}; expected one of {', '.join(FORMATS)}")
        if args.input is None or args.target is None:
            raise UsageError("--input and --target are required")
        if args.op == "bce" and args.pos_weight != "1":
            raise UsageError("bce has no --pos-weight")
        values = [parse_number(v, args.dtype) for v in
                  (args.input, args.target, args.weight, args.pos_weight)]
        print(json.dumps(evaluate_json(args.op, args.dtype, *values, grad=args.grad)))
        return 0
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
