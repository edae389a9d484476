"""Keras 3 subjects on the TensorFlow backend. `keras.ops.sigmoid` tags its output with
`_keras_logits`, and Keras' probability BCE then silently uses the logits, so
keras.sigmoid_bce is the fused loss in disguise (measured: bit-identical)."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import KERAS_REDUCTIONS, Subject, register
from audit.subjects._keras_bce import CLIP_NOTE, NO_POS_WEIGHT, binary_crossentropy_on


def _identity(t: Any) -> Any:
    return t


def _sigmoid(t: Any) -> Any:
    return runners.get("keras").module.ops.sigmoid(t)


def _keras(op: str, api: str, call: runners.CallFn, notes: str) -> Subject:
    return register(Subject(
        name=f"keras.{op}", framework="keras", family=op, api=api, dtypes=DTYPES,
        reductions=KERAS_REDUCTIONS, weight=True, pos_weight=False, notes=notes, call=call,
        pos_weight_reason=NO_POS_WEIGHT, requires=("keras",), module=__name__,
        label_smoothing=True))


_keras("bce_with_logits", "keras.losses.binary_crossentropy(y, x, from_logits=True)",
       binary_crossentropy_on(_identity, from_logits=True),
       "on the TF backend this is tf.nn.sigmoid_cross_entropy_with_logits; weight via "
       "BinaryCrossentropy(sample_weight=...); keras_default = BinaryCrossentropy() "
       "reduction 'sum_over_batch_size'")
_keras("bce", "keras.losses.binary_crossentropy(y, q)",
       binary_crossentropy_on(_identity, from_logits=False), CLIP_NOTE)
_keras("sigmoid_bce", "keras.losses.binary_crossentropy(y, keras.ops.sigmoid(x))",
       binary_crossentropy_on(_sigmoid, from_logits=False),
       "keras.ops.sigmoid tags its output with _keras_logits and binary_crossentropy then "
       "uses the logits (fused path), unlike tf.sigmoid_bce; eager mode")


def _focal_on(from_logits: bool) -> runners.CallFn:
    def call(x: Any, y: Any, w: Any, p: Any, reduction: str, gamma: float = 2.0,
             alpha: float | None = None, label_smoothing: float = 0.0) -> Any:
        """binary_focal_crossentropy; alpha None = no class balancing."""
        keras_runner = runners.get("keras")
        tf, keras = keras_runner.tf, keras_runner.module
        return keras.losses.binary_focal_crossentropy(
            tf.expand_dims(y, -1), tf.expand_dims(x, -1),
            apply_class_balancing=alpha is not None, alpha=0.25 if alpha is None else alpha,
            gamma=gamma, from_logits=from_logits, label_smoothing=label_smoothing)

    return call


def _focal(name: str, family: str, from_logits: bool, shown: str, notes: str) -> Subject:
    return register(Subject(
        name=name, framework="keras", family=family,
        api=f"keras.losses.binary_focal_crossentropy(y, {shown}from_logits={from_logits}, "
            "gamma=G, apply_class_balancing=alpha is not None, alpha=A)",
        dtypes=DTYPES, reductions=("none",), weight=False, pos_weight=False,
        notes=notes + " (and alpha_t with apply_class_balancing); " + CLIP_NOTE,
        call=_focal_on(from_logits), weight_reason="audited unweighted (sample_weight is a "
        "plain multiplier)", pos_weight_reason=NO_POS_WEIGHT, requires=("keras",),
        module=__name__, label_smoothing=True))


_focal("keras.focal_with_logits", "focal_with_logits", True, "x, ",
       "applies sigmoid, then the clipped probability BCE times (1 - p_t)**gamma")
_focal("keras.focal", "focal", False, "q, ",
       "the clipped probability BCE times (1 - p_t)**gamma with p_t from the unclipped q")
