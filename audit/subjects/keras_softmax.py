"""Keras 3 row subject on the TensorFlow backend (audit/softmax_family.py):
keras.losses.sparse_categorical_crossentropy / categorical_crossentropy with
from_logits=True. Label smoothing is categorical_crossentropy's (on one-hot targets for
class indices, as a Keras user smooths them); ignore_class is sparse's."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import Subject, register_row


def cross_entropy(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int,
                  labels: Any = None, label_smoothing: float = 0.0,
                  ignore_index: int | None = None) -> Any:
    keras_runner = runners.get("keras")
    tf, keras = keras_runner.tf, keras_runner.module
    logits = tf.reshape(x, [-1, classes])
    if labels is not None and not label_smoothing:
        return keras.losses.sparse_categorical_crossentropy(
            tf.constant(labels), logits, from_logits=True, ignore_class=ignore_index)
    target = tf.one_hot(labels, classes, dtype=x.dtype) if labels is not None else \
        tf.reshape(y, [-1, classes])
    return keras.losses.categorical_crossentropy(target, logits, from_logits=True,
                                                 label_smoothing=label_smoothing)


register_row(Subject(
    name="keras.cross_entropy", framework="keras", family="cross_entropy",
    api="keras.losses.sparse_categorical_crossentropy(y, x, from_logits=True) / "
        "categorical_crossentropy(p, x, from_logits=True, label_smoothing=E)",
    dtypes=DTYPES, reductions=("none",), weight=False, pos_weight=False,
    notes="on the TF backend: tf.nn.(sparse_)softmax_cross_entropy_with_logits after "
          "Keras' own checks; label smoothing (1-E) t + E/K formed in the dtype",
    call=cross_entropy,
    weight_reason="keras' categorical cross-entropies take no class weights",
    pos_weight_reason="softmax losses have no pos_weight", requires=("keras",),
    module=__name__, label_smoothing=True))
