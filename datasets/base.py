"""The Dataset contract: what the harness fits and evaluates on.

Example::

    ds = datasets.get("8gaussians")
    splits = ds.load(seed=0)          # Splits(train (20000, 2), val, test)
    ds.log_prob(splits.test)          # true log density, when has_density
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from harness.errors import UserError


class DataUnavailable(FileNotFoundError):
    """The dataset's files are absent; the message says how to get them."""


@dataclass
class Splits:
    """Train / validation / test arrays, each (n_split, d) float64."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def sizes(self) -> tuple[int, int, int]:
        return (len(self.train), len(self.val), len(self.test))

    def check(self, source: str, *, min_test_rows: int = 1, parts: tuple[str, ...] = ("train", "val", "test")) -> None:
        """Raise a one-line UserError naming ``source`` unless the splits can be fitted and evaluated:
        2-D, finite, one width, at least 2 training rows and ``min_test_rows`` test rows. ``parts`` are
        the splits to look at (tuning never reads the test split)."""
        for name in parts:
            part = getattr(self, name)
            if not isinstance(part, np.ndarray) or part.ndim != 2:
                raise UserError(f"{source}: its {name} split is not a 2-D array")
            if part.shape[1] != self.train.shape[1]:
                raise UserError(f"{source}: its {name} split has {part.shape[1]} columns, train {self.train.shape[1]}")
            bad = np.flatnonzero(~np.isfinite(part).all(axis=0))
            if len(bad):
                raise UserError(f"{source}: column {bad[0] + 1} of its {name} split holds NaN or inf")
        if len(self.train) < 2:
            raise UserError(f"{source}: its training split holds {len(self.train)} row(s); at least 2 are needed")
        if "test" in parts and len(self.test) < min_test_rows:
            raise UserError(
                f"{source}: its test split holds {len(self.test)} row(s); the metrics need at least {min_test_rows} "
                "(use a larger table)"
            )


@dataclass(frozen=True)
class Published:
    """A test log-likelihood another paper reports for a dataset (mean nats per example).

    ``method`` is our registry name of the closest method, ``model`` the paper's name
    for its model, ``source`` the paper and table.
    """

    method: str
    model: str
    source: str
    value: float


def default_data_root() -> Path:
    """``$DENSITYBENCH_DATA`` if set, else ``~/.cache/densitybench``."""
    env = os.environ.get("DENSITYBENCH_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/densitybench").expanduser()


def resolve_root(root: Path | str | None) -> Path:
    """The data root: the argument, else the environment, else the cache folder."""
    return Path(root).expanduser() if root is not None else default_data_root()


class Dataset(ABC):
    """A dataset with train/val/test splits.

    ``dim`` is the dimension after preprocessing. ``has_density`` is True when
    the true log density is known (``log_prob``); synthetic sets also ``sample``.
    ``group`` names the family a user can select at once (``--datasets 2d``) and
    fetch at once (``data fetch maf``); ``published`` holds other papers' test
    log-likelihoods on the set, which reports show beside ours (with
    ``published_note`` as a caveat). ``reshuffled_splits`` is True when the splits of different
    seeds partition the same rows differently (a row tested under one seed trains under another):
    tuning then selects parameters per seed, so that no seed's test rows guided the choice.
    """

    name: ClassVar[str]
    dim: int
    has_density: bool = False
    synthetic: ClassVar[bool] = False
    description: ClassVar[str] = ""
    group: ClassVar[str] = ""
    published: ClassVar[tuple[Published, ...]] = ()
    published_note: ClassVar[str] = ""
    reshuffled_splits: ClassVar[bool] = False

    @abstractmethod
    def load(self, seed: int = 0, root: Path | None = None) -> Splits:
        """The splits for ``seed`` (real sets use ``root``, see ``resolve_root``)."""

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """True log density of each row of ``x`` (n, d); shape (n,)."""
        raise NotImplementedError(f"dataset '{self.name}' has no known density")

    def sample(self, n: int, seed: int) -> np.ndarray:
        """Fresh samples (n, d); synthetic sets only."""
        raise NotImplementedError(f"dataset '{self.name}' cannot be sampled (not synthetic)")

    def available(self, root: Path | None = None) -> tuple[bool, str]:
        """(True, "") when ``load`` can run; else (False, how to get the data)."""
        return True, ""

    def sizes(self) -> tuple[int, int, int] | None:
        """Expected (train, val, test) sizes when known without loading."""
        return None

    def fingerprint(self) -> str | None:
        """A hash of the data's content when it lives in a file the user may replace (``file:``
        datasets), checked when a run resumes; None for the built-in sets."""
        return None

    @classmethod
    def fetch(cls, root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
        """Download the files of this dataset's group into the data root ``root``; returns their paths.

        ``url`` overrides the source. Datasets that need no files (or cannot be
        downloaded) keep this default, which raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"dataset '{cls.name}' cannot be downloaded")
