"""The four audited floating-point formats, by name, and exact conversions between them.

Every value that crosses into a framework is already representable in the target format
(the reference rounds first), so casts here must be exact; `as_dtype_array` checks that
rather than silently rounding, because a silent rounding would change what is audited.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
ORDER: dict[str, int] = {d: i for i, d in enumerate(DTYPES)}  # sort key, narrowest first

_NUMPY: dict[str, np.dtype] = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}

# DESIGN.md section 5: 1 ulp for the 16-bit formats, 4 ulp for float32/float64.
ULP_BUDGET: dict[str, float] = {"float16": 1.0, "bfloat16": 1.0, "float32": 4.0, "float64": 4.0}


def check_dtype(dtype: str) -> str:
    """Return `dtype` if it is one of DTYPES, else raise ValueError naming the valid ones."""
    if dtype not in _NUMPY:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    return dtype


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype holding `dtype` (ml_dtypes.bfloat16 for bfloat16)."""
    return _NUMPY[check_dtype(dtype)]


def ulp_budget(dtype: str) -> float:
    """The default ulp budget for `dtype` (DESIGN.md section 5)."""
    return ULP_BUDGET[check_dtype(dtype)]


def as_dtype_array(values_float64: np.ndarray | float, dtype: str) -> np.ndarray:
    """Cast float64 values that are exactly representable in `dtype` to an array of `dtype`.

    bfloat16 goes via float32 (float64 -> float32 is exact for such values, and
    float32 -> bfloat16 then only drops zero bits). Raises ValueError if any value is
    not exact in `dtype`: a rounding here would audit a different input than reported.
    """
    src = np.asarray(values_float64, dtype=np.float64)
    target = numpy_dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        out = src.astype(np.float32).astype(target) if dtype == "bfloat16" else src.astype(target)
    back = out.astype(np.float64)
    same = back == src
    if not same.all():  # NaN != NaN: only then look at NaNs (this runs on every batch)
        same |= np.isnan(back) & np.isnan(src)
    if not same.all():
        bad = src[~same].ravel()[:3]
        raise ValueError(f"values not exactly representable in {dtype}: {bad.tolist()}")
    return out


def to_float64(array: object) -> np.ndarray:
    """Widen an array of any audited format to float64 (always exact)."""
    arr = np.asarray(array)
    with np.errstate(invalid="ignore"):  # NaN payloads (sweeps enumerate them) stay NaN
        if arr.dtype == _NUMPY["bfloat16"]:
            arr = arr.astype(np.float32)
        return arr.astype(np.float64)
