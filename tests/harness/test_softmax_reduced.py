"""Self-tests of the cross_entropy `reduced` check (audit/softmax_reduced.py): the declared
reductions and what their means divide by reach the frameworks (benign rows against
numpy: a wrong reduction name, a dropped weight or a padded batch shows as an O(1)
difference), the batches are fixed, and the records validate and reproduce."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from audit import softmax_family as sf
from audit import softmax_reduced as sr
from audit import subjects
from reference.formats import round_to

ROWS = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5], [-2.0, -2.0, 4.0], [0.25, 0.0, -0.5]])
LABELS = np.array([0, 2, sf.IGNORE_INDEX, 1])
PROBS = np.array([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.25, 0.5, 0.25]])
WEIGHT = np.array([1.0, 0.5, 2.0])
REDUCING = ("torch.cross_entropy", "keras.cross_entropy", "paddle.cross_entropy")


def _runnable(name: str) -> subjects.Subject:
    s = subjects.get(name)
    reason = s.skip_reason("float64", "cpu")
    if reason is not None:
        pytest.skip(reason)
    return s


def _losses(labels: np.ndarray | None, probs: np.ndarray | None, weight: np.ndarray | None
            ) -> np.ndarray:
    lsm = ROWS - np.log(np.exp(ROWS).sum(axis=1, keepdims=True))
    w = np.ones(3) if weight is None else weight
    if probs is not None:
        return -(probs * w * lsm).sum(axis=1)
    on = labels != sf.IGNORE_INDEX
    out = np.zeros(len(ROWS))
    out[on] = -w[labels[on]] * lsm[on, labels[on]]
    return out


def test_reductions_are_declared_as_data():
    for name in REDUCING:
        s = subjects.get(name)
        assert "none" in s.reductions and len(s.reductions) == 3
        assert sr.case_reductions(s) == tuple(r for r in s.reductions if r != "none")
        assert set(s.denominators) <= set(s.reductions)
    for name in ("tf.cross_entropy", "jax.cross_entropy"):
        s = subjects.get(name)
        assert s.reductions == ("none",) and sr.case_reductions(s) == ("mean", "sum")
        assert "per-example losses" in sf.not_taken(s, "reduced")
    bare = replace(subjects.get("torch.cross_entropy"), name="x.cross_entropy",
                   reductions=("none",))
    assert "declares no reduction" in sf.not_taken(bare, "reduced")


@pytest.mark.parametrize("name", REDUCING)
def test_the_frameworks_reduce_as_declared(name: str):
    """Each reduction of a block of 4 rows (one ignored) equals numpy's sum of the row
    losses over the declared denominator: the count of rows not ignored, the targets'
    class weights, or N."""
    s = _runnable(name)
    kinds = [("label", LABELS, None, None), ("probs", None, PROBS, None)]
    if s.weight:
        kinds.append(("weighted", LABELS, None, WEIGHT))
    for red in sr.case_reductions(s):
        for kind, labels, probs, weight in kinds:
            b = sf.Block(ROWS, np.array(["t"] * 4, dtype=object), labels=labels, probs=probs,
                         weight=weight, ignore_index=None if labels is None
                         else sf.IGNORE_INDEX)
            got = sr.call(s, "float64", "cpu", b, red)
            total = _losses(labels, probs, weight).sum()
            ref_red, den = sr.semantics(s, red, kind)
            want = total if ref_red == "sum" else total / sr.denominator(b, "mean", den)
            assert got == pytest.approx(want, rel=1e-12), (red, kind, got, want)
            exact = sr.reference_value("float64", sr.Reduced("t", b, kind), ref_red, den)
            assert got == pytest.approx(round_to(exact, "float64"), rel=1e-12)


def test_the_batches_are_fixed_and_shaped():
    a, b = sr.batches("float32"), sr.batches("float32")
    assert [r.name for r in a] == [r.name for r in b]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.block.logits, y.block.logits)
    names = {r.name: r for r in a}
    assert len([n for n in names if n.startswith("random")]) == 8
    assert all(len(names[f"random {i}"].block) == sr.ROWS for i in range(8))
    assert {names[f"random {i}"].block.k for i in range(8)} == set(sr.RANDOM_KS)
    for i in range(8):  # ordinary rows only
        x = names[f"random {i}"].block.logits
        assert np.isfinite(x).all() and (x.max(axis=1) - x.min(axis=1) <= sr.SPREAD).all()
    assert np.isneginf(names["masked and dominant"].block.logits).any()
    assert (names["all ignored"].block.labels == sf.IGNORE_INDEX).all()
    keras = sr.subject_batches(subjects.get("keras.cross_entropy"), "float32")
    assert all(r.block.weight is None for r in keras)
    assert "zero weights" not in {r.name for r in keras}


def test_record_is_schema_valid_and_its_repro_reproduces():
    jsonschema = pytest.importorskip("jsonschema")
    s = _runnable("torch.cross_entropy")
    case = sf.RowCase(s.name, "reduced", "float32", reduction="mean")
    out = sr.run_case(s, case, 4.0)
    assert out.graded.code.size == len(sr.subject_batches(s, "float32")) and not out.uncertain
    record = sr.build_record(out, None, "passed", "t")
    schema = json.loads((Path(sf.__file__).with_name("results.schema.json")).read_text())
    jsonschema.validate(record, {"$defs": schema["$defs"],
                                 **schema["properties"]["records"]["items"]})
    assert record["reduction"] == "mean" and record["check"] == "reduced"
    argv = shlex.split(record["worst"]["repro"])
    assert argv[:2] == ["python", "-c"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(argv[2], {})  # the repro's own code, in this process
    probe = json.loads(printed.getvalue())
    assert probe["observed"] == record["worst"]["observed"]
    assert probe["expected"] == record["worst"]["expected"]
    assert probe["batch"] == record["worst"]["pattern"]
