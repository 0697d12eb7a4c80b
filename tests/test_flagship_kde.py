"""The flagship's teacher is a kernel density estimate, and eps="auto" chooses its bandwidth on data.

At t = 0, alpha_0 = 1 and beta_0^2 = eps: the density whose exact score the teacher follows is
p_0(x) = mean_j N(x; x_j, eps I) in standardised units, a Gaussian KDE with bandwidth sqrt(eps).
Its moments are closed-form: mean = the sample mean, covariance = the (1/N) sample covariance
+ eps I (standardised units; mapped back by the per-column scale). The probability flow starts
from N(0, I) instead of p_1 = mean_j N(eps x_j, I), whose covariance is I + eps^2 S: that moves
the end covariance by O(eps^2), added to the tolerances below.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import methods
from harness.errors import UserError
from harness.sample_metrics import c2st_accuracy
from harness.toolkit.training_free_score import choose_eps, kde_log_likelihood


def _kde_samples(train: np.ndarray, eps: float, n: int, seed: int) -> np.ndarray:
    """n draws of the Gaussian KDE of ``train`` with bandwidth sqrt(eps) in standardised units."""
    rng = np.random.default_rng(seed)
    mean, sd = train.mean(0), train.std(0)
    centres = (train[rng.integers(0, len(train), n)] - mean) / sd
    return (centres + math.sqrt(eps) * rng.standard_normal(centres.shape)) * sd + mean


def _exact_teacher(train: np.ndarray, eps: float, n: int) -> np.ndarray:
    m = methods.create("training_free_ode", "smoke", seed=0, eps=eps, score_mode="exact", solver="heun", steps=60)
    return m.fit(train).sample(n, seed=1)


def test_teacher_samples_have_the_kde_moments_on_gaussian_data():
    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 1.2, 0.0], [1.2, 1.0, -0.3], [0.0, -0.3, 0.25]])
    train = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=1000)
    eps, n = 0.1, 8000
    x = _exact_teacher(train, eps, n)
    sd = train.std(0)
    s_std = np.cov(train.T, bias=True) / np.outer(sd, sd)  # (1/N) sample covariance, standardised
    kde_cov = s_std + eps * np.eye(3)
    x_std = (x - train.mean(0)) / sd
    # sampling error of n draws: mean sd sqrt(C_ii / n); covariance entry sd sqrt((C_ii C_jj + C_ij^2) / n)
    mean_se = np.sqrt(np.diag(kde_cov) / n)
    cov_se = np.sqrt((np.outer(np.diag(kde_cov), np.diag(kde_cov)) + kde_cov**2) / n)
    start_bias = eps**2 * (np.abs(s_std).max() + eps)  # N(0, I) vs p_1: O(eps^2) in covariance
    assert np.all(np.abs(x_std.mean(0)) < 4 * mean_se)
    assert np.all(np.abs(np.cov(x_std.T) - kde_cov) < 4 * cov_se + start_bias)
    # the eps I term is resolved: the plain sample covariance is rejected
    assert np.abs(np.cov(x_std.T) - s_std).max() > 4 * cov_se.max() + start_bias


def test_teacher_samples_are_indistinguishable_from_the_kde():
    """C2ST of 3,000 exact-teacher draws against 3,000 KDE draws on clustered data is at chance,
    and the same classifier tells a KDE of sqrt(2) times the bandwidth apart (the test has power)."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    train = centres[rng.integers(0, 4, 1000)] + 0.15 * rng.standard_normal((1000, 2))
    eps, n = 0.01, 3000
    teacher = _exact_teacher(train, eps, n)
    chance_sd = 0.5 / math.sqrt(2 * n)  # held-out accuracy of a chance classifier over 2n predictions
    assert c2st_accuracy(_kde_samples(train, eps, n, seed=2), teacher, seed=0) < 0.5 + 4 * chance_sd
    assert c2st_accuracy(_kde_samples(train, 2 * eps, n, seed=2), teacher, seed=0) > 0.5 + 8 * chance_sd


def test_kde_log_likelihood_matches_direct_sum():
    g = torch.Generator().manual_seed(3)
    data, x = (
        torch.randn(300, 4, generator=g, dtype=torch.float64),
        torch.randn(50, 4, generator=g, dtype=torch.float64),
    )
    for eps in (0.003, 0.2):
        direct = torch.distributions.MultivariateNormal(data, eps * torch.eye(4, dtype=torch.float64))
        expected = (torch.logsumexp(direct.log_prob(x[:, None, :]), dim=1) - math.log(300)).mean()
        assert float(kde_log_likelihood(x, data, [eps])[0]) == pytest.approx(float(expected), abs=1e-9)


@pytest.mark.parametrize("d", [2, 4])
def test_auto_eps_is_within_a_factor_1_5_of_silverman_on_gaussian_data(d):
    """Silverman's rule for standardised Gaussian data: h = (4 / (d + 2))^(1 / (d + 4)) N^(-1 / (d + 4))."""
    g = torch.Generator().manual_seed(4)
    n = 2000
    train, val = torch.randn(n, d, generator=g), torch.randn(1000, d, generator=g)
    eps, scores = choose_eps(train, val)
    silverman = (4 / (d + 2)) ** (1 / (d + 4)) * n ** (-1 / (d + 4))
    assert 1 / 1.5 < math.sqrt(eps) / silverman < 1.5
    assert scores[eps] == max(scores.values())


def test_auto_eps_is_recorded_and_used_by_both_methods():
    rng = np.random.default_rng(5)
    train, val = rng.standard_normal((1500, 2)), rng.standard_normal((500, 2))
    fixed = methods.create("training_free_ode", "smoke", seed=0).fit(train, val)
    assert fixed.info_["eps"] == 0.01 and "eps_val_loglik" not in fixed.info_
    auto = methods.create("training_free_ode", "smoke", seed=0, eps="auto").fit(train, val)
    chosen = auto.info_["eps"]
    assert (
        chosen
        == choose_eps(
            torch.as_tensor((train - train.mean(0)) / train.std(0), dtype=torch.float32),
            torch.as_tensor((val - train.mean(0)) / train.std(0), dtype=torch.float32),
        )[0]
    )
    assert auto.teacher_.eps == chosen and 0 < chosen < 1
    no_val = methods.create("training_free_ode", "smoke", seed=0, eps="auto").fit(train)  # 10% of train held out
    assert (
        0 < no_val.info_["eps"] < 1
        and no_val.info_["eps"] in map(float, no_val.info_["eps_val_loglik"])
        or any(abs(float(k) / no_val.info_["eps"] - 1) < 1e-3 for k in no_val.info_["eps_val_loglik"])
    )
    with pytest.raises(UserError, match="'auto' or a finite number in \\(0, 1\\)"):  # the declared spec, at create
        methods.create("training_free_ode", "smoke", eps="best")
