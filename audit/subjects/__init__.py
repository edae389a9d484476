"""The subject registry: one frozen record per audited loss, in the spirit of OpInfo.

A subject is `<prefix>.<op>` (DESIGN.md sections 6 and 9). Each record says which
framework runs it, which family it is graded as (audit.families), which API it calls,
which dtypes / reductions / arguments it accepts and why not where it does not. Its
`call` is a small function on framework tensors; the plumbing (exact casts, devices,
layouts, autograd, back to float64) lives in the framework's runner (audit.runners), and
the call itself runs in the framework's worker process (audit.workers).

Built-in subjects are the modules of this package, one per framework. Anyone's loss is a
subject too: `@subject(...)` in a module named by `--subject-module MODULE` (or a .py
path), or in a package exposing the entry-point group `bce_audit.subjects`. Importing
this package imports no framework.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit import dtypes as _dtypes
from audit import families, layouts, runners, workers

REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")
KERAS_REDUCTIONS: tuple[str, ...] = (*REDUCTIONS, "keras_default")
ENTRY_POINT_GROUP = "bce_audit.subjects"

# Names a user may reasonably try that deliberately are not subjects, and why.
NOT_SUBJECTS: dict[str, str] = {
    "tf.bce": (
        "TensorFlow has no tf.nn loss on probabilities; TF's probability BCE is Keras' "
        "binary_crossentropy, audited as keras.bce (tf.sigmoid_bce uses it after tf.math.sigmoid)"
    ),
}


class SubjectError(ValueError):
    """A subject or subject module that cannot be registered (a user mistake)."""


@dataclass(frozen=True)
class Subject:
    """One audited loss: what it calls, what it supports, and why not."""

    name: str
    framework: str
    family: str
    api: str
    dtypes: tuple[str, ...]
    reductions: tuple[str, ...]
    weight: bool
    pos_weight: bool
    notes: str
    call: runners.CallFn = field(repr=False, compare=False)
    weight_reason: str = ""  # why `weight` is unsupported; "" when supported
    pos_weight_reason: str = ""
    requires: tuple[str, ...] = ()  # frameworks needed to run (always includes `framework`)
    # (dtype, device, reason): measured missing kernels. Empty on the measured versions.
    unsupported: tuple[tuple[str, str, str], ...] = ()
    module: str = ""  # where it was registered: a user's subject module needs to be named
    # takes `label_smoothing=E` in its call (graded against the exact smoothed target)
    label_smoothing: bool = False
    # row subjects' reductions (audit/softmax_reduced.py): reduction -> batch kind
    # ("label", "weighted", "probs") -> what that mean divides by (the denominator of
    # reference.cross_entropy_reduce); a reduction not listed is a sum
    denominators: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)

    @property
    def op(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def reference_op(self) -> str:
        """The reference op this subject is graded against (a parametric family: at its
        default setting; checks grade each setting against its own op)."""
        return families.get(self.family).reference_op()

    @property
    def family_record(self) -> families.Family:
        return families.get(self.family)

    def skip_reason(self, dtype: str, device: str, *, weight: bool = False,
                    pos_weight: bool = False, reduction: str = "none",
                    label_smoothing: bool = False, execution: str = "eager") -> str | None:
        """Why this subject cannot run here (framework, device, dtype, argument), or None."""
        if dtype not in self.dtypes:
            return f"{self.name} does not support dtype {dtype} (supports {', '.join(self.dtypes)})"
        for framework in self.requires:
            reason = device_reason(framework, device)
            if reason is not None:
                return reason
        for bad_dtype, bad_device, reason in self.unsupported:
            if (bad_dtype, bad_device) == (dtype, device):
                return reason
        if reduction not in self.reductions:
            return f"{self.name} has no reduction {reduction!r} (has {', '.join(self.reductions)})"
        if weight and not self.weight:
            return self.weight_reason
        if pos_weight and not self.pos_weight:
            return self.pos_weight_reason
        if label_smoothing and not self.label_smoothing:
            return f"{self.name} takes no label smoothing ({self.api})"
        if execution != "eager":
            reason = runners.get(self.framework).execution_reason(execution, device)
            if reason is None and execution.startswith("autocast_") and dtype != "float32":
                reason = f"{execution} lowers float32 inputs: graded from float32 only"
            return reason
        return None

    def evaluate(self, dtype: str, device: str, inputs: np.ndarray, targets: np.ndarray, *,
                 weight: np.ndarray | None = None, pos_weight: np.ndarray | None = None,
                 reduction: str = "none", grad: bool = False,
                 layout: str = "contiguous", params: dict[str, Any] | None = None,
                 execution: str = "eager", returned: list[str] | None = None
                 ) -> np.ndarray:
        """Run the framework once on the whole batch (in its worker); float64 results in
        point order: n elementwise losses, a 0-d reduced loss, or with `grad` the n
        derivatives d(loss)/d(input). Inputs are float64 arrays exact in `dtype`.

        `execution` (runners.EXECUTIONS) runs it compiled or under autocast; the dtype
        the framework returned is appended to `returned` when given (autocast decides it).

        Raises workers.FrameworkError (the framework raised), workers.WorkerCrash (its
        process died or hung) or workers.WorkerUnavailable (it cannot start here)."""
        _dtypes.check_dtype(dtype)
        layouts.check_layout(layout)
        smoothing = bool(params and params.get(families.LABEL_SMOOTHING))
        reason = self.skip_reason(dtype, device, weight=weight is not None,
                                  pos_weight=pos_weight is not None, reduction=reduction,
                                  label_smoothing=smoothing, execution=execution)
        if reason is not None:
            raise ValueError(f"{self.name} cannot run {dtype} on {device}: {reason}")
        if params and not smoothing:  # E = 0 is no smoothing: the call never sees it
            params = {k: v for k, v in params.items() if k != families.LABEL_SMOOTHING}
        arrays = layouts.broadcast_1d(inputs, targets, weight, pos_weight)
        values, dtype_out = workers.evaluate(self.name, self.framework, dtype, device, arrays,
                                             reduction, grad, layout, params, execution)
        if returned is not None:
            returned.append(dtype_out)
        return values


def device_reason(framework: str, device: str) -> str | None:
    """None if `framework` can run on `device` here, else why not. Cheap where it can be
    (not installed, no CUDA driver); otherwise the framework's worker answers."""
    if device not in runners.DEVICES:
        return f"unknown device {device!r}; expected one of {', '.join(runners.DEVICES)}"
    runner = runners.get(framework)
    reason = runner.missing() or workers.start_failure(framework)
    if reason is not None:
        return reason
    if device == "cpu":
        return None
    hint = runners.cuda_hint()
    if hint is not None:
        return hint
    try:
        return workers.query(framework, "device_reason", device)
    except (workers.WorkerUnavailable, workers.WorkerCrash, workers.FrameworkError) as e:
        return str(e)


# ------------------------------------------------------------------------- the registry

SUBJECTS: dict[str, Subject] = {}
# Subjects whose input is a row of K logits per point (softmax cross-entropy, log_softmax,
# logsumexp) are graded by their own suite (audit/softmax_family.py): they live apart from
# SUBJECTS, so the scalar checks, sweeps and matrices never see them; get() finds them.
ROW_SUBJECTS: dict[str, Subject] = {}
_USER_MODULES: list[str] = []  # --subject-module values, in load order (for workers/repro)
workers.REGISTRY.update(module=__name__, user_modules=_USER_MODULES)  # workers load these
_LOADED: set[str] = set()


def register(s: Subject) -> Subject:
    """Add a subject; a bad record is a SubjectError naming what is wrong."""
    if "." not in s.name or not all(s.name.split(".", 1)):
        raise SubjectError(f"subject name {s.name!r} must look like '<prefix>.<op>'")
    if s.framework not in runners.names():
        raise SubjectError(f"subject {s.name!r}: no runner for framework {s.framework!r} "
                           f"(runners: {', '.join(runners.names())})")
    if s.family not in families.FAMILIES:
        raise SubjectError(f"subject {s.name!r}: unknown family {s.family!r} (families: "
                           f"{', '.join(families.FAMILIES)})")
    bad = [d for d in s.dtypes if d not in _dtypes.DTYPES]
    if bad:
        raise SubjectError(f"subject {s.name!r}: unknown dtypes {bad} "
                           f"(expected some of {', '.join(_dtypes.DTYPES)})")
    old = SUBJECTS.get(s.name)
    if old is not None and old.module != s.module:
        raise SubjectError(f"subject {s.name!r} is registered twice ({old.module} and "
                           f"{s.module})")
    SUBJECTS[s.name] = s
    return s


def register_row(s: Subject) -> Subject:
    """Add a row-family subject (ROW_SUBJECTS); the same checks as register()."""
    if "." not in s.name or s.framework not in runners.names() or s.name in SUBJECTS:
        raise SubjectError(f"row subject {s.name!r}: bad name or framework {s.framework!r}")
    if any(d not in _dtypes.DTYPES for d in s.dtypes):
        raise SubjectError(f"row subject {s.name!r}: unknown dtypes in {s.dtypes}")
    ROW_SUBJECTS[s.name] = s
    return s


def subject(name: str, *, framework: str, family: str,
            dtypes: Iterable[str] = _dtypes.DTYPES, weight: bool = False,
            pos_weight: bool = False, reductions: Iterable[str] = ("none",),
            api: str | None = None, notes: str = "", requires: Iterable[str] = ()
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a user's loss as a subject (DESIGN.md section 9).

    The decorated function gets framework tensors in the dtype and device under test,
    fn(x, y) -> elementwise loss; with weight=True / pos_weight=True it also receives
    `weight=` / `pos_weight=` keywords (when the check passes them), and with reductions
    beyond "none" a `reduction=` keyword. Gradients come from the framework's autograd.
    """
    reductions = tuple(reductions)
    if "none" not in reductions:
        raise SubjectError(f"subject {name!r}: reductions must include 'none'")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(x: Any, y: Any, w: Any, p: Any, reduction: str) -> Any:
            kw: dict[str, Any] = {}
            if w is not None:
                kw["weight"] = w
            if p is not None:
                kw["pos_weight"] = p
            if reduction != "none":
                kw["reduction"] = reduction
            return fn(x, y, **kw)

        register(Subject(
            name=name, framework=framework, family=family,
            api=api or f"{fn.__module__}.{fn.__qualname__}", dtypes=tuple(dtypes),
            reductions=reductions, weight=weight, pos_weight=pos_weight, notes=notes,
            call=call, weight_reason="" if weight else f"{name} declares no weight",
            pos_weight_reason="" if pos_weight else f"{name} declares no pos_weight",
            requires=(framework, *(r for r in requires if r != framework)),
            module=fn.__module__))
        return fn

    return decorate


def _import(spec: str) -> None:
    """Import a module by name, or a .py file by path (registered as its stem)."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            raise SubjectError(f"--subject-module {spec}: no such file")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[path.stem] = module
        mod_spec.loader.exec_module(module)
    else:
        importlib.import_module(spec)


def load_modules(specs: Iterable[str] | str | None) -> list[str]:
    """Import user subject modules (names or .py paths; a comma list is split). Any
    failure is one SubjectError line naming the module and what went wrong."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = specs.split(",")
    loaded = []
    for spec in (s.strip() for s in specs):
        if not spec:
            continue
        key = str(Path(spec).resolve()) if spec.endswith(".py") or "/" in spec else spec
        if key not in _LOADED:
            try:
                _import(key)
            except SubjectError:
                raise
            except BaseException as e:  # SystemExit, SyntaxError, ...: still one line
                first = str(e).splitlines()[0] if str(e) else ""
                raise SubjectError(f"--subject-module {spec}: cannot import it: "
                                   f"{type(e).__name__}: {first}") from None
            _LOADED.add(key)
            _USER_MODULES.append(key)
        loaded.append(key)
    return loaded


def user_modules() -> list[str]:
    """The --subject-module values loaded in this process (workers load the same)."""
    return list(_USER_MODULES)


def subject_module_of(name: str) -> str | None:
    """The --subject-module a repro command needs for subject `name`, or None."""
    s = SUBJECTS.get(name)
    if s is None:
        return None
    for spec in _USER_MODULES:
        if spec == s.module or (spec.endswith(".py") and Path(spec).stem == s.module):
            return spec
    return None


def _load_builtins() -> None:
    """One module per framework, in runner order (so the registry lists torch first)."""
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    order = [n for n in runners.names() if n in found] + sorted(found - set(runners.names()))
    for name in order:
        importlib.import_module(f"{__name__}.{name}")


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise SubjectError(f"entry point {ep.name} ({ep.value}) of group "
                               f"{ENTRY_POINT_GROUP}: {type(e).__name__}: {e}") from None


def get(name: str) -> Subject:
    """The subject called `name`; KeyError listing the valid names otherwise."""
    try:
        return SUBJECTS[name] if name in SUBJECTS else ROW_SUBJECTS[name]
    except KeyError:
        why = f" ({NOT_SUBJECTS[name]})" if name in NOT_SUBJECTS else ""
        hint = "" if "." not in name or name.split(".")[0] in runners.names() else \
            "; a subject of your own needs --subject-module MODULE"
        raise KeyError(f"unknown subject {name!r}{why}; valid subjects: "
                       f"{', '.join(SUBJECTS)}{hint}") from None


def _names(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    return [v.strip() for v in values if v.strip()]


def select(frameworks: str | Iterable[str] | None = None,
           subjects: str | Iterable[str] | None = None) -> list[Subject]:
    """Subjects in registry order, filtered by framework and/or name (lists or "a,b" strings).

    Unknown subject names raise KeyError (via `get`); unknown frameworks raise ValueError,
    so a typo in a CLI/pytest option is an error rather than an empty run.
    """
    chosen = list(SUBJECTS.values())
    wanted_frameworks = _names(frameworks)
    if wanted_frameworks is not None:
        known = set(runners.names())
        unknown = [f for f in wanted_frameworks if f not in known]
        if unknown:
            raise ValueError(f"unknown framework(s) {unknown}; expected some of {sorted(known)}")
        chosen = [s for s in chosen if s.framework in wanted_frameworks]
    wanted_names = _names(subjects)
    if wanted_names is not None:
        names = {get(n).name for n in wanted_names}
        chosen = [s for s in chosen if s.name in names]
    return chosen


def frameworks_of(chosen: Iterable[Subject]) -> list[str]:
    """The frameworks (runners) the chosen subjects need, in runner order."""
    need = {f for s in chosen for f in s.requires}
    return [f for f in runners.names() if f in need]


_load_builtins()
_load_entry_points()
