"""Audit cases generated from the registry x dtypes x devices x checks (never by hand)."""

from __future__ import annotations

import pytest

from audit import contracts as contracts_mod
from audit.checks import CHECKS, Case


def audit_cases(config: pytest.Config, checks: tuple[str, ...]) -> list[Case]:
    opts = config.audit  # type: ignore[attr-defined]
    cases = []
    for s in opts["subjects"]:
        for dtype in opts["dtypes"]:
            for device in opts["devices"]:
                for check in checks:
                    reds = [r for r in s.reductions if r != "none"] if check == "reduced" \
                        else ["none"]
                    cases += [Case(s.name, check, dtype, device, r) for r in reds]
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        checks = getattr(metafunc.module, "CHECKS", tuple(CHECKS))
        cases = audit_cases(metafunc.config, checks)
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture
def runnable(case: Case):
    """The case's subject, or a skip with its reason before any Hypothesis example runs."""
    from audit import subjects

    subject = subjects.get(case.subject)
    reason = subject.skip_reason(case.dtype, case.device)
    if reason is not None:
        pytest.skip(reason)
    return subject


@pytest.fixture(scope="session")
def audit(pytestconfig: pytest.Config):
    """The run's options, contracts and result collector."""
    opts = pytestconfig.audit  # type: ignore[attr-defined]

    class Audit:
        options = opts
        collector = pytestconfig.audit_collector  # type: ignore[attr-defined]
        contracts = contracts_mod.load() if opts["contracts"] else []
        budgets = opts["budgets"]

        def applicable(self, case: Case) -> list[contracts_mod.Contract]:
            return [c for c in self.contracts if c.applies(
                case.subject, case.check, case.dtype, case.device, case.reduction)]

    return Audit()
