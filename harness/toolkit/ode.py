"""Ordinary differential equations of continuous-time generative models: one layer for every method.

``solve`` integrates dy/dt = rhs(t, y) row by row: adaptive methods through torchode (Lienen &
Guennemann 2022), which keeps a step size and an error norm per row, so a row's solution never
depends on the rows that share its batch; fixed-step methods on a uniform grid (``march``).
``flow`` carries samples along a velocity field; ``log_prob`` is the instantaneous change of
variables (Chen et al. 2018, Grathwohl et al. 2019) in either direction of time, with the exact
divergence or Hutchinson's estimator on probes keyed by the rows themselves (``row_rademacher``);
``in_chunks`` runs a solve over rows in chunks of bounded memory. Every solve reports the function
evaluations each row needed (``nfe``) and those made on its whole batch (``evaluations``).

A velocity is ``velocity(x (n, d), t (n, 1)) -> (n, d)``, each row at its own time.

Example::

    x, nfe, _ = flow(velocity, z, 0.0, 1.0, method="dopri5", rtol=1e-5, atol=1e-5)
    lp, se, nfe, _ = log_prob(velocity, x, 1.0, 0.0, method="dopri5", rtol=1e-5, atol=1e-5)
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
    "ADAPTIVE",
    "MARCHES",
    "METHODS",
    "TRACES",
    "Solved",
    "solve",
    "flow",
    "log_prob",
    "divergence_exact",
    "divergence_probes",
    "march",
    "in_chunks",
    "REFERENCE",
    "LIKELIHOOD_DTYPE",
    "ERROR_ROWS",
    "FlowODE",
    "Accuracy",
    "accuracy",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
#: Adaptive methods (torchode) and their right-hand-side evaluations per step (first-same-as-last).
ADAPTIVE = {"dopri5": 6, "tsit5": 6}
#: Fixed-step methods (``march``) and their evaluations per step.
MARCHES = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}
METHODS = (*ADAPTIVE, *MARCHES)
TRACES = ("exact", "hutchinson")


@dataclass(frozen=True)
class Solved:
    """A solve's end state ``y`` (n, D), the evaluations each row needed until it reached the end time,
    ``nfe`` (n,) int64 on the CPU, and the right-hand side's calls on the whole batch, ``evaluations``
    (the solve's cost: every call evaluates every row, finished or not)."""

    y: Tensor
    nfe: Tensor
    evaluations: int


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
    max_steps: int = 100_000,
) -> Solved:
    """Integrate dy/dt = rhs(t (n, 1), y (n, D)) from y(t_start) = ``y0`` to ``t_end``, each row on its own.

    Adaptive methods (``ADAPTIVE``) control each row's error, |err_i| <= atol + rtol |y_i| in the
    root-mean-square over the row's D entries, with an integral step-size controller, and land exactly on
    ``t_end`` (the right-hand side is never evaluated past it); a row that needs more than ``max_steps``
    steps raises RuntimeError. Fixed-step methods (``MARCHES``) take ``steps`` equal steps.
    ``rhs`` must act row-wise. Times reach ``rhs`` in ``y0``'s dtype.
    """
    if method in MARCHES:
        return _solve_fixed(rhs, y0, t_start, t_end, method, steps)
    if method not in ADAPTIVE:
        raise ValueError(f"unknown ODE method '{method}'; valid: {', '.join(METHODS)}")
    import torchode

    calls = [0]

    def counted(t: Tensor, y: Tensor) -> Tensor:
        calls[0] += 1
        return rhs(t.to(y.dtype)[:, None], y)

    n = y0.shape[0]
    with torch.device(y0.device), torch.no_grad():  # torchode's own tensors (tolerances, tables) on y0's device
        term = torchode.ODETerm(counted, with_stats=False)
        step = {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5}[method](term=term)
        controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
        solver = torchode.AutoDiffAdjoint(step, controller, max_steps=max_steps)
        times = [torch.full((n,), float(t), dtype=torch.float64) for t in (t_start, t_end)]
        solution = solver.solve(torchode.InitialValueProblem(y0=y0, t_start=times[0], t_end=times[1]))
    failed = int((solution.status != 0).sum())
    if failed:
        raise RuntimeError(f"ODE solve failed on {failed} of {n} rows (torchode status {solution.status.max()})")
    steps_taken = solution.stats["n_steps"].cpu()
    start_up = calls[0] - ADAPTIVE[method] * int(steps_taken.max())  # evaluations before the first step
    return Solved(solution.ys[:, -1], start_up + ADAPTIVE[method] * steps_taken, calls[0])


def _solve_fixed(rhs, y0: Tensor, t_start: float, t_end: float, method: str, steps: int) -> Solved:
    n = y0.shape[0]

    def velocity(y: Tensor, t: float) -> Tensor:
        return rhs(torch.full((n, 1), t, dtype=y.dtype, device=y.device), y)

    grid = np.linspace(t_start, t_end, steps + 1).tolist()
    nfe = MARCHES[method] * steps
    return Solved(march(velocity, y0, grid, method=method), torch.full((n,), nfe, dtype=torch.int64, device="cpu"), nfe)


@torch.no_grad()
def flow(velocity: Velocity, z: Tensor, t_start: float, t_end: float, **solver) -> tuple[Tensor, Tensor, int]:
    """Carry ``z`` (n, d) at ``t_start`` along dx/dt = velocity(x, t) to ``t_end``.

    ``solver``: keyword arguments of ``solve``. Returns (x (n, d), per-row NFE (n,), batch evaluations).
    """
    out = solve(lambda t, x: velocity(x, t), z, t_start, t_end, **solver)
    return out.y, out.nfe, out.evaluations


def log_prob(
    velocity: Velocity,
    x: Tensor,
    t_data: float,
    t_prior: float,
    *,
    probes: Tensor | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    **solver,
) -> tuple[Tensor, Tensor | None, Tensor, int]:
    """log p_{t_data}(x) of the flow dx/dt = velocity(x, t) whose marginal at ``t_prior`` is ``prior_log_prob``.

    Integrates (x_t, delta_t) from ``t_data`` to ``t_prior`` (either direction) with
    d delta/dt = div velocity(x_t, t), so log p(x) = log p_prior(x_prior) + delta at ``t_prior``
    (d log p_t(x_t)/dt = -div velocity). ``probes`` None: the exact divergence. ``probes`` (K, n, d):
    one Hutchinson estimate per probe along the same trajectory; the result is their mean and the
    second output its standard error per row (None when K < 2). ``solver``: keyword arguments of
    ``solve``. Returns (log-densities (n,), standard errors (n,) or None, per-row NFE (n,), batch evaluations).
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

    state0 = torch.cat([x, x.new_zeros(x.shape[0], k)], dim=1)
    with torch.no_grad():
        end = solve(rhs, state0, t_data, t_prior, **solver)
    lp = prior_log_prob(end.y[:, :d])[:, None] + end.y[:, d:]
    se = lp.std(dim=1) / math.sqrt(k) if k > 1 else None
    return lp.mean(dim=1), se, end.nfe, end.evaluations


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

    ``velocity(z (n, d), t: float)``; ``method``: "euler", "heun" (the explicit trapezoidal rule),
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


#: The reference solve against which a profile's likelihood is judged: float64, tolerances 1e-7.
REFERENCE = {"rtol": 1e-7, "atol": 1e-7, "method": "dopri5", "dtype": torch.float64}
#: Precision of likelihood solves. In float32 the rounding of a row's values depends on its position in
#: the batch (vectorised kernels), and the adaptive controller's accept/reject decisions, taken on an
#: error estimate that is a difference of nearly equal numbers, amplify it into changes of the size of
#: the solver error (measured: 0.06 nats at rtol = atol = 1e-3, smoke score_diffusion); in float64 the
#: same rows agree to 1e-12 in any batch. On a CPU the float64 solve cost about the same as float32.
LIKELIHOOD_DTYPE = torch.float64
#: Rows of a solver-error or accuracy estimate (the first ones of the evaluated rows).
ERROR_ROWS = 500


@dataclass(frozen=True)
class FlowODE:
    """How a fitted model's probability flow is solved, in the model's standardised units.

    The flow dx/dt = ``velocity(x, t)`` carries the N(0, I) prior at ``t_prior`` to the data at
    ``t_data``. ``method``, ``rtol``, ``atol``, ``steps``: the solve (``solve``); ``eval_batch``: rows per
    solve (memory only: rows are solved independently); ``probes``: Hutchinson probes per row (0: the
    exact trace), drawn by ``seeding.row_rademacher`` with ``probe_seed``. ``dtype``: the precision rows
    are solved in (the velocity must accept it); ``LIKELIHOOD_DTYPE`` for likelihoods.
    """

    velocity: Velocity
    t_data: float
    t_prior: float
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    steps: int = 100
    eval_batch: int = 4096
    probes: int = 0
    probe_seed: int = 0
    dtype: torch.dtype = torch.float32

    def solver(self) -> dict:
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol, "steps": self.steps}

    def tightened(self, factor: float = 10.0) -> FlowODE:
        """The same flow solved adaptively (dopri5 for a fixed-step method) at ``factor`` times smaller tolerances."""
        method = self.method if self.method in ADAPTIVE else "dopri5"
        return replace(self, method=method, rtol=self.rtol / factor, atol=self.atol / factor)

    def log_prob(self, y: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """log-densities (n,) of standardised rows ``y`` (n, d), their Hutchinson standard errors (n,) (None
        with fewer than two probes) and the evaluations each row needed (n,), in ``dtype``."""
        y = y.to(self.dtype)

        def one_chunk(start: int, stop: int) -> tuple[tuple[Tensor, ...], int]:
            rows = y[start:stop]
            probes = row_rademacher(rows, self.probes, self.probe_seed) if self.probes else None
            lp, se, nfe, evaluations = log_prob(
                self.velocity, rows, self.t_data, self.t_prior, probes=probes, **self.solver()
            )
            return ((lp, nfe) if se is None else (lp, nfe, se)), evaluations

        out, _ = in_chunks(one_chunk, len(y), self.eval_batch)
        return out[0], (out[2] if len(out) > 2 else None), out[1]

    def transport(self, z: Tensor) -> tuple[Tensor, Tensor, int]:
        """Samples (n, d) for prior draws ``z`` (n, d), the evaluations each row needed (n,), and the
        batch evaluations summed over chunks (the cost), in ``dtype``."""
        z = z.to(self.dtype)

        def one_chunk(start: int, stop: int) -> tuple[tuple[Tensor, ...], int]:
            x, nfe, evaluations = flow(self.velocity, z[start:stop], self.t_prior, self.t_data, **self.solver())
            return (x, nfe), evaluations

        (x, nfe), evaluations = in_chunks(one_chunk, len(z), self.eval_batch)
        return x, nfe, evaluations

    def errors(self, y: Tensor, n_rows: int) -> dict[str, float]:
        """Error bars of a mean log-likelihood over ``n_rows`` rows, estimated on the standardised rows ``y``
        (m, d), at most ``ERROR_ROWS`` of them: ``solver_err``, mean |lp - lp_tight| against ``tightened()``
        with the same probes; with probes, ``estimator_se``, the standard error the probes add to the mean
        over ``n_rows`` rows, sqrt(mean se_i^2 / n_rows)."""
        y = y[:ERROR_ROWS]
        lp, se, _ = self.log_prob(y)
        tight, _, _ = self.tightened().log_prob(y)
        out = {"solver_err": float((lp.double() - tight.double()).abs().mean())}
        if se is not None:
            out["estimator_se"] = float(math.sqrt(float(se.double().square().mean()) / n_rows))
        return out


@dataclass(frozen=True)
class Accuracy:
    """A likelihood solve against a reference on the same rows: per-row absolute error (nats) ``max_err``
    and ``mean_err``; per-row evaluations ``nfe_mean``, ``nfe_max``; wall-clock ``seconds``."""

    max_err: float
    mean_err: float
    nfe_mean: float
    nfe_max: int
    seconds: float

    def within(self, tolerance: float = 0.01) -> bool:
        return self.max_err <= tolerance


def accuracy(flow_ode: FlowODE, reference: FlowODE, y: Tensor) -> Accuracy:
    """``flow_ode``'s log-densities of standardised rows ``y`` (n, d) against ``reference``'s (e.g. the same
    model in float64 at ``REFERENCE`` tolerances)."""
    start = time.perf_counter()
    lp, _, nfe = flow_ode.log_prob(y)
    seconds = time.perf_counter() - start
    ref, _, _ = reference.log_prob(y)
    err = (lp.double().cpu() - ref.double().cpu()).abs()
    return Accuracy(float(err.max()), float(err.mean()), float(nfe.double().mean()), int(nfe.max()), seconds)
