"""contracts.judge: strict on fixed inputs, found_by = "search" contracts for drawn ones."""

from __future__ import annotations

import numpy as np
import pytest

from audit.contracts import ContractsError, _contract, judge, load

POINTS = {"x": np.array([1.0, 2.0, 3.0]), "y": np.zeros(3), "w": np.ones(3), "p": np.ones(3)}


def _c(cid: str, **kw) -> object:
    entry = {"id": cid, "subjects": ["s"], "checks": ["values"], "dtypes": ["float16"],
             "status": ["inaccurate"], "region": "x > 1.5", "reason": "r", **kw}
    return _contract(entry, set())


def test_a_fixed_contract_must_be_observed():
    c = _c("fixed")
    status = np.array(["ok", "inaccurate", "ok"])
    v = judge(status, POINTS, [c], "float16")
    assert v.passed and v.matched == [c]
    v = judge(np.array(["ok", "ok", "ok"]), POINTS, [c], "float16")
    assert not v.passed and v.unobserved == [c]  # stopped happening: a failure


def test_a_search_contract_explains_drawn_points_only():
    c = _c("search", found_by="search")
    status = np.array(["ok", "inaccurate", "ok"])
    drawn = judge(status, POINTS, [c], "float16", strict=False)
    assert drawn.passed and drawn.matched == [c]
    fixed = judge(status, POINTS, [c], "float16")  # fixed inputs: it explains nothing
    assert not fixed.passed and fixed.unexplained.tolist() == [False, True, False]
    assert not fixed.unobserved  # and is never "no longer holds"
    assert judge(np.array(["ok"] * 3), POINTS, [c], "float16").passed


def test_found_by_is_checked():
    with pytest.raises(ValueError, match="found_by"):
        _c("bad", found_by="luck")


def test_the_shipped_search_contracts_say_where_the_search_found_them():
    try:
        contracts = load()
    except ContractsError as e:  # pragma: no cover - a broken data file fails elsewhere
        pytest.fail(str(e))
    found = [c for c in contracts if c.found_by == "search"]
    assert found and all("probe" in c.reason and c.link for c in found)
