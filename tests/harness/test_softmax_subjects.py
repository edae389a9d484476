"""Self-tests of the row families' plumbing (audit/softmax_family.py, the row subjects,
their records and probe): benign rows against numpy, so a wrong adapter (a transposed
reshape, labels in the wrong slot, a weight not passed) shows as an O(1) difference;
accuracy is the audit's business, not these tests'."""

from __future__ import annotations

import json
import math
import re
import shlex

import numpy as np
import pytest

from audit import cli, contracts, runners, subjects, workers
from audit import softmax_family as sf
from audit.softmax_probe import parse_row
from audit.softmax_records import build_row_record, row_hex, runs

LOGIT_NAMES = [f"{fw}.{op}" for fw in ("torch", "tf", "keras", "jax", "paddle")
               for op in ("cross_entropy", "log_softmax", "logsumexp")
               if not (fw == "keras" and op != "cross_entropy")]
PROB_NAMES = ["keras.categorical"]  # rows of class probabilities (cross_entropy_probs)
ROW_NAMES = LOGIT_NAMES + PROB_NAMES
# the adapters' plumbing does not depend on the dtype: half precision (a kernel of its
# own) and float32
CASES = [(n, d) for n in LOGIT_NAMES for d in ("float16", "float32")]
EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}
ROWS = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5], [-2.0, -2.0, 4.0], [0.25, 0.0, -0.5]])
LABELS = np.array([0, 2, 1, 2])
PROBS = np.array([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.25, 0.5, 0.25]])


def _runnable(name: str, dtype: str) -> subjects.Subject:
    s = subjects.get(name)
    reason = s.skip_reason(dtype, "cpu")
    if reason is not None:
        pytest.skip(reason)
    return s


def _expected(family: str, x: np.ndarray, target: np.ndarray | None, weight=None,
              smoothing: float = 0.0, grad: bool = False) -> np.ndarray:
    lse = np.log(np.exp(x).sum(axis=1))
    logsm = x - lse[:, None]
    if family == "logsumexp":
        return lse
    if family == "log_softmax":
        return logsm
    k = x.shape[1]
    t = np.eye(k)[target] if target.ndim == 1 else target
    a = (t * (1 - smoothing) + smoothing / k) * (1.0 if weight is None else weight)
    if grad:
        return a.sum(axis=1, keepdims=True) * np.exp(logsm) - a
    return -(a * logsm).sum(axis=1)


def test_row_registry_is_apart_from_the_scalar_one():
    assert sorted(subjects.ROW_SUBJECTS) == sorted(ROW_NAMES)
    assert not set(subjects.ROW_SUBJECTS) & set(subjects.SUBJECTS)
    assert subjects.get("torch.cross_entropy").family == "cross_entropy"
    assert subjects.select(subjects="torch.cross_entropy") == []  # the scalar suites skip it
    assert [s.name for s in sf.row_subjects(frameworks=["tf"])] == [
        "tf.cross_entropy", "tf.log_softmax", "tf.logsumexp"]


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_row_subject_values_and_grads(name: str, dtype: str):
    s = _runnable(name, dtype)
    x = sf.representable(ROWS, dtype)
    tol = 16 * EPS[dtype] * (1 + np.abs(x).max())
    kinds = [("label", LABELS)] if s.family == "cross_entropy" else [("none", None)]
    if s.family == "cross_entropy":
        kinds.append(("probs", sf.representable(PROBS, dtype)))
    for kind, target in kinds:
        b = sf.Block(x, np.array(["t"] * len(x), dtype=object),
                     labels=target if kind == "label" else None,
                     probs=target if kind == "probs" else None)
        for grad in (False, True) if s.family == "cross_entropy" else (False,):
            got = sf.call(s, dtype, "cpu", b, grad)
            want = _expected(s.family, x, target, grad=grad)
            assert got.shape == want.shape
            assert np.all(np.abs(got - want) <= tol), (kind, grad, got, want)


@pytest.mark.parametrize("name", ["torch.cross_entropy", "paddle.cross_entropy"])
def test_weight_smoothing_and_ignore_index_reach_the_call(name: str):
    s = _runnable(name, "float64")
    w = np.array([0.5, 2.0, 1.0])
    b = sf.Block(ROWS, np.array(["t"] * 4, dtype=object), labels=LABELS, weight=w)
    assert np.allclose(sf.call(s, "float64", "cpu", b, False),
                       _expected("cross_entropy", ROWS, LABELS, weight=w))
    b = sf.Block(ROWS, np.array(["t"] * 4, dtype=object), labels=LABELS, smoothing=0.125)
    assert np.allclose(sf.call(s, "float64", "cpu", b, True),
                       _expected("cross_entropy", ROWS, LABELS, smoothing=0.125, grad=True))
    labels = LABELS.copy()
    labels[1] = sf.IGNORE_INDEX
    b = sf.Block(ROWS, np.array(["t"] * 4, dtype=object), labels=labels,
                 ignore_index=sf.IGNORE_INDEX)
    loss = sf.call(s, "float64", "cpu", b, False)
    assert loss[1] == 0 and np.all(sf.call(s, "float64", "cpu", b, True)[1] == 0)


def test_declared_missing_kernels_are_really_missing():
    for name in ("paddle.cross_entropy", "paddle.log_softmax", "paddle.logsumexp"):
        s = subjects.get(name)
        if runners.get(s.framework).missing():
            pytest.skip(runners.get(s.framework).missing())
        for dtype, _, _ in s.unsupported:
            b = sf.Block(ROWS[:1], np.array(["t"], dtype=object),
                         labels=LABELS[:1] if s.family == "cross_entropy" else None)
            arrays, params = sf._arrays_params(s.family, b)
            with pytest.raises(workers.FrameworkError, match="not registered"):
                workers.evaluate(name, s.framework, dtype, "cpu", arrays, "none", False,
                                 "contiguous", params)


# --------------------------------------------------------------------------- reference


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_exact_parts_are_the_certified_values(dtype: str):
    """The long double estimate used for the ulp measure agrees with the mpmath
    representative to well below the dtype's ulp (loss, gradient, log_softmax)."""
    rng = np.random.default_rng(5)
    x = sf.representable(rng.normal(size=(40, 7)) * 20, dtype)
    x[3, 2] = -math.inf
    b = sf.Block(x, np.array(["r"] * 40, dtype=object), labels=rng.integers(0, 7, 40))
    from reference.points import double_double

    for family, grad in (("cross_entropy", False), ("cross_entropy", True),
                         ("log_softmax", False)):
        expected, _ = sf.rounded(family, dtype, b, grad)
        hi, lo = sf.exact_parts(family, dtype, b, grad, expected)
        for i in range(len(b)):
            ts = sf._row_tuples(family, b, grad, i)
            want = np.array([sum(double_double(t)) for t in ts])
            got = (hi[i] + lo[i]) if expected.ndim == 2 else np.array([hi[i] + lo[i]])
            spacing = np.ldexp(1.0, np.frexp(np.where(want == 0, 1e-300, want))[1] - 30)
            with np.errstate(invalid="ignore"):  # inf - inf where both are inf
                close = (np.abs(got - want) <= np.abs(spacing)) | (got == want)
            assert np.all(close | (np.isnan(got) & np.isnan(want))), i


def test_row_variables_are_valid_in_contract_regions(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[contract]]\nid = "a"\nsubjects = ["x.y"]\nchecks = ["values"]\n'
                    'dtypes = ["float32"]\nstatus = ["inaccurate"]\n'
                    'region = "margin > 10 and masked == 0 and on_label == 1 and k >= 3"\n'
                    'reason = "r"\n')
    assert contracts.load([path])[0].region.startswith("margin")
    path.write_text(path.read_text().replace("margin > 10", "nonsense > 10"))
    with pytest.raises(contracts.ContractsError, match="nonsense"):
        contracts.load([path])


# --------------------------------------------------------------------------- records, probe


def test_runs_round_trip_through_the_probe_parser():
    row = np.array([0.0] * 5 + [1e4, -np.inf, -np.inf, -np.inf, 0.5])
    assert runs(row).startswith("0x0.0p+0*5,")
    assert np.array_equal(parse_row(runs(row), "float32", "--logits"), row)
    assert isinstance(row_hex(np.zeros(sf.VOCAB)), str)


def _probe(capsys, *argv: str) -> tuple[int, dict | str]:
    code = cli.main(["probe", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


def test_probe_row_subject(capsys):
    _runnable("torch.cross_entropy", "float32")
    code, out = _probe(capsys, "torch.cross_entropy", "--dtype", "float32",
                       "--logits=1e4,0*2", "--label", "1")
    assert code == 0 and out["expected"] == 1e4 and out["input"] == [1e4, 0.0, 0.0]
    assert out["status"] == "ok" and out["classes"] == 3 and out["target"] == 1
    code, out = _probe(capsys, "torch.cross_entropy", "--dtype", "float32",
                       "--logits=30,0", "--label", "0", "--grad")
    assert code == 0 and len(out["expected"]) == 2 and out["worst"]["component"] in (0, 1)
    code, out = _probe(capsys, "torch.log_softmax", "--dtype", "float16", "--logits=0*3")
    assert code == 0 and len(out["observed"]) == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["--logits=0,1", "--label", "2"], "outside|must be in"),
    (["--logits=0,1", "--label=-1"], "must be in"),
    (["--logits=0,1"], "--label K or --probs"),
    (["--logits=0,1", "--probs=1"], "1 values for 2 logits"),
    (["--logits=0,x", "--label", "0"], "cannot parse"),
    (["--logits=0*0", "--label", "0"], "count"),
])
def test_probe_row_usage_errors(capsys, argv, message):
    code, err = _probe(capsys, "torch.cross_entropy", "--dtype", "float32", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_record_is_schema_valid_and_its_repro_reproduces(capsys):
    """A row record validates against results.schema.json, and its worst point's repro
    command prints the observed value the record holds."""
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    s = _runnable("torch.cross_entropy", "float32")
    case = sf.RowCase(s.name, "values", "float32")
    x = np.array([[30.0, 0.0], [0.0, 1.0], [np.inf, 0.0]])
    b = sf.Block(x, np.array(["dominant", "plain", "+inf"], dtype=object),
                 labels=np.array([0, 1, 0]))
    out = sf.grade_blocks(s, case, [b], 4.0, cache=False)
    record = build_row_record(out, None, "failed", "t")
    schema = json.loads((Path(sf.__file__).with_name("results.schema.json")).read_text())
    jsonschema.validate(record, {"$defs": schema["$defs"],
                                 **schema["properties"]["records"]["items"]})
    argv = shlex.split(record["worst"]["repro"])[3:]
    code = cli.main(argv)
    probe = json.loads(capsys.readouterr().out)
    assert code == 0 and probe["observed"] == record["worst"]["observed"]


# --------------------------------------------------------------------------- rows of probabilities

# easy rows: every probability well inside keras' clip [1e-7, 1 - 1e-7], two not summing to 1
P_ROWS = np.array([[0.5, 0.25, 0.25], [0.125, 0.375, 0.5], [0.625, 0.25, 0.125],
                   [0.25, 0.5, 0.75], [0.5, 0.5, 0.625]])
P_LABELS = np.array([0, 2, 1, 2, 0])
P_TARGETS = np.array([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.25, 0.5, 0.25],
                      [0.125, 0.125, 0.75]])


def _expected_probs(p: np.ndarray, target: np.ndarray, grad: bool) -> np.ndarray:
    """The loss of p / sum(p) and its gradient in p, W/P - t/p, in float64."""
    t = np.eye(p.shape[1])[target] if target.ndim == 1 else target
    total = p.sum(axis=1, keepdims=True)
    if grad:
        return t.sum(axis=1, keepdims=True) / total - t / p
    return -(t * np.log(p / total)).sum(axis=1)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", PROB_NAMES)
def test_probability_row_subject_values_and_grads(name: str, dtype: str):
    """Class indices (sparse_categorical_crossentropy) and probabilities (categorical_
    crossentropy) reach the call, rows are not transposed, and the gradient is d/dp."""
    s = _runnable(name, dtype)
    assert s.family == sf.PROBS_FAMILY
    p = sf.representable(P_ROWS, dtype)
    for target in (P_LABELS, sf.representable(P_TARGETS, dtype)):
        b = sf.Block(p, np.array(["t"] * len(p), dtype=object),
                     labels=target if target.ndim == 1 else None,
                     probs=target if target.ndim == 2 else None)
        for grad in (False, True):
            got = sf.call(s, dtype, "cpu", b, grad)
            want = _expected_probs(p, target, grad)
            tol = 16 * EPS[dtype] * (1 + np.abs(want).max())
            assert got.shape == want.shape
            assert np.all(np.abs(got - want) <= tol), (target.ndim, grad, got, want)


def test_probability_rows_are_what_the_family_documents():
    """K = 2, 3, 10, 1000; rows exact in the dtype, each once; the ci profile's K = 1000
    rows a subset of the audit profile's; targets of both kinds; the reference certifies
    every point (none uncertain)."""
    from audit import softmax_probs_rows as pr

    for dtype in ("float16", "float32"):
        deep = {k: sf.prob_row_set(k, dtype, True) for k in pr.CLASS_COUNTS}
        for k, (names, rows) in deep.items():
            assert rows.shape[1] == k and len(set(names)) == len(names)
            assert len(np.unique(rows.view(np.uint64), axis=0)) == len(rows)
            assert np.array_equal(sf.representable(rows, dtype), rows, equal_nan=True)
            pats = [n for n, _ in pr.patterns(k, dtype, sf._patterns(k, dtype, True),
                                              sf.representable)]
            for must in ("one-hot", "masked half", "sum 2", "counts", "tiny", "min normal",
                         "subnormal", "1 - ulp", "at 1e-07", "1 - 1e-7", "nan", "+inf",
                         "negative", "all zero", "softmax mask one", "softmax dominant 30"):
                assert must in pats, (k, must)
            assert {"nan", "+inf", "negative", "all zero", "counts"} <= set(names)
        ci_names, _ = sf.prob_row_set(1000, dtype, False)
        assert 0 < len(ci_names) < len(deep[1000][0])
        assert set(ci_names) <= set(deep[1000][0])
    bs = sf.row_blocks(sf.PROBS_FAMILY, "soft", "float32")
    assert [b.k for b in bs] == list(pr.CLASS_COUNTS) and all(b.probs is not None for b in bs)
    bs = sf.row_blocks(sf.PROBS_FAMILY, "values", "float16")
    assert all(b.labels is not None for b in bs)
    for b in bs[:3]:
        _, unsure = sf.rounded(sf.PROBS_FAMILY, "float16", b, True)
        assert not unsure.any()
    assert sf.in_ci(sf.PROBS_FAMILY, "values", "float64")
    assert not sf.in_ci(sf.PROBS_FAMILY, "soft_grads", "float16")


def test_probability_row_variables():
    b = sf.Block(np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 3.0]]),
                 np.array(["a", "b"], dtype=object), labels=np.array([1, 2]))
    v = sf.variables(b, True)
    assert v["psum"].tolist() == [1.0] * 3 + [4.0] * 3
    assert v["ql"].tolist() == [0.25] * 3 + [0.75] * 3
    assert v["zeros"].tolist() == [0.0] * 3 + [1.0] * 3
    assert v["qj"].tolist() == [0.5, 0.25, 0.25, 0.0, 0.25, 0.75]
    b = sf.Block(b.logits, b.pattern, probs=np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]))
    v = sf.variables(b, False)
    assert v["q_min"].tolist() == [0.25, 0.0] and v["q_max"].tolist() == [0.5, 0.75]


def test_probe_probability_row_subject(capsys):
    _runnable("keras.categorical", "float32")
    code, out = _probe(capsys, "keras.categorical", "--dtype", "float32",
                       "--probs-row=0.5,0.25*2", "--label", "1")
    assert code == 0 and out["input"] == [0.5, 0.25, 0.25] and out["family"] == sf.PROBS_FAMILY
    assert out["status"] == "ok" and abs(out["expected"] - math.log(4)) < 1e-6
    code, out = _probe(capsys, "keras.categorical", "--dtype", "float32",
                       "--probs-row=1,0", "--label", "1")
    assert code == 0 and out["expected"] == "inf" and out["status"] == "missing_inf"
    code, out = _probe(capsys, "keras.categorical", "--dtype", "float32",
                       "--probs-row=0.5,0.5", "--probs=0.25,0.75", "--grad")
    assert code == 0 and out["expected"] == [0.5, -0.5]
    for argv, message in ((["--logits=0.5,0.5", "--label", "0"], "--probs-row"),
                          (["--label", "0"], "needs its input row"),
                          (["--probs-row=0.5,0.5", "--label", "2"], "must be in")):
        code, err = _probe(capsys, "keras.categorical", "--dtype", "float32", *argv)
        assert code == 2 and re.search(message, err), err
    code, err = _probe(capsys, "torch.cross_entropy", "--dtype", "float32",
                       "--probs-row=0.5,0.5", "--label", "0")
    assert code == 2 and "--logits" in err


def test_probability_row_repro_reproduces(capsys):
    """The record's repro for a probability-row subject is `probe --probs-row=...` and
    prints the observed value the record holds."""
    s = _runnable("keras.categorical", "float32")
    case = sf.RowCase(s.name, "grads", "float32")
    b = sf.Block(np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]]),
                 np.array(["one-hot", "plain"], dtype=object), labels=np.array([1, 0]))
    out = sf.grade_blocks(s, case, [b], 4.0, cache=False)
    record = build_row_record(out, None, "failed", "t")
    cmd = record["worst"]["repro"]
    assert "--probs-row=" in cmd and "--logits" not in cmd
    code = cli.main(shlex.split(cmd)[3:])
    probe = json.loads(capsys.readouterr().out)
    j = record["worst"]["component"]
    assert code == 0 and probe["observed"][j] == record["worst"]["observed"]
