"""Loss families brought into the engine's linear form, dispatched through the registry.

Which families exist, their arguments and their formulas live in families.py (one
`Family` record each); this module is the mpmath side's entry point: `form` and `value`
look the op name up there, bind the four public arguments (input, target, weight,
pos_weight) to the family's own and call its `form`. `sum_forms` builds reductions.
`OPS` is the tuple of the registered family names (computed on each access, so a
family registered later is in it). The bce forms themselves are in bce_forms.py
(`logits_form`, `prob_form`, re-exported here).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from . import exact
from .bce_forms import logits_form, prob_form
from .engine import Linear, evaluate
from .exact import NAN, Tuple
from .families import FAMILIES, get_family

__all__ = ["form", "logits_form", "prob_form", "sum_forms", "value"]


def __getattr__(name: str) -> Any:
    if name == "OPS":  # derived from the registry, never a second list of names
        return tuple(FAMILIES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def form(op: str, grad: bool, inp: Any, target: Any, weight: Any = 1, pos_weight: Any = 1
         ) -> Linear:
    """The linear form of family `op` (or its derivative in the input) at one point.

    Raises ValueError for an unknown op (naming the registered families) and for an
    argument the family does not take that is not at its default 1 ("bce has no
    pos_weight").
    """
    family = get_family(op)
    return family.form(grad, *family.bind(inp, target, weight, pos_weight))


def value(op: str, grad: bool, inp: Any, target: Any, weight: Any = 1, pos_weight: Any = 1
          ) -> Tuple:
    """Certified representative tuple (see engine.evaluate)."""
    return evaluate(form(op, grad, inp, target, weight, pos_weight))


def sum_forms(forms: list[Linear], scale: Fraction = Fraction(1)) -> Linear:
    """scale * sum(forms), exactly: constants add, equal kernels merge their coefficients.

    Merging terms with the same kernel and argument matters: it turns symbolic
    cancellation (e.g. sigmoid(-a) - sigmoid(-a)) into an exact zero, so the engine
    never chases a tail that is identically 0.
    """
    special = [f.constant for f in forms if isinstance(f.constant, tuple)
               and exact.is_special(f.constant)]
    if NAN in special or (exact.INF in special and exact.NINF in special):
        return Linear(NAN)
    if special:
        return Linear(special[0])
    constant = sum((exact.to_fraction(f.constant) if isinstance(f.constant, tuple)
                    else f.constant for f in forms), Fraction(0)) * scale
    merged: dict[tuple[str, Tuple], Fraction] = {}
    for f in forms:
        for c, kernel, arg in f.terms:
            fc = exact.to_fraction(c) if isinstance(c, tuple) else c
            merged[(kernel, arg)] = merged.get((kernel, arg), Fraction(0)) + fc * scale
    terms = tuple((c, k, a) for (k, a), c in merged.items() if c)
    return Linear(constant, terms)
