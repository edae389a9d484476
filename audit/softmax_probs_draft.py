"""Row classes and reviewed reasons for drafting the cross_entropy_probs contracts
(audit/softmax_draft.py takes them for that family): `python -m audit.softmax_draft
keras.categorical --deep` prints the entries.

The classes are disjoint regions over the row variables (softmax_family.variables: x_*
are the input probabilities, q = x / psum), the first that holds naming a failing point.
keras clips to [epsilon, 1 - epsilon], epsilon = 1e-7, in the dtype: 1e-7 rounds up in
every dtype (so `x < 1e-7` is `x < epsilon` there) and 1 - 1e-7 rounds to 1 in float16
and bfloat16 (the upper clip only bites above 1 there: `upper`), so the regions are per
dtype. The sparse loss (class indices)
clips the input p itself; categorical (probabilities) clips q = p / sum(p).
"""

from __future__ import annotations

DOMAIN = "nans == 0 and pinf == 0 and x_min >= 0 and psum > 0"
_OUTSIDE = (("nans > 0", "a NaN probability"),
            ("nans == 0 and pinf > 0", "a +inf probability"),
            ("nans == 0 and pinf == 0 and (x_min < 0 or psum == 0)", "no distribution"))


def upper(dtype: str) -> str:
    """The upper clip 1 - 1e-7 as the dtype holds it (1 in float16 and bfloat16)."""
    return "1" if dtype in ("float16", "bfloat16") else "1 - 1e-7"


def classes(kind: str, quantity: str, dtype: str) -> tuple[tuple[str, str], ...]:
    """((region, label), ...) of a target kind ("label" | "probs") and quantity."""
    hi = upper(dtype)
    clip_p, in_p = f"(x_min < 1e-7 or x_max > {hi})", f"x_min >= 1e-7 and x_max <= {hi}"
    clip_q, in_q = f"(q_min < 1e-7 or q_max > {hi})", f"q_min >= 1e-7 and q_max <= {hi}"
    table = {
        ("label", "loss"): (
            (f"{DOMAIN} and xl < 1e-7", "the label's probability below epsilon"),
            (f"{DOMAIN} and xl >= 1e-7 and {clip_p}", "other probabilities clipped"),
            (f"{DOMAIN} and {in_p}", "inside the clip")),
        ("label", "grad"): (
            (f"{DOMAIN} and xj == 0 and on_label == 1", "the label's probability 0"),
            (f"{DOMAIN} and (xj < 1e-7 or xj > {hi}) and (xj > 0 or on_label == 0)",
             "a clipped component"),
            (f"{DOMAIN} and xj >= 1e-7 and xj <= {hi} and {clip_p}",
             "a row with clipped probabilities"),
            (f"{DOMAIN} and {in_p}", "inside the clip")),
        ("probs", "loss"): (
            (f"{DOMAIN} and q_min < 1e-7", "target mass below epsilon"),
            (f"{DOMAIN} and q_min >= 1e-7 and q_max > {hi}", "a probability above 1 - epsilon"),
            (f"{DOMAIN} and {in_q}", "inside the clip")),
        ("probs", "grad"): (
            (f"{DOMAIN} and qj < 1e-7 and pj > 0", "a clipped component with mass"),
            (f"{DOMAIN} and (qj >= 1e-7 or pj == 0) and {clip_q}",
             "a row with clipped probabilities"),
            (f"{DOMAIN} and {in_q}", "inside the clip")),
    }
    return (*_OUTSIDE, *table[kind, quantity])


_K = "https://github.com/keras-team/keras/blob/v3.15.1/keras/src/backend/tensorflow/nn.py"
_TF = "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/python/ops/"
SPARSE = f"{_K}#L1432-L1440"
CATEGORICAL = f"{_K}#L1372-L1378"
CLIP_GRAD = f"{_TF}math_grad.py#L1584-L1592"  # clip_by_value: clip_ops.py#L111-L116
LOG_GRAD = f"{_TF}math_grad.py#L762-L767"

_S = "sparse_categorical_crossentropy(from_logits=False) clips p to [epsilon, 1 - epsilon] " \
     "(1e-7 in the dtype; 1 - 1e-7 is 1 in float16 and bfloat16), then " \
     "tf.nn.sparse_softmax_cross_entropy_with_logits(log p)"
_C = "categorical_crossentropy(from_logits=False) divides p by its sum in the dtype, clips " \
     "to [epsilon, 1 - epsilon] (1e-7 in the dtype; 1 - 1e-7 is 1 in float16 and bfloat16), " \
     "then -sum t log"
_G = "clip_by_value is maximum(minimum(p, 1 - epsilon), epsilon), whose gradient is 0 where " \
     "p > 1 - epsilon or p < epsilon (ties pass)"

# (target kind, quantity, status, label) -> (reason, link); "*" matches any
REASONS: dict[tuple[str, str, str, str], tuple[str, str]] = {
    ("*", "grad", "*", "a NaN probability"): (
        _G + " and at NaN (both comparisons are False): the NaN component's gradient is 0 "
        "where the exact one is NaN", CLIP_GRAD),
    ("label", "*", "*", "a +inf probability"): (
        _S + ": a +inf probability is clipped to 1 - epsilon, so the exact limit (p / sum "
        "one-hot on it: loss 0 or +inf, gradient -a_j/p_j) is lost", SPARSE),
    ("probs", "*", "*", "a +inf probability"): (
        _C + ": a +inf probability makes p / sum(p) = inf / inf = NaN, where the exact limit "
        "is one-hot on it (loss 0 or +inf)", CATEGORICAL),
    ("label", "*", "*", "no distribution"): (
        _S + ": a negative probability or an all-zero row is clipped into a finite loss "
        "and gradient where the exact ones are NaN (no log of a negative, 0/0)", SPARSE),
    ("probs", "*", "*", "no distribution"): (
        _C + ": a negative probability is clipped into a finite loss and gradient where the "
        "exact ones are NaN (an all-zero row is 0/0 = NaN there too)", CATEGORICAL),
    ("label", "loss", "*", "the label's probability below epsilon"): (
        _S + ": the label's probability is raised to epsilon, so the loss stops near "
        "-log(1e-7) = 16.12 where the exact one is larger, or +inf at p = 0", SPARSE),
    ("label", "loss", "*", "other probabilities clipped"): (
        _S + ": the log-sum-exp of log(clip(p)) is log of the clipped sum: probabilities "
        "raised to epsilon add up to (K-1) 1e-7 to it, and ones above 1 - epsilon (or a row "
        "summing past 1) are lowered, so a confident-right loss of about 0 reads about "
        "(K-1) 1e-7 (0 where that sum rounds to 1) and unnormalized rows lose their "
        "normalization", SPARSE),
    ("label", "loss", "*", "inside the clip"): (
        _S + ": the kernel's log of the rounded sum of exp(log p - max), not a log1p of its "
        "tail, and log p rounded in the dtype: a loss near 0 (p_label near the sum) keeps "
        "only the bits that survive in 1 + tail", SPARSE),
    ("label", "grad", "*", "the label's probability 0"): (
        _S + "; " + _G + ", so the exact -inf at the label's zero probability reads 0",
        CLIP_GRAD),
    ("label", "grad", "*", "a clipped component"): (
        _S + "; " + _G + " (a zero or tiny probability, one above 1 - epsilon), where the "
        "exact gradient is W/P - a_j/p_j (-inf where a_j/p_j overflows)", CLIP_GRAD),
    ("label", "grad", "*", "a row with clipped probabilities"): (
        _S + ": the gradient of log-sum-exp(log clip(p)) is 1/sum(clip(p)) - a_j/p_j: the "
        "clipped row's sum, not P (and softmax(log p) / p rounded in the dtype)", SPARSE),
    ("label", "grad", "*", "inside the clip"): (
        "the gradient is softmax(log p) times d log p / dp = 1/p (tf's Log gradient, grad * "
        "reciprocal(p)): exp(log p - lse) / p rounded twice in the dtype where the exact one "
        "is 1/P - a_j/p_j", LOG_GRAD),
    ("label", "grad", "spurious_inf", "*"): (
        "tf's Log gradient is grad * reciprocal(p): 1/p overflows float16 (p < 2**-16) and "
        "inf times the softmax is inf where the exact gradient is finite", LOG_GRAD),
    ("probs", "grad", "spurious_inf", "*"): (
        "tf's Log gradient is grad * reciprocal(q): 1/q overflows float16 (q < 2**-16) and "
        "-t inf is inf where the exact gradient is finite", LOG_GRAD),
    ("probs", "grad", "spurious_nan", "*"): (
        "tf's Log gradient is grad * reciprocal(q): 1/q overflows float16 (q < 2**-16), and "
        "a class without target mass multiplies it by its zero upstream gradient, 0 * inf = "
        "NaN, which the gradient of p / sum(p) spreads over the row", LOG_GRAD),
    ("probs", "grad", "spurious_nan", "a +inf probability"): (
        _C + ": a +inf probability makes p / sum(p) = inf / inf = NaN, and so the gradient, "
        "where the exact limit is -a_j/p_j (0 at the +inf class)", CATEGORICAL),
    ("probs", "loss", "*", "target mass below epsilon"): (
        _C + ": a class with target mass whose q = p / sum is below epsilon is raised to "
        "it: its term stops at t (-log 1e-7 = 16.12) where the exact one is larger, or +inf "
        "at p = 0", CATEGORICAL),
    ("probs", "loss", "*", "a probability above 1 - epsilon"): (
        _C + ": q above 1 - epsilon is lowered to it: a confident-right loss of about 0 "
        "reads t 1e-7", CATEGORICAL),
    ("probs", "loss", "*", "inside the clip"): (
        _C + ": q = p / sum(p) rounded in the dtype, then log(q): -log of a rounded number "
        "near 1 loses its relative accuracy (a loss near 0 is mostly rounding error, 0 "
        "where q rounds to 1)", CATEGORICAL),
    ("probs", "grad", "*", "a clipped component with mass"): (
        _C + "; " + _G + ": the -t_j/p_j of a class with target mass below epsilon is "
        "dropped, leaving the positive share of W/P (wrong sign, 0, or finite where the "
        "exact gradient is very negative or -inf)", CLIP_GRAD),
    ("probs", "grad", "*", "a row with clipped probabilities"): (
        _C + "; " + _G + ": the clipped classes' share of W/P is missing from every "
        "component", CLIP_GRAD),
    ("probs", "grad", "*", "inside the clip"): (
        "the gradient of -sum t log(p / sum p) through the dtype: 1/q, the quotient's "
        "gradient and the sum rounded in the dtype, where the exact one is W/P - t_j/p_j "
        "(it cancels where q matches the target)", CATEGORICAL),
}


def reason(kind: str, quantity: str, status: str, label: str) -> tuple[str, str]:
    """The most specific REASONS entry, or a TODO."""
    for key in ((kind, quantity, status, label), (kind, quantity, status, "*"),
                (kind, quantity, "*", label), (kind, "*", "*", label),
                ("*", quantity, "*", label), ("*", "*", "*", label)):
        if key in REASONS:
            return REASONS[key]
    return f"TODO {status} on rows with {label}", ""
