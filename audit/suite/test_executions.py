"""Compiled and autocast executions against eager: for each subject, dtype and quantity,
where they differ, by how many ulps, and which is closer to the truth (DESIGN.md section
10). Subjects declared [[identical]] with `executions` in audit/contracts_data must agree
bit for bit; the others must still differ somewhere: either change is news."""

from __future__ import annotations

import pytest

from audit import contracts
from audit.checks import EXECUTION_DTYPES
from audit.equivalence import executions


def _params(config: pytest.Config) -> list[tuple[str, str, str, str]]:
    opts = config.audit  # type: ignore[attr-defined]
    deep = (config.getoption("hypothesis_profile", None) or "ci") == "audit"
    return [(s.name, d, dev, ex) for s in opts["subjects"] for d in opts["dtypes"]
            if deep or d in EXECUTION_DTYPES for dev in opts["devices"]
            for ex in opts["executions"] if ex != "eager"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "execution_case" in metafunc.fixturenames:
        params = _params(metafunc.config)
        metafunc.parametrize("execution_case", params,
                             ids=[f"{n}[{d}-{dev}] {ex}" for n, d, dev, ex in params])


@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_execution_agrees_with_eager(execution_case, quantity: str, audit) -> None:
    from audit import subjects

    name, dtype, device, execution = execution_case
    s = subjects.get(name)
    reason = s.skip_reason(dtype, device, execution=execution)
    if reason is not None:
        audit.collector.skip(name, dtype, device, reason)
        pytest.skip(reason)
    e = executions(name, execution, dtype, device, quantity, audit.budgets[dtype])
    audit.collector.equivalence(e)
    if not audit.options["contracts"]:
        return
    if contracts.identical_execution(name, execution, dtype, device, quantity):
        assert e["n_differ"] == 0, (
            f"{name} {execution} is declared bit-identical to eager in {dtype} but differs "
            f"on {e['n_differ']} of {e['n']} points, e.g. {e['worst']}")
    else:
        assert e["n_differ"] > 0, (
            f"{name} {execution} now agrees with eager bit for bit in {dtype} ({quantity}): "
            f"declare it as [[identical]] with executions = [\"eager\", \"{execution}\"]")
