"""Training checkpoints (``Method.checkpoint``): their schedule and the Gaussian reference they are read against.

The rows are the first ``CHECKPOINT_ROWS`` of the validation split, the same for every method on a
dataset. Methods with a likelihood report the mean validation log-likelihood (nats); the others
the energy distance of ``CHECKPOINT_ROWS`` samples to those rows, in units standardised by the
training data. Methods whose likelihood solves an ODE score the first ``SOLVED_CHECKPOINT_ROWS`` only.
The reference is the full-covariance Gaussian fitted to the training split
(``gaussian_reference``), scored on the same rows.
"""

from __future__ import annotations

import math

import numpy as np

from harness.toolkit.distances import energy_distance
from harness.toolkit.gaussian import LOG_2PI
from harness.toolkit.standardise import Standardiser

__all__ = [
    "CHECKPOINT_ROWS",
    "SOLVED_CHECKPOINT_ROWS",
    "CHECKPOINTS_PER_PHASE",
    "CHECKPOINT_STREAM",
    "RIDGE",
    "checkpoint_every",
    "is_checkpoint",
    "gaussian_reference",
]

CHECKPOINT_ROWS = 1024  #: validation rows (and samples) per checkpoint
#: Validation rows of a checkpoint whose log-likelihood solves an ODE (score_diffusion, flow_matching):
#: every checkpoint integrates the probability flow for each row, and with 1,024 rows and the exact trace
#: the checkpoints took 20% of the quick fit on 8gaussians; 256 rows keep them a few percent.
SOLVED_CHECKPOINT_ROWS = 256
CHECKPOINTS_PER_PHASE = 10  #: checkpoints per training loop of ``planned`` steps (fixed in steps)
CHECKPOINT_STREAM = 7919  #: seed-stream purpose of the checkpoint samples (the same at every checkpoint)
RIDGE = 1e-6  #: relative covariance ridge of the Gaussian reference (as ``gaussian``'s)


def checkpoint_every(planned: int) -> int:
    """Steps between checkpoints of a loop of ``planned`` steps: ``CHECKPOINTS_PER_PHASE`` evenly spaced."""
    return max(1, math.ceil(planned / CHECKPOINTS_PER_PHASE))


def is_checkpoint(step: int, planned: int) -> bool:
    """True at every ``checkpoint_every(planned)``-th step (1-based) and at the last one."""
    return step % checkpoint_every(planned) == 0 or step == planned


def gaussian_reference(
    train: np.ndarray, rows: np.ndarray, scale: Standardiser, rng: np.random.Generator
) -> dict[str, float]:
    """``val_loglik`` (mean nats on ``rows`` (m, d)) and ``val_energy`` (of m samples drawn with ``rng``,
    standardised by ``scale``) of the full-covariance Gaussian fitted to ``train`` (n, d) by maximum likelihood."""
    d = train.shape[1]
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False, bias=True).reshape(d, d)
    cov += RIDGE * max(float(np.trace(cov)) / d, 1e-12) * np.eye(d)
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (rows - mean).T)
    loglik = -0.5 * d * LOG_2PI - np.log(np.diag(chol)).sum() - 0.5 * (white**2).sum(axis=0)
    samples = mean + rng.standard_normal((len(rows), d)) @ chol.T
    return {"val_loglik": float(loglik.mean()), "val_energy": energy_distance(scale(samples), scale(rows))}
