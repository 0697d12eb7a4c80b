"""Neural-score diffusion: a VP-SDE score network; samples and likelihoods by the probability-flow ODE."""

from __future__ import annotations

import copy
import math
from enum import IntEnum
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.toolkit import ode
from harness.toolkit.checkpoint import SOLVED_CHECKPOINT_ROWS
from harness.toolkit.device import resolve_device, to_tensor
from harness.toolkit.nets import mlp
from harness.toolkit.sde import VPSDE, em_sample
from harness.toolkit.seeding import seeded_init, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training import Adam, minibatches, train
from methods import register
from methods._probability_flow import FLOW_SPECS, ProbabilityFlowMethod
from methods.base import Choice, Float, Int

__all__ = ["ScoreDiffusion", "TimeConditionedMLP"]

SAMPLERS = ("ode", "em")
_COMMON = dict(
    beta_min=0.1, beta_max=20.0, trace="exact", hutchinson_probes=4, sampler="ode", time_features=16, solver="rk4"
)


class Stream(IntEnum):
    """Seed-stream purposes (``torch_stream(seed, purpose)``)."""

    NOISE = 1  # training noise and times
    VALIDATION = 2  # the validation loss
    LOG_PROB = 3  # Hutchinson probes of log_prob
    PROBE = 4  # Hutchinson probes of the training checkpoints
    SAMPLE = 5  # prior draws and Euler-Maruyama noise
    STEP_CHECK = 6  # the rows and prior draws of the step-count checks


class TimeConditionedMLP(nn.Module):
    """eps_theta(x, t): MLP on [x, sin(w t), cos(w t)] with geometric frequencies w in [1, max_freq]."""

    def __init__(self, dim: int, hidden: int, layers: int, time_features: int = 16, max_freq: float = 200.0) -> None:
        super().__init__()
        half = max(time_features // 2, 1)
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(max_freq), half)))
        self.net = mlp(dim + 2 * half, dim, hidden, layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (n, d), t (n,) or 0-d -> (n, d)."""
        t = t.to(x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        angles = t * self.freqs
        return self.net(torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=1))


@register
class ScoreDiffusion(ProbabilityFlowMethod):
    """VP-SDE score model with an MLP noise predictor; samples and likelihoods by the probability-flow ODE.

    The network predicts the added noise eps_theta(x_t, t) (score -eps_theta / s_t) and is trained by
    denoising score matching with weight s_t^2, E |eps_theta(m_t x_0 + s_t eps, t) - eps|^2,
    t ~ U(eps_t, 1), with sinusoidal time features and an EMA of the weights. Sampling solves the
    probability-flow ODE or Euler-Maruyama on the reverse SDE (``sampler``); the likelihood solves the
    ODE with the exact Jacobian trace or Hutchinson's estimator (``trace``), kind "exact" (the ODE
    model's density within the solver error, ``solver_err``). Both solves march steps of equal log-SNR
    (``VPSDE.log_snr_times``) with ``solver``, their step counts chosen at the end of ``fit``
    (``methods._probability_flow``). ``info_`` records the score evaluations of each call
    ("nfe_sample", "nfe_log_prob_mean", ...) and the step checks ("loglik_steps", "sample_steps", ...).

    Parameters
    ----------
    beta_min, beta_max : linear noise schedule; eps_t : smallest time.
    hidden, layers, time_features : MLP width, depth and number of time features.
    steps, batch, lr, grad_clip, ema_decay : Adam training settings and weight averaging.
    sampler : "ode" or "em"; em_steps : Euler-Maruyama steps.
    solver, min_ode_steps, max_ode_steps : fixed-step scheme of the ODE and the range of its step counts.
    loglik_tol : the likelihood takes the fewest steps whose solve agrees with the one at twice the steps
    within it (nats) on every check row; sample_tol : the same for samples, on average over the check
    draws (standardised units). The profiles' values keep every row within 0.01 nats of a converged
    float64 solve at quick and paper (docs/likelihoods.md).
    trace, hutchinson_probes : "exact" or "hutchinson" trace, and probes per row of the latter.
    eval_batch : rows per ODE solve (memory only: a row's result does not depend on its batch).

    Profiles: ``paper`` takes Song et al.'s CIFAR-10 settings (beta 0.1-20, eps_t 1e-5, Adam 2e-4,
    clip 1, EMA 0.9999, batch 128; width, depth and steps are ours; RK4 instead of their adaptive
    RK45, with checked steps); ``quick``: 3,000 steps, EMA 0.995.

    References
    ----------
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-Based Generative Modeling through
    Stochastic Differential Equations", ICLR 2021.

    Example
    -------
    ::

        m = methods.create("score_diffusion", "smoke", seed=0).fit(x)
        m.log_prob(x[:100]); m.info_["loglik_steps"], m.info_["nfe_log_prob_mean"]
    """

    name = "score_diffusion"
    log_prob_kind = "exact"
    streams = Stream
    plot_style = ("#9467bd", "P")
    profiles = {
        "smoke": dict(
            _COMMON,
            hidden=32,
            layers=2,
            steps=150,
            batch=256,
            lr=2e-3,
            grad_clip=1.0,
            ema_decay=0.0,
            eps_t=1e-3,
            min_ode_steps=8,
            max_ode_steps=16,
            loglik_tol=2e-2,
            sample_tol=2e-2,
            em_steps=50,
            eval_batch=4096,
        ),
        "quick": dict(
            _COMMON,
            hidden=128,
            layers=3,
            steps=3000,
            batch=512,
            lr=2e-3,
            grad_clip=1.0,
            ema_decay=0.995,
            eps_t=1e-3,
            min_ode_steps=16,
            max_ode_steps=256,
            loglik_tol=5e-3,
            sample_tol=5e-3,
            em_steps=200,
            eval_batch=5000,
        ),
        "paper": dict(
            _COMMON,
            hidden=256,
            layers=4,
            steps=200_000,
            batch=128,
            lr=2e-4,
            grad_clip=1.0,
            ema_decay=0.9999,
            eps_t=1e-5,
            min_ode_steps=16,
            max_ode_steps=1024,
            loglik_tol=5e-3,
            sample_tol=1e-3,
            em_steps=1000,
            eval_batch=2048,
        ),
    }
    param_specs = {
        **FLOW_SPECS,
        "beta_min": Float(gt=0),
        "beta_max": Float(gt=0),
        "trace": Choice(*ode.TRACES),
        "hutchinson_probes": Int(min=2),
        "sampler": Choice(*SAMPLERS),
        "time_features": Int(min=1),
        "hidden": Int(min=1),
        "layers": Int(min=1),
        "steps": Int(min=1),
        "batch": Int(min=1),
        "lr": Float(gt=0),
        "grad_clip": Float(min=0),
        "ema_decay": Float(min=0, lt=1),
        "eps_t": Float(gt=0, lt=1),
        "em_steps": Int(min=1),
    }
    search_space = {
        "lr": Float(1e-4, 1e-2, log=True),
        "hidden": Int(32, 512, log=True),
        "layers": Int(2, 5),
    }

    @classmethod
    def check_params(cls, params: dict[str, Any], dim: int | None) -> None:
        super().check_params(params, dim)
        if not params["beta_min"] < params["beta_max"]:
            raise ValueError(f"beta_min = {params['beta_min']} must be below beta_max = {params['beta_max']}")

    # ------------------------------------------------------------------ fit
    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p = self.params
        self.device_ = resolve_device(self.device)
        self.log_prob_kind = "exact" if p["trace"] == "exact" else "estimate"
        self.sde_ = VPSDE(p["beta_min"], p["beta_max"])
        self.scaler_ = Standardiser(train)
        x = to_tensor(self.scaler_.forward(train), self.device_)
        with seeded_init(self.seed):
            net = TimeConditionedMLP(self.dim_, p["hidden"], p["layers"], p["time_features"])
        self.net_ = net.to(self.device_)
        with self.phase("training"):
            self._train(x)
        self.net_.eval()
        if val is not None:
            self.info_["val_dsm_loss"] = self._dsm_eval(to_tensor(self.scaler_.forward(val), self.device_))
        self.choose_steps(train)

    def _dsm_loss(self, net: nn.Module, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """lambda(t) = s_t^2 weighted denoising score matching, i.e. noise-prediction MSE (summed over d)."""
        eps_t = self.params["eps_t"]
        t = eps_t + (1.0 - eps_t) * torch.rand(x0.shape[0], generator=g, device=x0.device)
        noise = torch.randn(x0.shape, generator=g, device=x0.device)
        xt = self.sde_.mean_coeff(t)[:, None] * x0 + self.sde_.std(t)[:, None] * noise
        return ((net(xt, t) - noise) ** 2).sum(dim=1).mean()

    def _train(self, x: torch.Tensor) -> None:
        p = self.params
        g = torch_stream(self.seed, Stream.NOISE, self.device_)
        opt = Adam(self.net_.parameters(), p["lr"], clip=p["grad_clip"] or None)
        ema = copy.deepcopy(self.net_) if p["ema_decay"] > 0 else self.net_

        def step(k: int, idx: torch.Tensor) -> torch.Tensor:
            loss = opt.step(self._dsm_loss(self.net_, x[idx], g))
            if ema is not self.net_:
                with torch.no_grad():
                    decay = min(p["ema_decay"], k / (9 + k))  # warm-up of the average
                    for pe, pn in zip(ema.parameters(), self.net_.parameters(), strict=True):
                        pe.lerp_(pn, 1.0 - decay)
            return loss

        def checkpoint(k: int, _: float) -> bool:
            return self.checkpoint(
                "training",
                k,
                p["steps"],
                val_loglik=lambda rows: self.checkpoint_log_prob(rows[:SOLVED_CHECKPOINT_ROWS], ema, probes=1),
            )

        result = train(
            step,
            p["steps"],
            name=self.name,
            hook=checkpoint,
            batches=minibatches(len(x), p["batch"], p["steps"], torch_stream(self.seed), self.device_),
        )
        self.net_ = ema
        self.info_["final_loss"] = float(result.loss)

    @torch.no_grad()
    def _dsm_eval(self, x: torch.Tensor) -> float:
        g = torch_stream(self.seed, Stream.VALIDATION, self.device_)
        return float(self._dsm_loss(self.net_, x[:10_000], g))

    # ------------------------------------------------------------ inference
    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score of the noised standardised data, -eps_theta(x, t) / s_t; x (n, d), t 0-d or (n, 1)."""
        return -self.net_(x, t) / self.sde_.std(t)

    def velocity_field(self, net: nn.Module) -> ode.Velocity:
        """The probability-flow velocity of the noise predictor ``net``: x (n, d), t (n, 1) -> (n, d)."""
        return lambda x, t: self.sde_.ode_drift(lambda u, s: -net(u, s) / self.sde_.std(s), x, t)

    def times(self) -> ode.Times:
        """From the data at t = eps_t to N(0, I) at t = 1 (p_1 up to m_1 ~ 7e-3), equal steps of log-SNR."""
        return self.sde_.log_snr_times(self.params["eps_t"], 1.0)

    def likelihood_probes(self) -> int:
        return self.params["hutchinson_probes"] if self.params["trace"] == "hutchinson" else 0

    def _sample(self, n: int, seed: int) -> np.ndarray:
        p = self.params
        g = torch_stream(seed, Stream.SAMPLE, self.device_)
        if p["sampler"] == "ode":
            z = torch.randn(n, self.dim_, generator=g, device=self.device_)
            x, self.info_["nfe_sample"] = self.transport(z)
        else:

            def draw_and_solve(start: int, stop: int) -> tuple[tuple[torch.Tensor], int]:
                z = torch.randn(stop - start, self.dim_, generator=g, device=self.device_)
                x, k = em_sample(self.sde_, self.score, z, p["em_steps"], g, p["eps_t"])
                return (x,), k

            (x,), self.info_["nfe_sample"] = ode.in_chunks(draw_and_solve, n, p["eval_batch"])
        return self.scaler_.inverse(x.cpu().numpy().astype(np.float64))
