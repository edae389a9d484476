"""pytest options, Hypothesis profiles and the run's results -> report (DESIGN.md 7-8)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

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

ROOT = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("audit", "bce stability audit")
    g.addoption("--frameworks", default=None, help="comma list: torch,tf,keras")
    g.addoption("--subjects", default=None, help="comma list of subject names")
    g.addoption("--dtypes", default=None, help="comma list: float16,bfloat16,float32,float64")
    g.addoption("--devices", default=None, help="comma list: cpu,cuda (default: both)")
    g.addoption("--max-ulp", default=None,
                help="ulp budget override: N for all dtypes, or dtype=N,dtype=N")
    g.addoption("--no-contracts", action="store_true",
                help="ignore audit/contracts.toml: every finding fails (raw findings)")
    g.addoption("--report-dir", default=None, help="write the run report here")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _audit_options(config: pytest.Config) -> dict:
    """Validate the audit options once; unknown values are usage errors naming them."""
    from audit import frameworks
    from audit import subjects as subjects_mod
    from audit.dtypes import DTYPES, ULP_BUDGET

    try:
        chosen = subjects_mod.select(frameworks=_csv(config.getoption("--frameworks")),
                                     subjects=_csv(config.getoption("--subjects")))
    except (KeyError, ValueError) as e:
        raise pytest.UsageError(str(e.args[0] if e.args else e)) from None
    dtypes = _csv(config.getoption("--dtypes")) or list(DTYPES)
    for d in dtypes:
        if d not in DTYPES:
            raise pytest.UsageError(f"--dtypes: unknown dtype {d!r}; expected {', '.join(DTYPES)}")
    devices = _csv(config.getoption("--devices")) or list(frameworks.DEVICES)
    for d in devices:
        if d not in frameworks.DEVICES:
            raise pytest.UsageError(
                f"--devices: unknown device {d!r}; expected {', '.join(frameworks.DEVICES)}")
    budgets = dict(ULP_BUDGET)
    raw = config.getoption("--max-ulp")
    if raw:
        try:
            if "=" in raw:
                for item in raw.split(","):
                    k, v = item.split("=")
                    if k.strip() not in budgets:
                        raise ValueError(f"unknown dtype {k.strip()!r}")
                    budgets[k.strip()] = float(v)
            else:
                budgets = dict.fromkeys(budgets, float(raw))
        except ValueError as e:
            raise pytest.UsageError(f"--max-ulp: cannot parse {raw!r} ({e})") from None
    return {"subjects": chosen, "dtypes": dtypes, "devices": devices, "budgets": budgets,
            "contracts": not config.getoption("--no-contracts")}


def pytest_configure(config: pytest.Config) -> None:
    config.audit = _audit_options(config)  # type: ignore[attr-defined]
    from audit import results

    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        run_dir = Path(workerinput["audit_run_dir"])
        worker = workerinput.get("workerid", "w")
    else:
        base = Path(config.getoption("--report-dir") or ROOT / "reports")
        if config.getoption("--report-dir"):
            run_dir = base
            run_dir.mkdir(parents=True, exist_ok=True)
            import shutil

            from audit.session import PARTS

            shutil.rmtree(run_dir / PARTS, ignore_errors=True)  # a reused dir: this run only
        else:
            run_dir = results.new_run_dir(base)
        worker = "main"
        config.audit_started = datetime.now(UTC).isoformat(timespec="seconds")  # type: ignore
    config.audit_run_dir = run_dir  # type: ignore[attr-defined]
    from audit.session import Collector

    config.audit_collector = Collector(run_dir, worker)  # type: ignore[attr-defined]


def pytest_configure_node(node) -> None:
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


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    path = getattr(config, "audit_report", None)
    if path is not None:
        terminalreporter.write_line(f"audit report: {path}")
