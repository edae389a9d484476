"""The audit's pytest plugin (entry point `pytest11: bce_audit`): options, Hypothesis
profiles, audit fixtures and case generation, and the run's results -> report
(DESIGN.md sections 7-9). Installed with the project, so the suite runs from any folder:

    pytest --pyargs audit.suite --subject-module mylosses --subjects mine.x --report-dir DIR

The run folder (``reports/<timestamp>/`` or ``--report-dir``) is made only once an audit
test runs, and ``reports/latest`` moves to it once its report is written; reports/ keeps
the newest ``--keep-reports N`` runs (20). SIGTERM is handled like Ctrl-C, and the run's
status comes from what was measured (audit/session.py: run_status).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None, max_examples=12,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# `make test`'s: ci's derandomized searches, half as many examples (the fixed checks,
# which every strict contract is judged on, are the same in every profile)
settings.register_profile("test", parent=settings.get_profile("ci"), max_examples=6)
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
    g.addoption("--executions", default=None, metavar="E1,E2",
                help="comma list of eager, compiled, autocast_bfloat16, autocast_float16 "
                     "(default eager; `make audit` runs all four; compiled and autocast run "
                     "values, grads and validation, in float32 and bfloat16 unless "
                     "--hypothesis-profile=audit)")
    g.addoption("--label-smoothing", default=None, metavar="E",
                help="E of the smoothed checks of subjects that take label smoothing "
                     "(default 0.1; 0 leaves those checks out)")
    g.addoption("--report-dir", default=None, help="write the run report here")
    g.addoption("--keep-reports", default=None, metavar="N",
                help="keep the newest N runs in reports/ (default 20); older ones are removed")


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


def parse_smoothing(raw: str | None) -> float:
    """--label-smoothing E: a number in [0, 1] (0: no smoothed checks)."""
    from audit.families import DEFAULT_SMOOTHING

    if raw is None:
        return DEFAULT_SMOOTHING
    try:
        e = float(str(raw).strip())
    except ValueError:
        raise pytest.UsageError(f"--label-smoothing: {raw!r} is not a number") from None
    if not 0 <= e <= 1:
        raise pytest.UsageError(f"--label-smoothing: {raw!r} is not in [0, 1]")
    return e


def parse_keep(raw: str | None) -> int:
    """--keep-reports N: a whole number of runs, at least 1."""
    from audit.results import KEEP_REPORTS

    if raw is None:
        return KEEP_REPORTS
    try:
        n = int(str(raw).strip())
    except ValueError:
        raise pytest.UsageError(f"--keep-reports: {raw!r} is not a whole number") from None
    if n < 1:
        raise pytest.UsageError(f"--keep-reports: {raw!r}: keep at least 1 run")
    return n


def check_report_dir(raw: str | None) -> Path | None:
    """--report-dir DIR: a folder, or a path where one can be made (checked, not made)."""
    if raw is None:
        return None
    if not raw.strip():
        raise pytest.UsageError("--report-dir: empty path")
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"--report-dir {raw}: exists and is not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise pytest.UsageError(f"--report-dir {raw}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise pytest.UsageError(f"--report-dir {raw}: {existing} is not writable")
    return path


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
    # eager unless asked: compiling costs seconds per function (make audit asks for all)
    executions = _csv(config.getoption("--executions")) or ["eager"]
    for e in executions:
        if e not in runners.EXECUTIONS:
            raise pytest.UsageError(f"--executions: unknown execution {e!r}; expected "
                                    f"{', '.join(runners.EXECUTIONS)}")
    devices = _csv(config.getoption("--devices")) or list(runners.DEVICES)
    for d in devices:
        if d not in runners.DEVICES:
            raise pytest.UsageError(
                f"--devices: unknown device {d!r}; expected {', '.join(runners.DEVICES)}")
    return {"subjects": chosen, "dtypes": dtypes, "devices": devices, "executions": executions,
            "budgets": parse_budgets(config.getoption("--max-ulp")),
            "contracts": not config.getoption("--no-contracts"),
            "frameworks": subjects_mod.frameworks_of(chosen),
            "keep_reports": parse_keep(config.getoption("--keep-reports")),
            "label_smoothing": parse_smoothing(config.getoption("--label-smoothing")),
            "report_dir": check_report_dir(config.getoption("--report-dir"))}


def _profile_and_seed(config: pytest.Config) -> tuple[str, int | None]:
    profile = config.getoption("hypothesis_profile", None) or \
        os.environ.get("HYPOTHESIS_PROFILE", "ci")
    seed = config.getoption("hypothesis_seed", None)
    try:
        return profile, int(seed) if seed not in (None, "") else None
    except (TypeError, ValueError):
        return profile, None


def pytest_configure(config: pytest.Config) -> None:
    config.audit = _audit_options(config)  # type: ignore[attr-defined]
    from audit.session import PARTS, Collector, RunPlace

    _install_signal_handlers(config)
    frameworks = config.audit["frameworks"]  # type: ignore[attr-defined]
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        from audit.checks import share_memo

        share_memo(workerinput.get("audit_reference_memo"))
        run_dir, worker = Path(workerinput["audit_run_dir"]), workerinput.get("workerid", "w")
        config.audit_collector = Collector(run_dir, worker, frameworks)  # type: ignore
        with contextlib.suppress(OSError):  # so the controller can pass a SIGTERM on
            (run_dir / PARTS / f"{worker}.pid").write_text(f"{os.getpid()} {os.getppid()}")
        return
    started = datetime.now(UTC).isoformat(timespec="seconds")
    profile, seed = _profile_and_seed(config)
    place = RunPlace(Path(config.rootpath) / "reports",
                     config.audit["report_dir"],  # type: ignore[attr-defined]
                     {"started": started, "profile": profile, "seed": seed,
                      "command": "pytest " + " ".join(config.invocation_params.args)})
    config.audit_started = started  # type: ignore[attr-defined]
    config.audit_place = place  # type: ignore[attr-defined]
    # made on the first write, so a run that audits nothing leaves no folder behind
    config.audit_collector = Collector(place.ensure, "main", frameworks)  # type: ignore


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil
    import signal

    memo = getattr(config, "audit_memo", None)
    if memo is not None:
        shutil.rmtree(memo, ignore_errors=True)

    for sig, handler in getattr(config, "audit_previous_handlers", {}).items():
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, handler)


def _install_signal_handlers(config: pytest.Config) -> None:
    """SIGTERM is handled like SIGINT (Ctrl-C): KeyboardInterrupt in this process, so
    pytest's interrupt path runs and the report is written with status "interrupted".
    The signal is remembered, so the status holds even where the KeyboardInterrupt is
    swallowed (say, inside a lazy import). While the report is being written a SIGTERM
    waits for it, and so does a first SIGINT (a second one abandons it)."""
    import signal
    import threading

    config.audit_signal = None  # type: ignore[attr-defined]
    config.audit_finishing = False  # type: ignore[attr-defined]
    config.audit_previous_handlers = {}  # type: ignore[attr-defined]
    if threading.current_thread() is not threading.main_thread():
        return
    held: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if config.audit_signal is None:  # type: ignore[attr-defined]
            config.audit_signal = name  # type: ignore[attr-defined]
        if config.audit_finishing:  # type: ignore[attr-defined]
            if signum == signal.SIGINT and held:
                raise KeyboardInterrupt(name)
            held.append(signum)
            with contextlib.suppress(OSError):
                os.write(2, f"\naudit: {name}: writing the report first\n".encode())
            return
        if signum == signal.SIGTERM:
            _pass_on_to_workers(config, signum)
        raise KeyboardInterrupt(name)

    for sig, default in ((signal.SIGINT, signal.default_int_handler),
                         (signal.SIGTERM, signal.SIG_DFL)):
        try:
            if signal.getsignal(sig) is default:
                signal.signal(sig, on_signal)
                config.audit_previous_handlers[sig] = default  # type: ignore[attr-defined]
        except (ValueError, OSError):
            pass


def _pass_on_to_workers(config: pytest.Config, signum: int) -> None:
    """The xdist controller got SIGTERM: its workers stop their current test too, rather
    than run on until xdist kills them (a Ctrl-C reaches them through the terminal)."""
    place = getattr(config, "audit_place", None)
    if place is None or place.path is None:
        return
    from audit.session import PARTS

    for pidfile in (place.path / PARTS).glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid, parent = (int(v) for v in pidfile.read_text().split())
            if parent == os.getpid():  # our own worker, not another run's
                os.kill(pid, signum)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    # xdist workers start before collection: the controller makes the folder for them
    # (and removes it at the end if no audit test ran)
    node.workerinput["audit_run_dir"] = str(node.config.audit_place.ensure())
    # float64 certified references, shared by this run's xdist workers (audit.checks);
    # made with the first worker, so a run without workers makes none
    if getattr(node.config, "audit_memo", None) is None:
        node.config.audit_memo = tempfile.mkdtemp(prefix="bce-audit-reference-")
    node.workerinput["audit_reference_memo"] = node.config.audit_memo


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if "audit" in getattr(item, "fixturenames", ()):
        item.config.audit_collector.started(item.nodeid)  # type: ignore[attr-defined]


@pytest.hookimpl(trylast=True)  # after xdist has stopped its workers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if getattr(config, "workerinput", None) is not None:
        return  # the controller writes the report
    from audit import session as audit_session

    place = config.audit_place  # type: ignore[attr-defined]
    if place.path is None:
        return  # no audit test ran: no folder, `latest` untouched
    config.audit_finishing = True  # type: ignore[attr-defined]
    try:
        if not audit_session.has_parts(place.path):
            place.discard()
            return
        run_dir = place.path
        info = audit_session.read_info(run_dir)
        doc = audit_session.build_document(
            run_dir, run_dir.name, config.audit_started, "passed",  # type: ignore
            info.get("profile"), info.get("seed"), str(info.get("command", "pytest")))
        doc["run"]["status"] = audit_session.run_status(
            doc["records"], interrupted=config.audit_signal is not None,  # type: ignore
            testsfailed=session.testsfailed, exitstatus=int(exitstatus))
        keep = config.audit["keep_reports"] if place.default_layout else None  # type: ignore
        path = audit_session.finish(run_dir, doc, latest=place.default_layout, keep=keep)
        config.audit_report = path  # type: ignore[attr-defined]
    except Exception as e:  # the report must never hide the test outcome...
        print(f"\naudit: report failed: {type(e).__name__}: {e} (what was measured is kept: "
              f"python -m audit rebuild {place.path})", file=sys.stderr)
        if session.exitstatus == 0:  # ...nor a broken report pass for a green run
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    finally:
        config.audit_finishing = False  # type: ignore[attr-defined]
        if config.audit_signal is not None and session.exitstatus in (0, 1):  # type: ignore
            session.exitstatus = pytest.ExitCode.INTERRUPTED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    path = getattr(config, "audit_report", None)
    if path is not None:
        terminalreporter.write_line(f"audit report: {path}")


# --------------------------------------------------------------- cases and fixtures


def audit_cases(config: pytest.Config, checks: tuple[str, ...], executions: bool = False
                ) -> list:
    """Case per selected subject x dtype x device x check (x reduction), never by hand;
    with `executions`, also the compiled / autocast cases of the EXECUTION_CHECKS."""
    from audit.checks import EXECUTION_CHECKS, EXECUTION_DTYPES, SMOOTHED_CHECKS, Case

    opts = config.audit  # type: ignore[attr-defined]
    e = opts["label_smoothing"]
    deep = _profile_and_seed(config)[0] == "audit"
    cases = []
    for s in opts["subjects"]:
        for dtype in opts["dtypes"]:
            for device in opts["devices"]:
                if "eager" in opts["executions"]:
                    for check in checks:
                        if check in SMOOTHED_CHECKS:  # only where the loss takes it
                            if s.label_smoothing and e:
                                cases.append(Case(s.name, check, dtype, device, "none", e))
                            continue
                        reds = [r for r in s.reductions if r != "none"] \
                            if check == "reduced" else ["none"]
                        cases += [Case(s.name, check, dtype, device, r) for r in reds]
                if not executions or (not deep and dtype not in EXECUTION_DTYPES):
                    continue  # compiled / autocast: float32 and bfloat16 by default
                for execution in opts["executions"]:
                    if execution != "eager":
                        cases += [Case(s.name, check, dtype, device, execution=execution)
                                  for check in checks if check in EXECUTION_CHECKS]
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Audit modules (those defining AUDIT_CHECKS) get one test per case; those also
    defining AUDIT_EXECUTIONS = True get the compiled / autocast cases too."""
    checks = getattr(metafunc.module, "AUDIT_CHECKS", None)
    if checks is not None and "case" in metafunc.fixturenames:
        cases = audit_cases(metafunc.config, tuple(checks),
                            getattr(metafunc.module, "AUDIT_EXECUTIONS", False))
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
        """The contracts of a case; an execution declared bit-identical to eager (and
        checked so by test_executions) has eager's findings, so eager's contracts."""
        from audit import contracts

        execution = getattr(case, "execution", "eager")
        if execution != "eager" and case.check in ("values", "grads") and \
                contracts.identical_execution(
                case.subject, execution, case.dtype, case.device, case.quantity):
            execution = "eager"
        return [c for c in self.contracts if c.applies(
            case.subject, case.check, case.dtype, case.device, case.reduction, execution)]


@pytest.fixture(scope="session")
def audit(pytestconfig: pytest.Config) -> Audit:
    return Audit(pytestconfig)
