"""Closed-form checks of the training-free score and the probability-flow labels.

Gaussian facts used (Schedule: Z_t | x ~ N(alpha_t x, beta_t^2 I)): for x ~ N(mu, Sigma) the
marginal is p_t = N(alpha_t mu, C_t), C_t = alpha_t^2 Sigma + beta_t^2 I, with score
-C_t^-1 (z - alpha_t mu); the probability flow keeps Z_t - alpha_t mu = C_t^(1/2) C_1^(-1/2)
(Z_1 - alpha_1 mu) (all C_t commute), so Z_0 = mu + C_0^(1/2) C_1^(-1/2) (z - eps mu) with
alpha_1 = eps, beta_1 = 1, alpha_0 = 1, beta_0^2 = eps.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.toolkit import training_free_score as tfs
from harness.toolkit.training_free_score import Schedule, flow_to_data, probability_flow, score, score_reference

SCHED = Schedule()
EPS = SCHED.eps


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small kernels on a shared 2-core machine: one thread avoids OpenMP oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mixture_score_autograd(z: torch.Tensor, t: float, data: torch.Tensor) -> torch.Tensor:
    """Gradient of log mean_j N(z; alpha_t x_j, beta_t^2 I) by autograd (float64)."""
    z = z.clone().requires_grad_(True)
    a, b2 = SCHED.alpha(t), SCHED.beta2(t)
    sq = ((z[:, None, :] - a * data[None, :, :]) ** 2).sum(-1)
    log_p = (
        torch.logsumexp(-0.5 * sq / b2, dim=1) - math.log(len(data)) - 0.5 * data.shape[1] * math.log(2 * math.pi * b2)
    )
    (grad,) = torch.autograd.grad(log_p.sum(), z)
    return grad


def _gaussian(n: int, seed: int, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    chol = torch.linalg.cholesky(cov)
    return mu + torch.randn(n, len(mu), generator=_gen(seed), dtype=cov.dtype) @ chol.T


def _gaussian_score(mu: torch.Tensor, cov: torch.Tensor):
    eye = torch.eye(len(mu), dtype=cov.dtype)

    def fn(z: torch.Tensor, t: float) -> torch.Tensor:
        c_t = SCHED.alpha(t) ** 2 * cov + SCHED.beta2(t) * eye
        return -torch.linalg.solve(c_t, (z - SCHED.alpha(t) * mu).T).T

    return fn


MU2 = torch.tensor([0.5, -1.0], dtype=torch.float64)
COV2 = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)


# ----------------------------------------------------------------------------- 1. exact mixture score


@pytest.mark.parametrize("t", [0.0, 0.37, 1.0])
def test_score_matches_autograd_of_mixture_log_density(t):
    data = torch.randn(60, 3, generator=_gen(0), dtype=torch.float64) * 2.0
    z = torch.cat(
        [
            torch.randn(40, 3, generator=_gen(1), dtype=torch.float64) * 3.0,
            torch.full((1, 3), 25.0, dtype=torch.float64),
        ]
    )
    expected = _mixture_score_autograd(z, t, data)
    assert torch.allclose(score(z, t, data), expected, atol=1e-5, rtol=1e-7)
    assert torch.allclose(score_reference(z, t, data), expected, atol=1e-5, rtol=1e-7)


@pytest.mark.parametrize("t", [0.0, 0.5])
def test_fused_float32_agrees_with_reference(t):
    data = torch.randn(3000, 5, generator=_gen(2))
    z = torch.randn(700, 5, generator=_gen(3)) * 1.5
    ref = score_reference(z.double(), t, data.double()).float()
    got = score(z, t, data)
    assert torch.allclose(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)


def test_chunking_and_plain_path_change_nothing():
    data = torch.randn(1000, 4, generator=_gen(4), dtype=torch.float64)
    z = torch.randn(300, 4, generator=_gen(5), dtype=torch.float64) * 2.0
    whole = score(z, 0.2, data, query_chunk=10_000, data_chunk=10_000)
    chunked = score(z, 0.2, data, query_chunk=70, data_chunk=300)
    plain = tfs._score_blocks(z, 0.2, data, SCHED, tfs._block_plain, 70, 300)
    assert torch.allclose(chunked, whole, atol=1e-10)
    assert torch.allclose(plain, whole, atol=1e-10)


def test_cpu_uses_the_fused_kernel():
    assert tfs.fused_backend("cpu", torch.float32, 2) == "cpu_flash"
    assert tfs.fused_backend("cpu", torch.float64, 43) == "cpu_flash"


def test_score_validates_inputs():
    data = torch.randn(10, 2)
    with pytest.raises(ValueError, match="d="):
        score(torch.randn(3, 3), 0.5, data)
    with pytest.raises(ValueError, match="dtype"):
        score(torch.randn(3, 2, dtype=torch.float64), 0.5, data)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        score(torch.randn(3, 2), 1.5, data)


# ----------------------------------------------------------------------------- 2. Gaussian data


def test_score_of_large_gaussian_sample_approaches_gaussian_score():
    data = _gaussian(20_000, 6, MU2, COV2)
    t = 0.5
    c_t = SCHED.alpha(t) ** 2 * COV2 + SCHED.beta2(t) * torch.eye(2, dtype=torch.float64)
    z = _gaussian(500, 7, SCHED.alpha(t) * MU2, c_t)
    expected = _gaussian_score(MU2, COV2)(z, t)
    err = (score(z, t, data) - expected).norm(dim=1)
    assert err.mean() < 0.03 * expected.norm(dim=1).mean()


def test_monte_carlo_score_error_falls_like_inverse_sqrt_batch():
    data = _gaussian(20_000, 8, MU2, COV2)
    t = 0.5
    z = _gaussian(
        200, 9, SCHED.alpha(t) * MU2, SCHED.alpha(t) ** 2 * COV2 + SCHED.beta2(t) * torch.eye(2, dtype=torch.float64)
    )
    full = score(z, t, data)
    g = _gen(10)

    def rms_error(batch: int) -> float:
        sq = [(score(z, t, tfs._mc_rows(data, batch, g)) - full).square().sum(1).mean() for _ in range(12)]
        return float(torch.stack(sq).mean().sqrt())

    ratio = rms_error(50) / rms_error(800)
    assert 0.5 * math.sqrt(16) < ratio < 2.0 * math.sqrt(16)


# ----------------------------------------------------------------------------- 3. probability flow


def _analytic_gaussian_map(z: torch.Tensor, mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Z_0 for diagonal covariance diag(var) (see module docstring)."""
    c0 = var + EPS
    c1 = var * EPS**2 + 1.0
    return mu + torch.sqrt(c0 / c1) * (z - EPS * mu)


def test_probability_flow_of_gaussian_matches_analytic_map_with_solver_orders():
    mu = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64)
    var = torch.tensor([4.0, 0.25, 1.0], dtype=torch.float64)

    def fn(z: torch.Tensor, t: float) -> torch.Tensor:  # diagonal case of _gaussian_score
        return -(z - SCHED.alpha(t) * mu) / (SCHED.alpha(t) ** 2 * var + SCHED.beta2(t))

    z = torch.randn(50, 3, generator=_gen(11), dtype=torch.float64)
    target = _analytic_gaussian_map(z, mu, var)

    def err(steps: int, solver: str) -> float:
        return float((probability_flow(z, fn, steps=steps, solver=solver) - target).abs().max())

    e_euler = [err(200, "euler"), err(400, "euler")]
    e_heun = [err(100, "heun"), err(200, "heun")]
    assert e_euler[1] < 2e-2 and e_heun[1] < 1e-3
    assert 1.6 < e_euler[0] / e_euler[1] < 2.5  # first order
    assert 3.0 < e_heun[0] / e_heun[1] < 5.0  # second order


def _assert_moments(
    labels: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, mean_tol: float, cov_tol: float
) -> None:
    assert torch.allclose(labels.mean(0), mean, atol=mean_tol), (labels.mean(0), mean)
    assert torch.allclose(torch.cov(labels.T), cov, atol=cov_tol), (torch.cov(labels.T), cov)


def test_exact_labels_have_data_moments_plus_eps_smoothing():
    data = _gaussian(1000, 12, MU2, COV2).float()
    z = torch.randn(2000, 2, generator=_gen(13))
    labels = flow_to_data(z, data, steps=40, solver="heun", mode="exact")
    # t = 0 marginal of the empirical data: mean_j N(x_j, eps I)
    d = data.double()
    cov0 = torch.cov(d.T, correction=0) + EPS * torch.eye(2, dtype=torch.float64)
    _assert_moments(labels.double(), d.mean(0), cov0, mean_tol=0.08, cov_tol=0.12)


@pytest.mark.parametrize("mode", ["minibatch", "minibatch_refresh"])
def test_minibatch_modes_give_correct_moments_and_are_seeded(mode):
    data = _gaussian(5000, 14, MU2, COV2).float()
    z = torch.randn(2000, 2, generator=_gen(15))
    kw = dict(steps=50, mode=mode, mc_batch=400, chunk=500)
    labels = flow_to_data(z, data, generator=_gen(16), **kw)
    cov0 = COV2 + EPS * torch.eye(2, dtype=torch.float64)
    _assert_moments(labels.double(), MU2, cov0, mean_tol=0.12, cov_tol=0.25)
    assert torch.equal(labels, flow_to_data(z, data, generator=_gen(16), **kw))
    assert not torch.equal(labels, flow_to_data(z, data, generator=_gen(17), **kw))


def test_minibatch_keeps_one_batch_per_chunk_and_refresh_does_not():
    # Tiny well-separated data: with a batch of one row per chunk every label of that chunk lands
    # on that row; refreshing per step spreads a chunk over several rows.
    data = torch.tensor([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0], [0.0, -6.0]])
    z = torch.randn(400, 2, generator=_gen(18))
    kept = flow_to_data(z, data, steps=40, mode="minibatch", mc_batch=1, chunk=100, generator=_gen(19))
    fresh = flow_to_data(z, data, steps=40, mode="minibatch_refresh", mc_batch=2, chunk=400, generator=_gen(19))
    for c in range(4):
        rows = kept[c * 100 : (c + 1) * 100]
        assert (rows - rows[0]).abs().max() < 1.0  # one data row (+ eps noise)
    nearest = torch.cdist(fresh, data).argmin(1)
    assert len(torch.unique(nearest)) == 4


def test_heun_flow_to_data_and_validation():
    data = torch.randn(500, 2, generator=_gen(20))
    z = torch.randn(100, 2, generator=_gen(21))
    euler = flow_to_data(z, data, steps=400, mode="exact")
    heun = flow_to_data(z, data, steps=100, solver="heun", mode="exact")
    assert (euler - heun).abs().median() < 0.05
    with pytest.raises(ValueError, match="mode"):
        flow_to_data(z, data, mode="fast")
    with pytest.raises(ValueError, match="solver"):
        flow_to_data(z, data, solver="rk4")
    with pytest.raises(ValueError, match="steps"):
        flow_to_data(z, data, steps=0)
