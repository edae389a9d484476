"""The float64 reference memo (audit.checks): a result shared through the run's folder is
bit-identical to a fresh computation, keyed by every array's bytes, and read-only."""

from __future__ import annotations

import numpy as np
import pytest

from audit import checks
from audit.batch import Batch


@pytest.fixture
def memo(tmp_path, monkeypatch):
    monkeypatch.setattr(checks, "_MEMO", {})
    checks.share_memo(tmp_path)
    yield tmp_path
    checks.share_memo(None)


def test_a_shared_result_equals_a_fresh_one(memo) -> None:
    pts = Batch.of(np.array([-30.0, -1.5, 0.0, 2.0**-40, 7.25, np.inf]),
                   np.array([0.0, 1.0, 0.5, 1.0, 0.25, 0.0]))
    fresh = checks.reference_values("bce_with_logits", "float64", pts, True)
    assert len(list(memo.glob("*.npy"))) == 1
    checks._MEMO.clear()  # another process: only the folder knows
    loaded = checks.reference_values("bce_with_logits", "float64", pts, True)
    for a, b in zip((fresh[0], *fresh[1]), (loaded[0], *loaded[1]), strict=True):
        np.testing.assert_array_equal(a, b)
        assert not b.flags.writeable
    checks.share_memo(None)
    checks._MEMO.clear()
    again = checks.reference_values("bce_with_logits", "float64", pts, True)
    np.testing.assert_array_equal(again[0], loaded[0])


def test_every_argument_is_part_of_the_key(memo) -> None:
    x, y = np.array([-2.0, 0.5, 3.0]), np.array([0.0, 1.0, 0.5])
    base = checks.reference_values("bce_with_logits", "float64", Batch.of(x, y), False)[0]
    other_w = Batch(x, y, np.full(3, 2.0), np.ones(3), {})
    other_p = Batch(x, y, np.ones(3), np.full(3, 3.0), {})
    for pts, grad in ((Batch.of(x, y), True), (other_w, False), (other_p, False),
                      (Batch.of(x, y[::-1].copy()), False)):
        got = checks.reference_values("bce_with_logits", "float64", pts, grad)[0]
        assert not np.array_equal(got, base)
    assert len(list(memo.glob("*.npy"))) == 5
