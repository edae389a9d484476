"""Keras' binary_crossentropy as a subject call, shared by the keras subjects and
tf.sigmoid_bce (a TF user's tf.keras loss). Not a subjects module (leading underscore)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audit import runners

NO_POS_WEIGHT = "keras.losses.binary_crossentropy / BinaryCrossentropy have no pos_weight " \
                "argument"
CLIP_NOTE = ("probabilities are clipped to [epsilon, 1 - epsilon] (keras.backend.epsilon() = "
             "1e-7, rounded to the dtype) before log, so the loss is capped near "
             "-log(1e-7) = 16.1")
_REDUCTION = {"none": None, "mean": "mean", "sum": "sum"}


def binary_crossentropy_on(to_prediction: Callable[[Any], Any], from_logits: bool
                           ) -> runners.CallFn:
    """A Keras binary_crossentropy call on `to_prediction(input)`.

    Keras averages over the last axis, so every point gets a trailing axis of length 1
    (the mean over one value is exact). `to_prediction` runs after that reshape so a
    tensor it returns reaches Keras as is (keras.ops.sigmoid's `_keras_logits` tag
    included). Unweighted elementwise losses use the function form the docs name;
    weights and reductions use the class form, as users do (`sample_weight`, `reduction`).
    Runs in the keras worker or, for tf.sigmoid_bce, in TensorFlow's (Keras on TF).
    """

    def call(x: Any, y: Any, w: Any, p: Any, reduction: str, label_smoothing: float = 0.0
             ) -> Any:
        keras_runner = runners.get("keras")
        tf, keras = keras_runner.tf, keras_runner.module
        prediction = to_prediction(tf.expand_dims(x, -1))
        target = tf.expand_dims(y, -1)
        if w is None and reduction == "none":
            return keras.losses.binary_crossentropy(target, prediction, from_logits=from_logits,
                                                    label_smoothing=label_smoothing)
        kwargs = {} if reduction == "keras_default" else {"reduction": _REDUCTION[reduction]}
        loss = keras.losses.BinaryCrossentropy(from_logits=from_logits, dtype=x.dtype.name,
                                               label_smoothing=label_smoothing, **kwargs)
        return loss(target, prediction, sample_weight=w)

    return call
