"""Label smoothing as a family wrapper (DESIGN.md section 10).

    smoothed(E, op)(input, y, ...) = op(input, y*(1-E) + E/2, ...)

graded against the exact smoothed target: E and y are taken as the exact binary numbers
they are (the audit rounds E to the dtype under test first), and t = y*(1-E) + E/2 is
formed exactly (tuple arithmetic, no rounding), so a target like 1 - float32(0.1)/2,
which float64 cannot hold, is still certified. The wrapped family's own certification
does the rest: a Linear-form family (bce_with_logits, bce) stays a Linear form of t, so
reductions work; a `value`-hook family (focal) gets t as its target.

Names: "smoothed:E:OP", E in focal.format_number's canonical spelling and OP any
registered (or parametric) op, e.g. "smoothed:0.1:bce_with_logits" or
"smoothed:0.25:focal_with_logits:gamma=2:alpha=none". No fast path: such a family is
certified point by point through the mpmath path (tens of thousands of points/s).
Domain: 0 <= E <= 1 finite (E = 0 is the op itself, refused as a name: use the op);
NaN targets stay NaN; a target outside [0, 1] is smoothed like any other and left to
the wrapped family's domain.
"""

from __future__ import annotations

from typing import Any

from . import exact
from .exact import HALF, NAN, ONE, Tuple
from .families import Family, get_family, register_parametric
from .focal import format_number, parse_number

PREFIX = "smoothed"


def _smoothing(value: Any) -> Tuple:
    t = exact.to_tuple(value)
    if t == exact.NAN or exact.is_inf(t) or exact.sign(t) < 0 or \
            exact.sign(exact.sub(ONE, t)) < 0:
        raise ValueError(f"label smoothing must be a finite number in [0, 1], got {value!r}")
    return t


def smoothed_target(y: Any, e: Any) -> Tuple:
    """The exact target y*(1-E) + E/2 (NaN for a NaN y)."""
    yt, et = exact.to_tuple(y), _smoothing(e)
    if yt == NAN:
        return NAN
    return exact.add(exact.mul(yt, exact.sub(ONE, et)), exact.mul(et, HALF))


def op_name(e: Any, op: str) -> str:
    """The canonical name of `op` graded with label smoothing E (registered on use)."""
    et = _smoothing(e)
    if et == exact.ZERO:
        raise ValueError("label smoothing 0 is the op itself: use the op's own name")
    get_family(op)  # an unknown op is a ValueError naming the valid ones
    name = f"{PREFIX}:{format_number(et)}:{op}"
    get_family(name)
    return name


def parse_op(name: str) -> tuple[Tuple, str]:
    """(E, wrapped op) of a canonical name; ValueError for a malformed one."""
    prefix, _, rest = name.partition(":")
    text, _, op = rest.partition(":")
    if prefix != PREFIX or not text or not op:
        raise ValueError(f"malformed smoothed op {name!r}; expected {PREFIX}:E:OP")
    et = _smoothing(parse_number(text))
    if format_number(et) != text or et == exact.ZERO:
        raise ValueError(f"malformed smoothed op {name!r}: E must be spelled "
                         f"{format_number(et)!r} and be > 0")
    return et, op


def _build(name: str) -> Family:
    e, op = parse_op(name)
    base = get_family(op)
    n_args = len(base.arguments)

    def target(y: Any) -> Tuple:
        return smoothed_target(y, e)

    common = dict(name=name, arguments=base.arguments, input_kind=base.input_kind, fast=None,
                  formula=f"{base.formula}; target y*(1-E)+E/2 with E = {format_number(e)}")
    if base.opaque:
        def value(grad: bool, x: Any, y: Any, *rest: Any) -> Tuple:
            return base.value(grad, x, target(y), *rest[: n_args - 2])

        return Family(form=None, value=value, **common)

    def form(grad: bool, x: Any, y: Any, *rest: Any):  # an engine.Linear of the exact t
        return base.form(grad, x, target(y), *rest[: n_args - 2])

    return Family(form=form, **common)


register_parametric(PREFIX, _build)
