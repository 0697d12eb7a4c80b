"""VP-SDE machinery for score-based diffusion (Song et al., ICLR 2021).

Every function takes a score function ``score(x (n, d), t 0-d) -> (n, d)``, so a neural network
and a closed-form score (tests) go through the same code. Forward process
dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta(t) = beta_min + t (beta_max - beta_min), so
x_t | x_0 ~ N(m_t x_0, s_t^2 I); the probability-flow ODE dx/dt = -1/2 beta(t) (x + score(x, t))
has the SDE's marginals and d log p_t(x_t)/dt = -div(drift) gives the likelihood (Sec. 4.3, App. D.2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from harness.toolkit.gaussian import standard_normal_log_prob

__all__ = [
    "TRACES",
    "VPSDE",
    "standard_normal_log_prob",
    "divergence_exact",
    "divergence_hutchinson",
    "divergence_probes",
    "CountedRHS",
    "ADAPTIVE",
    "solve",
    "ode_sample",
    "ode_log_prob",
    "em_sample",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TRACES = ("exact", "hutchinson")


@dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE with a linear beta schedule on t in [0, 1]."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log m_t."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """m_t = E[x_t | x_0] / x_0."""
        return torch.exp(self.log_mean_coeff(t))

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """s_t = sqrt(1 - m_t^2), computed stably for small t."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coeff(t)))

    def ode_drift(self, score: ScoreFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability-flow drift -1/2 beta(t) (x + score(x, t)), shape (n, d)."""
        return -0.5 * self.beta(t) * (x + score(x, t))

    def reverse_sde_drift(self, score: ScoreFn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Reverse-time SDE drift f - g^2 score = -1/2 beta(t) x - beta(t) score."""
        b = self.beta(t)
        return -0.5 * b * x - b * score(x, t)


def divergence_exact(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and the trace of its Jacobian per row, by one backward pass per dimension.

    ``fn`` must act row-wise. Returns detached (n, d) and (n,).
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        d = x.shape[1]
        for i in range(d):
            (grad,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=i < d - 1)
            div = div + grad[:, i]
    return out.detach(), div.detach()


def divergence_probes(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, probes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` (n, d) and Hutchinson estimates e_k^T J e_k of its Jacobian trace (Grathwohl et al. 2019),
    (n, K), for probes (K, n, d), all from one forward pass."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = fn(x)
        k = probes.shape[0]
        divs = [
            (torch.autograd.grad((out * e).sum(), x, retain_graph=i < k - 1)[0] * e).sum(dim=1)
            for i, e in enumerate(probes)
        ]
    return out.detach(), torch.stack(divs, dim=1).detach()


def divergence_hutchinson(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, probe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and the single-probe estimate probe^T J probe (n,) of the Jacobian trace; probe (n, d)."""
    out, divs = divergence_probes(fn, x, probe[None])
    return out, divs[:, 0]


class CountedRHS:
    """Wrap an ODE right-hand side and count its evaluations."""

    def __init__(self, rhs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.rhs = rhs
        self.nfe = 0

    def __call__(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.rhs(t, state)


ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def solve(
    rhs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t_start: float,
    t_end: float,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int = 100,
    land_on_end: bool = True,
) -> torch.Tensor:
    """The state at ``t_end`` of dy/dt = rhs(t, y) from y(t_start) = ``y0`` (torchdiffeq).

    Fixed-step methods take ``steps`` equal steps. Adaptive ones, with ``land_on_end``, clamp their
    steps to land on ``t_end`` (``step_t``), so the drift is never evaluated past it (the VP-SDE's
    s_t is NaN for t < 0); without it they may step past ``t_end`` and interpolate back."""
    span = torch.tensor([t_start, t_end], dtype=y0.dtype, device=y0.device)
    if method not in ADAPTIVE:
        options = {"step_size": abs(t_end - t_start) / steps}
    else:
        options = {"step_t": span[1:]} if land_on_end else None
    return odeint(rhs, y0, span, rtol=rtol, atol=atol, method=method, options=options)[-1]


@torch.no_grad()
def ode_sample(
    sde: VPSDE,
    score: ScoreFn,
    z: torch.Tensor,
    t_eps: float = 1e-3,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
) -> tuple[torch.Tensor, int]:
    """Integrate the probability-flow ODE from prior draws ``z`` (n, d) at t = 1 down to ``t_eps``.

    Returns (samples (n, d), number of score evaluations).
    """
    rhs = CountedRHS(lambda t, x: sde.ode_drift(score, x, t))
    return solve(rhs, z, 1.0, t_eps, method=method, rtol=rtol, atol=atol), rhs.nfe


def ode_log_prob(
    sde: VPSDE,
    score: ScoreFn,
    x: torch.Tensor,
    t_eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    trace: str = "exact",
    probe: torch.Tensor | None = None,
    prior_log_prob: Callable[[torch.Tensor], torch.Tensor] = standard_normal_log_prob,
) -> tuple[torch.Tensor, int]:
    """log p_{t_eps}(x) by the probability-flow ODE (instantaneous change of variables).

    Integrates the state (x_t, delta_t) from ``t_eps`` to 1 with
    d delta/dt = div(drift); then log p(x) = log p_1(x_1) + delta_1, with
    p_1 = ``prior_log_prob`` (default N(0, I), which is p_1 up to m_1 ~ 7e-3).
    ``trace="hutchinson"`` needs ``probe`` (n, d), fixed over the solve.
    Returns (log-densities (n,), number of score evaluations).
    """
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
    if trace == "hutchinson" and (probe is None or probe.shape != x.shape):
        raise ValueError("trace='hutchinson' needs a probe tensor with the shape of x")
    d = x.shape[1]

    def drift_and_div(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        xt = state[:, :d]
        fn = lambda y: sde.ode_drift(score, y, t)  # noqa: E731
        out, div = divergence_exact(fn, xt) if trace == "exact" else divergence_hutchinson(fn, xt, probe)
        return torch.cat([out, div[:, None]], dim=1)

    rhs = CountedRHS(drift_and_div)
    state0 = torch.cat([x, torch.zeros_like(x[:, :1])], dim=1)
    with torch.no_grad():
        end = solve(rhs, state0, t_eps, 1.0, method=method, rtol=rtol, atol=atol)
    return prior_log_prob(end[:, :d]) + end[:, d], rhs.nfe


@torch.no_grad()
def em_sample(
    sde: VPSDE,
    score: ScoreFn,
    z: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    t_eps: float = 1e-3,
) -> tuple[torch.Tensor, int]:
    """Euler-Maruyama on the reverse-time SDE from ``z`` at t = 1 to ``t_eps`` in ``steps`` equal steps.

    The last step returns the drift update without noise (Song et al. 2021's
    "denoise" convention). Returns (samples (n, d), number of score evaluations).
    """
    times = torch.linspace(1.0, t_eps, steps + 1, dtype=z.dtype, device=z.device)
    x = z
    for i in range(steps):
        t, dt = times[i], times[i] - times[i + 1]  # dt > 0, integrating backwards
        x_mean = x - sde.reverse_sde_drift(score, x, t) * dt
        if i == steps - 1:
            x = x_mean
        else:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x_mean + torch.sqrt(sde.beta(t) * dt) * noise
    return x, steps
