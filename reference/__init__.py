"""Certified mpmath ground truth for binary cross-entropy (DESIGN.md section 3) and the
focal loss on logits and on probabilities (section 10).

Imports only mpmath, numpy and ml_dtypes: never a framework under test.
"""

from . import smoothing  # registers the smoothed:E:OP families
from .api import (
    bce,
    bce_grad,
    bce_with_logits,
    bce_with_logits_grad,
    focal_probability,
    focal_probability_grad,
    focal_with_logits,
    focal_with_logits_grad,
    reduce,
)
from .engine import ReferenceUncertainError
from .families import focal_op, focal_prob_op
from .formats import FORMATS, bits_error, ordinal_distance, round_to, ulp_error
from .softmax import cross_entropy, cross_entropy_grad, log_softmax, logsumexp
from .softmax_fast import rounded_cross_entropy, rounded_log_softmax, rounded_logsumexp
from .softmax_probs import (
    cross_entropy_probs,
    cross_entropy_probs_grad,
    rounded_cross_entropy_probs,
)
from .softmax_reduce import cross_entropy_reduce
from .vectorized import exact_parts, rounded

__all__ = [
    "FORMATS",
    "ReferenceUncertainError",
    "bce",
    "bce_grad",
    "bce_with_logits",
    "bce_with_logits_grad",
    "bits_error",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_probs",
    "cross_entropy_probs_grad",
    "cross_entropy_reduce",
    "exact_parts",
    "focal_op",
    "focal_prob_op",
    "focal_probability",
    "focal_probability_grad",
    "focal_with_logits",
    "focal_with_logits_grad",
    "log_softmax",
    "logsumexp",
    "ordinal_distance",
    "reduce",
    "round_to",
    "rounded",
    "rounded_cross_entropy",
    "rounded_cross_entropy_probs",
    "rounded_log_softmax",
    "rounded_logsumexp",
    "smoothing",
    "ulp_error",
]
