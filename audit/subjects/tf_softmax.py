"""TensorFlow row subjects (audit/softmax_family.py): tf.nn.sparse_softmax_cross_entropy_
with_logits (class indices) / tf.nn.softmax_cross_entropy_with_logits (probabilities),
tf.nn.log_softmax and tf.reduce_logsumexp. TF 2.21 CPU has float16, bfloat16, float32
and float64 kernels for all of them (measured)."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import Subject, register_row


def _tf() -> Any:
    return runners.get("tf").module


def cross_entropy(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int,
                  labels: Any = None) -> Any:
    tf = _tf()
    logits = tf.reshape(x, [-1, classes])
    if labels is not None:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(labels),
                                                              logits=logits)
    return tf.nn.softmax_cross_entropy_with_logits(labels=tf.reshape(y, [-1, classes]),
                                                   logits=logits)


def log_softmax(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    tf = _tf()
    return tf.nn.log_softmax(tf.reshape(x, [-1, classes]), axis=-1)


def logsumexp(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int) -> Any:
    tf = _tf()
    return tf.reduce_logsumexp(tf.reshape(x, [-1, classes]), axis=-1)


def _row(op: str, api: str, call: Any, notes: str) -> Subject:
    return register_row(Subject(
        name=f"tf.{op}", framework="tf", family=op, api=api, dtypes=DTYPES,
        reductions=("none",), weight=False, pos_weight=False, notes=notes, call=call,
        weight_reason=f"{api} takes no class weights",
        pos_weight_reason="softmax losses have no pos_weight", requires=("tf",),
        module=__name__))


_row("cross_entropy", "tf.nn.sparse_softmax_cross_entropy_with_logits (class indices) / "
     "tf.nn.softmax_cross_entropy_with_logits (probabilities)", cross_entropy,
     "fused kernels (sparse_xent_op / xent_op): logits - max, log-sum-exp, and the "
     "backprop softmax - labels computed in the forward pass")
_row("log_softmax", "tf.nn.log_softmax", log_softmax, "axis=-1")
_row("logsumexp", "tf.reduce_logsumexp", logsumexp, "axis=-1")
