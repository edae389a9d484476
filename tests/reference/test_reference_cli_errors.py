"""User mistakes given to ``python -m reference`` (DESIGN.md section 7): one line on stderr
starting with "error:", exit status 2, no traceback, and never a hang; and
``reference.cli.parse_number`` on absurd exponents and lengths (correctly rounded, fast)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import mpmath
import pytest

from reference import round_to
from reference.cli import UsageError, parse_number

# the repository root: the nearest folder above this file holding pyproject.toml
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
DTYPES = ("float16", "bfloat16", "float32", "float64")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reference", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=20, check=False,
    )


def probe(*args: str) -> list[str]:
    """Arguments of one valid bce_with_logits call, with `args` added (later ones win)."""
    return ["bce_with_logits", "--dtype", "float32", "--input", "1", "--target", "0", *args]


BAD_ARGUMENTS = [
    # numbers
    pytest.param(probe("--input", "1e"), id="exponent without digits"),
    pytest.param(probe("--input", "0x"), id="hex without digits"),
    pytest.param(probe("--input", "0x1p"), id="hex exponent without digits"),
    pytest.param(probe("--input", "0x1.q"), id="bad hex digit"),
    pytest.param(probe("--input="), id="empty input"),
    pytest.param(probe("--target", " "), id="blank target"),
    pytest.param(probe("--input", "nan(123)"), id="nan payload"),
    pytest.param(probe("--input", "\uff11"), id="fullwidth digit"),
    pytest.param(probe("--input", "\u0661"), id="arabic-indic digit"),
    pytest.param(probe("--input", "1_000"), id="underscores"),
    pytest.param(probe("--input", "0x1p1_0"), id="underscores in a hex exponent"),
    pytest.param(probe("--input", "1e\uff15"), id="fullwidth exponent digit"),
    pytest.param(probe("--input", "1/0"), id="ratio over zero"),
    pytest.param(probe("--input", "1.5.2"), id="two points"),
    pytest.param(probe("--input", "--5"), id="two signs"),
    pytest.param(probe("--input", "abc"), id="word"),
    pytest.param(probe("--input", "1\n2"), id="line break in a number"),
    pytest.param(probe("--weight", "x"), id="bad weight"),
    pytest.param(probe("--pos-weight", "0x"), id="bad pos_weight"),
    pytest.param(probe("--input", "1" * 100_000 + "x"), id="very long garbage"),
    # options
    pytest.param(["bce", "--dtype", "float32", "--input", "0.5", "--target", "1",
                  "--pos-weight", "2"], id="bce with a pos_weight other than 1"),
    pytest.param(["bce", "--dtype", "float32", "--input", "0.5", "--target", "1",
                  "--pos-weight", "nan"], id="bce with a nan pos_weight"),
    pytest.param(probe("--dtype", "float8"), id="unknown dtype"),
    pytest.param(probe("--dtype", ""), id="empty dtype"),
    pytest.param(["mse", "--input", "1", "--target", "0"], id="unknown op"),
    pytest.param(["x\ny", "--input", "1", "--target", "0"], id="line break in the op"),
    pytest.param(["focal_with_logits:gamma=x", "--input", "1", "--target", "0"],
                 id="malformed parametric op"),
    pytest.param([], id="no arguments"),
    pytest.param(["bce_with_logits", "--input", "1"], id="missing target"),
    pytest.param(["bce_with_logits", "--target", "1"], id="missing input"),
    pytest.param(probe("--bogus"), id="unknown option"),
    pytest.param(probe("extra"), id="extra positional"),
    pytest.param(probe("a\nb"), id="extra positional with a line break"),
    pytest.param(probe("--grad=1"), id="value for a flag"),
    pytest.param(["bce_with_logits", "--input", "1", "--target"], id="option without value"),
    # counts (bench's --points, validated wherever it is given)
    pytest.param(["bench", "--points", "-5"], id="negative points"),
    pytest.param(["bench", "--points", "0"], id="zero points"),
    pytest.param(["bench", "--points", "nan"], id="nan points"),
    pytest.param(["bench", "--points", "inf"], id="inf points"),
    pytest.param(["bench", "--points", "-inf"], id="-inf points"),
    pytest.param(["bench", "--points", "2.5"], id="fractional points"),
    pytest.param(["bench", "--points", "1e3"], id="points in exponent form"),
    pytest.param(["bench", "--points", "1_000"], id="points with underscores"),
    pytest.param(["bench", "--points", "\uff15"], id="fullwidth points"),
    pytest.param(["bench", "--points="], id="empty points"),
    pytest.param(["bench", "--points", "9" * 5000], id="absurdly many points"),
    pytest.param(["bench", "--points", str((1 << 24) + 1)], id="too many points"),
    pytest.param(probe("--points", "-1"), id="negative points on a probe"),
]


def _assert_one_error_line(code: object, out: str, err: str, elapsed: float) -> None:
    assert code == 2, (code, out, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    lines = err.splitlines()
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("error:") and lines[0][len("error:"):].strip(), lines
    assert len(lines[0]) < 400, lines[0][:400]  # a long argument is shown shortened
    assert out == ""
    assert elapsed < 15, elapsed  # never a hang


@pytest.mark.parametrize("args", BAD_ARGUMENTS)
def test_bad_arguments_exit_2_with_one_error_line(args, capsys):
    """In process: main() is what `python -m reference` runs (the process itself below)."""
    from reference.cli import main

    capsys.readouterr()
    start = time.monotonic()
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse itself: must not happen for a usage error
        code = ("SystemExit", e.code)
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    _assert_one_error_line(code, out, err, elapsed)


# one of each kind through the real entry point: a number, an option, a count, nothing
PROCESS_IDS = ("word", "unknown option", "zero points", "no arguments", "very long garbage")


@pytest.mark.parametrize("args", [p for p in BAD_ARGUMENTS if p.id in PROCESS_IDS])
def test_the_process_exits_2_with_one_error_line(args):
    start = time.monotonic()
    done = run_cli(*args)
    _assert_one_error_line(done.returncode, done.stdout, done.stderr,
                           time.monotonic() - start)


@pytest.mark.parametrize("args", [
    probe("--input", "1e-99999999"),
    probe("--input", "0.5", "--target", "1e999999999"),
    probe("--input", "-0x1p-99999999"),
    probe("--input", "1" * 100_000),
    probe("--input", "1e" + "9" * 100_000),
])
def test_absurd_numbers_are_answered_quickly(args):
    start = time.monotonic()
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 15


def test_a_parametric_op_works_in_a_fresh_process():
    """focal_with_logits:gamma=2:alpha=0.25 is built on first use, also from the command
    line: alpha_t (1 - p_t)^2 softplus(1) at x = 1, y = 0 (p_t = 1 - sigmoid(1))."""
    done = run_cli("focal_with_logits:gamma=2:alpha=0.25", "--dtype", "float32",
                   "--input", "1", "--target", "0")
    assert done.returncode == 0, done.stderr
    p = 1 / (1 + mpmath.e ** -1)
    want = 0.75 * p**2 * mpmath.log(1 + mpmath.e)
    assert json.loads(done.stdout)["exact"].startswith(mpmath.nstr(want, 15)[:-1])


def test_bce_accepts_the_default_pos_weight_spelled_out():
    for spelling in ("1", "1.0", "0x1p0", "1e0", "+1.000"):
        done = run_cli("bce", "--dtype", "float32", "--input", "0.5", "--target", "1",
                       "--pos-weight", spelling)
        assert done.returncode == 0, (spelling, done.stderr)
        assert '"pos_weight": 1.0' in done.stdout


def _env(unbuffered: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"], ["bce", "--help"],
                                  probe()])
def test_output_into_a_closed_pipe_is_quiet(args, unbuffered):
    """`python -m reference --help | head -1`: here the reader is gone before any write
    (buffered, the failure comes at the final flush; unbuffered, at the write itself)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "reference", *args], cwd=ROOT,
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=20, check=False, env=_env(unbuffered))
    finally:
        os.close(write_end)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stderr == "", done.stderr


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_help_piped_into_head(unbuffered):
    done = subprocess.run(
        ["/bin/sh", "-c", f'"{sys.executable}" -m reference --help | head -1'],
        cwd=ROOT, capture_output=True, text=True, timeout=20, check=False,
        env=_env(unbuffered))
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done
    assert len(done.stdout.splitlines()) == 1
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_help_exits_0():
    done = run_cli("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage:") and done.stderr == ""


# ---------------------------------------------------------------- parse_number itself


def _same(a: float, b: float) -> bool:
    """Equal as floats, with the sign of zero (and NaN equal to NaN)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _quick(text: str, dtype: str) -> float:
    start = time.monotonic()
    value = parse_number(text, dtype)
    assert time.monotonic() - start < 2, text[:60]
    return value


ABSURD = [  # (text, value in every dtype)
    ("1e-99999999", 0.0),
    ("-1e-99999999", -0.0),
    ("1e999999999", math.inf),
    ("-1e999999999", -math.inf),
    ("0x1p-99999999", 0.0),
    ("-0x1p-99999999", -0.0),
    ("0x1p99999999", math.inf),
    ("-0x1.8p+99999999", -math.inf),
    ("1e-" + "9" * 10_000, 0.0),  # an exponent too long for int()
    ("-1e+" + "9" * 10_000, -math.inf),
    ("123456789e-99999999999999999999999999999999999999", 0.0),
    ("0." + "0" * 1_000_000 + "1", 0.0),
    ("-" + "9" * 1_000_000, -math.inf),
    ("0e999999999", 0.0),
    ("-0e-999999999", -0.0),
    ("0x0p99999999", 0.0),
    ("1" + "0" * 1_000_000 + "e-1000000", 1.0),  # 10**1000000 / 10**1000000
    ("0x1" + "0" * 100_000 + "p-400000", 1.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("text", "want"), ABSURD, ids=lambda v: str(v)[:24])
def test_absurd_exponents_round_without_expansion(text, want, dtype):
    assert _same(_quick(text, dtype), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("text", "exact"), [
    ("1e-400", Fraction(1, 10 ** 400)),
    ("-1e-400", -Fraction(1, 10 ** 400)),
    ("1e-399", Fraction(1, 10 ** 399)),
    ("1e400", Fraction(10 ** 400)),
    ("9.99e399", Fraction(999 * 10 ** 397)),
    ("4.9e-324", Fraction(49, 10 ** 325)),
    ("-4.9e-324", -Fraction(49, 10 ** 325)),
    ("2.4703282292062328e-324", Fraction(24703282292062328, 10 ** 340)),  # above 2**-1075
    ("2.4703282292062327e-324", Fraction(24703282292062327, 10 ** 340)),  # below it
    ("1.7976931348623157e308", Fraction(17976931348623157 * 10 ** 292)),
    ("1.7976931348623159e308", Fraction(17976931348623159 * 10 ** 292)),  # overflows
    ("1e-45", Fraction(1, 10 ** 45)),
    ("65520", Fraction(65520)),
    ("6e-8", Fraction(6, 10 ** 8)),
    ("0.1", Fraction(1, 10)),
    ("-0.5e1", Fraction(-5)),
    (".5", Fraction(1, 2)),
    ("5.", Fraction(5)),
    ("1/3", Fraction(1, 3)),
    ("-22/7", Fraction(-22, 7)),
    ("0x1p-1074", Fraction(1, 2 ** 1074)),
    ("0x1p-1075", Fraction(1, 2 ** 1075)),  # the tie below the smallest float64: to 0
    ("0x1.0000000000001p-1075", Fraction(2 ** 52 + 1, 2 ** 1127)),
    ("0x1.fffffffffffff8p1023", Fraction(2 ** 1024 - 2 ** 970)),  # float64 overflow tie
    ("0x1p1099", Fraction(2 ** 1099)),
    ("0x1p-1100", Fraction(1, 2 ** 1100)),
    ("0x.8p1", Fraction(1)),
    ("0X1.8P+3", Fraction(12)),
], ids=lambda v: str(v)[:24])
def test_moderate_exponents_are_correctly_rounded(text, exact, dtype):
    want = round_to(exact, dtype)
    got = _quick(text, dtype)
    assert _same(got, want), (text, dtype, got, want)


def test_1e_minus_400_is_zero_but_the_smallest_subnormal_stays():
    assert _same(parse_number("1e-400", "float64"), 0.0)
    assert parse_number("4.9e-324", "float64") == math.ldexp(1, -1074)
    assert parse_number("1e-45", "float32") == math.ldexp(1, -149)


@pytest.mark.parametrize(("dtype", "precision"), [("float16", 11), ("bfloat16", 8),
                                                  ("float32", 24), ("float64", 53)])
def test_long_mantissas_round_like_their_exact_value(dtype, precision):
    """Digits far beyond the kept ones still decide a tie (the sticky digit)."""
    below, above = 1.0, 1.0 + math.ldexp(1, 1 - precision)
    tie = Fraction(1) + Fraction(1, 2 ** precision)  # halfway: ties to even, i.e. 1.0
    digits = str(tie.numerator * 5 ** precision)  # tie = digits / 10**precision
    text = digits[0] + "." + digits[1:]
    assert parse_number(text, dtype) == below
    assert parse_number(text + "0" * 100_000, dtype) == below
    assert parse_number(text + "0" * 100_000 + "1", dtype) == above
    assert parse_number("-" + text + "0" * 100_000 + "1", dtype) == -above
    just_below = digits[0] + "." + str(int(digits[1:]) - 1).rjust(len(digits) - 1, "0")
    assert parse_number(just_below + "9" * 100_000, dtype) == below
    hex_tie = (1 << precision) + 1  # in units of 2**-precision
    hex_text = f"0x{hex_tie:x}p-{precision}"
    assert parse_number(hex_text, dtype) == below
    long_hex = f"0x{hex_tie << 4000:x}" + "0" * 50_000 + f"p-{precision + 4000 + 200_000}"
    assert parse_number(long_hex, dtype) == below
    long_hex_up = f"0x{(hex_tie << 4000) + 1:x}" + "0" * 50_000 + \
        f"p-{precision + 4000 + 200_000}"
    assert parse_number(long_hex_up, dtype) == above


def test_subnormal_tie_with_a_long_decimal_expansion():
    """2**-1075 (half the smallest float64) has 752 significant digits: ties to 0."""
    digits = str(5 ** 1075)
    text = "0." + "0" * (1075 - len(digits)) + digits
    assert _same(parse_number(text, "float64"), 0.0)
    assert _same(parse_number("-" + text, "float64"), -0.0)
    assert parse_number(text + "0" * 10_000 + "1", "float64") == math.ldexp(1, -1074)
    assert parse_number(text + "0" * 10_000, "float64") == 0.0


@pytest.mark.parametrize("text", ["1e", "0x", "", "nan(123)", "\uff11", "1_000", "0x1p",
                                  "1e+", ".", "-", "0x.", "1/", "/2", "1/0", "1e1.5",
                                  "in f", "+-1", "0x1p\uff11", "1" * 100_000 + "z"])
def test_garbage_is_a_usage_error(text):
    with pytest.raises(UsageError) as info:
        _quick(text, "float32")
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_specials_and_signed_zero():
    for dtype in DTYPES:
        assert math.isnan(parse_number("nan", dtype))
        assert math.isnan(parse_number("-NaN", dtype))
        assert parse_number("inf", dtype) == math.inf
        assert parse_number("-Infinity", dtype) == -math.inf
        assert _same(parse_number("-0", dtype), -0.0)
        assert _same(parse_number("-0x0p0", dtype), -0.0)
        assert _same(parse_number("0", dtype), 0.0)
        assert _same(parse_number(" -0.000e5 ", dtype), -0.0)
