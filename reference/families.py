"""Loss families as records: the one registry of what reference/ can certify.

A `Family` bundles everything the rest of reference/ needs to know about one loss:

    name        the op name the public API takes ("bce_with_logits", "bce")
    arguments   the family's argument names in call order
    input_kind  "logit" or "probability": what `input` is (gradients are d/d input)
    form        (grad, *args) -> engine.Linear, args in `arguments` order (exact
                numbers, any type exact.to_tuple takes): the cancellation-free dyadic
                part plus transcendental tails, limits and NaN handled inside
    fast        a `FastPath` of reference.fast's per-family hooks, or None: then
                fast.rounded / rounded_and_parts / approx_parts refuse the family
                (ValueError "family X has no fast path") and reference.rounded
                certifies it with the mpmath path
    formula     the exact math, one line (docs, --help)
    value       optional, for a family that is no Linear form (focal_with_logits: a
                product of transcendental factors): (grad, *args) -> the certified
                representative Tuple (engine.evaluate's contract), args as for `form`.
                Give `form=None` with it: the form is then derived as
                Linear(value(...)), a term-free constant that engine.evaluate returns
                as it is, so losses.value / points.point / reference.rounded /
                exact_parts work unchanged (bce's path is untouched). That constant is
                a representative, not the exact value: reference.reduce refuses such
                a family (`Family.opaque`).

The bulk and scalar entry points (losses.form / value, vectorized.rounded, fast.*) take
the four arguments input, target, weight, pos_weight (`BULK_ARGUMENTS`); `Family.bind`
maps them to the family's own. An optional one the family does not take must be at
its default 1 (else ValueError "<family> has no <argument>", e.g. "bce has no
pos_weight"); fast._prepare applies the same rule to whole arrays.

Later families (focal_with_logits, cross_entropy: DESIGN.md section 10) are added with
`register_family`. The point cache (vectorized.point) is keyed on the op name: a name
unregistered and registered again with another form needs `point.cache_clear()`.

Parametric families: a name "PREFIX:..." whose prefix has a builder in `PARAMETRIC`
(`register_parametric`) is built and registered by `get_family` on first use, so a
canonical name works in any process (audit workers) without a registration step.
focal_with_logits is one: `focal_op(gamma, alpha)` returns the canonical name
"focal_with_logits:gamma=2:alpha=0.25" (alpha=none for no alpha; spelling:
focal.format_number) and registers it; weight is its only optional bulk argument
(pos_weight must stay 1), and it has no fast path (certified by reference.focal).
Its sibling on probabilities, "focal:gamma=2:alpha=0.25" (`focal_prob_op`, input_kind
"probability", certified by reference.focal_prob), follows the same rules.

Import order: this module imports the forms (bce_forms.py) and the fast kernels
(bce_fast.py), never the modules that dispatch through it (losses, fast, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import bce_fast, exact, focal, focal_prob
from .bce_forms import logits_form, prob_form
from .engine import Linear
from .exact import Tuple

BULK_ARGUMENTS = ("input", "target", "weight", "pos_weight")
DEFAULTS = {"weight": 1, "pos_weight": 1}  # optional bulk arguments and their defaults
INPUT_KINDS = ("logit", "probability")


@dataclass(frozen=True)
class ShortRoute:
    """fast's cheapest route (`_short` for bce_with_logits), for batches it applies to.

    applies(flat) -> bool: the whole batch qualifies (flat = the four bulk arguments,
        size-1 ones as 0-d float64 scalars, the others flat float64 arrays);
    labels(y, grad) -> (take, aux): whether one chunk's targets qualify, and what `run`
        needs of them;
    run(x, y, aux, grad, fmt, out, v) -> ok: writes the rounded results into out and the
        float64 estimates into v, returns the mask of certified points (the others go to
        the general route).
    """

    applies: Callable[[list[Any]], bool]
    labels: Callable[..., tuple[bool, Any]]
    run: Callable[..., Any]


@dataclass(frozen=True)
class FastPath:
    """reference.fast's per-family hooks (the proof obligations: fast.py's docstring).

    Every hook gets all four bulk arguments x, y, w, p (float64 arrays of one chunk, or
    0-d scalars; an argument the family lacks is 1) and is called once per chunk.

    domain(grad, x, ax, y, w, p) -> mask: points where `interval`'s bound is proven
        (ax = |x|);
    interval(grad, x, ax, y, w, p) -> (v, lo, hi): estimate and certified interval, valid
        on the domain (garbage elsewhere, replaced);
    special(grad, fmt, x, y, w, p) -> (mask, value): exact results outside the domain
        (NaN, exact zeros, limits; fmt None for unrounded values), exactly as `form`;
    short: the cheap route, or None;
    tier2(grad, fmt, x, y, w, p) -> (result, ok): a second, tighter tier for the points
        the interval could not certify, or None.
    """

    domain: Callable[..., Any]
    interval: Callable[..., tuple[Any, Any, Any]]
    special: Callable[..., tuple[Any, Any]]
    short: ShortRoute | None = None
    tier2: Callable[..., tuple[Any, Any]] | None = None


@dataclass(frozen=True)
class Family:
    """One loss family (see the module docstring for the fields)."""

    name: str
    arguments: tuple[str, ...]
    input_kind: str
    form: Callable[..., Linear] | None
    fast: FastPath | None
    formula: str
    value: Callable[..., Tuple] | None = None
    # derived from `arguments` once (bind runs for every mpmath point)
    _absent: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)
    _picks: tuple[int, ...] | None = field(init=False, repr=False, compare=False)
    _identity: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.form is None) == (self.value is None):
            raise ValueError(f"family {self.name}: give exactly one of form and value")
        if self.form is None:
            object.__setattr__(self, "form", _opaque_form(self.value))
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"family {self.name}: input_kind {self.input_kind!r}; expected "
                             f"one of {', '.join(INPUT_KINDS)}")
        if not self.arguments or len(set(self.arguments)) != len(self.arguments):
            raise ValueError(f"family {self.name}: arguments must be distinct names, got "
                             f"{self.arguments}")
        absent = tuple((BULK_ARGUMENTS.index(n), n) for n in DEFAULTS
                       if n not in self.arguments)
        picks = None if any(a not in BULK_ARGUMENTS for a in self.arguments) else \
            tuple(BULK_ARGUMENTS.index(a) for a in self.arguments)
        object.__setattr__(self, "_absent", absent)
        object.__setattr__(self, "_picks", picks)
        object.__setattr__(self, "_identity", picks == (0, 1, 2, 3))

    @property
    def opaque(self) -> bool:
        """Certified through a `value` hook: its form is no exact Linear (no reductions)."""
        return self.value is not None

    def bind(self, input: Any, target: Any, weight: Any = 1, pos_weight: Any = 1
             ) -> tuple[Any, ...]:
        """The four bulk arguments as this family's arguments, in its order."""
        given = (input, target, weight, pos_weight)
        for i, name in self._absent:
            if exact.to_tuple(given[i]) != exact.ONE:
                raise ValueError(f"{self.name} has no {name}")
        picks = self._picks
        if picks is None:
            missing = [a for a in self.arguments if a not in BULK_ARGUMENTS]
            raise ValueError(f"{self.name} needs {', '.join(missing)}: not one of the bulk "
                             f"arguments {', '.join(BULK_ARGUMENTS)}")
        return given if self._identity else tuple(given[i] for i in picks)


def _opaque_form(value: Callable[..., Tuple]) -> Callable[..., Linear]:
    def form(grad: bool, *args: Any) -> Linear:
        return Linear(value(grad, *args))

    return form


FAMILIES: dict[str, Family] = {}
PARAMETRIC: dict[str, Callable[[str], Family]] = {}  # name prefix -> builder of a Family


def get_family(name: str) -> Family:
    """The registered family called `name`; ValueError naming the valid ones.

    A parametric name (its prefix in PARAMETRIC) is built and registered on first use;
    a malformed one is a ValueError from its builder."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        pass
    if isinstance(name, str) and ":" in name and \
            (build := PARAMETRIC.get(name.partition(":")[0])) is not None:
        family = build(name)
        return FAMILIES.get(family.name) or register_family(family)
    raise ValueError(f"unknown op {name!r}; expected one of the loss families "
                     f"{op_spellings()}")


def op_spellings(sep: str = ", ") -> str:
    """The op names a user can give: the plain families, and one pattern per parametric
    prefix (not each setting built so far: those grow with use)."""
    return sep.join([*(n for n in FAMILIES if ":" not in n), *(f"{p}:..." for p in PARAMETRIC)])


def register_parametric(prefix: str, build: Callable[[str], Family]) -> None:
    """Let get_family build the families named "prefix:..." on first use."""
    if prefix in PARAMETRIC or ":" in prefix:
        raise ValueError(f"parametric prefix {prefix!r} is taken or contains ':'")
    PARAMETRIC[prefix] = build


def register_family(family: Family) -> Family:
    """Add a family to the registry (a name can be registered once)."""
    if not isinstance(family, Family):
        raise TypeError(f"expected a Family, got {type(family).__name__}")
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name} is already registered")
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> Family:
    """Remove a family (tests, plugins); see the module docstring about the point cache."""
    return FAMILIES.pop(get_family(name).name)


# --------------------------------------------------------------------------- built-ins


def _logits(grad: bool, x: Any, y: Any, weight: Any = 1, pos_weight: Any = 1) -> Linear:
    return logits_form(x, y, weight, pos_weight, grad)


def _prob(grad: bool, q: Any, y: Any, weight: Any = 1) -> Linear:
    return prob_form(q, y, weight, grad)


register_family(Family(
    name="bce_with_logits",
    arguments=("input", "target", "weight", "pos_weight"),
    input_kind="logit",
    form=_logits,
    fast=FastPath(
        domain=bce_fast.logits_domain,
        interval=bce_fast.logits_interval,
        special=bce_fast.logits_special,
        short=ShortRoute(applies=bce_fast.logits_short_applies,
                         labels=bce_fast.logits_short_labels, run=bce_fast.logits_short),
        tier2=bce_fast.logits_tier2,
    ),
    formula="w * (p*y*softplus(-x) + (1-y)*softplus(x)); grad: d/dx",
))

register_family(Family(
    name="bce",
    arguments=("input", "target", "weight"),
    input_kind="probability",
    form=_prob,
    fast=FastPath(domain=bce_fast.prob_domain, interval=bce_fast.prob_interval,
                  special=bce_fast.prob_special),
    formula="-w * (y*log(q) + (1-y)*log(1-q)), no clamp (NaN outside 0 <= q <= 1); "
            "grad: d/dq",
))


# --------------------------------------------------------------------------- focal loss


def _focal_family(module: Any, input_kind: str, bce: str, p_t: str, tail: str, name: str
                  ) -> Family:
    """The family of a canonical focal name (module.parse_op validates it): the focal
    loss on logits (reference.focal) or on probabilities (reference.focal_prob)."""
    gamma, alpha = module.parse_op(name)

    def value(grad: bool, x: Any, y: Any, weight: Any = 1) -> Tuple:
        return module.value(grad, x, y, gamma, alpha, weight)

    shown = "none" if alpha is None else focal.format_number(alpha)
    return Family(
        name=name,
        arguments=("input", "target", "weight"),
        input_kind=input_kind,
        form=None,
        fast=None,
        formula=f"w * alpha_t * (1-p_t)**gamma * {bce}, gamma = "
                f"{focal.format_number(gamma)}, alpha = {shown} (alpha_t = alpha*y + "
                f"(1-alpha)*(1-y), 1 for none; p_t = {p_t}){tail}",
        value=value,
    )


register_parametric(focal.PREFIX, functools.partial(
    _focal_family, focal, "logit", "bce_with_logits(x, y)",
    "sigmoid(x)*y + sigmoid(-x)*(1-y)", "; grad: d/dx"))
register_parametric(focal_prob.PREFIX, functools.partial(
    _focal_family, focal_prob, "probability", "bce(q, y)", "q*y + (1-q)*(1-y)",
    ", no clamp (NaN outside 0 <= q <= 1); grad: d/dq"))


def focal_op(gamma: Any = 2, alpha: Any = None) -> str:
    """The canonical op name of focal_with_logits(gamma, alpha), registered on first use:
    focal_op(2, 0.25) == "focal_with_logits:gamma=2:alpha=0.25",
    focal_op() == "focal_with_logits:gamma=2:alpha=none". ValueError off the domain
    (gamma finite >= 0, alpha finite or None)."""
    name = focal.op_name(gamma, alpha)
    get_family(name)
    return name


def focal_prob_op(gamma: Any = 2, alpha: Any = None) -> str:
    """The canonical op name of the focal loss on probabilities (gamma, alpha), registered
    on first use: focal_prob_op(2, 0.25) == "focal:gamma=2:alpha=0.25",
    focal_prob_op() == "focal:gamma=2:alpha=none". ValueError off the domain (gamma
    finite >= 0, alpha finite or None)."""
    name = focal_prob.op_name(gamma, alpha)
    get_family(name)
    return name
