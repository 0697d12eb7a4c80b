"""What score_diffusion and flow_matching share: a probability flow solved by ``harness.toolkit.ode``.

A ``ProbabilityFlowMethod`` samples by carrying N(0, I) draws along its flow and scores rows by the
instantaneous change of variables, both with a fixed-step scheme (``solver``) whose step count is chosen
at the end of ``fit`` by a convergence check (``ode.choose_steps``): the fewest steps N from
``min_ode_steps`` up (by factors of sqrt 2, at most ``max_ode_steps``) whose solve agrees with the one at
2N within ``loglik_tol`` nats on every one of ``CHECK_ROWS`` seeded training rows (likelihood), and
within ``sample_tol`` standardised units on average over as many seeded prior draws (samples: the
sample metrics read the distribution, not single draws) (``info_``: ``loglik_steps``,
``loglik_steps_change``, ``loglik_steps_capped`` and the same for ``sample_``). A row's result never
depends on its batch-mates.
A private module: the registry skips it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from harness.toolkit import ode
from harness.toolkit.device import in_dtype, to_tensor
from harness.toolkit.seeding import numpy_stream, stream_seed, torch_stream
from methods.base import Choice, Float, Int, Method, Spec

__all__ = ["ProbabilityFlowMethod", "FLOW_SPECS", "CHECK_ROWS", "FIGURE_CHANGE"]

#: Rows (training rows, prior draws) on which the step counts are chosen.
CHECK_ROWS = 256
#: Largest change (nats, over the check rows) of the figure grid's cheaper solve: ``figure_log_prob``
#: takes the fewest steps tried whose solve moved no check row by more than this (a density figure's
#: colours span tens of nats; the grid's 10,000 points cost more than the test rows at full accuracy).
FIGURE_CHANGE = 0.1
#: The solve's parameters, shared by the methods' ``param_specs``.
FLOW_SPECS: dict[str, Spec] = {
    "solver": Choice(*ode.MARCHES),
    "min_ode_steps": Int(min=1),
    "max_ode_steps": Int(min=1),
    "loglik_tol": Float(gt=0),
    "sample_tol": Float(gt=0),
    "eval_batch": Int(min=1),
}


class ProbabilityFlowMethod(Method):
    """A method whose samples and likelihood solve one probability-flow ODE in standardised units.

    Subclasses fit ``net_``, ``scaler_`` (a ``Standardiser``) and ``device_``, call ``choose_steps(train)``
    at the end of ``_fit``, and provide ``velocity_field(net)`` (the flow's velocity for a network in
    the solve's dtype), ``times()`` (its ``ode.Times`` from the data end to the prior end),
    ``likelihood_probes()`` (Hutchinson probes per row, 0 for the exact trace) and ``streams``, an enum
    of seed-stream purposes with LOG_PROB, PROBE and STEP_CHECK.
    """

    streams: ClassVar[type[IntEnum]]  #: the method's seed-stream purposes

    @classmethod
    def check_params(cls, params: dict[str, Any], dim: int | None) -> None:
        if params["max_ode_steps"] < params["min_ode_steps"]:
            raise ValueError(
                f"max_ode_steps = {params['max_ode_steps']} must be at least min_ode_steps = {params['min_ode_steps']}"
            )

    # ------------------------------------------------------------ to provide
    def velocity_field(self, net: nn.Module) -> ode.Velocity:
        raise NotImplementedError

    def times(self) -> ode.Times:
        raise NotImplementedError

    def likelihood_probes(self) -> int:
        return 0

    # ------------------------------------------------------------ the solves
    def standardised(self, x: np.ndarray) -> torch.Tensor:
        """Rows ``x`` (n, d) in the model's standardised units, on its device."""
        return to_tensor(self.scaler_.forward(x), self.device_)

    def flow_ode(self, dtype: torch.dtype = torch.float32, *, net: nn.Module | None = None, **solve) -> ode.FlowODE:
        """The fitted flow as the likelihood solves it (``loglik_steps`` after ``fit``, ``min_ode_steps`` before);
        ``net`` replaces the fitted network (e.g. its running average during training); ``solve`` overrides
        ``ode.FlowODE`` fields; ``dtype``: the precision of the solve (float64 for a reference)."""
        p = self.params
        settings = {
            "method": p["solver"],
            "steps": getattr(self, "loglik_steps_", p["min_ode_steps"]),
            "eval_batch": p["eval_batch"],
            "probes": self.likelihood_probes(),
            "probe_seed": stream_seed(self.seed, self.streams.LOG_PROB),
            "dtype": dtype,
        }
        velocity = self.velocity_field(in_dtype(self.net_ if net is None else net, dtype))
        return ode.FlowODE(velocity, self.times(), **{**settings, **solve})

    def choose_steps(self, train: np.ndarray) -> None:
        """Choose the likelihood's, the figure grid's and the sampler's step counts (fit phase "ode_steps")."""
        p = self.params
        limits = {"start": p["min_ode_steps"], "cap": p["max_ode_steps"]}
        self.scored_ = None
        with self.phase("ode_steps"):
            rows, flow = self.standardised(self.step_check_rows(train)), self.flow_ode()
            loglik = ode.choose_steps(lambda n: flow.with_steps(n).log_prob(rows)[0], target=p["loglik_tol"], **limits)
            self.loglik_choice_ = loglik
            self.loglik_steps_, self.figure_steps_ = loglik.steps, loglik.coarsest(FIGURE_CHANGE)
            self.info_.update(self._step_info("loglik", loglik), figure_steps=self.figure_steps_)
            g = torch_stream(self.seed, self.streams.STEP_CHECK, self.device_)
            z = torch.randn(CHECK_ROWS, self.dim_, generator=g, device=self.device_)
            samples = lambda n: flow.with_steps(n).transport(z)[0]  # noqa: E731
            sample = ode.choose_steps(samples, target=p["sample_tol"], statistic="mean", **limits)
            self.sample_steps_ = sample.steps
            self.info_.update(self._step_info("sample", sample))

    def step_check_rows(self, train: np.ndarray) -> np.ndarray:
        """The ``CHECK_ROWS`` training rows (in their order) on which the likelihood's steps are chosen."""
        picked = numpy_stream(self.seed, self.streams.STEP_CHECK).permutation(len(train))[:CHECK_ROWS]
        return train[np.sort(picked)]

    @staticmethod
    def _step_info(name: str, choice: ode.StepChoice) -> dict[str, Any]:
        return {
            f"{name}_steps": choice.steps,
            f"{name}_steps_change": choice.change,
            f"{name}_steps_capped": choice.capped,
        }

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        flow = self.flow_ode()
        lp, se = flow.log_prob(self.standardised(x))
        self.info_["nfe_log_prob_mean"], self.info_["nfe_log_prob_max"] = float(flow.nfe), flow.nfe
        if se is not None:  # standard error the probes add to the mean log-likelihood of these rows
            self.info_["hutchinson_se"] = float(se.double().square().sum().sqrt() / len(se))
        head = slice(0, ode.ERROR_ROWS)  # kept for the error bars of the same rows (evaluate asks for them next)
        self.scored_ = (x[head].copy(), flow.steps, lp[head], None if se is None else se[head])
        return lp.cpu().numpy().astype(np.float64) + self.scaler_.log_det

    def _figure_log_prob(self, x: np.ndarray) -> np.ndarray:
        """The likelihood solved with ``figure_steps`` (within ``FIGURE_CHANGE`` nats on the check rows)."""
        lp, _ = self.flow_ode(steps=self.figure_steps_).log_prob(self.standardised(x))
        return lp.cpu().numpy().astype(np.float64) + self.scaler_.log_det

    def likelihood_error(self, x: np.ndarray) -> dict[str, float]:
        """``solver_err`` (and ``estimator_se`` with Hutchinson's trace) of the mean log-likelihood of ``x``:
        the solve against the one with twice the steps on the first ``ode.ERROR_ROWS`` rows."""
        rows, flow = x[: ode.ERROR_ROWS], self.flow_ode()
        kept = getattr(self, "scored_", None)
        same = kept is not None and kept[1] == flow.steps and np.array_equal(kept[0], rows)
        return flow.errors(self.standardised(rows), len(x), kept[2:] if same else None)

    @torch.no_grad()
    def transport(self, z: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Standardised samples for prior noise ``z`` (n, d) on the device, by the flow with ``sample_steps``
        (a deterministic map of z, row by row: the learned teacher of ``supervised_diffusion``); returns
        (x (n, d), the velocity's evaluations on the batches, summed)."""
        flow = self.flow_ode(z.dtype, steps=self.sample_steps_, probes=0)
        x, evaluations = flow.transport(z)
        self.info_["nfe_sample_mean"], self.info_["nfe_sample_max"] = float(flow.nfe), flow.nfe
        return x, evaluations

    def checkpoint_log_prob(self, rows: np.ndarray, net: nn.Module, probes: int) -> np.ndarray:
        """Log densities (m,) of rows (m, d) under ``net`` (the network being trained) for a training
        checkpoint: ``min_ode_steps`` steps and ``probes`` seeded Rademacher probes per row (0: the exact
        trace). Leaves ``info_`` and every other stream alone."""
        probe_seed = stream_seed(self.seed, self.streams.PROBE)
        flow = self.flow_ode(net=net, steps=self.params["min_ode_steps"], probes=probes, probe_seed=probe_seed)
        lp, _ = flow.log_prob(self.standardised(rows))
        return lp.double().cpu().numpy() + self.scaler_.log_det
