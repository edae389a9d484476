"""Do the frameworks agree, and where does BCELoss(sigmoid(x)) stop being usable?

The breakdown logit of each framework's two-step pipeline is measured on the fixed
grid and must equal the one declared in audit/contracts_data ([[breakdown]]): a moved
breakdown (a framework fix or regression) fails, as does a missing declaration.
"""

from __future__ import annotations

import numpy as np
import pytest

from audit import contracts, subjects
from audit.batch import Batch
from audit.equivalence import FUSED, TWO_STEP, breakdown, pairwise
from audit.regions import logit_grid, soft_targets
from reference.formats import FORMATS


def _params(config: pytest.Config) -> list:
    opts = config.audit  # type: ignore[attr-defined]
    return [(d, dev) for d in opts["dtypes"] for dev in opts["devices"]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dtype_device" in metafunc.fixturenames:
        params = _params(metafunc.config)
        metafunc.parametrize("dtype_device", params, ids=[f"{d}-{v}" for d, v in params])
    if "framework" in metafunc.fixturenames:
        names = _two_step_frameworks(metafunc.config)
        metafunc.parametrize("framework", names, ids=names)


def _available(names: list[str], dtype: str, device: str, audit) -> list[str]:
    """The selected subjects among `names` that can run here (selection is honoured)."""
    chosen = {s.name for s in audit.options["subjects"]}
    return [n for n in names if n in chosen and subjects.get(n).skip_reason(dtype, device) is None]


def _fused(audit) -> list[str]:
    """Every selected fused-loss subject of a built-in framework."""
    return [s.name for s in audit.options["subjects"] if s.op == FUSED and _builtin(s)]


def _two_step_frameworks(config: pytest.Config) -> list[str]:
    opts = config.audit  # type: ignore[attr-defined]
    return [s.framework for s in opts["subjects"] if s.op == TWO_STEP and _builtin(s)]


def _builtin(s: subjects.Subject) -> bool:
    """Declared pairs and breakdowns concern the built-in subjects, not a user's."""
    return s.module.startswith("audit.subjects.")


@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_frameworks_agree(dtype_device, quantity: str, audit) -> None:
    """Record where torch, tf and keras differ and who is closer to the truth. Pairs
    declared [[identical]] (the same kernel underneath) must agree bit for bit, and pairs
    not declared must still differ somewhere: either change is news."""
    dtype, device = dtype_device
    names = _available(_fused(audit), dtype, device, audit)
    if len(names) < 2:
        pytest.skip(f"fewer than two {FUSED} subjects selected and runnable on {device} "
                    f"(have {names or 'none'})")
    xs = logit_grid(dtype)
    ys = np.concatenate([[0.0, 1.0], soft_targets(dtype)])
    x, y = (m.ravel() for m in np.meshgrid(xs, ys, indexing="ij"))
    pts = Batch.of(x, y)
    entries = pairwise(names, dtype, device, pts, quantity, audit.budgets[dtype])
    for e in entries:
        audit.collector.equivalence(e)
    identical = contracts.load_identical()
    for e in entries:
        pair = frozenset(e["subjects"])
        declared = any(pair == frozenset(i["subjects"]) and dtype in i["dtypes"]
                       for i in identical)
        if declared:
            assert e["n_differ"] == 0, (
                f"{' and '.join(e['subjects'])} are declared bit-identical in {dtype} but "
                f"differ on {e['n_differ']} of {e['n']} points, e.g. {e['worst']}")
        else:
            assert e["n_differ"] > 0, (
                f"{' and '.join(e['subjects'])} now agree bit for bit in {dtype} "
                f"({quantity}): declare it as [[identical]] in audit/contracts_data")


def _declared(framework: str, dtype: str, device: str, target: float) -> dict | None:
    for b in contracts.load_breakdowns():
        if (b["framework"], b["dtype"], b.get("device", "cpu"), float(b["target"])) == \
                (framework, dtype, device, target):
            return b
    return None


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_sigmoid_bce_breakdown(dtype_device, framework: str, target: float, audit) -> None:
    """Where does the two-step pipeline first lose all precision? (and what does it do at
    x = 1e10, the question our first users asked)."""
    dtype, device = dtype_device
    name = f"{framework}.{TWO_STEP}"
    reason = subjects.get(name).skip_reason(dtype, device)
    if reason:
        audit.collector.skip(name, dtype, device, reason)
        pytest.skip(reason)
    entry = breakdown(framework, dtype, device, target)
    audit.collector.breakdown(entry)
    if not audit.options["contracts"]:
        assert entry["logit"] is None, entry["description"]
        return
    declared = _declared(framework, dtype, device, target)
    assert declared is not None, (
        f"no [[breakdown]] declared for {framework} {dtype} {device} target {target}: "
        f"measured {entry['description']}")
    want = declared["logit"]
    want = None if want == "none" else float(want)
    assert entry["logit"] == want, (
        f"breakdown moved: declared {want!r}, measured {entry['logit']!r} "
        f"({entry['description']}); {FORMATS[dtype].name}")
