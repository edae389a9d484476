"""The dangerous regions of each dtype, derived from the format (never hard-coded logits).

For a dtype with largest finite value M, smallest subnormal s and precision p:
- exp overflows beyond x = log(M);
- exp(-x) underflows below the normal range beyond x = -emin*ln2 and to zero beyond
  x = -log(s/2);
- softplus(-x) drops below half an ulp of x (so x + softplus(-x) rounds to x) where
  exp(-x) < 2**-p * x: about x = p*ln2 + log(x);
- sigmoid(x) rounds to 1 beyond x = (p+1)*ln2, which is where BCELoss(sigmoid(x))
  with target 1 can only return 0 (or -log of 1 - ulp).
Grids are deterministic: the audit's contracts are judged on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.dtypes import numpy_dtype, to_float64
from reference.formats import get_format, round_to


@dataclass(frozen=True)
class Thresholds:
    exp_overflow: float        # log(max finite)
    exp_normal_underflow: float
    exp_underflow: float       # exp(-x) rounds to 0 beyond this
    softplus_absorbed: float   # x + softplus(-x) == x in the dtype beyond this
    sigmoid_saturates: float   # sigmoid(x) rounds to 1 beyond this


def thresholds(dtype: str) -> Thresholds:
    fmt = get_format(dtype)
    p = fmt.precision
    x = p * math.log(2)
    for _ in range(8):  # fixed point of x = p ln2 + log x
        x = p * math.log(2) + math.log(x)
    return Thresholds(
        exp_overflow=math.log(fmt.max_finite),
        exp_normal_underflow=-fmt.emin * math.log(2),
        exp_underflow=-(fmt.quantum_exp - 1) * math.log(2),
        softplus_absorbed=x,
        sigmoid_saturates=(p + 1) * math.log(2),
    )


def representable(values: np.ndarray | list[float], dtype: str) -> np.ndarray:
    """Round each value (exactly, once) to the dtype; return unique float64 values."""
    out = np.array([round_to(float(v), dtype) for v in values], dtype=np.float64)
    return np.unique(out[~np.isnan(out)])


def exhaustive_ok(dtype: str) -> bool:
    """Whether the default audit enumerates every input of the dtype (16-bit formats)."""
    return get_format(dtype).width == 16


def all_values(dtype: str) -> np.ndarray:
    """Every value of a 16-bit dtype (finite, +-inf, one NaN) as float64."""
    if get_format(dtype).width != 16:
        raise ValueError(f"{dtype} is too wide to enumerate in the default run")
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    vals = to_float64(bits.view(numpy_dtype(dtype)))
    nan = np.isnan(vals)
    return np.concatenate([vals[~nan], [np.nan]])


def logit_grid(dtype: str) -> np.ndarray:
    """Logits covering every binade (+-2**k and neighbours), the thresholds densely,
    +-0, +-max, +-inf and the classic +-1e10 / +-3e38 (rounded to the dtype)."""
    fmt = get_format(dtype)
    t = thresholds(dtype)
    pts: list[float] = [0.0, math.inf, fmt.max_finite, 1e10, 3e38, 1e300]
    for e in range(fmt.quantum_exp, fmt.emax + 1, 1 if fmt.width < 64 else 7):
        base = math.ldexp(1.0, e)
        pts += [base, base * 1.5, base * (1 + 2.0 ** -(fmt.precision - 1))]
        if e > fmt.quantum_exp:
            pts.append(base * (1 - 2.0 ** -fmt.precision))
    for c in (t.exp_overflow, t.exp_normal_underflow, t.exp_underflow, t.softplus_absorbed,
              t.sigmoid_saturates, 1.0):
        pts += list(np.linspace(c * 0.8 - 1, c * 1.2 + 1, 41))
    pts += list(np.linspace(0, 40, 161))
    grid = representable(pts, dtype)
    return np.unique(np.concatenate([grid, -grid]))


def probability_grid(dtype: str) -> np.ndarray:
    """Probabilities in [0, 1]: 0, 1, every binade near 0, every ulp step near 1."""
    fmt = get_format(dtype)
    pts: list[float] = [0.0, 1.0, 0.5]
    for e in range(fmt.quantum_exp, 0, 1 if fmt.width < 64 else 7):
        base = math.ldexp(1.0, e)
        pts += [base, base * 1.5, 1 - base, 1 - 2 * base]
    pts += list(np.linspace(0, 1, 257))
    return representable(pts, dtype)


def soft_targets(dtype: str) -> np.ndarray:
    """Soft labels a few ulps from 0 and 1, and inside: all exact in the dtype."""
    fmt = get_format(dtype)
    eps = math.ldexp(1.0, -fmt.precision)  # half-ulp of 1 just below 1
    pts = [0.5, 0.25, 0.1, 0.9, 1 - eps, 1 - 4 * eps, 2.0 ** -30, math.ldexp(1.0, fmt.emin),
           math.ldexp(1.0, fmt.quantum_exp), 4 * eps]
    return representable(pts, dtype)


def hard_targets() -> np.ndarray:
    return np.array([0.0, 1.0])


def weight_grid(dtype: str) -> np.ndarray:
    """Weights / pos_weights: 0, tiny, ordinary, huge, inf (exact in the dtype)."""
    fmt = get_format(dtype)
    return representable([0.0, math.ldexp(1.0, fmt.quantum_exp), 0.5, 2.5, 3.0,
                          fmt.max_finite, math.inf], dtype)


def cross(*axes: np.ndarray) -> list[np.ndarray]:
    """Cartesian product as flat float64 arrays."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return [m.ravel().astype(np.float64) for m in mesh]

