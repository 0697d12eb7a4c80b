"""Validation quality for training checkpoints (``Method.checkpoint``).

The rows are the first ``CHECKPOINT_ROWS`` of the validation split, the same for
every method on a dataset. Methods with a likelihood report the mean validation
log-likelihood (nats); the others the energy statistic of ``CHECKPOINT_ROWS``
samples against those rows, in units standardised by the training data. The
reference both are read against is the full-covariance Gaussian fitted to the
training split (:func:`gaussian_reference`), computed on the same rows.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import cdist

CHECKPOINT_ROWS = 1024  # validation rows (and samples) per checkpoint
CHECKPOINTS_PER_PHASE = 10  # checkpoints per training loop of ``planned`` steps (fixed in steps)
SAMPLE_SEED = 7919  # offset from the method's seed of the checkpoint samples (fixed over checkpoints)
RIDGE = 1e-6  # relative covariance ridge of the Gaussian reference (as ``gaussian``'s)


def checkpoint_every(planned: int) -> int:
    """Steps between checkpoints of a loop of ``planned`` steps: ``CHECKPOINTS_PER_PHASE`` evenly spaced."""
    return max(1, math.ceil(planned / CHECKPOINTS_PER_PHASE))


def is_checkpoint(step: int, planned: int) -> bool:
    """True at every ``checkpoint_every(planned)``-th step (1-based) and at the last one."""
    return step % checkpoint_every(planned) == 0 or step == planned


class Scale:
    """Standardisation by the training split's mean and std (ddof 0), x (n, d) -> (n, d)."""

    def __init__(self, train: np.ndarray) -> None:
        self.mean, self.std = train.mean(axis=0), np.maximum(train.std(axis=0), 1e-8)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def energy_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| with unbiased within-sample means (Szekely & Rizzo 2013);
    x (n, d), y (m, d). As ``harness.sample_metrics.energy_distance``; 0 when the laws agree."""
    n, m = len(x), len(y)
    exy = cdist(x, y).mean()
    exx = cdist(x, x).sum() / (n * (n - 1))
    eyy = cdist(y, y).sum() / (m * (m - 1))
    return float(2.0 * exy - exx - eyy)


def gaussian_reference(train: np.ndarray, rows: np.ndarray, scale: Scale, seed: int) -> dict[str, float]:
    """``val_loglik`` (mean nats on ``rows``) and ``val_energy`` (of ``len(rows)`` seeded samples) of the
    full-covariance Gaussian fitted to ``train`` (n, d) by maximum likelihood."""
    d = train.shape[1]
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, bias=True).reshape(d, d)
    cov += RIDGE * max(float(np.trace(cov)) / d, 1e-12) * np.eye(d)
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (rows - mean).T)
    loglik = -0.5 * d * math.log(2 * math.pi) - np.log(np.diag(chol)).sum() - 0.5 * (white**2).sum(axis=0)
    samples = mean + np.random.default_rng(seed).standard_normal((len(rows), d)) @ chol.T
    return {"val_loglik": float(loglik.mean()), "val_energy": energy_statistic(scale(samples), scale(rows))}
