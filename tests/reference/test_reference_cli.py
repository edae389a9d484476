"""Self-tests of ``python -m reference`` (DESIGN.md sections 3 and 7): one JSON object on
stdout; bad arguments give exit status 2 and one line on stderr, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

from tests.reference.reference_oracle import (
    logits_loss,
    logits_loss_grad,
    prob_loss,
    round_value,
    same_float,
)

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"op", "dtype", "input", "target", "weight", "pos_weight", "quantity", "exact",
          "rounded", "hex"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reference", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def _json_float(value) -> float:
    """JSON numbers, or the strings "inf", "-inf", "nan" for non-finite values."""
    if isinstance(value, str):
        assert value in ("inf", "-inf", "nan"), value
        return float(value)
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    return float(value)


def _significant_digits(decimal: str) -> int:
    mantissa = decimal.lstrip("+-").lower().split("e")[0].replace(".", "").lstrip("0")
    return len(mantissa)


def probe(*args: str) -> dict:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert isinstance(out, dict) and out.keys() >= FIELDS, out
    return out


def test_loss_in_float32_from_a_hex_input():
    out = probe("bce_with_logits", "--dtype", "float32", "--input", "0x1.8p+3", "--target", "1")
    assert out["op"] == "bce_with_logits" and out["dtype"] == "float32"
    assert out["quantity"] == "loss"
    assert _json_float(out["input"]) == 12.0 and _json_float(out["target"]) == 1.0
    assert _json_float(out["weight"]) == 1.0 and _json_float(out["pos_weight"]) == 1.0
    want = logits_loss(12.0, 1.0)  # log1p(exp(-12)) ~ 6.144e-6
    assert _significant_digits(out["exact"]) >= 30, out["exact"]
    with mpmath.workprec(200):
        assert abs(mpmath.mpf(out["exact"]) / want - 1) < mpmath.mpf(10) ** -29
    rounded = _json_float(out["rounded"])
    assert rounded == round_value(want, "float32")
    assert float.fromhex(out["hex"]) == rounded


def test_grad_with_weights_in_float16():
    out = probe("bce_with_logits", "--dtype", "float16", "--input", "-2.5", "--target", "0.25",
                "--weight", "3", "--pos-weight", "0x1p-1", "--grad")
    assert out["quantity"] == "grad"
    assert _json_float(out["weight"]) == 3.0 and _json_float(out["pos_weight"]) == 0.5
    want = logits_loss_grad(-2.5, 0.25, 3.0, 0.5)
    assert _json_float(out["rounded"]) == round_value(want, "float16")
    with mpmath.workprec(200):
        assert abs(mpmath.mpf(out["exact"]) / want - 1) < mpmath.mpf(10) ** -29


def test_input_not_exact_in_the_dtype_is_rounded_first():
    """0.1 in float32 is 0.100000001490116...; that value is reported and used."""
    out = probe("bce_with_logits", "--dtype", "float32", "--input", "0.1", "--target", "0")
    x = float(np.float32(0.1))
    assert _json_float(out["input"]) == x
    assert _json_float(out["rounded"]) == round_value(logits_loss(x, 0.0), "float32")


def test_bce_on_probabilities():
    out = probe("bce", "--dtype", "float64", "--input", "0.25", "--target", "1")
    want = prob_loss(0.25, 1.0)  # log(4)
    assert _json_float(out["rounded"]) == round_value(want, "float64")
    assert float.fromhex(out["hex"]) == round_value(want, "float64")


@pytest.mark.parametrize(("x", "y", "want"), [
    ("inf", "0.5", "inf"),
    ("-inf", "0", 0.0),
    ("nan", "1", "nan"),
    ("65520", "0", "inf"),  # the float16 overflow tie, pushed up by the tail
])
def test_non_finite_results_are_strings(x, y, want):
    out = probe("bce_with_logits", "--dtype", "float16", "--input", x, "--target", y)
    if isinstance(want, str):
        assert out["rounded"] == want
    else:
        assert same_float(_json_float(out["rounded"]), want)


def test_negative_number_as_an_option_value():
    out = probe("bce_with_logits", "--dtype", "bfloat16", "--input", "-1e10", "--target", "0")
    assert _json_float(out["input"]) == round_value(-1e10, "bfloat16")
    assert same_float(_json_float(out["rounded"]), 0.0)


BAD_ARGUMENTS = [
    pytest.param(["bce_with_logits", "--dtype", "float8", "--input", "1", "--target", "0"],
                 id="unknown dtype"),
    pytest.param(["bce_with_logits", "--dtype", "float32", "--input", "abc", "--target", "0"],
                 id="unparsable input"),
    pytest.param(["bce_with_logits", "--dtype", "float32", "--input", "1", "--target", "0x1.q"],
                 id="unparsable target"),
    pytest.param(["mse", "--dtype", "float32", "--input", "1", "--target", "0"],
                 id="unknown op"),
    pytest.param(["bce_with_logits", "--dtype", "float32", "--input", "1"],
                 id="missing target"),
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS)
def test_bad_arguments_exit_2_with_one_line(args):
    done = run_cli(*args)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == ""
    assert lines[0].strip()
