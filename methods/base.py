"""The Method contract: every density estimator in the benchmark implements it.

Public methods validate their inputs and fitted state (nflows style); subclasses
implement ``_fit``, ``_sample`` and ``_log_prob``. ``__init__`` only stores the
parameters (checked against ``param_specs``, the vocabulary of ``methods._specs``) and
fitted attributes end in ``_`` (scikit-learn style).

Example::

    m = methods.create("gaussian", profile="smoke", seed=0).fit(train)
    x = m.sample(1000)            # (1000, d)
    lp = m.log_prob(x)            # (1000,) natural log
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Self

import numpy as np

from harness.errors import DivergenceError, UserError, suggest
from harness.toolkit import checkpoint as _checkpoint
from harness.toolkit.device import synchronize
from harness.toolkit.distances import energy_distance
from harness.toolkit.seeding import numpy_stream, stream_seed
from harness.toolkit.standardise import Standardiser
from methods._specs import (
    AnyOf,
    Bool,
    Choice,
    Float,
    Int,
    Seq,
    Spec,
    Str,
    spec_from_values,
    string_choices,
)

__all__ = [
    "Method",
    "NotSupported",
    "NotFittedError",
    "DivergenceError",
    "ParameterError",
    "PROFILES",
    "DEFAULT_PROFILE",
    "LOG_PROB_KINDS",
    "check_array",
    "Spec",
    "AnyOf",
    "Choice",
    "Int",
    "Float",
    "Bool",
    "Str",
    "Seq",
    "spec_from_values",
]

LOG_PROB_KINDS = ("exact", "bound", "estimate", None)
#: Every method's parameter sets: "smoke" (seconds; tests), "quick" (the default run), "paper" (published settings).
PROFILES = ("smoke", "quick", "paper")
#: The profile of ``methods.create`` and the one whose values fill what a direct construction leaves out.
DEFAULT_PROFILE = "quick"


class NotSupported(NotImplementedError):
    """Raised by ``log_prob`` of a method whose ``log_prob_kind`` is None."""


class NotFittedError(RuntimeError):
    """Raised when ``sample`` or ``log_prob`` is called before ``fit``."""


class ParameterError(UserError, ValueError):
    """A method parameter its spec or the method's ``check_params`` rejects (one line naming it; exit 2)."""


def check_array(x: Any, name: str = "x", dim: int | None = None) -> np.ndarray:
    """Validate a 2-D finite float array of shape (n, dim); return it as float64."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array: {e}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} columns but the model was fitted on d={dim}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} row(s)")
    return arr


class Method(ABC):
    """A density estimator / generator under benchmark.

    Class attributes
    ----------------
    name : registry key.
    log_prob_kind : "exact" | "bound" | "estimate" | None (no likelihood).
    profiles : {"smoke": {...}, "quick": {...}, "paper": {...}} parameter sets (``PROFILES``).
    param_specs : parameter name -> ``Spec`` (``Choice``, ``Int``, ``Float``, ``Bool``, ``Seq``, ``a | b``):
        the one parameter check (``checked_params``), made when a method is constructed, by
        ``methods.create``, directly or by grid planning, and again at ``fit``. A profile parameter
        without an entry is checked against the types of its profile values.
    search_space : parameter name -> bounded ``Float(min, max, log=...)``, ``Int(min, max, log=...)`` or
        ``Choice(...)``: the parameters ``python -m harness tune`` searches (equal trials for every
        method; docs/tuning.md). Empty: nothing to tune (the method runs its profile).
    min_dim : the smallest data dimension the method supports (``fit`` refuses fewer columns).
    plot_style : (colour, matplotlib marker) of the method in figures; None: the report picks one.
    """

    name: ClassVar[str]
    log_prob_kind: ClassVar[str | None] = None
    profiles: ClassVar[dict[str, dict]] = {p: {} for p in PROFILES}
    param_specs: ClassVar[dict[str, Spec]] = {}
    search_space: ClassVar[dict[str, Spec]] = {}
    min_dim: ClassVar[int] = 1
    plot_style: ClassVar[tuple[str, str] | None] = None
    #: Wall-clock training budget in seconds (None: none), set before ``fit`` (``run --budget``):
    #: training loops stop at their first checkpoint past it (see ``checkpoint``).
    budget_s: float | None = None
    #: The clock of fit phases and checkpoints (seconds); tests set a deterministic one.
    clock: Callable[[], float] = staticmethod(time.perf_counter)
    #: Called with each checkpoint's record (a dict, see ``checkpoint``) as it is made; it may raise to
    #: abandon the fit (a tuning trial's pruner does). Set before ``fit``; None: no observer.
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None

    def __init__(self, *, device: str = "auto", seed: int = 0, **params: Any) -> None:
        """Store the device, seed and ``params``: the ``DEFAULT_PROFILE``'s values updated by ``params``,
        checked (``checked_params``; raises ParameterError)."""
        self.device = device
        self.seed = seed
        self.params = self.checked_params(params)

    # ----------------------------------------------------------- parameters
    @classmethod
    def specs(cls) -> dict[str, Spec]:
        """Every parameter with its spec: ``param_specs``, else one from the types of its profile values."""
        keys = dict.fromkeys([k for p in cls.profiles.values() for k in p] + list(cls.param_specs))
        values = cls.profiles.values()
        return {k: cls.param_specs.get(k) or spec_from_values(p[k] for p in values if k in p) for k in keys}

    @classmethod
    def profile_params(cls, profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
        """The parameter set of ``profile`` (a copy)."""
        if profile not in cls.profiles:
            raise ParameterError(
                f"unknown profile '{profile}'{suggest(profile, cls.profiles)} for method '{cls.name}'; valid: {', '.join(cls.profiles)}"
            )
        return dict(cls.profiles[profile])

    @classmethod
    def checked_params(
        cls, params: Mapping[str, Any] | None = None, profile: str = DEFAULT_PROFILE, dim: int | None = None
    ) -> dict[str, Any]:
        """The parameters of ``profile`` updated by ``params``, each checked against its spec, then together
        by ``check_params`` (``dim``: the data's dimension at ``fit``, None before).

        Raises ParameterError, one line naming the method, the parameter, the value and what is valid,
        for an unknown parameter name (suggesting the closest) or a rejected value.
        """
        specs = cls.specs()
        checked = cls.profile_params(profile)
        for key, value in (params or {}).items():
            if key not in specs:
                raise ParameterError(
                    f"unknown parameter '{key}' for method '{cls.name}'{suggest(key, specs)}; valid: {', '.join(sorted(specs))}"
                )
            checked[key] = value
        for key, value in checked.items():
            spec = specs[key]
            if not spec.accepts(value):
                hint = suggest(value, string_choices(spec)) if isinstance(value, str) else ""
                raise ParameterError(
                    f"method '{cls.name}': parameter {key} = {value!r} is not valid{hint}; valid: {spec.describe()}"
                )
        try:
            cls.check_params(checked, dim)
        except ValueError as e:
            raise ParameterError(f"method '{cls.name}': {e}") from None
        return checked

    @classmethod
    def check_params(cls, params: dict[str, Any], dim: int | None) -> None:
        """The rules that join several parameters, or a parameter and the data's dimension ``dim`` (None
        until ``fit``): raise ValueError naming the parameters. ``params`` already satisfy their specs."""
        return None  # no joint rule unless a method declares one

    # ----------------------------------------------------------- public API
    def fit(self, train: np.ndarray, val: np.ndarray | None = None) -> Self:
        """Fit to ``train`` (n, d); ``val`` (m, d) may be used for model selection."""
        train = check_array(train, "train")
        if train.shape[0] < 2:
            raise ValueError(f"train needs at least 2 rows, got {train.shape[0]}")
        if train.shape[1] < self.min_dim:
            raise ValueError(f"{self.name} needs data with at least {self.min_dim} dimensions, got d={train.shape[1]}")
        if val is not None:
            val = check_array(val, "val", dim=train.shape[1])
        self.params = self.checked_params(self.params, dim=train.shape[1])
        self.fit_phases_: dict[str, float] = {}
        self.info_: dict[str, Any] = {}  # diagnostics (losses, NFE...) stored in results rows
        self.dim_ = train.shape[1]
        self._start_checkpoints(train, val)
        self._fit(train, val)
        self.checkpoint_train_ = None  # the reference is computed; do not hold the data
        if self.checkpoints_:
            self.info_["training_progress"] = self._training_progress()
        self.fitted_ = True
        return self

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Draw ``n`` samples, shape (n, d). The same ``seed`` gives the same samples."""
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        seed = self.seed if seed is None else seed
        out = np.asarray(self._sample(int(n), int(seed)), dtype=np.float64)
        assert out.shape == (n, self.dim_), f"{self.name}._sample returned {out.shape}"
        return out

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Natural-log density of each row of ``x`` (n, d); returns (n,).

        Raises NotSupported when ``log_prob_kind`` is None.
        """
        return self._checked_log_prob(x, self._log_prob)

    def figure_log_prob(self, x: np.ndarray) -> np.ndarray:
        """``log_prob`` for figures (the report's 2-D density grids): a cheaper approximation where the method
        has one (an ODE solved with fewer steps, docs/likelihoods.md), else ``log_prob`` itself."""
        return self._checked_log_prob(x, self._figure_log_prob)

    def _checked_log_prob(self, x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if self.log_prob_kind is None:
            raise NotSupported(f"method '{self.name}' has no likelihood")
        self._check_fitted()
        x = check_array(x, "x", dim=self.dim_)
        out = np.asarray(fn(x), dtype=np.float64).reshape(-1)
        assert out.shape == (x.shape[0],), f"{self.name}.{fn.__name__} returned {out.shape}"
        return out

    def likelihood_error(self, x: np.ndarray) -> dict[str, float]:
        """Error bars (nats) of the mean log-likelihood of the rows ``x`` (n, d) beyond its sampling error.

        Any of ``solver_err`` (an ODE solve against a tighter one), ``estimator_se``
        (Hutchinson's trace estimator) and ``bound_gap`` (a bound's rise from K to 4K proposals), each
        estimated on at most 500 rows; a method overrides this hook to provide them. The default, {},
        is right for a closed-form exact likelihood. Called after ``fit`` on the rows ``log_prob`` scored.
        """
        return {}

    @classmethod
    def skip(cls) -> tuple[bool, str]:
        """(True, reason) when the method cannot run here (missing dependency...)."""
        return False, ""

    # ----------------------------------------------------------- helpers
    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a fit phase into ``fit_phases_[name]`` (seconds, accumulated, checkpoint evaluations excluded)."""
        t0, eval0 = self.clock(), getattr(self, "checkpoint_s_", 0.0)
        try:
            yield
        finally:
            spent = self.clock() - t0 - (getattr(self, "checkpoint_s_", 0.0) - eval0)
            self.fit_phases_[name] = self.fit_phases_.get(name, 0.0) + spent

    def checkpoint(
        self,
        phase: str,
        step: int,
        planned: int,
        *,
        val_loglik: float | Callable[[np.ndarray], np.ndarray] | None = None,
        sample: Callable[[int, int], np.ndarray] | None = None,
    ) -> bool:
        """Record a training checkpoint; returns True when the training budget is spent (stop now).

        Training loops call it every ``harness.toolkit.checkpoint.checkpoint_every(planned)`` steps and at their last
        step (a schedule fixed in steps). ``phase`` names the loop, ``step`` of ``planned`` its progress.
        Quality on the validation rows (``CHECKPOINT_ROWS``; none when ``fit`` got no
        ``val``): ``val_loglik``, a mean validation log-likelihood already computed (float, its cost
        stays training time) or a function rows (m, d) -> (m,) log densities in data units; else
        ``sample(n, seed)`` -> (n, d) samples in data units, scored by the energy distance. The
        time recorded, ``t``, is the training time since ``fit`` began, every checkpoint's
        evaluation time (``eval_s``) excluded; ``fit_phases_`` exclude it too.
        """
        if self.device_is_cuda():
            synchronize(self.device_)
        now = self.clock()
        elapsed = now - self.fit_start_ - self.checkpoint_s_
        record: dict[str, Any] = {"phase": phase, "step": int(step), "planned": int(planned), "t": elapsed}
        rows = self.checkpoint_rows_
        if rows is not None and val_loglik is not None:
            value = val_loglik if isinstance(val_loglik, (int, float)) else np.mean(val_loglik(rows))
            record["val_loglik"] = float(value)
        elif rows is not None and sample is not None:
            scale = self.checkpoint_scale_
            drawn = np.asarray(
                sample(len(rows), stream_seed(self.seed, _checkpoint.CHECKPOINT_STREAM)), dtype=np.float64
            )
            record["val_energy"] = energy_distance(scale(drawn), scale(rows))
        scored = "val_loglik" in record or "val_energy" in record
        if scored and "checkpoint_reference" not in self.info_:
            self.info_["checkpoint_reference"] = _checkpoint.gaussian_reference(
                self.checkpoint_train_,
                rows,
                self.checkpoint_scale_,
                numpy_stream(self.seed, _checkpoint.CHECKPOINT_STREAM),
            )
        record["eval_s"] = self.clock() - now
        self.checkpoint_s_ += record["eval_s"]
        self.checkpoints_.append(record)
        if self.on_checkpoint is not None:
            self.on_checkpoint(record)
        spent = self.budget_s is not None and elapsed >= self.budget_s
        self.budget_spent_ = self.budget_spent_ or spent
        return spent

    def device_is_cuda(self) -> bool:
        return str(getattr(self, "device_", "cpu")).startswith("cuda")

    def _start_checkpoints(self, train: np.ndarray, val: np.ndarray | None) -> None:
        """Reset the checkpoint record and clock at the start of ``fit``."""
        self.checkpoints_: list[dict[str, Any]] = []
        self.checkpoint_s_ = 0.0
        self.budget_spent_ = False
        self.checkpoint_rows_ = None if val is None else val[: _checkpoint.CHECKPOINT_ROWS]
        self.checkpoint_train_ = train
        self.checkpoint_scale_ = Standardiser(train)
        self.fit_start_ = self.clock()

    def _training_progress(self) -> dict[str, Any]:
        """How far training got: steps reached of those planned (over every phase), time, budget."""
        last = {c["phase"]: c for c in self.checkpoints_}
        steps = sum(c["step"] for c in last.values())
        planned = sum(c["planned"] for c in last.values())
        return {
            "steps": steps,
            "planned_steps": planned,
            "fraction": steps / planned if planned else 1.0,
            "train_s": self.checkpoints_[-1]["t"],
            "checkpoint_s": self.checkpoint_s_,
            "budget_s": self.budget_s,
            "stopped_by_budget": self.budget_spent_,
            "phases": {p: [c["step"], c["planned"]] for p, c in last.items()},
        }

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(f"method '{self.name}' is not fitted: call fit(train) first")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------- to implement
    @abstractmethod
    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None: ...

    @abstractmethod
    def _sample(self, n: int, seed: int) -> np.ndarray: ...

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        raise NotSupported(f"method '{self.name}' has no likelihood")

    def _figure_log_prob(self, x: np.ndarray) -> np.ndarray:
        return self._log_prob(x)
