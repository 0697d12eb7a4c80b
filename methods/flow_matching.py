"""Conditional flow matching (straight path, optional minibatch optimal-transport coupling)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from harness.toolkit.device import resolve_device, single_cpu_thread, to_tensor
from harness.toolkit.gaussian import standard_normal_log_prob
from harness.toolkit.nets import mlp
from harness.toolkit.sde import CountedRHS, divergence_exact, divergence_probes, solve
from harness.toolkit.seeding import seeded_init, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training import Adam, minibatches, train
from methods import register
from methods.base import Bool, Choice, Float, Int, Method, Spec

__all__ = ["FlowMatching", "VelocityField", "ot_pairing", "straight_path", "transport", "ode_log_prob", "rademacher"]

SOLVERS = ("dopri5", "euler", "midpoint", "rk4")
TRACES = ("auto", "exact", "hutchinson")
#: Largest dimension for which ``trace="auto"`` computes the exact divergence (d backward passes).
EXACT_TRACE_MAX_DIM = 10

NOISE, VALIDATION, LOG_PROB, SAMPLE, PROBE = 1, 2, 3, 4, 5  # seed-stream purposes
#: Validation rows of a training checkpoint's log-likelihood (each checkpoint solves the ODE for them).
CHECKPOINT_ROWS = 256
CHECK_EVERY = 100  # steps between divergence checks (each one waits for the device)
_COMMON = dict(trace="auto", hutchinson_probes=4)

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # v(x (n, d), t 0-d) -> (n, d)


class VelocityField(nn.Module):
    """v(x, t): an MLP on [x, t] (SELU), as in Tong et al.'s tabular and 2-D models."""

    def __init__(self, dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.net = mlp(dim + 1, dim, hidden, layers, act=nn.SELU)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (n, d), t 0-d or (n,) -> (n, d)."""
        t = t.to(x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        return self.net(torch.cat([x, t], dim=1))


# ------------------------------------------------------------------ training pieces
def ot_pairing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Indices ``perm`` (n,) so that the pairs (x0[i], x1[perm[i]]) minimise sum |x0_i - x1_j|^2.

    The exact optimal transport plan between two uniform empirical measures of n points is a
    permutation (a vertex of the Birkhoff polytope); POT's network simplex finds it.
    """
    import ot

    cost = torch.cdist(x0.double(), x1.double()).square().cpu().numpy()
    n = len(cost)
    plan = ot.emd(np.full(n, 1.0 / n), np.full(n, 1.0 / n), cost)
    return torch.as_tensor(plan.argmax(axis=1), device=x1.device)


def straight_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The point x_t = (1 - t) x0 + t x1 and the conditional velocity x1 - x0; x0, x1 (n, d), t (n,)."""
    t = t[:, None]
    return (1 - t) * x0 + t * x1, x1 - x0


# ------------------------------------------------------------------ ODE machinery (any velocity function)
def _integrate(
    rhs: Callable,
    y0: torch.Tensor,
    t0: float,
    t1: float,
    *,
    solver: str = "dopri5",
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> torch.Tensor:
    """``harness.toolkit.sde.solve`` under this module's names (``solver``, ``steps``); adaptive steps are
    not clamped at ``t1`` (the velocity is defined past it)."""
    return solve(rhs, y0, t0, t1, method=solver, steps=steps, rtol=rtol, atol=atol, land_on_end=False)


@torch.no_grad()
def transport(velocity: Velocity, z: torch.Tensor, **solve) -> tuple[torch.Tensor, int]:
    """Push noise ``z`` (n, d) at t = 0 along dx/dt = v(x, t) to t = 1; returns (x (n, d), NFE)."""
    rhs = CountedRHS(lambda t, x: velocity(x, t))
    return _integrate(rhs, z, 0.0, 1.0, **solve), rhs.nfe


def ode_log_prob(
    velocity: Velocity, x: torch.Tensor, *, probes: torch.Tensor | None = None, **solve
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """log p_1(x) of the flow dx/dt = v(x, t) from N(0, I) at t = 0, by the instantaneous change of variables.

    Integrates (x_t, delta_t) from t = 1 down to 0 with d delta/dt = div v(x_t, t); then
    log p_1(x) = log N(x_0; 0, I) + delta_0. ``probes`` None: exact divergence. ``probes`` (K, n, d):
    one Hutchinson estimate per probe along the same trajectory; the result is their mean and the
    second output its standard error per point (None when K < 2). Returns (lp (n,), se (n,) | None, NFE).
    """
    d = x.shape[1]
    k = 1 if probes is None else probes.shape[0]

    def rhs(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        fn = lambda y: velocity(y, t)  # noqa: E731
        if probes is None:
            out, div = divergence_exact(fn, state[:, :d])
            return torch.cat([out, div[:, None]], dim=1)
        out, divs = divergence_probes(fn, state[:, :d], probes)
        return torch.cat([out, divs], dim=1)

    counted = CountedRHS(rhs)
    state0 = torch.cat([x, x.new_zeros(x.shape[0], k)], dim=1)
    with torch.no_grad():
        end = _integrate(counted, state0, 1.0, 0.0, **solve)
    lp = standard_normal_log_prob(end[:, :d])[:, None] + end[:, d:]
    se = lp.std(dim=1) / math.sqrt(k) if k > 1 else None
    return lp.mean(dim=1), se, counted.nfe


def rademacher(shape: tuple[int, ...], g: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=g, device=device) * 2 - 1).to(dtype)


# ------------------------------------------------------------------ the method
@register
class FlowMatching(Method):
    """Conditional flow matching: an MLP velocity field v(x, t) transports N(0, I) at t = 0 to the data at t = 1.

    With x_t = (1 - t) x0 + t x1 (noise x0, standardised data x1), v is fitted by
    E |v(x_t, t) - (x1 - x0)|^2, t ~ U(0, 1), whose minimiser E[x1 - x0 | x_t] moves the path's
    marginals; ``ot=True`` pairs each minibatch's noise and data by the exact optimal assignment
    (POT ``ot.emd``). Sampling integrates dx/dt = v (torchdiffeq; ``solver``). Likelihood: the
    instantaneous change of variables from the data back to t = 0, with the exact divergence
    (kind "exact") when d <= ``EXACT_TRACE_MAX_DIM`` under ``trace="auto"``, else Hutchinson's
    estimator with ``hutchinson_probes`` probes per point (kind "estimate"; ``info_["hutchinson_se"]``
    is the standard error it adds to the mean). The kind is set on the instance at ``fit``.

    Parameters
    ----------
    hidden, layers : MLP width and depth (SELU).
    steps, batch, lr, anneal : Adam steps, rows per step, learning rate, cosine decay.
    ot : minibatch optimal-transport coupling.
    solver, ode_steps, rtol, atol : ODE solver ("dopri5" adaptive, or fixed-step with ``ode_steps``).
    trace, hutchinson_probes : divergence "auto", "exact" or "hutchinson" and its probes.
    eval_batch : rows per ODE solve.

    Profiles: ``paper`` takes Tong et al.'s 2-D settings (3 x 64 SELU, batch 256, Adam 1e-3, 20,000
    steps, exact minibatch OT, dopri5 at 1e-4; their path width sigma = 0.1 is 0 here so that the
    endpoints are exactly N(0, I) and the data); ``quick``: 3,000 steps of 512 rows, 3 x 128,
    lr 2e-3 cosine, independent coupling, dopri5 at 1e-3.

    References
    ----------
    Lipman, Chen, Ben-Hamu, Nickel & Le, "Flow Matching for Generative Modeling", ICLR 2023.
    Liu, Gong & Liu, "Flow Straight and Fast", ICLR 2023.
    Tong et al., "Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal
    Transport", TMLR 2024.

    Example
    -------
    ::

        m = methods.create("flow_matching", "smoke", seed=0, ot=True).fit(x)
        m.sample(100); m.log_prob(x[:100]); m.log_prob_kind, m.info_["nfe_log_prob"]
    """

    name: ClassVar[str] = "flow_matching"
    plot_style: ClassVar[tuple[str, str]] = ("#e7ba52", "d")
    log_prob_kind: ClassVar[str | None] = "exact"  # per instance after fit: "estimate" when Hutchinson is used
    profiles: ClassVar[dict[str, dict]] = {
        "smoke": dict(
            _COMMON,
            hidden=32,
            layers=2,
            steps=200,
            batch=256,
            lr=3e-3,
            anneal=True,
            ot=False,
            solver="rk4",
            ode_steps=8,
            rtol=1e-3,
            atol=1e-3,
            eval_batch=4096,
        ),
        "quick": dict(
            _COMMON,
            hidden=128,
            layers=3,
            steps=3000,
            batch=512,
            lr=2e-3,
            anneal=True,
            ot=False,
            solver="dopri5",
            ode_steps=100,
            rtol=1e-3,
            atol=1e-3,
            eval_batch=5000,
        ),
        "paper": dict(
            _COMMON,
            hidden=64,
            layers=3,
            steps=20_000,
            batch=256,
            lr=1e-3,
            anneal=False,
            ot=True,
            solver="dopri5",
            ode_steps=100,
            rtol=1e-4,
            atol=1e-4,
            eval_batch=4096,
        ),
    }

    param_specs: ClassVar[dict[str, Spec]] = {
        "trace": Choice(*TRACES),
        "hutchinson_probes": Int(min=1),
        "hidden": Int(min=1),
        "layers": Int(min=1),
        "steps": Int(min=1),
        "batch": Int(min=1),
        "lr": Float(gt=0),
        "anneal": Bool(),
        "ot": Bool(),
        "solver": Choice(*SOLVERS),
        "ode_steps": Int(min=1),
        "rtol": Float(gt=0),
        "atol": Float(gt=0),
        "eval_batch": Int(min=1),
    }
    search_space: ClassVar[dict[str, Spec]] = {
        "lr": Float(1e-4, 1e-2, log=True),
        "hidden": Int(32, 512, log=True),
        "layers": Int(2, 5),
        "ot": Choice(False, True),
    }

    # ------------------------------------------------------------------ fit
    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p = self.params
        self.device_ = resolve_device(self.device)
        self.exact_trace_ = p["trace"] == "exact" or (p["trace"] == "auto" and self.dim_ <= EXACT_TRACE_MAX_DIM)
        self.log_prob_kind = "exact" if self.exact_trace_ else "estimate"
        self.scaler_ = Standardiser(train)
        x = to_tensor(self.scaler_.forward(train), self.device_)
        with seeded_init(self.seed):
            self.net_ = VelocityField(self.dim_, p["hidden"], p["layers"]).to(self.device_)
        with self.phase("training"), single_cpu_thread(self.device_):
            self.info_["final_loss"] = self._train(x)
        self.net_.eval()
        if val is not None:
            self.info_["val_fm_loss"] = self._eval_loss(to_tensor(self.scaler_.forward(val[:10_000]), self.device_))
        self.info_["trace"] = "exact" if self.exact_trace_ else "hutchinson"

    def _loss(self, x1: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The flow-matching loss of one data batch (summed over d, averaged over rows)."""
        x0 = torch.randn(x1.shape, generator=g, device=x1.device, dtype=x1.dtype)
        if self.params["ot"]:
            x1 = x1[ot_pairing(x0, x1)]
        t = torch.rand(x1.shape[0], generator=g, device=x1.device, dtype=x1.dtype)
        xt, target = straight_path(x0, x1, t)
        return (self.net_(xt, t) - target).square().sum(dim=1).mean()

    def _train(self, x: torch.Tensor) -> float:
        p = self.params
        g = torch_stream(self.seed, NOISE, self.device_)
        opt = Adam(self.net_.parameters(), p["lr"], schedule="cosine" if p["anneal"] else None, steps=p["steps"])
        batches = minibatches(len(x), p["batch"], p["steps"], torch_stream(self.seed), self.device_)
        result = train(
            lambda k, idx: opt.step(self._loss(x[idx], g)),
            p["steps"],
            name=self.name,
            batches=batches,
            check_every=CHECK_EVERY,
            hook=lambda k, _: self.checkpoint("training", k, p["steps"], val_loglik=self._checkpoint_log_prob),
        )
        return float(result.loss)

    def _checkpoint_log_prob(self, rows: np.ndarray) -> np.ndarray:
        """Log densities (m,) of the first ``CHECKPOINT_ROWS`` of ``rows`` (m, d) under the field being
        trained: the exact trace, or above ``EXACT_TRACE_MAX_DIM`` one seeded Rademacher probe (unbiased;
        its noise averages out over the rows). Leaves ``info_`` and every other stream alone."""
        y = to_tensor(self.scaler_.forward(rows[:CHECKPOINT_ROWS]), self.device_)
        probes = None
        if not self.exact_trace_:
            probes = rademacher((1, *y.shape), torch_stream(self.seed, PROBE, self.device_), self.device_, y.dtype)
        lp, _, _ = ode_log_prob(self.velocity, y, probes=probes, **self._solve())
        return lp.double().cpu().numpy() + self.scaler_.log_det

    @torch.no_grad()
    def _eval_loss(self, x: torch.Tensor) -> float:
        return float(self._loss(x, torch_stream(self.seed, VALIDATION, self.device_)))

    # ------------------------------------------------------------ inference
    def _solve(self) -> dict:
        p = self.params
        return {"solver": p["solver"], "steps": p["ode_steps"], "rtol": p["rtol"], "atol": p["atol"]}

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The fitted field in standardised units; x (n, d), t 0-d."""
        return self.net_(x, t)

    @torch.no_grad()
    def transport(self, z: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Standardised samples for noise ``z`` (n, d) on the device, by batches; returns (x, NFE summed)."""
        out, nfe = [], 0
        for start in range(0, len(z), self.params["eval_batch"]):
            x, k = transport(self.velocity, z[start : start + self.params["eval_batch"]], **self._solve())
            out.append(x)
            nfe += k
        return torch.cat(out), nfe

    def _sample(self, n: int, seed: int) -> np.ndarray:
        z = torch.randn(n, self.dim_, generator=torch_stream(seed, SAMPLE, self.device_), device=self.device_)
        x, self.info_["nfe_sample"] = self.transport(z)
        return self.scaler_.inverse(x.double().cpu().numpy())

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        y = to_tensor(self.scaler_.forward(x), self.device_)
        g = torch_stream(self.seed, LOG_PROB, self.device_)
        lps, ses, nfe = [], [], 0
        for start in range(0, len(y), p["eval_batch"]):
            chunk = y[start : start + p["eval_batch"]]
            probes = None
            if not self.exact_trace_:
                probes = rademacher((p["hutchinson_probes"], *chunk.shape), g, self.device_, chunk.dtype)
            lp, se, k = ode_log_prob(self.velocity, chunk, probes=probes, **self._solve())
            lps.append(lp.cpu().numpy())
            if se is not None:
                ses.append(se.double().cpu().numpy())
            nfe += k
        self.info_["nfe_log_prob"] = nfe
        if ses:  # standard error the probes add to the mean log-likelihood of these points
            se_all = np.concatenate(ses)
            self.info_["hutchinson_se"] = float(np.sqrt(np.square(se_all).sum()) / len(se_all))
        return np.concatenate(lps).astype(np.float64) + self.scaler_.log_det
