"""Ordinary differential equations of continuous-time generative models: one layer for every method.

``solve`` integrates dy/dt = rhs(t, y) (torchdiffeq) and ``CountedRHS`` counts the evaluations;
``flow`` carries samples along a velocity field; ``log_prob`` is the instantaneous change of
variables (Chen et al. 2018, Grathwohl et al. 2019) in either direction of time, with the exact
divergence or Hutchinson's estimator on ``rademacher`` probes; ``march`` steps a fixed time grid
(Euler or Heun); ``in_chunks`` runs a solve over rows in chunks and sums the evaluations.
A velocity is ``velocity(x (n, d), t 0-d) -> (n, d)``.

Example::

    x, nfe = flow(velocity, z, 0.0, 1.0, method="dopri5", rtol=1e-5, atol=1e-5)
    lp, se, nfe = log_prob(velocity, x, 1.0, 0.0, method="dopri5", rtol=1e-5, atol=1e-5)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchdiffeq import odeint

from harness.toolkit.gaussian import standard_normal_log_prob

__all__ = [
    "ADAPTIVE",
    "MARCHES",
    "TRACES",
    "CountedRHS",
    "solve",
    "flow",
    "log_prob",
    "divergence_exact",
    "divergence_probes",
    "rademacher",
    "march",
    "in_chunks",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
MARCHES = ("euler", "heun")  #: schemes of ``march``
TRACES = ("exact", "hutchinson")


class CountedRHS:
    """Wrap an ODE right-hand side ``rhs(t, y)`` and count its evaluations (``nfe``)."""

    def __init__(self, rhs: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.rhs = rhs
        self.nfe = 0

    def __call__(self, t: Tensor, state: Tensor) -> Tensor:
        self.nfe += 1
        return self.rhs(t, state)


def solve(
    rhs: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t_start: float,
    t_end: float,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int = 100,
    land_on_end: bool = True,
) -> Tensor:
    """The state at ``t_end`` of dy/dt = rhs(t, y) from y(t_start) = ``y0`` (torchdiffeq).

    Fixed-step methods take ``steps`` equal steps. Adaptive ones, with ``land_on_end``, clamp their
    steps to land on ``t_end`` (``step_t``), so the right-hand side is never evaluated past it (the
    VP-SDE's s_t is NaN for t < 0); without it they may step past ``t_end`` and interpolate back."""
    span = torch.tensor([t_start, t_end], dtype=y0.dtype, device=y0.device)
    if method not in ADAPTIVE:
        options = {"step_size": abs(t_end - t_start) / steps}
    else:
        options = {"step_t": span[1:]} if land_on_end else None
    return odeint(rhs, y0, span, rtol=rtol, atol=atol, method=method, options=options)[-1]


@torch.no_grad()
def flow(velocity: Velocity, z: Tensor, t_start: float, t_end: float, **solver) -> tuple[Tensor, int]:
    """Carry ``z`` (n, d) at ``t_start`` along dx/dt = velocity(x, t) to ``t_end``; returns (x (n, d), NFE).
    ``solver``: keyword arguments of ``solve``."""
    rhs = CountedRHS(lambda t, x: velocity(x, t))
    return solve(rhs, z, t_start, t_end, **solver), rhs.nfe


def log_prob(
    velocity: Velocity,
    x: Tensor,
    t_data: float,
    t_prior: float,
    *,
    probes: Tensor | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    **solver,
) -> tuple[Tensor, Tensor | None, int]:
    """log p_{t_data}(x) of the flow dx/dt = velocity(x, t) whose marginal at ``t_prior`` is ``prior_log_prob``.

    Integrates (x_t, delta_t) from ``t_data`` to ``t_prior`` (either direction) with
    d delta/dt = div velocity(x_t, t), so log p(x) = log p_prior(x_prior) + delta at ``t_prior``
    (d log p_t(x_t)/dt = -div velocity). ``probes`` None: the exact divergence. ``probes`` (K, n, d):
    one Hutchinson estimate per probe along the same trajectory; the result is their mean and the
    second output its standard error per row (None when K < 2). ``solver``: keyword arguments of
    ``solve``. Returns (log-densities (n,), standard errors (n,) or None, NFE).
    """
    d = x.shape[1]
    k = 1 if probes is None else probes.shape[0]

    def rhs(t: Tensor, state: Tensor) -> Tensor:
        fn = lambda y: velocity(y, t)  # noqa: E731
        if probes is None:
            out, div = divergence_exact(fn, state[:, :d])
            return torch.cat([out, div[:, None]], dim=1)
        out, divs = divergence_probes(fn, state[:, :d], probes)
        return torch.cat([out, divs], dim=1)

    counted = CountedRHS(rhs)
    state0 = torch.cat([x, x.new_zeros(x.shape[0], k)], dim=1)
    with torch.no_grad():
        end = solve(counted, state0, t_data, t_prior, **solver)
    lp = prior_log_prob(end[:, :d])[:, None] + end[:, d:]
    se = lp.std(dim=1) / math.sqrt(k) if k > 1 else None
    return lp.mean(dim=1), se, counted.nfe


def divergence_exact(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
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


def divergence_probes(fn: Callable[[Tensor], Tensor], x: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
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


def rademacher(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Independent +-1 entries with probability 1/2 each, drawn with ``generator`` on ``device``."""
    return (torch.randint(0, 2, shape, generator=generator, device=device) * 2 - 1).to(dtype)


@torch.no_grad()
def march(
    velocity: Callable[[Tensor, float], Tensor],
    z: Tensor,
    grid: Sequence[float],
    *,
    method: str = "euler",
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Integrate dz/dt = velocity(z, t) over the time ``grid`` t_0, t_1, ... (either direction) from z at t_0.

    ``velocity(z (n, d), t: float)``; ``method`` "euler" (one evaluation per step) or "heun" (the
    explicit trapezoidal rule, two). ``on_step(k)`` is called after step k. Returns z at the last time.
    """
    if method not in MARCHES:
        raise ValueError(f"unknown solver '{method}'; valid: {', '.join(MARCHES)}")
    grid = [float(t) for t in grid]
    for k in range(len(grid) - 1):
        t0, t1 = grid[k], grid[k + 1]
        h = t1 - t0
        v0 = velocity(z, t0)
        if method == "euler":
            z = z + h * v0
        else:
            z_pred = z + h * v0
            z = z + 0.5 * h * (v0 + velocity(z_pred, t1))
        if on_step is not None:
            on_step(k)
    return z


def in_chunks(fn: Callable[[int, int], tuple[tuple[Tensor, ...], int]], n: int, size: int) -> tuple[list[Tensor], int]:
    """Run ``fn(start, stop)`` on consecutive chunks [start, stop) of ``n`` rows, at most ``size`` each.

    ``fn`` returns (a tuple of (stop - start, ...) tensors, its evaluation count). Returns the tensors
    concatenated position by position over the chunks, and the counts summed.
    """
    parts, nfe = [], 0
    for start in range(0, n, size):
        out, k = fn(start, min(start + size, n))
        parts.append(out)
        nfe += k
    return [torch.cat(column) for column in zip(*parts, strict=True)], nfe
