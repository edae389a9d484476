"""JAX / optax row subjects (audit/softmax_family.py): optax.softmax_cross_entropy_with_
integer_labels / optax.softmax_cross_entropy, jax.nn.log_softmax and jax.nn.logsumexp
(= jax.scipy.special.logsumexp). Every dtype (float64 through jax_enable_x64)."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import Subject, register_row


def cross_entropy(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int,
                  labels: Any = None) -> Any:
    import optax

    jnp = runners.get("jax").module.numpy
    logits = x.reshape(-1, classes)
    if labels is not None:
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels))
    return optax.softmax_cross_entropy(logits, y.reshape(-1, classes))


def log_softmax(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    return runners.get("jax").module.nn.log_softmax(x.reshape(-1, classes), axis=-1)


def logsumexp(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    return runners.get("jax").module.nn.logsumexp(x.reshape(-1, classes), axis=-1)


def _row(op: str, api: str, call: Any, notes: str) -> Subject:
    return register_row(Subject(
        name=f"jax.{op}", framework="jax", family=op, api=api, dtypes=DTYPES,
        reductions=("none",), weight=False, pos_weight=False, notes=notes, call=call,
        weight_reason=f"{api} takes no class weights",
        pos_weight_reason="softmax losses have no pos_weight", requires=("jax",),
        module=__name__))


_row("cross_entropy", "optax.softmax_cross_entropy_with_integer_labels (class indices) / "
     "optax.softmax_cross_entropy (probabilities)", cross_entropy,
     "integer labels: logsumexp(x) - x[label] after subtracting the (stop-gradient) max; "
     "probabilities: -sum p log_softmax(x); gradients by jax.vjp")
_row("log_softmax", "jax.nn.log_softmax", log_softmax, "axis=-1")
_row("logsumexp", "jax.nn.logsumexp", logsumexp, "axis=-1 (jax.scipy.special.logsumexp)")
