"""The certified mpmath path, point by point: the cached `point`, `exact_parts` and the
pure mpmath `rounded` (`_rounded_mpmath`).

Every family of the registry (families.py) goes through here, with or without a fast
path: it is the ground truth reference.fast falls back to, so this module imports
nothing of fast (fast and vectorized import it). vectorized.py re-exports these names.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from mpmath import libmp

from . import losses
from .exact import Tuple
from .families import get_family
from .formats import get_format, round_to


@lru_cache(maxsize=1 << 21)
def point(op: str, grad: bool, x: float, y: float, w: float, p: float) -> Tuple:
    """Certified representative of one point, cached: subjects needing the same exact
    values (torch vs tf vs keras, values vs reductions) share one evaluation."""
    return losses.value(op, grad, x, y, w, p)


def _points(op: str, input: Any, target: Any, weight: Any, pos_weight: Any, grad: bool
            ) -> tuple[list[Tuple], tuple[int, ...]]:
    get_family(op)  # an unknown op is a ValueError before any work
    arrays = np.broadcast_arrays(*(np.asarray(v) for v in (input, target, weight, pos_weight)))
    for a in arrays:
        if a.dtype.kind == "f" and a.dtype.itemsize > 8:
            raise ValueError("inputs wider than float64 are not supported in bulk")
    flat = [a.astype(np.float64).ravel().tolist() for a in arrays]
    reps = [point(op, grad, x, y, w, p) for x, y, w, p in zip(*flat, strict=True)]
    return reps, arrays[0].shape


def _rounded_mpmath(op: str, dtype: str, input: Any, target: Any, *, weight: Any = 1,
                    pos_weight: Any = 1, grad: bool = False) -> np.ndarray:
    """The pure mpmath path of `rounded` (every point through the cached engine)."""
    fmt = get_format(dtype)
    reps, shape = _points(op, input, target, weight, pos_weight, grad)
    return np.array([round_to(t, fmt) for t in reps], dtype=np.float64).reshape(shape)


def double_double(t: Tuple) -> tuple[float, float]:
    """(hi, lo) of an exact value: hi its float64 rounding, lo the rest (0 when hi is
    0 or +-inf; NaN stays NaN)."""
    hi = round_to(t, "float64")
    if not np.isfinite(hi) or hi == 0.0:
        return hi, 0.0
    return hi, libmp.to_float(libmp.mpf_sub(t, libmp.from_float(hi), 60))


def exact_parts(op: str, input: Any, target: Any, *, weight: Any = 1, pos_weight: Any = 1,
                grad: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The exact values as double-double (hi, lo): hi = float64 rounding, lo = the rest.

    Enough to measure ulp error in every format with vectorized float64 arithmetic.
    hi is +-inf beyond float64's range (lo then 0); NaN stays NaN.
    """
    reps, shape = _points(op, input, target, weight, pos_weight, grad)
    hi = np.empty(len(reps))
    lo = np.empty(len(reps))
    for i, t in enumerate(reps):
        hi[i], lo[i] = double_double(t)
    return hi.reshape(shape), lo.reshape(shape)
