"""JAX / optax subjects (jax 0.10.2, optax 0.2.8; float64 through jax_enable_x64 in the
jax worker). optax has no loss on probabilities (sigmoid_binary_cross_entropy and
sigmoid_focal_loss take logits), so there is no jax.bce nor a two-step jax.sigmoid_bce:
writing jax.nn.sigmoid then -y log q - (1-y) log(1-q) by hand would audit our code, not
a framework API."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import NOT_SUBJECTS, REDUCTIONS, Subject, register

NOT_SUBJECTS["jax.bce"] = ("optax has no binary cross-entropy on probabilities (its "
                           "sigmoid_binary_cross_entropy takes logits: jax.bce_with_logits)")
NOT_SUBJECTS["jax.sigmoid_bce"] = ("optax offers no probability-input BCE to feed "
                                   "jax.nn.sigmoid into; the fused loss is jax.bce_with_logits")


def _reduce(loss: Any, reduction: str) -> Any:
    """What an optax user writes after an elementwise loss: jnp.mean / jnp.sum."""
    jnp = runners.get("jax").module.numpy
    return {"none": lambda t: t, "mean": jnp.mean, "sum": jnp.sum}[reduction](loss)


def bce_with_logits(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    import optax

    return _reduce(optax.sigmoid_binary_cross_entropy(x, y), reduction)


register(Subject(
    name="jax.bce_with_logits", framework="jax", family="bce_with_logits",
    api="optax.sigmoid_binary_cross_entropy", dtypes=DTYPES, reductions=REDUCTIONS,
    weight=False, pos_weight=False,
    notes="elementwise; mean/sum are jnp.mean/jnp.sum of it; gradients by jax.vjp",
    call=bce_with_logits,
    weight_reason="optax.sigmoid_binary_cross_entropy has no weight argument (users "
                  "multiply the result)",
    pos_weight_reason="optax.sigmoid_binary_cross_entropy has no pos_weight argument",
    requires=("jax",), module=__name__))


def focal_with_logits(x: Any, y: Any, w: Any, p: Any, reduction: str, gamma: float = 2.0,
                      alpha: float | None = None) -> Any:
    import optax

    return _reduce(optax.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma), reduction)


register(Subject(
    name="jax.focal_with_logits", framework="jax", family="focal_with_logits",
    api="optax.sigmoid_focal_loss(x, y, alpha=A, gamma=G)", dtypes=DTYPES,
    reductions=("none",), weight=False, pos_weight=False,
    notes="log-space focal loss (log_sigmoid); elementwise", call=focal_with_logits,
    weight_reason="optax.sigmoid_focal_loss has no weight argument",
    pos_weight_reason="optax.sigmoid_focal_loss has no pos_weight argument",
    requires=("jax",), module=__name__))
