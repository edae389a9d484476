"""Loss families on the audit side: what a subject's input is and how it is explored.

A family names the certified reference it is graded against (reference.families) and
brings its inputs: the deterministic grid, the inputs an exhaustive run enumerates, the
bit-pattern range of sweeps, the special points, the input's name in test ids and plot
axes, and the centre its safe interval grows from. Checks, sweeps, search and special
cases ask the family; nothing else branches on a family's name. A new family is one
record here (and its reference family).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from audit import regions
from audit.dtypes import numpy_dtype
from reference import smoothing
from reference.formats import get_format, round_to

LABEL_SMOOTHING = "label_smoothing"  # a subject-level parameter (Subject.label_smoothing)
DEFAULT_SMOOTHING = 0.1  # the smoothed checks' E unless --label-smoothing says otherwise

_UINT = {16: np.uint16, 32: np.uint32, 64: np.uint64}


def _logit_specials(dtype: str) -> list[float]:
    fmt = get_format(dtype)
    return [math.inf, -math.inf, 1e10, -1e10, fmt.max_finite, -fmt.max_finite, 0.0, 100.0,
            -100.0]


def _probability_specials(dtype: str) -> list[float]:
    fmt = get_format(dtype)
    eps = math.ldexp(1.0, -fmt.precision)
    return [0.0, 1.0, 0.5, math.ldexp(1.0, fmt.quantum_exp), 1 - eps]


def _all_patterns(dtype: str) -> tuple[int, int]:
    return 0, 1 << get_format(dtype).width


def _unit_patterns(dtype: str) -> tuple[int, int]:
    """+0 .. 1.0: the bit patterns of [0, 1] (non-negative values order like patterns)."""
    fmt = get_format(dtype)
    one = int(np.array([1.0], dtype=numpy_dtype(dtype)).view(_UINT[fmt.width])[0])
    return 0, one + 1


def _focal_op(params: dict[str, float | None]) -> str:
    from reference import focal_op

    return focal_op(params["gamma"], params["alpha"])


def _focal_prob_op(params: dict[str, float | None]) -> str:
    from reference import focal_prob_op

    return focal_prob_op(params["gamma"], params["alpha"])


def batch_param_names(family: Family, extra: dict[str, np.ndarray]) -> tuple[str, ...]:
    """The parameters a batch carries: the family's own (when all present) and the
    label smoothing of a subject that takes it (DESIGN.md section 10)."""
    names = family.param_names if all(k in extra for k in family.param_names) else ()
    return (*names, LABEL_SMOOTHING) if LABEL_SMOOTHING in extra else names


def param_groups(family: Family, extra: dict[str, np.ndarray], n: int
                 ) -> list[tuple[dict[str, float | None], np.ndarray]]:
    """The batch's points grouped by parameter setting: [(params, indices)], one group
    (the default setting) when the batch carries no parameters."""
    names = batch_param_names(family, extra)
    if not names:
        return [(dict(family.default), np.arange(n))]
    cols = np.stack([np.asarray(extra[k], dtype=np.float64) for k in names], axis=1)
    keys = np.where(np.isnan(cols), np.inf, cols)  # NaN (None) groups like a value
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    groups = []
    for g, row in enumerate(uniq):
        params = {k: (None if np.isinf(v) else float(v)) for k, v in zip(names, row,
                                                                          strict=True)}
        groups.append((params, np.flatnonzero(inverse.ravel() == g)))
    return groups


@dataclass(frozen=True)
class Family:
    name: str
    reference: str  # the reference family graded against (reference.families)
    input_kind: str  # "logit" | "probability"
    variable: str  # the input's name in test ids
    axis: str  # plot axis label
    centre: float  # safe intervals grow from here (DESIGN.md section 8)
    grid: Callable[[str], np.ndarray]
    specials: Callable[[str], list[float]]
    patterns: Callable[[str], tuple[int, int]]  # [start, stop) of sweep bit patterns
    lower: float = -math.inf  # the inputs an exhaustive run keeps: lower <= v <= upper
    upper: float = math.inf
    weights: bool = True  # pos_weight is meaningful (the logit families)
    # parametric families (focal): the parameter grid of the checks, the setting used
    # where none is given (special cases, searches, sweeps), and the reference op of a
    # setting; a parameter value None travels as NaN in a Batch's extras
    params: tuple[dict[str, float | None], ...] = ()
    default: dict[str, float | None] = field(default_factory=dict)
    op_of: Callable[[dict[str, float | None]], str] | None = None
    exhaustive: bool = True  # 16-bit checks enumerate every input (needs a fast reference)
    input_stride: int = 1  # checks use every k-th grid input (a slow reference)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.default)

    def reference_op(self, params: dict[str, float | None] | None = None) -> str:
        """The reference op graded against, for one parameter setting (default: the
        family's default setting); a label smoothing E > 0 among them wraps it in
        reference.smoothing's exact smoothed target (E already the dtype's value)."""
        params = dict(params or {})
        e = params.pop(LABEL_SMOOTHING, None)
        op = self.reference if self.op_of is None else self.op_of({**self.default, **params})
        return op if not e else smoothing.op_name(e, op)

    def every_input(self, dtype: str) -> np.ndarray:
        """Every non-NaN input of a 16-bit dtype inside the family's domain."""
        every = regions.all_values(dtype)
        every = every[~np.isnan(every)]
        return every[(every >= self.lower) & (every <= self.upper)]

    def special_inputs(self, dtype: str) -> list[float]:
        """The classic traps, rounded to the dtype (1e10 is inf in float16), unique."""
        return sorted({round_to(v, dtype) for v in self.specials(dtype)})


_LOGIT = dict(input_kind="logit", variable="x", axis="logit x", centre=0.0,
              grid=regions.logit_grid, specials=_logit_specials, patterns=_all_patterns)

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bce_with_logits", "bce_with_logits", **_LOGIT),
    # the two-step pipeline sigmoid -> bce on logits, graded as the loss the user meant
    Family("sigmoid_bce", "bce_with_logits", **_LOGIT),
    Family("bce", "bce", input_kind="probability", variable="q", axis="probability q",
           centre=0.5, grid=regions.probability_grid, specials=_probability_specials,
           patterns=_unit_patterns, lower=0.0, upper=1.0, weights=False),
    # DESIGN.md section 10: alpha_t (1 - p_t)^gamma bce_with_logits, certified by
    # reference/focal.py (interval arithmetic, ~20k points/s: no exhaustive checks)
    Family("focal_with_logits", "focal_with_logits", **{**_LOGIT, "grid": regions.logit_grid},
           params=tuple({"gamma": g, "alpha": a} for g in (0.0, 0.5, 1.0, 2.0, 5.0)
                        for a in (None, 0.25)),
           default={"gamma": 2.0, "alpha": None}, op_of=_focal_op, exhaustive=False,
           input_stride=10, weights=False),
    # the same on a probability q (keras from_logits=False), certified by
    # reference/focal_prob.py
    Family("focal", "focal", input_kind="probability", variable="q", axis="probability q",
           centre=0.5, grid=regions.probability_grid, specials=_probability_specials,
           patterns=_unit_patterns, lower=0.0, upper=1.0, weights=False,
           params=tuple({"gamma": g, "alpha": a} for g in (0.0, 0.5, 1.0, 2.0, 5.0)
                        for a in (None, 0.25)),
           default={"gamma": 2.0, "alpha": None}, op_of=_focal_prob_op, exhaustive=False,
           input_stride=10),
)}


def get(name: str) -> Family:
    """The family called `name`; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; expected one of "
                         f"{', '.join(FAMILIES)}") from None
