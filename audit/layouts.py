"""Memory layouts of an uploaded batch, shared by every runner.

A layout says how the n points lie in the buffer handed to the framework ("base") and
which view of it the kernel gets; results always come back in point order. Runners build
the framework's own view (`torch` strides, `tf.strided_slice`, ...) from these bases.
"""

from __future__ import annotations

import numpy as np

from audit import dtypes as _dtypes

LAYOUTS: tuple[str, ...] = ("contiguous", "strided", "transposed")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return layout


def factor(n: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == n, rows the largest divisor <= sqrt(n)."""
    rows = max(d for d in range(1, int(n**0.5) + 1) if n % d == 0) if n else 1
    return rows, (n // rows if n else 0)


def layout_base(values: np.ndarray, layout: str) -> np.ndarray:
    """The float64 buffer to upload; its layout view holds `values` in point order."""
    if layout == "contiguous":
        return values
    if layout == "strided":  # a stride-2 view; the gaps are NaN so a wrong stride shows
        base = np.full(2 * values.size, np.nan)
        base[::2] = values
        return base
    rows, cols = factor(values.size)  # view (rows, cols) = transpose of base (cols, rows)
    return np.ascontiguousarray(values.reshape(rows, cols).T)


def exact_base(values: np.ndarray, layout: str, dtype: str) -> np.ndarray:
    """The layout's buffer as an array of `dtype` (exact cast; raises if not exact)."""
    return _dtypes.as_dtype_array(layout_base(values, layout), dtype)


def unlayout(base: np.ndarray, layout: str) -> np.ndarray:
    """Points of a base-shaped array (e.g. the gradient w.r.t. the base) in point order."""
    if layout == "strided":
        return base[::2]
    if layout == "transposed":
        return base.T.reshape(-1)
    return base.reshape(-1)


def result(values: np.ndarray, reduction: str) -> np.ndarray:
    """A reduced loss as a 0-d array, an elementwise one as the n points."""
    return values.reshape(()) if reduction != "none" else values.reshape(-1)


def broadcast_1d(*arrays: np.ndarray | None) -> list[np.ndarray | None]:
    """Broadcast the present arrays (None = argument not passed) to one 1-D float64 batch."""
    present = [np.asarray(a, dtype=np.float64) for a in arrays if a is not None]
    shaped = iter(np.broadcast_arrays(*present))
    out = [None if a is None else np.ascontiguousarray(next(shaped)) for a in arrays]
    if out[0] is None or out[0].ndim != 1:
        raise ValueError("inputs and targets must broadcast to a 1-D batch")
    return out
