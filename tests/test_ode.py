"""The ODE layer's step check and reference against closed forms (harness.toolkit.ode).

The straight path from N(0, I) to N(m, S) has a linear velocity field (tests/test_flow_matching.py)
whose likelihood is the Gaussian density. The sharper the data (S small), the faster the field turns
near the data end, so the convergence check must choose more steps for it; the converged float64
reference must reproduce the density.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from harness.toolkit import ode
from test_flow_matching import gaussian_velocity

MEAN = np.array([0.5, -1.0])
BROAD, SHARP = np.diag([1.0, 0.5]), np.diag([1e-3, 5e-4])


def flow_of(cov: np.ndarray, steps: int = 2, dtype=torch.float64) -> ode.FlowODE:
    return ode.FlowODE(gaussian_velocity(MEAN, cov, dtype), ode.uniform_times(1.0, 0.0), steps=steps, dtype=dtype)


def draws(cov: np.ndarray, n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).multivariate_normal(MEAN, cov, size=n))


def checked(cov: np.ndarray, cap: int = 4096) -> ode.StepChoice:
    flow, rows = flow_of(cov), draws(cov)
    return ode.choose_steps(lambda n: flow.with_steps(n).log_prob(rows)[0], start=2, cap=cap, target=5e-3)


def test_step_check_chooses_more_steps_for_a_sharper_field():
    broad, sharp = checked(BROAD), checked(SHARP)
    assert not broad.capped and not sharp.capped
    assert sharp.steps >= 4 * broad.steps, (broad, sharp)
    assert broad.change <= 5e-3 and sharp.change <= 5e-3


@pytest.mark.parametrize("cov", [BROAD, SHARP], ids=["broad", "sharp"])
def test_checked_steps_meet_the_accuracy_they_were_checked_for(cov):
    """RK4 at 2N is about 16 times more accurate than at N, so the change bounds the error at N (x 1.1)."""
    choice, rows = checked(cov), draws(cov, seed=1)
    lp, _ = flow_of(cov, choice.steps).log_prob(rows)
    exact = multivariate_normal(MEAN, cov).logpdf(rows.numpy())
    assert np.abs(lp.numpy() - exact).max() <= 1.1 * 5e-3


def test_a_binding_cap_is_reported():
    choice = checked(SHARP, cap=8)
    assert choice.capped and choice.steps == 8
    assert choice.change > 5e-3  # the last change measured, 4 against 8 steps


def test_step_check_refuses_a_start_beyond_the_cap():
    with pytest.raises(ValueError, match="start <= cap"):
        ode.choose_steps(lambda n: torch.zeros(1), start=16, cap=8, target=1.0)


def test_reference_reproduces_the_density_and_refuses_to_stop_short():
    rows = draws(SHARP, seed=2)
    lp, choice = ode.reference_log_prob(flow_of(SHARP), rows)
    exact = multivariate_normal(MEAN, SHARP).logpdf(rows.numpy())
    assert choice.change <= ode.REFERENCE_CHANGE
    np.testing.assert_allclose(lp.numpy(), exact, atol=1e-5)
    with pytest.raises(RuntimeError, match="did not converge"):
        ode.reference_log_prob(flow_of(SHARP), rows, cap=16)


def test_float32_rows_agree_across_batches():
    """Fixed steps: a row's arithmetic is the same in any batch, up to float32 rounding of the matmuls."""
    flow, rows = flow_of(BROAD, steps=16, dtype=torch.float32), draws(BROAD, n=300).float()
    alone = torch.cat([flow.log_prob(rows[i : i + 1])[0] for i in range(0, 300, 37)])
    together = flow.log_prob(rows)[0][::37]
    assert (alone - together).abs().max() < 1e-5
