"""Reference methods that keep the tables honest: a full-covariance Gaussian and a KDE.

Any serious density estimator should beat ``gaussian`` on non-Gaussian data, and
``kde`` shows what a non-parametric estimate gets with the same training rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from harness.toolkit.device import resolve_device
from harness.toolkit.gaussian import LOG_2PI
from harness.toolkit.seeding import numpy_stream
from harness.toolkit.standardise import Standardiser
from methods import register
from methods.base import PROFILES, Float, Int, Method, Seq

__all__ = ["Gaussian", "KDE", "kde_log_prob"]

SAMPLE = 1  # seed-stream purpose of the KDE's samples (its fit subsamples from the primary stream)


@register
class Gaussian(Method):
    """Full-covariance Gaussian fitted by maximum likelihood: a floor any density estimator should beat.

    Parameters
    ----------
    ridge : added to the covariance diagonal, relative to its mean variance, so constant directions
        stay invertible. ``log_prob`` is exact.

    Example
    -------
    ::

        m = methods.create("gaussian", seed=0).fit(train)
        m.log_prob(test)                # (n,) exact log density, nats
    """

    name = "gaussian"
    plot_style = ("#7f7f7f", ">")
    log_prob_kind = "exact"
    profiles = {p: {"ridge": 1e-6} for p in PROFILES}
    param_specs = {"ridge": Float(min=0)}

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        with self.phase("training"):
            self.mean_ = train.mean(axis=0)
            cov = np.cov(train, rowvar=False, bias=True).reshape(self.dim_, self.dim_)
            cov += self.params["ridge"] * max(float(np.trace(cov)) / self.dim_, 1e-12) * np.eye(self.dim_)
            self.cov_ = cov
            self.chol_ = np.linalg.cholesky(cov)
            self.log_norm_ = -0.5 * self.dim_ * LOG_2PI - np.log(np.diag(self.chol_)).sum()

    def _sample(self, n: int, seed: int) -> np.ndarray:
        eps = numpy_stream(seed).standard_normal((n, self.dim_))
        return self.mean_ + eps @ self.chol_.T

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        from scipy.linalg import solve_triangular

        white = solve_triangular(self.chol_, (x - self.mean_).T, lower=True)
        return self.log_norm_ - 0.5 * (white**2).sum(axis=0)


def kde_log_prob(
    x: torch.Tensor, centers: torch.Tensor, bandwidths: float | list[float], chunk: int = 1024
) -> torch.Tensor:
    """log (1/N) sum_j N(x; c_j, h^2 I) for x (M, d), centers (N, d).

    Returns (M,) for one bandwidth, (len(bandwidths), M) for a list; the
    pairwise distances are computed once per chunk of x.
    """
    hs = [bandwidths] if np.isscalar(bandwidths) else list(bandwidths)
    n, d = centers.shape
    rows = []
    for xb in x.split(chunk):
        sq = torch.cdist(xb, centers).square_()
        rows.append(
            torch.stack(
                [
                    torch.logsumexp(sq * (-0.5 / h**2), dim=1) - math.log(n) - 0.5 * d * (LOG_2PI + 2 * math.log(h))
                    for h in hs
                ]
            )
        )
    out = torch.cat(rows, dim=1)
    return out[0] if np.isscalar(bandwidths) else out


@register
class KDE(Method):
    """Gaussian kernel density estimate on standardised data, bandwidth chosen on validation rows.

    The bandwidth is the candidate (a factor times Scott's rule) with the best validation
    log-likelihood. ``log_prob`` is exact (a KDE is a normalised mixture); it costs O(N) per point.

    Parameters
    ----------
    factors : candidate multiples of Scott's rule N^(-1/(d+4)).
    max_train : most kernel centres (a random subset of the training rows beyond it).
    max_val : most validation rows scored per candidate.

    References
    ----------
    Scott, "Multivariate Density Estimation", Wiley 1992 (the rule of thumb).

    Example
    -------
    ::

        m = methods.create("kde", "quick", seed=0).fit(train, val)
        m.info_["bandwidth"], m.log_prob(test)
    """

    name = "kde"
    plot_style = ("#000080", "*")
    log_prob_kind = "exact"
    profiles = {
        "smoke": {"factors": (0.25, 0.5, 1.0), "max_train": 2_000, "max_val": 500},
        "quick": {"factors": (0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4), "max_train": 10_000, "max_val": 2_000},
        "paper": {"factors": tuple(np.geomspace(0.05, 2.0, 16).round(4)), "max_train": 100_000, "max_val": 10_000},
    }
    param_specs = {"factors": Seq(Float(gt=0)), "max_train": Int(min=2), "max_val": Int(min=1)}

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        rng = numpy_stream(self.seed)
        self.device_ = resolve_device(self.device)
        self.scaler_ = Standardiser(train)
        z = self.scaler_.forward(train)
        if len(z) > self.params["max_train"]:
            z = z[rng.choice(len(z), self.params["max_train"], replace=False)]
        if val is None:  # hold out 10% of the centres to choose the bandwidth
            cut = max(1, len(z) // 10)
            z, zval = z[cut:], z[:cut]
        else:
            zval = self.scaler_.forward(val)
        if len(zval) > self.params["max_val"]:
            zval = zval[rng.choice(len(zval), self.params["max_val"], replace=False)]
        self.centers_ = torch.as_tensor(z, dtype=torch.float64, device=self.device_)
        scott = len(z) ** (-1.0 / (self.dim_ + 4))
        with self.phase("bandwidth"):
            zv = torch.as_tensor(zval, dtype=torch.float64, device=self.device_)
            hs = [f * scott for f in self.params["factors"]]
            scores = dict(zip(hs, kde_log_prob(zv, self.centers_, hs).mean(dim=1).tolist(), strict=True))
        self.bandwidth_ = max(scores, key=scores.get)
        self.info_["bandwidth"] = self.bandwidth_
        self.info_["val_scores"] = {f"{h:.4g}": s for h, s in scores.items()}

    def _sample(self, n: int, seed: int) -> np.ndarray:
        rng = numpy_stream(seed, SAMPLE)
        c = self.centers_[torch.as_tensor(rng.integers(0, len(self.centers_), n), device=self.device_)].cpu().numpy()
        return self.scaler_.inverse(c + self.bandwidth_ * rng.standard_normal((n, self.dim_)))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(self.scaler_.forward(x), dtype=torch.float64, device=self.device_)
        return kde_log_prob(z, self.centers_, self.bandwidth_).cpu().numpy() + self.scaler_.log_det
