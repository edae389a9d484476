"""The audit's pytest plugin (entry point `pytest11: bce_audit`): options, Hypothesis
profiles, audit fixtures and case generation, and the run's results -> report
(DESIGN.md sections 7-9). Installed with the project, so the suite runs from any folder:

    pytest --pyargs audit.suite --subject-module mylosses --subjects mine.x --report-dir DIR
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None, max_examples=12,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "audit", deadline=None, max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("audit", "bce stability audit")
    g.addoption("--frameworks", default=None, help="comma list of frameworks (torch,tf,keras)")
    g.addoption("--subjects", default=None, help="comma list of subject names")
    g.addoption("--dtypes", default=None, help="comma list: float16,bfloat16,float32,float64")
    g.addoption("--devices", default=None, help="comma list: cpu,cuda (default: both)")
    g.addoption("--max-ulp", default=None,
                help="ulp budget override: N for all dtypes, or dtype=N,dtype=N")
    g.addoption("--no-contracts", action="store_true",
                help="ignore the declared deviations: every finding fails (raw findings)")
    g.addoption("--contracts", action="append", default=[], metavar="FILE",
                help="a TOML file of your own known deviations (repeatable), merged with "
                     "the built-in ones")
    g.addoption("--subject-module", action="append", default=[], metavar="MODULE",
                help="import MODULE (a name or a .py path; comma list or repeatable) "
                     "for its @audit.subject losses")
    g.addoption("--report-dir", default=None, help="write the run report here")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def parse_budgets(raw: str | None) -> dict[str, float]:
    """--max-ulp N or dtype=N,...: a finite, non-negative ulp budget per dtype."""
    from audit.dtypes import ULP_BUDGET

    budgets = dict(ULP_BUDGET)
    if not raw:
        return budgets

    def number(text: str) -> float:
        v = float(text)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{text.strip()!r} is not a finite non-negative number")
        return v

    try:
        if "=" in raw:
            for item in raw.split(","):
                k, v = item.split("=")
                if k.strip() not in budgets:
                    raise ValueError(f"unknown dtype {k.strip()!r}")
                budgets[k.strip()] = number(v)
        else:
            budgets = dict.fromkeys(budgets, number(raw))
    except ValueError as e:
        raise pytest.UsageError(f"--max-ulp: cannot parse {raw!r} ({e})") from None
    return budgets


def _audit_options(config: pytest.Config) -> dict[str, Any]:
    """Validate the audit options once; unknown values are usage errors naming them."""
    from audit import contracts, runners
    from audit import subjects as subjects_mod
    from audit.dtypes import DTYPES

    try:
        for spec in config.getoption("--subject-module"):
            subjects_mod.load_modules(spec)
        contracts.add_files(config.getoption("--contracts"))
        chosen = subjects_mod.select(frameworks=_csv(config.getoption("--frameworks")),
                                     subjects=_csv(config.getoption("--subjects")))
    except (KeyError, ValueError) as e:
        raise pytest.UsageError(str(e.args[0] if e.args else e)) from None
    dtypes = _csv(config.getoption("--dtypes")) or list(DTYPES)
    for d in dtypes:
        if d not in DTYPES:
            raise pytest.UsageError(f"--dtypes: unknown dtype {d!r}; expected {', '.join(DTYPES)}")
    devices = _csv(config.getoption("--devices")) or list(runners.DEVICES)
    for d in devices:
        if d not in runners.DEVICES:
            raise pytest.UsageError(
                f"--devices: unknown device {d!r}; expected {', '.join(runners.DEVICES)}")
    return {"subjects": chosen, "dtypes": dtypes, "devices": devices,
            "budgets": parse_budgets(config.getoption("--max-ulp")),
            "contracts": not config.getoption("--no-contracts"),
            "frameworks": subjects_mod.frameworks_of(chosen)}


def pytest_configure(config: pytest.Config) -> None:
    config.audit = _audit_options(config)  # type: ignore[attr-defined]
    from audit import results
    from audit.session import PARTS, Collector

    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        run_dir = Path(workerinput["audit_run_dir"])
        worker = workerinput.get("workerid", "w")
    else:
        given = config.getoption("--report-dir")
        if given:
            run_dir = Path(given)
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(run_dir / PARTS, ignore_errors=True)  # a reused dir: this run only
        else:
            run_dir = results.new_run_dir(Path(config.rootpath) / "reports")
        worker = "main"
        config.audit_started = datetime.now(UTC).isoformat(timespec="seconds")  # type: ignore
    config.audit_run_dir = run_dir  # type: ignore[attr-defined]
    config.audit_collector = Collector(  # type: ignore[attr-defined]
        run_dir, worker, config.audit["frameworks"])  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput["audit_run_dir"] = str(node.config.audit_run_dir)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if getattr(config, "workerinput", None) is not None:
        return  # the controller writes the report
    from audit import session as audit_session

    status = {0: "passed", 2: "interrupted"}.get(int(exitstatus), "failed")
    profile = config.getoption("hypothesis_profile", None) or \
        os.environ.get("HYPOTHESIS_PROFILE", "ci")
    seed = config.getoption("hypothesis_seed", None)
    run_dir = config.audit_run_dir  # type: ignore[attr-defined]
    doc = audit_session.build_document(
        run_dir, run_dir.name, config.audit_started, status, profile,  # type: ignore
        int(seed) if seed not in (None, "") else None,
        "pytest " + " ".join(config.invocation_params.args))
    try:
        path = audit_session.finish(run_dir, doc)
        config.audit_report = path  # type: ignore[attr-defined]
    except Exception as e:  # the report must never hide the test outcome
        print(f"\naudit: report failed: {type(e).__name__}: {e}", file=sys.stderr)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    path = getattr(config, "audit_report", None)
    if path is not None:
        terminalreporter.write_line(f"audit report: {path}")


# --------------------------------------------------------------- cases and fixtures


def audit_cases(config: pytest.Config, checks: tuple[str, ...]) -> list:
    """Case per selected subject x dtype x device x check (x reduction), never by hand."""
    from audit.checks import Case

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
    """Audit modules (those defining AUDIT_CHECKS) get one test per case."""
    checks = getattr(metafunc.module, "AUDIT_CHECKS", None)
    if checks is not None and "case" in metafunc.fixturenames:
        cases = audit_cases(metafunc.config, tuple(checks))
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture
def runnable(case: Any) -> Any:
    """The case's subject, or a skip with its reason before any Hypothesis example runs."""
    from audit import subjects

    subject = subjects.get(case.subject)
    reason = subject.skip_reason(case.dtype, case.device)
    if reason is not None:
        pytest.skip(reason)
    return subject


class Audit:
    """The run's options, contracts and result collector (the `audit` fixture)."""

    def __init__(self, config: pytest.Config) -> None:
        from audit import contracts

        self.options = config.audit  # type: ignore[attr-defined]
        self.collector = config.audit_collector  # type: ignore[attr-defined]
        self.contracts = contracts.load() if self.options["contracts"] else []
        self.budgets = self.options["budgets"]

    def applicable(self, case: Any) -> list:
        return [c for c in self.contracts if c.applies(
            case.subject, case.check, case.dtype, case.device, case.reduction)]


@pytest.fixture(scope="session")
def audit(pytestconfig: pytest.Config) -> Audit:
    return Audit(pytestconfig)
