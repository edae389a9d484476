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
from .families import PARAMETRIC, get_family, op_spellings
from .formats import FORMATS, round_to


class UsageError(ValueError):
    """A user mistake: reported as one line, exit status 2."""


# ASCII digits only: Python's own parsers also take "1_000", fullwidth and other Unicode
# digits, which are almost certainly typos here.
_DECIMAL = re.compile(r"([+-]?)(?:([0-9]+)(?:\.([0-9]*))?|\.([0-9]+))(?:e([+-]?)([0-9]+))?")
_HEX = re.compile(r"([+-]?)0x(?:([0-9a-f]+)(?:\.([0-9a-f]*))?|\.([0-9a-f]+))(?:p([+-]?)([0-9]+))?")
_RATIO = re.compile(r"([+-]?)([0-9]+)/([0-9]+)")

# Every value below 10**-400 (about 2**-1329) rounds to a signed zero in every supported
# format (half the smallest float64 subnormal is 2**-1075), every value at or above
# 10**400 to +-inf (float64 overflows at 2**1024): decided from the exponent alone, so an
# input like 1e-99999999 never builds a 10**99999999.
_DECIMAL_LIMIT = 400
_BINARY_LIMIT = 1100  # the same bound for hex floats, as a power of two
# Significant digits kept exactly. A midpoint between two float64 values (the only places
# where rounding can change) has at most 768 significant decimal digits and 54 significant
# bits, so a longer mantissa cut to this many digits plus one sticky nonzero digit rounds
# exactly like the full one, in time bounded by this length instead of the input's.
_MAX_DIGITS = 1000
_MAX_HEX_DIGITS = 300
_MAX_RATIO_DIGITS = 4000  # p/q is taken exactly; beyond this it is rejected
_EXPONENT_CAP = 10 ** 30  # exponents beyond this are all "absurd": clamped


def _shown(text: str) -> str:
    """repr of a user string for an error line, shortened when it is very long."""
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"


def _exponent(sign: str | None, digits: str | None) -> int:
    if not digits:
        return 0
    digits = digits.lstrip("0")
    e = _EXPONENT_CAP if len(digits) > 30 else int(digits or "0")
    return -e if sign == "-" else e


def _signed_zero(negative: bool) -> float:
    return -0.0 if negative else 0.0


def _signed_inf(negative: bool) -> float:
    return -math.inf if negative else math.inf


def _from_decimal(m: re.Match, dtype: str) -> float:
    sign, ip, fp, fp_only, esign, edigits = m.groups()
    negative = sign == "-"
    fp = fp_only if fp_only is not None else (fp or "")
    core = ((ip or "") + fp).lstrip("0")
    if not core:
        return _signed_zero(negative)
    stripped = core.rstrip("0")
    scale = _exponent(esign, edigits) - len(fp) + (len(core) - len(stripped))
    core = stripped
    top = len(core) + scale  # 10**(top-1) <= |value| < 10**top
    if top - 1 >= _DECIMAL_LIMIT:
        return _signed_inf(negative)
    if top <= -_DECIMAL_LIMIT:
        return _signed_zero(negative)
    if len(core) > _MAX_DIGITS:  # the cut-off tail is nonzero (core ends in a nonzero digit)
        core = core[:_MAX_DIGITS] + "1"
        scale = top - len(core)
    man = int(core)
    value = Fraction(man * 10 ** scale) if scale >= 0 else Fraction(man, 10 ** -scale)
    return round_to(-value if negative else value, dtype)


def _from_hex(m: re.Match, dtype: str) -> float:
    """Exact value of a C99 hex float literal (never pre-rounded to a double), rounded."""
    sign, ip, fp, fp_only, psign, pdigits = m.groups()
    negative = sign == "-"
    fp = fp_only if fp_only is not None else (fp or "")
    core = ((ip or "") + fp).lstrip("0")
    if not core:
        return _signed_zero(negative)
    stripped = core.rstrip("0")
    exp2 = _exponent(psign, pdigits) + 4 * (len(core) - len(stripped) - len(fp))
    core = stripped
    top = exp2 + 4 * (len(core) - 1) + int(core[0], 16).bit_length() - 1
    if top >= _BINARY_LIMIT:  # 2**top <= |value| < 2**(top+1)
        return _signed_inf(negative)
    if top < -_BINARY_LIMIT:
        return _signed_zero(negative)
    if len(core) > _MAX_HEX_DIGITS:
        exp2 += 4 * (len(core) - _MAX_HEX_DIGITS - 1)
        core = core[:_MAX_HEX_DIGITS] + "1"
    man = int(core, 16)
    value = Fraction(man << exp2) if exp2 >= 0 else Fraction(man, 1 << -exp2)
    return round_to(-value if negative else value, dtype)


def _from_ratio(m: re.Match, text: str, dtype: str) -> float:
    sign, num, den = m.groups()
    negative = sign == "-"
    num, den = num.lstrip("0"), den.lstrip("0")
    if not den:
        raise UsageError(f"cannot parse number {_shown(text)}: division by zero")
    if not num:
        return _signed_zero(negative)
    top = len(num) - len(den) + 1  # |value| < 10**top and >= 10**(top-2)
    if top - 2 >= _DECIMAL_LIMIT:
        return _signed_inf(negative)
    if top <= -_DECIMAL_LIMIT:
        return _signed_zero(negative)
    if max(len(num), len(den)) > _MAX_RATIO_DIGITS:
        raise UsageError(f"cannot parse number {_shown(text)}: more than "
                         f"{_MAX_RATIO_DIGITS} digits in a ratio")
    value = Fraction(int(num), int(den))
    return round_to(-value if negative else value, dtype)


def parse_number(text: str, dtype: str) -> float:
    """Decimal, hex float (0x1.8p+3), inf, -inf or nan, rounded exactly once to dtype.

    Correctly rounded in time bounded independently of the exponent's size (1e-99999999
    is 0.0, 1e999999999 is inf) and linear in the input's length.
    """
    s = text.strip().lower()
    if s in ("nan", "+nan", "-nan"):
        return math.nan
    if s in ("inf", "+inf", "infinity", "+infinity"):
        return math.inf
    if s in ("-inf", "-infinity"):
        return -math.inf
    try:
        if m := _DECIMAL.fullmatch(s):
            return _from_decimal(m, dtype)
        if m := _HEX.fullmatch(s):
            return _from_hex(m, dtype)
        if m := _RATIO.fullmatch(s):
            return _from_ratio(m, text, dtype)
    except UsageError:
        raise
    except ValueError as e:  # an unknown dtype
        raise UsageError(str(e.args[0]) if e.args else str(e)) from None
    raise UsageError(f"cannot parse number {_shown(text)} (decimal, hex float, inf, -inf or nan)")


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


MAX_POINTS = 1 << 24  # bench: 16 times its whole-stream size, about a GiB of arrays


def positive_count(text: str) -> int:
    """argparse type of a count: a positive decimal integer (ASCII digits), at most MAX_POINTS."""
    s = text.strip()
    digits = s[1:] if s.startswith("+") else s
    if not re.fullmatch(r"[0-9]+", digits):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {_shown(text)}")
    digits = digits.lstrip("0")
    if not digits:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {_shown(text)}")
    if len(digits) > len(str(MAX_POINTS)) or int(digits) > MAX_POINTS:
        raise argparse.ArgumentTypeError(f"at most {MAX_POINTS}, got {_shown(text)}")
    return int(digits)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m reference",
                     description="Certified bce values (mpmath ground truth).")
    parser.add_argument("op", help=f"{op_spellings(' | ')} | bench")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--input")
    parser.add_argument("--target")
    parser.add_argument("--weight", default="1")
    parser.add_argument("--pos-weight", default="1", help="bce_with_logits only (bce: 1)")
    parser.add_argument("--grad", action="store_true")
    parser.add_argument("--points", type=positive_count, default=20000,
                        help=f"bench: points per run (1 to {MAX_POINTS})")
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


def _one_line(message: str) -> str:
    """An error message on one line: embedded line breaks (say, from an argument) escaped."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(attach_values(sys.argv[1:] if argv is None else argv, parser))
        if args.op == "bench":
            from .bench import run

            run(args.points)
            return 0
        try:  # a parametric op (focal_with_logits:gamma=2:alpha=none) is built here
            get_family(args.op)
        except ValueError as e:
            if args.op.partition(":")[0] in PARAMETRIC:  # malformed: its builder says how
                raise UsageError(str(e)) from None
            raise UsageError(f"unknown op {_shown(args.op)}; expected one of "
                             f"{op_spellings()} or bench") from None
        if args.dtype not in FORMATS:
            raise UsageError(f"unknown dtype {_shown(args.dtype)}; expected one of "
                             f"{', '.join(FORMATS)}")
        if args.input is None or args.target is None:
            raise UsageError("--input and --target are required")
        names = ("--input", "--target", "--weight", "--pos-weight")
        values = []
        for name, text in zip(names, (args.input, args.target, args.weight, args.pos_weight),
                              strict=True):
            try:
                values.append(parse_number(text, args.dtype))
            except UsageError as e:
                raise UsageError(f"{name}: {e}") from None
        if args.op == "bce" and values[3] != 1.0:
            raise UsageError(f"bce has no --pos-weight (only 1 is accepted), got "
                             f"{_shown(args.pos_weight)}")
        print(json.dumps(evaluate_json(args.op, args.dtype, *values, grad=args.grad)))
        return 0
    except UsageError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
