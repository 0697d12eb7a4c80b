"""The Method contract: every density estimator in the benchmark implements it.

Public methods validate their inputs and fitted state (nflows style); subclasses
implement ``_fit``, ``_sample`` and ``_log_prob``. ``__init__`` only stores
parameters and fitted attributes end in ``_`` (scikit-learn style).

Example::

    m = methods.create("gaussian", profile="smoke", seed=0).fit(train)
    x = m.sample(1000)            # (1000, d)
    lp = m.log_prob(x)            # (1000,) natural log
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator

import numpy as np

try:  # Python 3.11+
    from typing import Self
except ImportError:  # pragma: no cover
    from typing_extensions import Self

LOG_PROB_KINDS = ("exact", "bound", "estimate", None)


class NotSupported(NotImplementedError):
    """Raised by ``log_prob`` of a method whose ``log_prob_kind`` is None."""


class NotFittedError(RuntimeError):
    """Raised when ``sample`` or ``log_prob`` is called before ``fit``."""


class DivergenceError(RuntimeError):
    """Raised when training produces a NaN or infinite loss."""


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
    profiles : {"smoke": {...}, "quick": {...}, "paper": {...}} parameter sets.
    """

    name: ClassVar[str]
    log_prob_kind: ClassVar[str | None] = None
    profiles: ClassVar[dict[str, dict]] = {"smoke": {}, "quick": {}, "paper": {}}

    def __init__(self, *, device: str = "auto", seed: int = 0, **params: Any) -> None:
        self.device = device
        self.seed = seed
        self.params = params

    # ----------------------------------------------------------- public API
    def fit(self, train: np.ndarray, val: np.ndarray | None = None) -> Self:
        """Fit to ``train`` (n, d); ``val`` (m, d) may be used for model selection."""
        train = check_array(train, "train")
        if train.shape[0] < 2:
            raise ValueError(f"train needs at least 2 rows, got {train.shape[0]}")
        if val is not None:
            val = check_array(val, "val", dim=train.shape[1])
        self.fit_phases_: dict[str, float] = {}
        self.info_: dict[str, Any] = {}  # diagnostics (losses, NFE...) stored in results rows
        self.dim_ = train.shape[1]
        self._fit(train, val)
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
        if self.log_prob_kind is None:
            raise NotSupported(f"method '{self.name}' has no likelihood")
        self._check_fitted()
        x = check_array(x, "x", dim=self.dim_)
        out = np.asarray(self._log_prob(x), dtype=np.float64).reshape(-1)
        assert out.shape == (x.shape[0],), f"{self.name}._log_prob returned {out.shape}"
        return out

    @classmethod
    def skip(cls) -> tuple[bool, str]:
        """(True, reason) when the method cannot run here (missing dependency...)."""
        return False, ""

    # ----------------------------------------------------------- helpers
    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a fit phase into ``fit_phases_[name]`` (seconds, accumulated)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.fit_phases_[name] = self.fit_phases_.get(name, 0.0) + time.perf_counter() - t0

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
