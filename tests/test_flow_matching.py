"""Flow matching against closed forms: the straight path between N(0, I) and N(m, S).

For x_t = (1 - t) x0 + t x1 with independent x0 ~ N(0, I), x1 ~ N(m, S), (x_t, x1 - x0) is jointly
Gaussian: E[x_t] = t m, C_t = Cov(x_t) = (1 - t)^2 I + t^2 S, Cov(x1 - x0, x_t) = t S - (1 - t) I =: A_t,
so the marginal velocity E[x1 - x0 | x_t = x] = m + A_t C_t^{-1} (x - t m) is linear in x, and its
flow carries N(0, I) to N(m, S) (the path's marginals are N(t m, C_t)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.optimize import linear_sum_assignment
from scipy.stats import multivariate_normal

import methods
from harness.toolkit import ode
from harness.toolkit.seeding import row_rademacher
from methods.flow_matching import EXACT_TRACE_MAX_DIM, ot_pairing


def gaussian_velocity(m: np.ndarray, s: np.ndarray, dtype=torch.float64):
    """The closed-form marginal velocity of the straight path from N(0, I) to N(m, S)."""
    m_t, s_t = torch.as_tensor(m, dtype=dtype), torch.as_tensor(s, dtype=dtype)
    eye = torch.eye(len(m), dtype=dtype)

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=dtype).reshape(-1, 1, 1).expand(len(x), 1, 1)  # a time per row
        c = (1 - t) ** 2 * eye + t**2 * s_t
        a = t * s_t - (1 - t) * eye
        gain = a @ torch.linalg.inv(c)  # (n, d, d), symmetric: A_t and C_t are polynomials in S
        centred = (x - t[:, 0].to(x.dtype) * m_t.to(x.dtype))[:, :, None]
        return m_t.to(x.dtype) + (gain.to(x.dtype) @ centred)[:, :, 0]

    return v


M2, S2 = np.array([1.0, -0.5]), np.array([[2.0, 0.6], [0.6, 0.5]])
M3, S3 = np.array([0.5, -1.0, 2.0]), np.array([[1.5, 0.4, 0.2], [0.4, 0.8, -0.3], [0.2, -0.3, 0.6]])
#: RK4 on 128 equal steps of the smooth closed-form field: its error is far below the tolerances asserted.
DATA_TO_PRIOR = ode.uniform_times(1.0, 0.0)(128)


def test_closed_form_field_likelihood_is_the_gaussian_density_with_exact_divergence():
    x = np.random.default_rng(0).multivariate_normal(M2, S2, size=200)
    lp, se = ode.log_prob(gaussian_velocity(M2, S2), torch.as_tensor(x), DATA_TO_PRIOR)
    assert se is None
    np.testing.assert_allclose(lp.numpy(), multivariate_normal(M2, S2).logpdf(x), atol=1e-4)


def test_closed_form_field_transports_noise_by_the_symmetric_square_root():
    # every matrix of the field is a function of S, so the flow map is z -> m + S^(1/2) z exactly
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = ode.flow(gaussian_velocity(M2, S2), z, DATA_TO_PRIOR[::-1])
    np.testing.assert_allclose(x.numpy(), M2 + z.numpy() @ np.real(sqrtm(S2)).T, atol=1e-5)


def test_hutchinson_likelihood_is_unbiased_within_its_standard_error():
    x = np.random.default_rng(1).multivariate_normal(M3, S3, size=400)
    xt = torch.as_tensor(x)
    probes = row_rademacher(xt, 8, seed=2)
    lp, se = ode.log_prob(gaussian_velocity(M3, S3), xt, DATA_TO_PRIOR, probes=probes)
    err = lp.numpy() - multivariate_normal(M3, S3).logpdf(x)
    se = se.numpy()
    assert (se > 0).all() and np.abs(err).max() > 1e-3  # a real estimate, not the exact trace
    se_mean = np.sqrt(np.square(se).sum()) / len(se)
    assert abs(err.mean()) < 4 * se_mean


def test_ot_coupling_lowers_the_transport_cost_to_the_optimum():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(128, 2, generator=g, dtype=torch.float64)
    x1 = 0.5 * torch.randn(128, 2, generator=g, dtype=torch.float64) + torch.tensor([3.0, -1.0], dtype=torch.float64)
    perm = ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(128))
    cost_ot = float((x0 - x1[perm]).square().sum())
    cost_independent = float((x0 - x1).square().sum())
    cost = torch.cdist(x0, x1).square().numpy()
    rows, cols = linear_sum_assignment(cost)
    assert cost_ot < cost_independent
    assert cost_ot == pytest.approx(cost[rows, cols].sum(), rel=1e-9)


def test_learned_field_approaches_the_closed_form_field():
    rng = np.random.default_rng(3)
    train = rng.multivariate_normal(M2, S2, size=20_000)
    model = methods.create(
        "flow_matching", "smoke", device="cpu", seed=0, hidden=64, layers=3, steps=800, batch=512, lr=3e-3
    ).fit(train)
    # the fitted field lives in standardised units: there the target is exactly N(D^-1 (m - mu), D^-1 S D^-1)
    mu, sd = model.scaler_.mean, model.scaler_.std
    m_std, s_std = (M2 - mu) / sd, S2 / np.outer(sd, sd)
    v_true = gaussian_velocity(m_std, s_std, dtype=torch.float32)
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        c = (1 - t) ** 2 * np.eye(2) + t**2 * s_std
        xt = torch.as_tensor(rng.multivariate_normal(t * m_std, c, size=4000), dtype=torch.float32)
        tt = torch.tensor(t)
        with torch.no_grad():
            target, learned = v_true(xt, tt), model.velocity(xt, tt)
        spread = float((target - target.mean(0)).square().sum(1).mean())  # error of the best constant field
        error = float((learned - target).square().sum(1).mean())
        assert error < 0.05 * spread, (t, error, spread)


@pytest.mark.parametrize("dim, kind", [(2, "exact"), (EXACT_TRACE_MAX_DIM + 2, "estimate")])
def test_likelihood_kind_follows_the_dimension(dim, kind):
    x = np.random.default_rng(0).standard_normal((256, dim))
    model = methods.create("flow_matching", "smoke", device="cpu", steps=20).fit(x)
    assert model.log_prob_kind == kind and methods.get("flow_matching").log_prob_kind == "exact"
    lp = model.log_prob(x[:32])
    assert np.isfinite(lp).all() and model.info_["nfe_log_prob_mean"] > 0
    assert ("hutchinson_se" in model.info_) == (kind == "estimate")


def test_sampler_records_the_evaluations_of_its_checked_steps():
    x = np.random.default_rng(0).standard_normal((256, 2))
    model = methods.create("flow_matching", "smoke", device="cpu", steps=20, min_ode_steps=5, max_ode_steps=10).fit(x)
    model.sample(10)
    assert model.info_["sample_steps"] in (5, 10)
    assert model.info_["nfe_sample"] == model.info_["nfe_sample_max"] == 4 * model.info_["sample_steps"]
