"""Keras 3 row subject on the TensorFlow backend (audit/softmax_family.py):
keras.losses.sparse_categorical_crossentropy / categorical_crossentropy with
from_logits=True. Label smoothing is categorical_crossentropy's (on one-hot targets for
class indices, as a Keras user smooths them); ignore_class is sparse's."""

from __future__ import annotations

from typing import Any

from audit import runners
from audit.dtypes import DTYPES
from audit.subjects import Subject, register_row

# keras_default: the Loss classes' default reduction "sum_over_batch_size" (measured): the
# rows not ignored (ignore_class masks them out of the count), N for probabilities
REDUCTIONS = ("none", "keras_default", "sum")
DENOMINATORS = {"keras_default": {"label": "weights", "probs": "count"}}


def cross_entropy(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int,
                  labels: Any = None, label_smoothing: float = 0.0,
                  ignore_index: int | None = None) -> Any:
    """The functions for reduction 'none'; reductions use the Loss classes, as users do
    (in the dtype under test: a Loss computes in its own dtype, float32 by default)."""
    keras_runner = runners.get("keras")
    tf, keras = keras_runner.tf, keras_runner.module
    logits = tf.reshape(x, [-1, classes])
    sparse = labels is not None and not label_smoothing
    kw: dict[str, Any] = {} if reduction == "keras_default" else {"reduction": reduction}
    if sparse:
        if reduction == "none":
            return keras.losses.sparse_categorical_crossentropy(
                tf.constant(labels), logits, from_logits=True, ignore_class=ignore_index)
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=ignore_index, dtype=x.dtype.name, **kw)
        return loss(tf.constant(labels), logits)
    target = tf.one_hot(labels, classes, dtype=x.dtype) if labels is not None else \
        tf.reshape(y, [-1, classes])
    if reduction == "none":
        return keras.losses.categorical_crossentropy(target, logits, from_logits=True,
                                                     label_smoothing=label_smoothing)
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing, dtype=x.dtype.name, **kw)
    return loss(target, logits)


register_row(Subject(
    name="keras.cross_entropy", framework="keras", family="cross_entropy",
    api="keras.losses.sparse_categorical_crossentropy(y, x, from_logits=True) / "
        "categorical_crossentropy(p, x, from_logits=True, label_smoothing=E)",
    dtypes=DTYPES, reductions=REDUCTIONS, weight=False, pos_weight=False,
    notes="on the TF backend: tf.nn.(sparse_)softmax_cross_entropy_with_logits after "
          "Keras' own checks; label smoothing (1-E) t + E/K formed in the dtype; "
          "reductions: (Sparse)CategoricalCrossentropy(dtype=the dtype), keras_default = "
          "their 'sum_over_batch_size'",
    call=cross_entropy, denominators=DENOMINATORS,
    weight_reason="keras' categorical cross-entropies take no class weights",
    pos_weight_reason="softmax losses have no pos_weight", requires=("keras",),
    module=__name__, label_smoothing=True))


def categorical(x: Any, y: Any, w: Any, p: Any, reduction: str, *, classes: int,
                labels: Any = None) -> Any:
    """from_logits=False: x holds rows of class probabilities (a softmax output)."""
    keras_runner = runners.get("keras")
    tf, keras = keras_runner.tf, keras_runner.module
    probs = tf.reshape(x, [-1, classes])
    if labels is not None:
        return keras.losses.sparse_categorical_crossentropy(tf.constant(labels), probs,
                                                            from_logits=False)
    return keras.losses.categorical_crossentropy(tf.reshape(y, [-1, classes]), probs,
                                                 from_logits=False)


# Graded against reference.cross_entropy_probs: the loss of the distribution p / sum(p)
# the row represents (keras: categorical divides by the row's sum, then clips to
# [epsilon, 1 - epsilon] and takes -sum t log; sparse clips p, takes its log and
# tf.nn.sparse_softmax_cross_entropy_with_logits of that, whose logsumexp is log sum(p)).
register_row(Subject(
    name="keras.categorical", framework="keras", family="cross_entropy_probs",
    api="keras.losses.sparse_categorical_crossentropy(y, p, from_logits=False) / "
        "categorical_crossentropy(t, p, from_logits=False)",
    dtypes=DTYPES, reductions=("none",), weight=False, pos_weight=False,
    notes="input rows are K class probabilities (probe --probs-row=P1,...,PK; the target "
          "is --label K or --probs=T1,...,TK); categorical: p / sum(p), clipped to "
          "[1e-7, 1 - 1e-7] in the dtype, -sum t log; sparse: log(clip(p)) into "
          "tf.nn.sparse_softmax_cross_entropy_with_logits (no division: its logsumexp "
          "normalizes); gradients d loss / d p",
    call=categorical,
    weight_reason="keras' categorical cross-entropies take no class weights",
    pos_weight_reason="softmax losses have no pos_weight", requires=("keras",),
    module=__name__))
