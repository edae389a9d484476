"""Draft strict contracts for the row families from a fresh measurement (the row
counterpart of audit/draft_contracts.py): `python -m audit.softmax_draft SUBJECT,...`
prints TOML [[contract]] entries, one per subject x check x status x kind of row, the
dtypes where the same region and bound hold merged. Reasons and links come from
REASONS (reviewed by hand); a finding without one says so, to be written.
"""

from __future__ import annotations

import ast
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from audit import softmax_family as sf
from audit.contracts import _Evaluator
from audit.dtypes import DTYPES, ulp_budget
from audit.subjects import get

FINITE = "nans == 0 and pinf == 0 and masked < k"
# (region, label): the first that holds classifies a failing point ("finite logits"
# allows -inf masks: the same kernels compute both)
CLASSES = (("nans > 0", "a NaN logit"), ("pinf > 1", "two +inf logits"),
           ("pinf == 1", "a +inf logit"), ("masked == k", "every logit -inf"),
           (FINITE, "finite logits"))
MARKER = "# Row families (DESIGN.md section 10)"

_PT = "https://github.com/pytorch/pytorch/blob/029586da4fc4c0b3ab3aab13f75f5af1144b0ea5/" \
      "aten/src/ATen/native/cpu/SoftMaxKernel.cpp"
_PT_NLL = "https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/LossNLL.cpp"
_PT_LSE = "https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/native/ReduceOps.cpp"
_TF = "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/"
_KERAS = "https://github.com/keras-team/keras/blob/v3.15.1/keras/src/"
_OPTAX = "https://github.com/google-deepmind/optax/blob/v0.2.8/optax/losses/_classification.py"
_JAX = "https://github.com/jax-ml/jax/blob/jax-v0.10.2/jax/_src/"
_PD = "https://github.com/PaddlePaddle/Paddle/blob/7688495538f4d6c1893f084dd238a402e8f68ab6/" \
      "paddle/phi/kernels/"
_INF = "x - max(x) is inf - inf = NaN at a +inf logit (the limit is finite or inf), and the NaN " \
       "spreads through the row's sum"
_TWO = "two +inf logits: x - max(x) = inf - inf = NaN for both, where the limit exists"
_LOG = "log(sum(exp(x - max))) is the log of the rounded sum, not log1p of its tail: a loss " \
       "(or log_softmax) of about exp(-margin) keeps only the tail's bits that survive in 1 + " \
       "tail, and is 0 once the tail is below ulp(1)/2 (true value about exp(-margin))"
_SUM16 = "the sum of exp(x - max) is held in the input dtype: 10**5 terms of 1 overflow float16 " \
         "(max 65504), so log(sum) = inf"
_SOFT_MASK = "probabilities times log_softmax: a class with probability 0 and logit -inf gives " \
             "0 * -inf = NaN (the exact term is 0: masking)"
_SOFT_GRAD = "gradient formed as softmax - target (or exp(log_softmax) * sum - target): it " \
             "cancels where softmax is close to the target, and assumes the probabilities sum " \
             "to 1 (rounded to the dtype they do not: the exact gradient is W softmax - t)"
_GRAD = "gradient formed from the rounded forward values (exp(log_softmax) - onehot, or " \
        "exp(x - max) / sum - onehot): the forward's error becomes the gradient's, and " \
        "softmax - 1 cancels at the label's class (0 where softmax rounds to 1)"
_GRAD_INF = "the gradient of a row with a +inf logit is NaN (from the forward's inf - inf)"
_PD_CLIP = "softmax clips x - max(x) at -64 before exp (ValueClip / vec_clip) and the loss is " \
           "-log(softmax) with +-inf replaced by +-1e20 (TolerableValue): a logit more than " \
           "64 below the max (or -inf) counts as exp(-64), so losses and log_softmax stop " \
           "near 64 and their gradients near exp(-64)"
_PD_SM = "cross entropy on the rounded softmax probabilities, -log(p_label) (not log-sum-exp " \
         "form): a confident-right loss is -log(1 - tiny) = 0, a small probability loses " \
         "relative precision"

# (framework, op, target kind, status, row label) -> (reason, link); "*" matches any
REASONS: dict[tuple[str, str, str, str, str], tuple[str, str]] = {
    ("torch", "*", "*", "*", "a +inf logit"): (_INF, f"{_PT}#L84-L85"),
    ("torch", "*", "*", "*", "two +inf logits"): (_TWO, f"{_PT}#L84-L85"),
    ("torch", "*", "*", "*", "a NaN logit"): (_INF, f"{_PT}#L84-L85"),
    ("torch", "*", "*", "spurious_inf", "finite logits"): (_SUM16, f"{_PT}#L66"),
    ("torch", "*", "*", "*", "finite logits"): (_LOG, f"{_PT}#L109-L111"),
    ("torch", "cross_entropy", "probs", "spurious_nan", "finite logits"): (
        _SOFT_MASK + ": cross_entropy_loss_prob_target sums -(log_softmax * target * weight)",
        _PT_NLL),
    ("torch", "cross_entropy", "smoothed", "spurious_inf", "finite logits"): (
        "label smoothing adds -sum_k log_softmax_k * E/K: the sum of K log_softmax values of "
        "about -max overflows before it is scaled by E/K (cross_entropy_loss_label_smoothing)",
        _PT_NLL),
    ("torch", "cross_entropy", "ignored", "spurious_nan", "every logit -inf"): (
        "an ignored row (label = ignore_index) still runs log_softmax's backward, grad - "
        "exp(log_softmax) * sum(grad): NaN (every logit -inf) times a zero upstream gradient "
        "is NaN, where the ignored row's exact gradient is 0", f"{_PT}#L254-L256"),
    ("torch", "logsumexp", "*", "*", "finite logits"): (
        "logsumexp = log(sum(exp(x - max))) + max: the log of the rounded sum, not log1p of "
        "its tail (0 once the tail is below ulp(1)/2)", _PT_LSE),
    ("torch", "logsumexp", "*", "spurious_inf", "finite logits"): (_SUM16, _PT_LSE),
    ("tf", "*", "*", "*", "a +inf logit"): (_INF, f"{_TF}core/kernels/sparse_xent_op.h#L199-L204"),
    ("tf", "*", "*", "*", "two +inf logits"): (
        _TWO, f"{_TF}core/kernels/sparse_xent_op.h#L199-L204"),
    ("tf", "*", "*", "*", "finite logits"): (_LOG, f"{_TF}core/kernels/sparse_xent_op.h#L78"),
    ("tf", "cross_entropy", "probs", "*", "finite logits"): (
        _LOG, f"{_TF}core/kernels/xent_op.h#L100-L101"),
    ("tf", "cross_entropy", "probs", "spurious_nan", "finite logits"): (
        _SOFT_MASK + ": labels * (log(sum) - shifted logits)",
        f"{_TF}core/kernels/xent_op.h#L100-L101"),
    ("tf", "log_softmax", "*", "*", "finite logits"): (
        _LOG, f"{_TF}core/kernels/softmax_op_functor.h#L60-L72"),
    ("tf", "log_softmax", "*", "*", "a +inf logit"): (
        _INF, f"{_TF}core/kernels/softmax_op_functor.h#L60-L72"),
    ("tf", "log_softmax", "*", "*", "two +inf logits"): (
        _TWO, f"{_TF}core/kernels/softmax_op_functor.h#L60-L72"),
    ("tf", "*", "*", "spurious_inf", "finite logits"): (
        _SUM16, f"{_TF}core/kernels/softmax_op_functor.h#L60-L72"),
    ("tf", "logsumexp", "*", "*", "finite logits"): (
        "reduce_logsumexp = log(reduce_sum(exp(x - max))) + max: the log of the rounded sum, "
        "not log1p of its tail", f"{_TF}python/ops/math_ops.py#L3415-L3427"),
    ("tf", "logsumexp", "*", "spurious_inf", "finite logits"): (
        _SUM16, f"{_TF}python/ops/math_ops.py#L3415-L3427"),
    ("keras", "*", "*", "*", "a +inf logit"): (
        _INF + " (tf.nn.sparse_softmax_cross_entropy_with_logits underneath)",
        f"{_KERAS}backend/tensorflow/nn.py#L1438"),
    ("keras", "*", "*", "*", "two +inf logits"): (
        _TWO + " (tf.nn.sparse_softmax_cross_entropy_with_logits underneath)",
        f"{_KERAS}backend/tensorflow/nn.py#L1438"),
    ("keras", "*", "*", "*", "finite logits"): (
        _LOG + " (tf.nn.(sparse_)softmax_cross_entropy_with_logits underneath)",
        f"{_KERAS}backend/tensorflow/nn.py#L1438"),
    ("keras", "*", "smoothed", "*", "finite logits"): (
        "the smoothed target y*(1-E) + E/K is formed in the dtype before "
        "tf.nn.softmax_cross_entropy_with_logits, and that kernel assumes it sums to 1",
        f"{_KERAS}losses/losses.py#L2202-L2203"),
    ("jax", "*", "*", "*", "a +inf logit"): (
        _INF, f"{_JAX}ops/special.py#L86-L97"),
    ("jax", "*", "*", "*", "two +inf logits"): (_TWO, f"{_JAX}nn/functions.py#L569-L571"),
    ("jax", "cross_entropy", "label", "*", "finite logits"): (
        "logsumexp(logits) - logits[label]: the difference of two rounded numbers of the size "
        "of the largest logit (cancellation), on top of log(sum) being the log of the rounded "
        "sum", f"{_OPTAX}#L400-L404"),
    ("jax", "cross_entropy", "probs", "*", "finite logits"): (
        "-(labels * log_softmax(logits)).sum(): " + _LOG, f"{_OPTAX}#L295-L296"),
    ("jax", "cross_entropy", "probs", "spurious_nan", "finite logits"): (
        _SOFT_MASK, f"{_OPTAX}#L295-L296"),
    ("jax", "log_softmax", "*", "*", "finite logits"): (_LOG, f"{_JAX}nn/functions.py#L569-L571"),
    ("jax", "*", "*", "spurious_inf", "finite logits"): (_SUM16, f"{_JAX}ops/special.py#L90-L97"),
    ("jax", "logsumexp", "*", "*", "finite logits"): (
        "log(sumexp) + amax: the log of the rounded sum, not log1p of its tail",
        f"{_JAX}ops/special.py#L86-L97"),
    ("paddle", "*", "*", "*", "*"): (_PD_CLIP, f"{_PD}funcs/softmax_impl.h#L34-L38"),
    ("paddle", "cross_entropy", "*", "*", "finite logits"): (
        _PD_SM, f"{_PD}cpu/cross_entropy_kernel.cc#L91-L93"),
    ("paddle", "cross_entropy", "*", "missing_inf", "*"): (
        _PD_CLIP, f"{_PD}funcs/cross_entropy.h#L26-L36"),
    ("paddle", "*", "*", "spurious_nan", "*"): (
        _INF + " (paddle's softmax / log_softmax / logsumexp subtract the max first)",
        f"{_PD}funcs/softmax_impl.h#L250-L262"),
    ("paddle", "logsumexp", "*", "*", "*"): (
        "x_max + log(sum(exp(x - x_max))): the log of the rounded sum, and inf - inf = NaN "
        "with a +inf (or every logit -inf)", f"{_PD}impl/logsumexp_kernel_impl.h#L54-L57"),
}
for _fw in ("torch", "tf", "keras", "jax", "paddle"):
    REASONS.setdefault((_fw, "cross_entropy", "probs", "*", "finite logits"),
                       REASONS.get((_fw, "*", "*", "*", "finite logits"),
                                   REASONS[("paddle", "*", "*", "*", "*")]))


def reason_for(subject: str, check: str, status: str, label: str) -> tuple[str, str]:
    """The most specific REASONS entry (framework, op, kind, status, label)."""
    fw, op = subject.split(".", 1)
    kind = sf.CHECKS[check][1]
    quantity = sf.CHECKS[check][0]
    if get(subject).family == sf.PROBS_FAMILY:
        from audit import softmax_probs_draft

        return softmax_probs_draft.reason(kind, quantity, status, label)
    if fw == "paddle" and quantity == "grad":
        return ("gradient = softmax - target on paddle's softmax, which clips x - max(x) at -64 "
                "before exp (a -inf or far-below logit counts as exp(-64)) and is NaN from inf - "
                "inf at +inf logits; " + (_SOFT_GRAD if kind in ("probs", "smoothed") else _GRAD),
                f"{_PD}funcs/softmax_impl.h#L250-L262")
    if quantity == "grad" and label == "finite logits" and status == "spurious_nan":
        reason, link = REASONS.get((fw, op, "probs", "spurious_nan", label)) or \
            REASONS.get((fw, "*", "probs", "spurious_nan", label)) or (_SOFT_MASK, "")
        return reason + " (NaN in the gradient too)", link
    if quantity == "grad" and label == "finite logits":
        grad = _SOFT_GRAD if kind in ("probs", "smoothed") else _GRAD
        link = REASONS.get((fw, op, kind, "*", label)) or REASONS.get((fw, "*", "*", "*", label))
        return grad, link[1] if link else ""
    if quantity == "grad" and label in ("a +inf logit", "two +inf logits"):
        link = REASONS.get((fw, "*", "*", "*", label)) or REASONS.get((fw, "*", "*", "*", "*"))
        return _GRAD_INF, link[1] if link else ""
    for key in ((fw, op, kind, status, label), (fw, op, kind, "*", label),
                (fw, op, "*", status, label), (fw, op, "*", "*", label),
                (fw, "*", "*", status, label), (fw, "*", kind, "*", label),
                (fw, "*", "*", "*", label), (fw, op, "*", status, "*"),
                (fw, "*", "*", status, "*"), (fw, op, "*", "*", "*"), (fw, "*", "*", "*", "*")):
        if key in REASONS:
            return REASONS[key]
    return f"TODO {status} on rows with {label}", ""


def classes_for(family: str, check: str, dtype: str) -> tuple[tuple[str, str], ...]:
    """The (region, label) classes of a family's check (rows of probabilities have
    their own, per dtype: audit/softmax_probs_draft.py)."""
    if family == sf.PROBS_FAMILY:
        from audit import softmax_probs_draft

        quantity, kind = sf.CHECKS[check]
        return softmax_probs_draft.classes(kind, quantity, dtype)
    return CLASSES


def _classify(v: dict[str, np.ndarray], idx: np.ndarray,
              classes: tuple[tuple[str, str], ...] = CLASSES) -> dict[str, np.ndarray]:
    """{row label: the failing points of that kind}, by the first `classes` region."""
    names = {k: a[idx] for k, a in v.items()}
    left = np.ones(idx.size, bool)
    out = {}
    for region, label in classes:
        tree = ast.parse(region, mode="eval").body
        hit = left & np.asarray(_Evaluator(names).visit(tree), dtype=bool)
        if hit.any():
            out[label] = idx[hit]
        left &= ~hit
    return out


def _power_of_two(u: float) -> float:
    return float(2.0 ** math.ceil(math.log2(max(u, 1.0))))


def measure(names: list[str], dtypes: tuple[str, ...] = DTYPES, deep: bool = False
            ) -> list[dict]:
    """Every finding group: subject, check, dtype, status, label, region, max_ulp, n, of."""
    groups = []
    for name in names:
        s = get(name)
        for check in sf.FAMILIES[s.family].checks:
            if check == "reduced" or sf.not_taken(s, check):  # reduced: drafted by hand
                continue
            for dtype in dtypes:
                if s.skip_reason(dtype, "cpu"):
                    continue
                case = sf.RowCase(name, check, dtype)
                out = sf.run_case(s, case, ulp_budget(dtype), deep)
                st = out.graded.status.astype(str)
                for status in sorted(set(st) - {"ok"}):
                    idx = np.flatnonzero(st == status)
                    classes = classes_for(s.family, check, dtype)
                    for label, pick in _classify(out.variables, idx, classes).items():
                        region = next(r for r, lab in classes if lab == label)
                        ks = sorted({int(k) for k in out.variables["k"][pick]})
                        if ks[0] >= sf.VOCAB:  # only the vocabulary-sized row
                            region = f"({region}) and k >= {sf.VOCAB}"
                        ulp = out.graded.ulp[pick]
                        bounded = status == "inaccurate" and bool(np.isfinite(ulp).all())
                        groups.append({
                            "subject": name, "check": check, "dtype": dtype,
                            "status": status, "label": label, "region": region,
                            "max_ulp": _power_of_two(float(ulp.max())) if bounded else None,
                            "n": int(pick.size), "of": int(st.size)})
    return groups


def with_deep(ci: list[dict], deep: list[dict]) -> list[dict]:
    """The contracts both profiles need: a case the `ci` profile runs keeps the ci rows'
    groups (a group only the audit rows show would be unobserved there: strict), with
    the bounds of both; a case only the `audit` profile runs takes the audit groups."""
    def key(g: dict) -> tuple:
        return g["subject"], g["check"], g["dtype"], g["status"], g["label"]

    def runs_in_ci(g: dict) -> bool:
        return sf.in_ci(get(g["subject"]).family, g["check"], g["dtype"])

    worst = {key(g): g["max_ulp"] for g in deep if g["max_ulp"] is not None}
    out = []
    for g in ci:
        if runs_in_ci(g):
            if g["max_ulp"] is not None and key(g) in worst:
                g = {**g, "max_ulp": max(g["max_ulp"], worst[key(g)])}
            out.append(g)
    return out + [g for g in deep if not runs_in_ci(g)]


def merged(groups: list[dict]) -> list[dict]:
    """The same subject, check, status, row kind, region and bound in several dtypes:
    one entry."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for g in groups:
        by[g["subject"], g["check"], g["status"], g["label"], g["region"], g["max_ulp"]
           ].append(g)
    out = []
    for (subject, check, status, label, region, max_ulp), gs in by.items():
        dts = [d for d in DTYPES if any(g["dtype"] == d for g in gs)]
        out.append({"subject": subject, "check": check, "status": status, "label": label,
                    "region": region, "max_ulp": max_ulp, "dtypes": dts,
                    "counts": ", ".join(f"{g['dtype']}: {g['n']} of {g['of']}" for g in gs)})
    return out


def toml(entries: list[dict]) -> str:
    lines = []
    for e in entries:
        reason, link = reason_for(e["subject"], e["check"], e["status"], e["label"])
        dts = "-".join(e["dtypes"]) if len(e["dtypes"]) < 4 else "all"
        lines += ["[[contract]]",
                  f'id = "{e["subject"]}[{dts}] {e["check"]} -> {e["status"]} '
                  f'({e["label"]})"',
                  f'subjects = ["{e["subject"]}"]', f'checks = ["{e["check"]}"]',
                  f"dtypes = {list(e['dtypes'])!r}".replace("'", '"'),
                  'devices = ["cpu"]', f'status = ["{e["status"]}"]',
                  f'region = "{e["region"]}"']
        if e["max_ulp"] is not None:
            lines.append(f"max_ulp = {e['max_ulp']:.1f}")
        lines += [f'reason = "{reason} ({e["counts"]} points)"', f'link = "{link}"', ""]
    return "\n".join(lines)


VERSIONS = {"torch": "torch 2.13.0", "tf": "tensorflow-cpu 2.21.0",
            "keras": "keras 3.15.1 (TensorFlow backend)", "jax": "jax 0.10.2 + optax 0.2.8",
            "paddle": "paddlepaddle 3.3.1"}


def write(entries: list[dict]) -> list[Path]:
    """Replace the row-family block at the end of each framework's contracts file (from
    the MARKER's banner on) with the drafted entries."""
    from audit.contracts import CONTRACTS_DIR

    by: dict[str, list[dict]] = defaultdict(list)
    for e in entries:
        by[e["subject"].split(".")[0]].append(e)
    written = []
    for fw, es in by.items():
        path = CONTRACTS_DIR / f"{fw}.toml"
        text = path.read_text(encoding="utf-8")
        if MARKER in text:
            text = text[:text.rindex("\n# ====", 0, text.index(MARKER)) + 1]
        banner = "=" * 85
        head = (f"\n# {banner}\n{MARKER}: softmax cross-entropy, log_softmax, logsumexp.\n"
                "# Graded by audit/suite/test_cross_entropy.py on the rows of "
                "audit/softmax_family.py,\n"
                f"# measured on {VERSIONS.get(fw, fw)} (CPU). Drafted with `python -m "
                "audit.softmax_draft`,\n# reasons and links reviewed by hand. Regions use "
                "the row variables (audit/batch.py\n# ROW_VARIABLES): k classes, masked "
                "(-inf logits), pinf (+inf logits), nans (NaN logits).\n"
                f"# {banner}\n\n")
        path.write_text(text.rstrip("\n") + "\n" + head + toml(es), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """SUBJECT,... [DTYPE,...] [--write] [--deep]: print (or write into
    audit/contracts_data) the drafted contracts; --deep takes the inaccurate bounds from
    the audit profile's rows as well."""
    argv = sys.argv[1:] if argv is None else argv
    to_files, deep = "--write" in argv, "--deep" in argv
    argv = [a for a in argv if a not in ("--write", "--deep")]
    names = argv[0].split(",")
    dtypes = tuple(argv[1].split(",")) if len(argv) > 1 else DTYPES
    groups = measure(names, dtypes)
    if deep:
        groups = with_deep(groups, measure(names, dtypes, deep=True))
    entries = merged(groups)
    if to_files:
        for path in write(entries):
            print(f"wrote {path}")
    else:
        print(toml(entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
