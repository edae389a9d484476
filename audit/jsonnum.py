"""Numbers as results.json stores them: finite floats as numbers, non-finite ones as the
strings "inf", "-inf", "nan" (DESIGN.md section 8). Shared by results.py and the modules
that build records (one place, no import cycle through results)."""

from __future__ import annotations

import math
from typing import Any

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ResultsError(ValueError):
    """A results file that cannot be read or does not match the schema."""


def to_json_value(x: Any) -> Any:
    """A number as stored: finite floats stay numbers, non-finite become strings.

    ``None`` and ints pass through so optional fields (``observed`` of an error) survive.
    """
    if x is None or isinstance(x, bool | int | str):
        return x
    f = float(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def from_json_value(v: Any) -> Any:
    """Inverse of :func:`to_json_value`: the strings "inf"/"-inf"/"nan" become floats."""
    if isinstance(v, str):
        key = v.strip().lower()
        if key in _NONFINITE:
            return _NONFINITE[key]
        raise ResultsError(f"not a number: {v!r}")
    if v is None or isinstance(v, bool):
        return v
    return float(v) if isinstance(v, float) else v


def to_float(v: Any, default: float = math.nan) -> float:
    """A stored number as a float for sorting and plotting; ``None`` gives ``default``."""
    if v is None:
        return default
    try:
        return float(from_json_value(v))
    except (ResultsError, TypeError, ValueError):
        return default
