"""Conditional flow matching (straight path, optional minibatch optimal-transport coupling)."""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from harness.toolkit import ode
from harness.toolkit.checkpoint import SOLVED_CHECKPOINT_ROWS
from harness.toolkit.device import resolve_device, single_cpu_thread, to_tensor
from harness.toolkit.nets import mlp
from harness.toolkit.seeding import seeded_init, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training import CHECK_EVERY, Adam, minibatches, train
from methods import register
from methods._probability_flow import FLOW_SPECS, ProbabilityFlowMethod
from methods.base import Bool, Choice, Float, Int, Spec

__all__ = ["FlowMatching", "VelocityField", "ot_pairing", "straight_path"]

TRACES = ("auto", "exact", "hutchinson")
#: Hidden-layer activations of the velocity field. The likelihood integrates the field's divergence, made
#: of the activation's derivative: SELU's (Tong et al.'s choice) jumps at 0, so the divergence jumps along
#: a trajectory and every solver converges at first order there (docs/likelihoods.md); GELU is smooth.
ACTIVATIONS = {"gelu": nn.GELU, "selu": nn.SELU, "elu": nn.ELU, "silu": nn.SiLU}
#: Largest dimension for which ``trace="auto"`` computes the exact divergence (d backward passes).
EXACT_TRACE_MAX_DIM = 10

_COMMON = dict(trace="auto", hutchinson_probes=4, activation="gelu", solver="rk4")


class Stream(IntEnum):
    """Seed-stream purposes (``torch_stream(seed, purpose)``)."""

    NOISE = 1  # training noise, times and couplings
    VALIDATION = 2  # the validation loss
    LOG_PROB = 3  # Hutchinson probes of log_prob
    SAMPLE = 4  # prior draws
    PROBE = 5  # Hutchinson probes of the training checkpoints
    STEP_CHECK = 6  # the rows and prior draws of the step-count checks


class VelocityField(nn.Module):
    """v(x, t): an MLP on [x, t], as in Tong et al.'s tabular and 2-D models (``activation``: ``ACTIVATIONS``)."""

    def __init__(self, dim: int, hidden: int, layers: int, activation: str = "gelu") -> None:
        super().__init__()
        self.net = mlp(dim + 1, dim, hidden, layers, act=ACTIVATIONS[activation])

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


# ------------------------------------------------------------------ the method
@register
class FlowMatching(ProbabilityFlowMethod):
    """Conditional flow matching: an MLP velocity field v(x, t) transports N(0, I) at t = 0 to the data at t = 1.

    With x_t = (1 - t) x0 + t x1 (noise x0, standardised data x1), v is fitted by
    E |v(x_t, t) - (x1 - x0)|^2, t ~ U(0, 1), whose minimiser E[x1 - x0 | x_t] moves the path's
    marginals; ``ot=True`` pairs each minibatch's noise and data by the exact optimal assignment
    (POT ``ot.emd``). Sampling integrates dx/dt = v (``harness.toolkit.ode``, ``solver`` on equal steps,
    their number chosen at the end of ``fit``: ``methods._probability_flow``). Likelihood: the
    instantaneous change of variables from the data back to t = 0, with the exact divergence
    (kind "exact") when d <= ``EXACT_TRACE_MAX_DIM`` under ``trace="auto"``, else Hutchinson's
    estimator with ``hutchinson_probes`` probes per point (kind "estimate"; ``info_["hutchinson_se"]``
    is the standard error it adds to the mean). The kind is set on the instance at ``fit``.

    Parameters
    ----------
    hidden, layers, activation : MLP width, depth and hidden activation (``ACTIVATIONS``).
    steps, batch, lr, anneal : Adam steps, rows per step, learning rate, cosine decay.
    ot : minibatch optimal-transport coupling.
    solver, min_ode_steps, max_ode_steps : fixed-step scheme of the ODE and the range of its step counts.
    loglik_tol : the likelihood takes the fewest steps whose solve agrees with the one at twice the steps
    within it (nats) on every check row; sample_tol : the same for samples, on average over the check
    draws (standardised units). The profiles' values keep every row within 0.01 nats of a converged
    float64 solve at quick and paper (docs/likelihoods.md).
    trace, hutchinson_probes : divergence "auto", "exact" or "hutchinson" and its probes.
    eval_batch : rows per ODE solve.

    Profiles: ``paper`` takes Tong et al.'s 2-D settings (3 x 64, batch 256, Adam 1e-3, 20,000 steps,
    exact minibatch OT; GELU instead of their SELU, RK4 with checked steps instead of dopri5 at 1e-4;
    their path width sigma = 0.1 is 0 here so that the endpoints are exactly N(0, I) and the data);
    ``quick``: 3,000 steps of 512 rows, 3 x 128, lr 2e-3 cosine, independent coupling.

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
        m.sample(100); m.log_prob(x[:100]); m.log_prob_kind, m.info_["loglik_steps"]
    """

    name: ClassVar[str] = "flow_matching"
    streams: ClassVar[type[IntEnum]] = Stream
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
            min_ode_steps=4,
            max_ode_steps=16,
            loglik_tol=2e-2,
            sample_tol=2e-2,
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
            min_ode_steps=4,
            max_ode_steps=256,
            loglik_tol=5e-3,
            sample_tol=5e-3,
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
            min_ode_steps=4,
            max_ode_steps=1024,
            loglik_tol=5e-3,
            sample_tol=1e-3,
            eval_batch=4096,
        ),
    }

    param_specs: ClassVar[dict[str, Spec]] = {
        **FLOW_SPECS,
        "trace": Choice(*TRACES),
        "activation": Choice(*ACTIVATIONS),
        "hutchinson_probes": Int(min=1),
        "hidden": Int(min=1),
        "layers": Int(min=1),
        "steps": Int(min=1),
        "batch": Int(min=1),
        "lr": Float(gt=0),
        "anneal": Bool(),
        "ot": Bool(),
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
            self.net_ = VelocityField(self.dim_, p["hidden"], p["layers"], p["activation"]).to(self.device_)
        with self.phase("training"), single_cpu_thread(self.device_):
            self.info_["final_loss"] = self._train(x)
        self.net_.eval()
        if val is not None:
            self.info_["val_fm_loss"] = self._eval_loss(to_tensor(self.scaler_.forward(val[:10_000]), self.device_))
        self.info_["trace"] = "exact" if self.exact_trace_ else "hutchinson"
        self.choose_steps(train)

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
        g = torch_stream(self.seed, Stream.NOISE, self.device_)
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
        """Log densities of the first ``SOLVED_CHECKPOINT_ROWS`` of ``rows`` (m, d) under the field being trained:
        the exact trace, or above ``EXACT_TRACE_MAX_DIM`` one seeded Rademacher probe per row (unbiased; its
        noise averages out over the rows)."""
        probes = 0 if self.exact_trace_ else 1
        return self.checkpoint_log_prob(rows[:SOLVED_CHECKPOINT_ROWS], self.net_, probes)

    @torch.no_grad()
    def _eval_loss(self, x: torch.Tensor) -> float:
        return float(self._loss(x, torch_stream(self.seed, Stream.VALIDATION, self.device_)))

    # ------------------------------------------------------------ inference
    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The fitted field in standardised units; x (n, d), t 0-d or (n, 1)."""
        return self.net_(x, t)

    def velocity_field(self, net: nn.Module) -> ode.Velocity:
        return net

    def times(self) -> ode.Times:
        """From the data at t = 1 to N(0, I) at t = 0, equal steps."""
        return ode.uniform_times(1.0, 0.0)

    def likelihood_probes(self) -> int:
        return 0 if self.exact_trace_ else self.params["hutchinson_probes"]

    def _sample(self, n: int, seed: int) -> np.ndarray:
        z = torch.randn(n, self.dim_, generator=torch_stream(seed, Stream.SAMPLE, self.device_), device=self.device_)
        x, self.info_["nfe_sample"] = self.transport(z)
        return self.scaler_.inverse(x.double().cpu().numpy())
