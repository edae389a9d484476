"""Framework worker processes (audit.workers): isolation, reuse, shared memory, and what a
dying or hanging worker becomes (WorkerCrash -> status crash, the run goes on)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from audit import subjects, workers
from audit.batch import Batch
from audit.checks import Case, run_framework

FAULTY = '''
import os, sys, time

import torch

from audit import subject


def _fused(x, y):
    return torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")


@subject("faulty.aborts", framework="torch", family="bce_with_logits")
def aborts(x, y):
    if bool((x == 7).any()):
        sys.stderr.write("Check failed: the kernel met a seven\\n")
        sys.stderr.flush()
        os.abort()
    return _fused(x, y)


@subject("faulty.exits", framework="torch", family="bce_with_logits")
def exits(x, y):
    if bool((x == -5).any()):
        os._exit(3)
    return _fused(x, y)


@subject("faulty.hangs", framework="torch", family="bce_with_logits")
def hangs(x, y):
    if bool((x == 2).any()):
        time.sleep(3600)
    return _fused(x, y)


@subject("faulty.raises", framework="torch", family="bce_with_logits")
def raises(x, y):
    if bool((x == 1).any()):
        raise ArithmeticError("no ones here")
    return _fused(x, y)
'''


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[None]:
    """Register the faulty subjects for this test only; workers started for it go too."""
    path = tmp_path / "faulty_subjects.py"
    path.write_text(FAULTY)
    before = dict(subjects.SUBJECTS)
    workers.shutdown()  # new workers must load the module
    subjects.load_modules(str(path))
    yield
    workers.shutdown()
    subjects.SUBJECTS.clear()
    subjects.SUBJECTS.update(before)
    subjects._USER_MODULES.remove(str(path.resolve()))
    subjects._LOADED.discard(str(path.resolve()))
    sys.modules.pop("faulty_subjects", None)


X = np.arange(-8.0, 8.0, 0.5)  # contains 7, -5, 2, 1


def _run(name: str) -> tuple[np.ndarray, dict[int, str], frozenset[int]]:
    return run_framework(subjects.get(name), Case(name, "values", "float32", "cpu"),
                         Batch.of(X, 0.0))


def test_the_grading_process_imports_no_framework() -> None:
    subjects.get("torch.bce").evaluate("float32", "cpu", np.array([0.5]), np.array([1.0]))
    assert not [m for m in ("torch", "tensorflow", "keras") if m in sys.modules]


@pytest.mark.parametrize("name, value, signal", [
    ("faulty.aborts", 7.0, "SIGABRT"), ("faulty.exits", -5.0, "exited with status 3")])
@pytest.mark.process
def test_a_dying_worker_is_a_crash_on_exactly_its_points(faulty, name, value, signal) -> None:
    observed, errors, crashes = _run(name)
    bad = int(np.flatnonzero(np.equal(X, value))[0])
    assert crashes == {bad} and set(errors) == {bad} and signal in errors[bad]
    if name == "faulty.aborts":  # the report quotes what the dying process said
        assert "last stderr line: Check failed: the kernel met a seven" in errors[bad]
    good = np.delete(np.arange(X.size), bad)
    assert np.isfinite(observed[good]).all()  # replaced worker: the run went on
    # and the next call works on a fresh worker
    assert subjects.get(name).evaluate("float32", "cpu", X[:3], X[:3] * 0).shape == (3,)


@pytest.mark.process
def test_a_hung_worker_is_killed_after_the_timeout(faulty, monkeypatch) -> None:
    monkeypatch.setenv("BCE_AUDIT_TIMEOUT", "3")
    observed, errors, crashes = _run("faulty.hangs")
    bad = int(np.flatnonzero(X == 2)[0])
    assert crashes == {bad} and "hung" in errors[bad] and "3 s" in errors[bad]
    assert np.isfinite(np.delete(observed, bad)).all()


def test_an_exception_is_an_error_and_the_worker_lives_on(faulty) -> None:
    before = workers.worker("torch").proc.pid
    _, errors, crashes = _run("faulty.raises")
    bad = int(np.flatnonzero(X == 1)[0])
    assert not crashes and set(errors) == {bad}
    assert errors[bad] == "ArithmeticError: no ones here"
    assert workers.worker("torch").proc.pid == before


def test_large_batches_grow_the_shared_block() -> None:
    s = subjects.get("torch.bce_with_logits")
    for n in (10, 1 << 18, 3):  # grows, then reuses the large block
        x = np.linspace(-4, 4, n)
        out = s.evaluate("float64", "cpu", x, np.zeros(n))
        np.testing.assert_allclose(out, np.logaddexp(0.0, x), rtol=1e-12)


def test_vector_inputs_fit_batches_records_and_repro() -> None:
    """A family whose input is a vector per point (softmax cross-entropy next) needs no
    scalar baked into the batch, region variables, record fields or repro commands."""
    from audit.contracts import load
    from audit.records import point_hex, point_json, repro_command

    b = Batch.of(np.array([[0.0, 1.0, -np.inf], [2.0, 2.0, 2.0]]), [1.0, 0.0])
    assert len(b) == 2 and b.take(np.array([1])).input.tolist() == [[2.0, 2.0, 2.0]]
    v = b.variables()
    assert "x" not in v and v["x_spread"].tolist() == [np.inf, 0.0]
    assert point_json(b.input[0]) == [0.0, 1.0, "-inf"] and point_json(2.5) == 2.5
    assert point_hex(b.input[1]) == ["0x1.0000000000000p+1"] * 3
    cmd = repro_command("torch.bce_with_logits", "float32", "cpu", b.input[0], 1.0)
    assert "--input=0x0.0p+0,0x1.0000000000000p+0,-inf" in cmd
    assert load()  # the built-in regions still parse with scalar variables
