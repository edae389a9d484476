"""TensorFlow subjects (TF 2.21 CPU). There is no tf.bce: TF's loss on probabilities is
Keras' binary_crossentropy (keras.bce); tf.sigmoid_bce is what a TF 2 user writes:
tf.math.sigmoid, then tf.keras' probability BCE. `tf.math.sigmoid` carries no
`_keras_logits` tag, so tf.sigmoid_bce really is two steps (unlike keras.sigmoid_bce)."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import REDUCTIONS, Subject, register
from audit.subjects._keras_bce import CLIP_NOTE, NO_POS_WEIGHT, binary_crossentropy_on


def _tf() -> Any:
    return runners.get("tf").module


def reduce(loss: Any, reduction: str) -> Any:
    """What a TF user writes after a tf.nn loss: tf.reduce_mean / tf.reduce_sum."""
    tf = _tf()
    return {"none": lambda t: t, "mean": tf.reduce_mean, "sum": tf.reduce_sum}[reduction](loss)


def bce_with_logits(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
    tf = _tf()
    if p is None:
        loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x)
    else:
        loss = tf.nn.weighted_cross_entropy_with_logits(labels=y, logits=x, pos_weight=p)
    return reduce(loss, reduction)


def _sigmoid(t: Any) -> Any:
    return _tf().math.sigmoid(t)


register(Subject(
    name="tf.bce_with_logits", framework="tf", family="bce_with_logits",
    api="tf.nn.sigmoid_cross_entropy_with_logits "
        "(tf.nn.weighted_cross_entropy_with_logits when pos_weight is given)",
    dtypes=DTYPES, reductions=REDUCTIONS, weight=False, pos_weight=True,
    notes="elementwise op; mean/sum are tf.reduce_mean/tf.reduce_sum of it. There is no "
          "tf.bce: TF's loss on probabilities is Keras' (keras.bce)",
    call=bce_with_logits,
    weight_reason="tf.nn.sigmoid_cross_entropy_with_logits has no weight argument (users "
                  "multiply the result); pos_weight goes to weighted_cross_entropy_with_logits",
    requires=("tf",), module=__name__))

register(Subject(
    name="tf.sigmoid_bce", framework="tf", family="sigmoid_bce",
    api="tf.keras.losses.binary_crossentropy(y, tf.math.sigmoid(x))",
    dtypes=DTYPES, reductions=REDUCTIONS, weight=True, pos_weight=False,
    notes="what a TF 2 user writes: tf.math.sigmoid, then tf.keras' probability BCE "
          "(tf.keras is Keras 3); weight via BinaryCrossentropy(sample_weight=...); "
          + CLIP_NOTE,
    call=binary_crossentropy_on(_sigmoid, from_logits=False),
    pos_weight_reason=NO_POS_WEIGHT, requires=("tf", "keras"), module=__name__))
