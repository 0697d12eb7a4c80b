"""Closed-form checks of the GAN, VAE and score-diffusion baselines.

* VP-SDE machinery (harness.toolkit.sde) driven by the exact score of a Gaussian:
  the probability-flow likelihood equals the analytic log-density and the ODE
  and Euler-Maruyama samplers reproduce its moments.
* The score_diffusion method with that exact score plugged in (standardising
  and batching included) gives the Gaussian's density in data units.
* VAE importance-weighted bound on a linear-Gaussian model, whose marginal is
  N(b, W W^T + sigma^2 I): exact with the true posterior, below the truth and
  rising with K with a deliberately wrong one.
* Fits on 8gaussians beat a full-covariance Gaussian; the GAN learns a
  Gaussian's moments and a diverging config raises DivergenceError.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

import datasets
import methods
from harness.toolkit.sde import VPSDE, em_sample, ode_log_prob, ode_sample

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds spin-waiting (tens of times
    slower when other processes share the two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ helpers
class GaussianScore:
    """Exact score of N(mu, Sigma) pushed through the VP-SDE: at time t the
    marginal is N(m_t mu, m_t^2 Sigma + s_t^2 I), diagonalised once by Sigma's eigenbasis."""

    def __init__(self, sde: VPSDE, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self.sde, self.mu = sde, mu
        self.evals, self.evecs = torch.linalg.eigh(sigma)

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=self.mu.dtype)
        m, s = self.sde.mean_coeff(t), self.sde.std(t)
        var = m**2 * self.evals + s**2
        return m * self.mu, (self.evecs * var) @ self.evecs.T

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m, s = self.sde.mean_coeff(t), self.sde.std(t)
        var = m**2 * self.evals + s**2
        centred = (x - m * self.mu) @ self.evecs
        return -(centred / var) @ self.evecs.T

    def log_prob(self, t: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """log-density of the marginal at time t, as a function of x (n, d)."""
        mean, cov = self.marginal(t)
        return torch.distributions.MultivariateNormal(mean, cov).log_prob


def random_gaussian(d: int, seed: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=dtype) * 0.6
    mu = torch.randn(d, generator=g, dtype=dtype)
    return mu, a @ a.T + 0.3 * torch.eye(d, dtype=dtype)


def gaussian_draws(mu: torch.Tensor, sigma: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, len(mu), generator=torch.Generator().manual_seed(seed), dtype=mu.dtype)
    return mu + z @ torch.linalg.cholesky(sigma).T


def moment_tolerances(sigma: np.ndarray, n: int, z: float = 4.5) -> tuple[np.ndarray, np.ndarray]:
    """z standard errors of the sample mean and of each sample covariance entry."""
    diag = np.diag(sigma)
    return z * np.sqrt(diag / n), z * np.sqrt((np.outer(diag, diag) + sigma**2) / n)


def full_gaussian_test_ll(train: np.ndarray, test: np.ndarray) -> float:
    mean, cov = train.mean(0), np.cov(train.T)
    return float(multivariate_normal(mean, cov).logpdf(test).mean())


def eight_gaussians(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    ds = datasets.get("8gaussians")
    return ds.sample(n_train, seed=0), ds.sample(n_test, seed=1)


# ------------------------------------------------ VP-SDE machinery, exact score
def test_vpsde_coefficients():
    sde = VPSDE(0.1, 20.0)
    t = torch.tensor([1e-5, 0.3, 1.0], dtype=F64)
    integral = 0.1 * t + 0.5 * t**2 * 19.9  # int_0^t beta(s) ds
    assert torch.allclose(sde.mean_coeff(t), torch.exp(-0.5 * integral))
    assert torch.allclose(sde.std(t) ** 2, 1 - torch.exp(-integral))


@pytest.mark.parametrize("t_eps", [1e-5, 1e-3])
def test_probability_flow_likelihood_matches_gaussian(t_eps):
    sde = VPSDE()
    mu, sigma = random_gaussian(3, seed=0)
    score = GaussianScore(sde, mu, sigma)
    x = gaussian_draws(mu, sigma, 64, seed=10)
    x = torch.cat([x, mu[None] + 3 * torch.sqrt(torch.diag(sigma))[None]])  # one tail point
    lp, nfe = ode_log_prob(sde, score, x, t_eps, rtol=1e-8, atol=1e-8, prior_log_prob=score.log_prob(1.0))
    expected = score.log_prob(t_eps)(x)
    assert nfe > 0
    assert torch.max(torch.abs(lp - expected)) < 1e-3


def test_hutchinson_trace_is_unbiased():
    sde = VPSDE()
    mu, sigma = random_gaussian(3, seed=1)
    score = GaussianScore(sde, mu, sigma)
    x = gaussian_draws(mu, sigma, 1500, seed=11)
    probe = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)).to(F64) * 2 - 1
    kw = dict(t_eps=1e-3, rtol=1e-5, atol=1e-5, prior_log_prob=score.log_prob(1.0))
    exact, _ = ode_log_prob(sde, score, x, trace="exact", **kw)
    estimate, _ = ode_log_prob(sde, score, x, trace="hutchinson", probe=probe, **kw)
    err = (estimate - exact).numpy()
    assert err.std() > 1e-3  # it is an estimate ...
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(len(err))  # ... without bias


@pytest.mark.parametrize("sampler", ["ode", "em"])
def test_samplers_reproduce_gaussian_moments(sampler):
    sde = VPSDE()
    mu, sigma = random_gaussian(2, seed=2)
    score = GaussianScore(sde, mu, sigma)
    n = 4000
    g = torch.Generator().manual_seed(3)
    z = torch.randn(n, 2, generator=g, dtype=F64)
    if sampler == "ode":
        x, nfe = ode_sample(sde, score, z, t_eps=1e-3, rtol=1e-6, atol=1e-6)
    else:
        x, nfe = em_sample(sde, score, z, steps=500, generator=g, t_eps=1e-3)
    mean, cov = (t.numpy() for t in score.marginal(1e-3))
    tol_mean, tol_cov = moment_tolerances(cov, n)
    x = x.numpy()
    assert nfe > 0
    assert np.all(np.abs(x.mean(0) - mean) < tol_mean)
    assert np.all(np.abs(np.cov(x.T) - cov) < tol_cov + (0.02 if sampler == "em" else 0.0))


# ------------------------------------- score_diffusion method, oracle network
class OracleNoise(nn.Module):
    """eps_theta(x, t) = -s_t * exact score, i.e. the ideal noise predictor."""

    def __init__(self, score: GaussianScore) -> None:
        super().__init__()
        self.score = score

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(F64).reshape(-1)[0]  # the ODE calls use one time per batch
        return (-self.score.sde.std(t) * self.score(x.to(F64), t)).to(x.dtype)


def test_score_diffusion_with_exact_score_gives_data_density():
    rng = np.random.default_rng(0)
    mu, cov = np.array([3.0, -2.0]), np.array([[2.0, 0.9], [0.9, 0.8]])
    train = rng.multivariate_normal(mu, cov, size=2000)
    m = methods.create(
        "score_diffusion", "smoke", device="cpu", steps=1, eval_batch=128, rtol=1e-5, atol=1e-5, eps_t=1e-5
    ).fit(train)
    scale = 1.0 / m.scaler_.std
    mu_std = torch.tensor((mu - m.scaler_.mean) * scale)
    cov_std = torch.tensor(cov * np.outer(scale, scale))
    m.net_ = OracleNoise(GaussianScore(m.sde_, mu_std, cov_std))

    x = rng.multivariate_normal(mu, cov, size=300)  # 3 batches of 128 rows
    expected = multivariate_normal(mu, cov).logpdf(x)
    np.testing.assert_allclose(m.log_prob(x), expected, atol=1e-2)
    assert m.info_["nfe_log_prob"] > 0

    s = m.sample(3000, seed=1)
    tol_mean, tol_cov = moment_tolerances(cov, 3000)
    assert np.all(np.abs(s.mean(0) - mu) < tol_mean)
    assert np.all(np.abs(np.cov(s.T) - cov) < tol_cov)
    assert m.info_["nfe_sample"] > 0


# ------------------------------------------------ VAE on a linear-Gaussian model
class LinearDecoder(nn.Module):
    """p(y|z) = N(W z + b, sigma^2 I)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, sigma: float) -> None:
        super().__init__()
        self.w, self.b, self.sigma = w, b, sigma

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = z @ self.w.T + self.b
        return mean, torch.full_like(mean, self.sigma)


class LinearEncoder(nn.Module):
    """q(z|y) = N(shrink * A (y - b), (widen * post_std)^2); exact posterior when shrink = widen = 1.

    With orthogonal columns of W the posterior N(M^-1 W^T (y - b), sigma^2 M^-1),
    M = W^T W + sigma^2 I, is diagonal.
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor, sigma: float, shrink: float, widen: float) -> None:
        super().__init__()
        m_diag = (w**2).sum(0) + sigma**2
        self.a, self.b = w.T / m_diag[:, None], b
        self.std = widen * sigma / torch.sqrt(m_diag)
        self.shrink = shrink

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.shrink * (y - self.b) @ self.a.T
        return mean, self.std.expand_as(mean)


@pytest.fixture(scope="module")
def linear_vae():
    """A VAE (fitted for one step, so its plumbing is real) with a linear-Gaussian
    decoder in standardised space, the points to score and their true log-density."""
    q, _ = torch.linalg.qr(torch.randn(3, 2, generator=torch.Generator().manual_seed(0)))
    w, b, sigma = q * torch.tensor([1.5, 0.8]), torch.tensor([0.3, -0.2, 0.1]), 0.4
    rng = np.random.default_rng(1)
    train = rng.normal(size=(600, 3)) * [2.0, 0.5, 1.0] + [1.0, -3.0, 0.0]
    m = methods.create("vae", "smoke", device="cpu", steps=1, latent_dim=2, eval_batch=100).fit(train)
    m.decoder_ = LinearDecoder(w, b, sigma)
    # the model density in data units: y = (x - mean) / std, y ~ N(b, W W^T + sigma^2 I)
    cov_y = (w @ w.T).numpy() + sigma**2 * np.eye(3)
    std, mean = m.scaler_.std, m.scaler_.mean
    mean_x, cov_x = mean + std * b.numpy(), cov_y * np.outer(std, std)
    x = rng.multivariate_normal(mean_x, cov_x, size=300)
    return m, (w, b, sigma), x, multivariate_normal(mean_x, cov_x).logpdf(x)


def test_vae_bound_is_exact_with_true_posterior(linear_vae):
    m, (w, b, sigma), x, true_lp = linear_vae
    m.encoder_ = LinearEncoder(w, b, sigma, shrink=1.0, widen=1.0)
    m.params["k_eval"] = 3
    np.testing.assert_allclose(m.log_prob(x), true_lp, atol=1e-4)


def test_vae_bound_rises_with_k_and_stays_below_truth(linear_vae):
    m, (w, b, sigma), x, true_lp = linear_vae
    m.encoder_ = LinearEncoder(w, b, sigma, shrink=0.6, widen=1.6)
    bounds = []
    for k in (1, 10, 100, 1000):
        m.params["k_eval"] = k
        bounds.append(m.log_prob(x).mean())
    assert np.all(np.diff(bounds) > 0), bounds
    assert bounds[-1] < true_lp.mean()
    assert true_lp.mean() - bounds[0] > 0.1  # the encoder is really off
    assert true_lp.mean() - bounds[-1] < 0.25 * (true_lp.mean() - bounds[0])
    np.testing.assert_array_equal(m.log_prob(x), m.log_prob(x))  # seeded evaluation


# -------------------------------------------------------- fits on 8gaussians
SHORT_FITS = {"score_diffusion": dict(steps=1000), "vae": dict(steps=800)}


@pytest.mark.parametrize("name", ["score_diffusion", "vae"])
def test_short_fit_beats_full_covariance_gaussian(name):
    """Quick profile with fewer steps on 5,000 points (~2-4 s)."""
    train, test = eight_gaussians(5_000, 2_000)
    m = methods.create(name, "quick", device="cpu", seed=0, **SHORT_FITS[name]).fit(train)
    assert m.log_prob(test).mean() > full_gaussian_test_ll(train, test) + 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["score_diffusion", "vae"])
def test_quick_fit_beats_full_covariance_gaussian(name):
    """The full quick profile as ``make run`` uses it (~5-15 s)."""
    train, test = eight_gaussians(20_000, 2_000)
    m = methods.create(name, "quick", device="cpu", seed=0).fit(train)
    # the VAE's bound beat the Gaussian by 0.79-0.85 nats over seeds 0-3 (both seed-stream schemes)
    assert m.log_prob(test).mean() > full_gaussian_test_ll(train, test) + 0.75


# ------------------------------------------------------------------------ GAN
def test_gan_learns_gaussian_moments():
    rng = np.random.default_rng(0)
    mu, cov = np.array([3.0, -2.0]), np.array([[1.0, 0.3], [0.3, 0.25]])
    train = rng.multivariate_normal(mu, cov, size=2000)
    m = methods.create("gan", "smoke", device="cpu", steps=200).fit(train)
    s = m.sample(4000, seed=1)
    sd = np.sqrt(np.diag(cov))
    # A smoke GAN oscillates around the target: over 30 fits (seeds 0-5, 200-400 steps, two seeding
    # schemes) its sample mean was off by up to 0.29 sd in a coordinate.
    assert np.all(np.abs(s.mean(0) - mu) < 0.35 * sd)
    assert np.all(np.abs(s.std(0) / sd - 1) < 0.3)
    assert abs(np.corrcoef(s.T)[0, 1] - 0.6) < 0.25
    assert set(m.info_) >= {"critic_loss", "generator_loss"}
    assert set(m.fit_phases_) == {"training"}


def test_gan_divergence_raises():
    train = np.random.default_rng(0).normal(size=(256, 2))
    with pytest.raises(methods.DivergenceError):
        methods.create("gan", "smoke", device="cpu", lr=1e12, steps=5).fit(train)
