"""The parameter options of `probe` and `sweep`: --gamma / --alpha (a focal family's
setting) and --label-smoothing (a subject that takes it), parsed into the `params` dict
that travels with a batch. One-line usage errors for a value or subject that cannot take
them."""

from __future__ import annotations

import argparse
import math
from typing import Any

from audit.dtypes import DTYPES
from audit.families import LABEL_SMOOTHING
from audit.runners import DEVICES, EXECUTIONS
from reference.cli import UsageError, parse_number
from reference.formats import round_to


def check_dtype_device(dtype: str, device: str) -> None:
    """--dtype and --device of probe and sweep: a one-line usage error for unknown ones."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


def add_param_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--execution", default="eager", choices=EXECUTIONS,
                   help="how the framework runs the call (default eager)")
    p.add_argument("--gamma", default=None, help="focal families: gamma (default 2)")
    p.add_argument("--alpha", default=None, help="focal families: alpha, or none (default)")
    p.add_argument("--label-smoothing", default=None, metavar="E",
                   help="subjects that take it: smooth the target to y*(1-E)+E/2 (E in [0, 1], "
                        "rounded to --dtype; the reference is then certified point by point)")


def family_params(subject: Any, args: argparse.Namespace) -> dict | None:
    """--gamma / --alpha for a parametric family (focal), --label-smoothing for a subject
    that takes it; a usage error elsewhere."""
    params = _focal_params(subject, args)
    raw = getattr(args, "label_smoothing", None)
    if raw is None:
        return params
    if not subject.label_smoothing:
        raise UsageError(f"{subject.name} takes no --label-smoothing")
    e = parse_number(raw, "float64")
    if not 0 <= e <= 1:
        raise UsageError(f"--label-smoothing must be a number in [0, 1], not {raw!r}")
    e = round_to(e, args.dtype)  # E as the dtype value it is (DESIGN.md section 10)
    return {**(params or {}), LABEL_SMOOTHING: e} if e else params


def _focal_params(subject: Any, args: argparse.Namespace) -> dict | None:
    family = subject.family_record
    given = {k: getattr(args, k) for k in ("gamma", "alpha") if getattr(args, k) is not None}
    if not family.param_names:
        if given:
            raise UsageError(f"{subject.name} takes no {', '.join('--' + k for k in given)} "
                             f"(family {family.name})")
        return None
    params = dict(family.default)
    if "gamma" in given:
        gamma = parse_number(given["gamma"], "float64")
        if not math.isfinite(gamma) or gamma < 0:
            raise UsageError(f"--gamma must be a finite number >= 0, not {given['gamma']!r}")
        params["gamma"] = gamma
    if "alpha" in given:
        if given["alpha"].strip().lower() == "none":
            params["alpha"] = None
        else:
            alpha = parse_number(given["alpha"], "float64")
            if not 0 <= alpha <= 1:
                raise UsageError(f"--alpha must be in [0, 1] or none, not {given['alpha']!r}")
            params["alpha"] = alpha
    return params
