"""One batch type for every family: named arguments of n points.

`input` is (n,) for the scalar families (a logit or a probability per point) and may be
(n, K) for a family whose input is a vector per point (softmax cross-entropy); the other
arguments are (n,). Contracts' regions, plots and records read the same names through
`variables()` (x = input, y = target, w = weight, p = pos_weight, plus the extras).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Region variables of the row families (audit/softmax_family.variables: one row of K
# logits per point); contracts accept them in regions besides x, y, w, p.
ROW_VARIABLES = ("k", "x_max", "x_min", "x_spread", "masked", "pinf", "nans", "xl", "margin",
                 "e", "j", "xj", "dj", "on_label", "pj",
                 "psum", "zeros", "ql", "q_min", "q_max", "qj",  # rows of probabilities
                 "rows", "ignored", "den", "total")  # the reduced check's, per batch


@dataclass(frozen=True)
class Batch:
    input: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    pos_weight: np.ndarray
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, input: Any, target: Any, weight: Any = 1.0, pos_weight: Any = 1.0,
           **extra: Any) -> Batch:
        """Broadcast the per-point arguments to the batch length (float64)."""
        x = np.asarray(input, dtype=np.float64)
        x = x.reshape(1) if x.ndim == 0 else x
        n = x.shape[0]

        def per_point(a: Any) -> np.ndarray:
            return np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=np.float64), (n,)))

        return cls(x, per_point(target), per_point(weight), per_point(pos_weight),
                   {k: np.asarray(v) for k, v in extra.items()})

    def __len__(self) -> int:
        return int(self.input.shape[0])

    def take(self, idx: Any) -> Batch:
        """The points at `idx` (an index array or a slice), extras included."""
        return Batch(self.input[idx], self.target[idx], self.weight[idx],
                     self.pos_weight[idx], {k: v[idx] for k, v in self.extra.items()})

    def variables(self) -> dict[str, np.ndarray]:
        """Region / plot variables, one value per point: x, y, w, p and the extras. A vector
        input adds per-point summaries instead of x: x_max, x_min and x_spread
        (max - min), so a region can say e.g. `x_spread > 100`."""
        base = {"y": self.target, "w": self.weight, "p": self.pos_weight, **self.extra}
        if self.input.ndim == 1:
            return {"x": self.input, **base}
        with np.errstate(invalid="ignore"):
            hi, lo = self.input.max(axis=1), self.input.min(axis=1)
            return {"x_max": hi, "x_min": lo, "x_spread": hi - lo, **base}
