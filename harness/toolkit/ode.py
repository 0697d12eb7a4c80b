"""Ordinary differential equations of continuous-time generative models: one layer for every method.

Every solve marches a fixed time grid (``march``: Euler, Heun, midpoint or classical RK4) with a step
count chosen by a convergence check (``choose_steps``: the fewest N whose solve agrees with the one at
2N), so a row's result is the same arithmetic whichever rows share its batch. ``flow`` carries samples along a
velocity field; ``log_prob`` is the instantaneous change of variables (Chen et al. 2018, Grathwohl
et al. 2019) in either direction of time, with the exact divergence or Hutchinson's estimator on
probes keyed by the rows themselves (``seeding.row_rademacher``). ``FlowODE`` bundles a fitted model's
flow with its solve: likelihoods, samples, the solver error against the solve with twice the steps,
and the accuracy check against a converged float64 solve (``accuracy``).

A velocity is ``velocity(x (n, d), t (n, 1)) -> (n, d)``, each row at its own time; a time grid is a
``Times`` function, steps -> the steps + 1 times from the data end to the prior end.

Example::

    flow = FlowODE(velocity, uniform_times(1.0, 0.0), steps=16)
    lp, se = flow.log_prob(x)
    choice = choose_steps(lambda n: flow.with_steps(n).log_prob(x)[0], start=8, cap=512, target=5e-3)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from harness.toolkit.gaussian import standard_normal_log_prob
from harness.toolkit.seeding import row_rademacher

__all__ = [
    "MARCHES",
    "TRACES",
    "Times",
    "uniform_times",
    "march",
    "flow",
    "log_prob",
    "divergence_exact",
    "divergence_probes",
    "in_chunks",
    "STEP_GROWTH",
    "STATISTICS",
    "StepChoice",
    "choose_steps",
    "FlowODE",
    "ERROR_ROWS",
    "REFERENCE_CHANGE",
    "reference_log_prob",
    "Accuracy",
    "accuracy",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
#: A time grid: steps -> the steps + 1 times of a solve, from the data end to the prior end.
Times = Callable[[int], Sequence[float]]
#: Fixed-step schemes and their right-hand-side evaluations per step.
MARCHES = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}
TRACES = ("exact", "hutchinson")
#: Rows of a solver-error estimate (the first ones of the evaluated rows).
ERROR_ROWS = 500
#: Largest change (nats, over the rows) between N and 2N steps at which a float64 solve counts as the reference.
REFERENCE_CHANGE = 1e-6


def uniform_times(t_data: float, t_prior: float) -> Times:
    """Equal steps from ``t_data`` to ``t_prior``."""
    return lambda steps: np.linspace(t_data, t_prior, steps + 1).tolist()


@torch.no_grad()
def march(
    velocity: Callable[[Tensor, float], Tensor],
    z: Tensor,
    grid: Sequence[float],
    *,
    method: str = "rk4",
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Integrate dz/dt = velocity(z, t) over the time ``grid`` t_0, t_1, ... (either direction) from z at t_0.

    ``velocity(z (n, D), t: float)``; ``method``: "euler", "heun" (the explicit trapezoidal rule),
    "midpoint" or "rk4" (classical), with ``MARCHES[method]`` evaluations per step. ``on_step(k)`` is
    called after step k. Returns z at the last time.
    """
    if method not in MARCHES:
        raise ValueError(f"unknown solver '{method}'; valid: {', '.join(MARCHES)}")
    grid = [float(t) for t in grid]
    for k in range(len(grid) - 1):
        z = _STEPS[method](velocity, z, grid[k], grid[k + 1])
        if on_step is not None:
            on_step(k)
    return z


def _euler(f, z: Tensor, t0: float, t1: float) -> Tensor:
    return z + (t1 - t0) * f(z, t0)


def _heun(f, z: Tensor, t0: float, t1: float) -> Tensor:
    h = t1 - t0
    v0 = f(z, t0)
    return z + 0.5 * h * (v0 + f(z + h * v0, t1))


def _midpoint(f, z: Tensor, t0: float, t1: float) -> Tensor:
    h = t1 - t0
    return z + h * f(z + 0.5 * h * f(z, t0), t0 + 0.5 * h)


def _rk4(f, z: Tensor, t0: float, t1: float) -> Tensor:
    h = t1 - t0
    k1 = f(z, t0)
    k2 = f(z + 0.5 * h * k1, t0 + 0.5 * h)
    k3 = f(z + 0.5 * h * k2, t0 + 0.5 * h)
    k4 = f(z + h * k3, t1)
    return z + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)


_STEPS = {"euler": _euler, "heun": _heun, "midpoint": _midpoint, "rk4": _rk4}


def _per_row(velocity: Velocity) -> Callable[[Tensor, float], Tensor]:
    """``velocity`` with its time broadcast to one per row, as ``march`` calls it."""
    return lambda x, t: velocity(x, torch.full((x.shape[0], 1), t, dtype=x.dtype, device=x.device))


@torch.no_grad()
def flow(velocity: Velocity, z: Tensor, grid: Sequence[float], *, method: str = "rk4") -> Tensor:
    """Carry ``z`` (n, d) at ``grid[0]`` along dx/dt = velocity(x, t) to ``grid[-1]``; returns x (n, d)."""
    return march(_per_row(velocity), z, grid, method=method)


def log_prob(
    velocity: Velocity,
    x: Tensor,
    grid: Sequence[float],
    *,
    method: str = "rk4",
    probes: Tensor | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob,
) -> tuple[Tensor, Tensor | None]:
    """log p(x) at ``grid[0]`` of the flow dx/dt = velocity(x, t) whose marginal at ``grid[-1]`` is ``prior_log_prob``.

    Integrates (x_t, delta_t) over ``grid`` (either direction) with d delta/dt = div velocity(x_t, t), so
    log p(x) = log p_prior(x_prior) + delta at the end (d log p_t(x_t)/dt = -div velocity). ``probes``
    None: the exact divergence. ``probes`` (K, n, d): one Hutchinson estimate per probe along the same
    trajectory; the result is their mean and the second output its standard error per row (None when
    K < 2). Returns (log-densities (n,), standard errors (n,) or None).
    """
    d = x.shape[1]
    k = 1 if probes is None else probes.shape[0]

    def rhs(state: Tensor, t: float) -> Tensor:
        times = torch.full((state.shape[0], 1), t, dtype=state.dtype, device=state.device)
        fn = lambda y: velocity(y, times)  # noqa: E731
        if probes is None:
            out, div = divergence_exact(fn, state[:, :d])
            return torch.cat([out, div[:, None]], dim=1)
        out, divs = divergence_probes(fn, state[:, :d], probes)
        return torch.cat([out, divs], dim=1)

    end = march(rhs, torch.cat([x, x.new_zeros(x.shape[0], k)], dim=1), grid, method=method)
    lp = prior_log_prob(end[:, :d])[:, None] + end[:, d:]
    se = lp.std(dim=1) / math.sqrt(k) if k > 1 else None
    return lp.mean(dim=1), se


def divergence_exact(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(x)`` and the trace of its Jacobian per row, by one backward pass per dimension.

    ``fn`` must act row-wise. Returns detached (n, d) and (n,). (Forward mode, ``torch.func.jvp`` under
    ``vmap`` over the d basis vectors, was 1.4-3x slower on a CPU at d = 2 and 5: docs/likelihoods.md.)
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


def in_chunks(fn: Callable[[int, int], tuple[tuple[Tensor, ...], int]], n: int, size: int) -> tuple[list[Tensor], int]:
    """Run ``fn(start, stop)`` on consecutive chunks [start, stop) of ``n`` rows, at most ``size`` each.

    ``fn`` returns (a tuple of (stop - start, ...) tensors, its batch evaluations). Returns the tensors
    concatenated position by position over the chunks, and the evaluations summed.
    """
    parts, evaluations = [], 0
    for start in range(0, n, size):
        out, k = fn(start, min(start + size, n))
        parts.append(out)
        evaluations += k
    return [torch.cat(column) for column in zip(*parts, strict=True)], evaluations


#: Ratio of successive step counts the check tries (sqrt 2: at most 41% more steps than the fewest that pass).
STEP_GROWTH = math.sqrt(2.0)
#: How a check summarises |solve(N) - solve(2N)| over its entries.
STATISTICS = {"max": lambda change: float(change.max()), "mean": lambda change: float(change.mean())}


@dataclass(frozen=True)
class StepChoice:
    """The outcome of ``choose_steps``: the step count ``steps``; ``changes`` {N: change between N and 2N
    steps} for every N tried; ``capped``: the cap stopped the search before a change fell to the target."""

    steps: int
    changes: dict[int, float]
    capped: bool

    @property
    def change(self) -> float:
        """The change at ``steps`` (for a capped choice the last change measured)."""
        return self.changes[self.steps] if self.steps in self.changes else self.changes[max(self.changes)]

    def coarsest(self, target: float) -> int:
        """The fewest steps tried whose change is at most ``target`` (``steps`` when none is)."""
        return min((n for n, c in self.changes.items() if c <= target), default=self.steps)


def choose_steps(
    solve: Callable[[int], Tensor],
    *,
    start: int,
    cap: int,
    target: float,
    statistic: str = "max",
    growth: float = STEP_GROWTH,
) -> StepChoice:
    """The fewest steps N (from ``start``, growing by ``growth``, at most ``cap``) whose solve agrees with the
    one at 2N within ``target``.

    ``solve(N)`` returns a tensor (per-row log-densities, or sample positions) computed with N steps on
    fixed rows; the change is the ``statistic`` ("max" or "mean") of |solve(N) - solve(2N)| over its
    entries. For a scheme of order p the 2N solve is 2^p times more accurate (16 for RK4), so the change
    estimates the error at N. When no N up to ``cap`` passes, N is ``cap`` and ``capped`` is True (its
    change is then measured against 2 ``cap`` steps).
    """
    if not 1 <= start <= cap:
        raise ValueError(f"need 1 <= start <= cap, got start={start}, cap={cap}")
    summary, solved, changes = STATISTICS[statistic], {}, {}

    def solution(n: int) -> Tensor:
        if n not in solved:
            solved[n] = solve(n).double()
        return solved[n]

    k = 0
    while True:
        steps = min(cap, round(start * growth**k))
        changes[steps] = summary((solution(2 * steps) - solution(steps)).abs())
        if changes[steps] <= target or steps == cap:
            return StepChoice(steps, changes, changes[steps] > target)
        k += 1
        while round(start * growth**k) <= steps:  # rounding may repeat a count at small starts
            k += 1


@dataclass(frozen=True)
class FlowODE:
    """How a fitted model's probability flow is solved, in the model's standardised units.

    The flow dx/dt = ``velocity(x, t)`` carries the N(0, I) prior at the last time of ``times`` to the
    data at the first. ``method``, ``steps``: the fixed-step scheme and its step count on the grid
    ``times(steps)``; ``eval_batch``: rows per solve (memory only); ``probes``: Hutchinson probes per row
    (0: the exact trace), drawn by ``seeding.row_rademacher`` with ``probe_seed``; ``dtype``: the
    precision rows are solved in (the velocity must accept it).
    """

    velocity: Velocity
    times: Times
    method: str = "rk4"
    steps: int = 32
    eval_batch: int = 4096
    probes: int = 0
    probe_seed: int = 0
    dtype: torch.dtype = torch.float32

    @property
    def nfe(self) -> int:
        """Evaluations of the velocity per row (with its divergence for a likelihood)."""
        return MARCHES[self.method] * self.steps

    def with_steps(self, steps: int) -> FlowODE:
        return replace(self, steps=int(steps))

    def grid(self) -> list[float]:
        return [float(t) for t in self.times(self.steps)]

    def log_prob(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """log-densities (n,) of standardised rows ``y`` (n, d) and their Hutchinson standard errors (n,) (None
        with fewer than two probes), in ``dtype``."""
        y, grid = y.to(self.dtype), self.grid()

        def one_chunk(start: int, stop: int) -> tuple[tuple[Tensor, ...], int]:
            rows = y[start:stop]
            probes = row_rademacher(rows, self.probes, self.probe_seed) if self.probes else None
            lp, se = log_prob(self.velocity, rows, grid, method=self.method, probes=probes)
            return ((lp,) if se is None else (lp, se)), self.nfe

        out, _ = in_chunks(one_chunk, len(y), self.eval_batch)
        return out[0], (out[1] if len(out) > 1 else None)

    def transport(self, z: Tensor) -> tuple[Tensor, int]:
        """Samples (n, d) for prior draws ``z`` (n, d) and the batch evaluations summed over chunks (the cost)."""
        z, grid = z.to(self.dtype), self.grid()[::-1]

        def one_chunk(start: int, stop: int) -> tuple[tuple[Tensor, ...], int]:
            return (flow(self.velocity, z[start:stop], grid, method=self.method),), self.nfe

        (x,), evaluations = in_chunks(one_chunk, len(z), self.eval_batch)
        return x, evaluations

    def errors(self, y: Tensor, n_rows: int, scored: tuple[Tensor, Tensor | None] | None = None) -> dict[str, float]:
        """Error bars of a mean log-likelihood over ``n_rows`` rows, estimated on the first ``ERROR_ROWS`` of
        the standardised rows ``y`` (m, d): ``solver_err``, mean |lp - lp_tight| against the same solve with
        twice the steps (the tighter solve: 2^p times more accurate for a scheme of order p, 16 for RK4),
        with the same probes; with probes, ``estimator_se``, the standard error they add to the mean over
        ``n_rows`` rows, sqrt(mean se_i^2 / n_rows). ``scored``: this solve's (log-densities, standard
        errors) of those rows when already computed."""
        y = y[:ERROR_ROWS]
        lp, se = self.log_prob(y) if scored is None else scored
        tight, _ = self.with_steps(2 * self.steps).log_prob(y)
        out = {"solver_err": float((lp.double() - tight.double()).abs().mean())}
        if se is not None:
            out["estimator_se"] = float(math.sqrt(float(se.double().square().mean()) / n_rows))
        return out


def reference_log_prob(flow_ode: FlowODE, y: Tensor, *, cap: int = 1 << 14) -> tuple[Tensor, StepChoice]:
    """The converged log-densities of ``y`` (n, d) under ``flow_ode``'s flow: ``flow_ode`` (its velocity must
    accept float64) solved in float64 with its steps doubled until a doubling changes no row by more than
    ``REFERENCE_CHANGE``; returns (log-densities at twice the chosen steps (n,), the choice). RuntimeError
    when ``cap`` steps are not enough."""
    exact = replace(flow_ode, dtype=torch.float64)
    solved: dict[int, Tensor] = {}

    def solve(n: int) -> Tensor:
        solved[n] = exact.with_steps(n).log_prob(y)[0]
        return solved[n]

    choice = choose_steps(solve, start=flow_ode.steps, cap=cap, target=REFERENCE_CHANGE, growth=2.0)
    if choice.capped:
        raise RuntimeError(f"the reference solve did not converge within {cap} steps (change {choice.change:.2g})")
    return solved[2 * choice.steps], choice


@dataclass(frozen=True)
class Accuracy:
    """A likelihood solve against a reference on the same rows: per-row absolute error (nats) ``max_err``
    and ``mean_err``; evaluations per row ``nfe``; wall-clock ``seconds``."""

    max_err: float
    mean_err: float
    nfe: int
    seconds: float

    def within(self, tolerance: float = 0.01) -> bool:
        return self.max_err <= tolerance


def accuracy(flow_ode: FlowODE, reference: Tensor, y: Tensor) -> Accuracy:
    """``flow_ode``'s log-densities of standardised rows ``y`` (n, d) against ``reference`` (n,) (e.g.
    ``reference_log_prob``'s)."""
    start = time.perf_counter()
    lp, _ = flow_ode.log_prob(y)
    seconds = time.perf_counter() - start
    err = (lp.double().cpu() - reference.double().cpu()).abs()
    return Accuracy(float(err.max()), float(err.mean()), flow_ode.nfe, seconds)
