"""A textbook binary cross-entropy on logits, written the naive way, as a user subject.

    PYTHONPATH=docs/examples python -m audit probe mine.naive_bce --subject-module mylosses \
        --dtype float32 --input 100 --target 1

`mine.naive_bce` is graded against the certified bce_with_logits like the frameworks' own
losses; gradients come from torch's autograd.
"""

import torch

from audit import subject


@subject("mine.naive_bce", framework="torch", family="bce_with_logits")
def naive_bce(x, y):
    """x - x*y + log(1 + exp(-x)): exp(-x) overflows for x < -88 in float32 (log(inf)),
    and 1 + exp(-x) rounds to 1 for x > 17, so the small true loss is lost."""
    return x - x * y + torch.log(1 + torch.exp(-x))
