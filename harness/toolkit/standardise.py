"""The one standardiser: x -> (x - mean) / sd with the training data's mean and sd."""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_STD", "Standardiser"]

MIN_STD = 1e-8  #: a column whose sd is at most this counts as constant and is only centred (sd 1)


class Standardiser:
    """x (n, d) -> (x - mean) / sd, mean and sd (ddof 0) of ``train`` (N, d); a constant column keeps sd 1.

    ``log_det`` = -sum(log sd) is log|det d(x_std)/dx|, to add to a density computed in
    standardised units.

    Example::

        scale = Standardiser(train)
        z = scale(x)                    # or scale.forward(x)
        x_back = scale.inverse(z)
    """

    def __init__(self, train: np.ndarray) -> None:
        self.mean = train.mean(axis=0)
        sd = train.std(axis=0)
        self.std = np.where(sd > MIN_STD, sd, 1.0)
        self.log_det = float(-np.log(self.std).sum())

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Standardised rows (n, d)."""
        return (x - self.mean) / self.std

    __call__ = forward

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Rows (n, d) in data units."""
        return z * self.std + self.mean
