"""The flagship: the diffusion-model-assisted supervised generator (Liu et al. 2024) and its teacher as a sampler.

Measurements behind the design and the profiles: docs/flagship.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from harness.toolkit.compat import nflows_warnings_silenced
from harness.toolkit.device import batched, resolve_device, single_cpu_thread, to_tensor
from harness.toolkit.distances import energy_distance
from harness.toolkit.nets import mlp
from harness.toolkit.seeding import numpy_stream, seeded_init, stream_seed, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training import Adam, check_finite, minibatches, train
from harness.toolkit.training_free_score import MODES, SOLVERS, Schedule, choose_eps, flow_to_data
from methods import register
from methods.base import Choice, Float, Int, Method, Spec

__all__ = [
    "SupervisedDiffusion",
    "TrainingFreeODE",
    "build_student",
    "fit_generator",
    "fit_student_regression",
    "fit_student_likelihood",
    "paper_hidden",
    "paper_lr_factor",
    "resolve_schedule",
]

SAMPLE_BATCH = 65_536  # rows per forward pass of G on a GPU
#: On a CPU, rows per pass of G that keep its activations in cache: 2,048 rows sampled
#: 20% faster than 65,536 at d = 43 (H = 1,400) and 11% at d = 2 (H = 256), 2 cores.
CPU_SAMPLE_BATCH = 2_048
LOG_PROB_BATCH = 8_192  # rows per forward pass of the student
CHECK_EVERY = 100  # optimiser steps between divergence checks (each one syncs the device)
EPS_VAL_ROWS = 2_000  # validation rows scored by eps="auto"
FIDELITY_PAIRS = 1_000  # held-out labelled pairs on which G is compared with its teacher

#: Paper hidden width by data dimension: POWER, GAS, HEPMASS, MINIBOONE (authors' code).
PAPER_HIDDEN = {6: 256, 8: 512, 21: 1024, 43: 1400}
PAPER_PAIRS = 200_000
#: lr factor schedule of the authors' code, as (fraction of iterations, factor from then on).
PAPER_LR_STEPS = ((0.25, 0.5), (0.5, 0.25), (0.6, 0.125))

# Seed-stream purposes (labels' noise, Monte-Carlo rows, minibatches...).
(
    _Z,
    _MC,
    _BATCH,
    _STUDENT,
    _INIT_G,
    _INIT_T,
    _SAMPLE_Z,
    _SAMPLE_MC,
    _GAP_Z,
    _DISTILL_Z,
    _TEACHER,
    _EPS,
    _HOLD_Z,
    _HOLD_MC,
) = range(1, 15)

#: Teachers of the labels: the training-free score (the paper) or a learned model, by its method name.
#: A learned one must offer ``transport(z) -> (x, nfe)``, the deterministic ODE map of noise to data.
TEACHERS = {"training_free": None, "score_model": "score_diffusion", "flow_matching": "flow_matching"}
TEACHER_PROFILES = ("smoke", "quick", "paper")


def _check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(str, valid))}; got {value!r}")


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


# ------------------------------------------------------------------ teacher settings shared by both methods

#: Parameter specs of the probability-flow teacher (both methods below).
TEACHER_SPECS: dict[str, Spec] = {
    "eps": Choice("auto") | Float(gt=0, lt=1),
    "steps": Int(min=1),
    "solver": Choice(*SOLVERS),
    "score_mode": Choice(*MODES),
    "mc_batch": Int(min=1),
    "chunk": Choice("auto") | Int(min=1),
}


def _teacher_settings(params: dict[str, Any], d: int) -> dict[str, Any]:
    """Validated probability-flow settings; ``chunk="auto"`` is 2,000 when d = 43 (MINIBOONE) else 5,000.

    ``schedule`` is None for ``eps="auto"`` until ``resolve_schedule`` has chosen eps on data.
    """
    eps = params["eps"]
    if eps != "auto":
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"eps must be a number in (0, 1) or 'auto', got {eps!r}")
        eps = float(eps)
    _check_choice("solver", params["solver"], SOLVERS)
    _check_choice("score_mode", params["score_mode"], MODES)
    chunk = params["chunk"]
    chunk = (2000 if d == 43 else 5000) if chunk == "auto" else _check_int("chunk", chunk)
    return {
        "schedule": None if eps == "auto" else Schedule(eps=eps),
        "steps": _check_int("steps", params["steps"]),
        "solver": params["solver"],
        "mode": params["score_mode"],
        "mc_batch": _check_int("mc_batch", params["mc_batch"]),
        "chunk": chunk,
    }


def resolve_schedule(
    teacher: dict[str, Any],
    data: torch.Tensor,
    val: np.ndarray | None,
    scaler: Standardiser,
    seed: int,
    info: dict[str, Any],
) -> None:
    """Set ``teacher["schedule"]``, choosing eps on data when it is "auto" (beyond the paper).

    "auto": the eps whose kernel density p_0 = mean_j N(x_j, eps I) of the standardised training rows
    ``data`` (N, d) scores the highest mean log-likelihood on up to 2,000 validation rows
    (``choose_eps``; 10% of the training rows held out when ``val`` is None). p_0 is the density the
    teacher samples (docs/flagship.md), so this is a KDE's bandwidth selection. Records
    ``info["eps"]`` and, for "auto", ``info["eps_val_loglik"]`` ({eps: nats, standardised units}).
    """
    if teacher["schedule"] is None:
        g = numpy_stream(seed, _EPS)
        if val is None:
            perm = torch.from_numpy(g.permutation(len(data))).to(data.device)
            cut = max(1, len(data) // 10)
            centres, held = data[perm[cut:]], data[perm[:cut]]
        else:
            centres, held = data, to_tensor(scaler.forward(val), data.device)
        if len(held) > EPS_VAL_ROWS:
            held = held[torch.from_numpy(g.choice(len(held), EPS_VAL_ROWS, replace=False)).to(data.device)]
        eps, scores = choose_eps(centres, held.to(data.dtype))
        teacher["schedule"] = Schedule(eps=eps)
        info["eps_val_loglik"] = {f"{e:.4g}": v for e, v in sorted(scores.items())}
    info["eps"] = teacher["schedule"].eps


def _nfe(steps: int, solver: str) -> int:
    """Score evaluations per trajectory."""
    return steps * (2 if solver == "heun" else 1)


def paper_hidden(d: int) -> int:
    """The authors' hidden width for dimension ``d`` (256 unless d is a UCI set's)."""
    return PAPER_HIDDEN.get(int(d), 256)


def paper_lr_factor(step: int, iters: int) -> float:
    """lr multiplier at ``step`` of ``iters``: 1, then 1/2, 1/4, 1/8 from 25%, 50%, 60% (5k/10k/12k of 20k)."""
    factor = 1.0
    for fraction, value in PAPER_LR_STEPS:
        if step >= fraction * iters:
            factor = value
    return factor


# ------------------------------------------------------------------ the invertible student
def build_student(d: int, layers: int, bins: int, hidden: int, blocks: int, tail_bound: float):
    """Rational-quadratic coupling flow x -> z (nflows ``Flow``) with a standard-normal base.

    d = 1: elementwise splines; d = 2: couplings with alternating masks; d > 2: an
    LU-parametrised linear layer (identity at start) before each alternating coupling.
    """
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import ResidualNet
    from nflows.transforms import (
        CompositeTransform,
        LULinear,
        PiecewiseRationalQuadraticCDF,
        PiecewiseRationalQuadraticCouplingTransform,
    )
    from nflows.utils.torchutils import create_alternating_binary_mask

    def conditioner(n_in: int, n_out: int) -> nn.Module:
        return ResidualNet(n_in, n_out, hidden_features=hidden, num_blocks=blocks)

    parts: list[nn.Module] = []
    for i in range(layers):
        if d == 1:
            parts.append(PiecewiseRationalQuadraticCDF([1], num_bins=bins, tails="linear", tail_bound=tail_bound))
            continue
        if d > 2:
            parts.append(LULinear(d, identity_init=True))
        mask = create_alternating_binary_mask(d, even=i % 2 == 0)
        parts.append(
            PiecewiseRationalQuadraticCouplingTransform(
                mask, conditioner, num_bins=bins, tails="linear", tail_bound=tail_bound
            )
        )
    return Flow(CompositeTransform(parts), StandardNormal([d]))


def _hook(checkpoint: Callable[[int], bool] | None) -> Callable[[int, float], bool] | None:
    return None if checkpoint is None else (lambda step, _: checkpoint(step))


def fit_student_regression(
    flow,
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    g: torch.Generator,
    name: str = "supervised_diffusion",
    checkpoint: Callable[[int], bool] | None = None,
) -> float:
    """Fit the flow's inverse to the pairs z (n, d) -> x (n, d): minimise mean |T^{-1}(z_i) - x_i|^2 (Adam,
    cosine lr, minibatches drawn with ``g``). Returns the mean squared error per pair over the last
    checkpoint interval. ``checkpoint(step)`` is called at the checkpoint steps; True stops training."""
    opt = Adam(flow.parameters(), lr, schedule="cosine", steps=steps)

    def step(k: int, idx: torch.Tensor) -> torch.Tensor:
        x_hat, _ = flow._transform.inverse(z[idx])
        return opt.step((x_hat - x[idx]).square().sum(dim=1).mean())

    return train(
        step,
        steps,
        name=name,
        batches=minibatches(len(z), batch, steps, g, z.device),
        check_every=CHECK_EVERY,
        hook=_hook(checkpoint),
        desc="student regression",
    ).window_loss


def fit_student_likelihood(
    flow,
    draw: Callable[[], torch.Tensor],
    *,
    steps: int,
    lr: float,
    name: str = "supervised_diffusion",
    checkpoint: Callable[[int], bool] | None = None,
) -> float:
    """Maximise the flow's log-likelihood of batches ``draw()`` (b, d) (Adam, cosine lr); returns the last batch's NLL.

    With ``draw`` = fresh draws of G this distils the generator's *distribution* into the
    student (minimises the cross-entropy of G's samples); with minibatches of the data it is
    a plain maximum-likelihood fine-tune.
    """
    opt = Adam(flow.parameters(), lr, schedule="cosine", steps=steps)
    result = train(
        lambda k, _: opt.step(-flow.log_prob(draw()).mean()),
        steps,
        name=name,
        check_every=CHECK_EVERY,
        hook=_hook(checkpoint),
        desc="student likelihood",
    )
    return float(result.loss)


# ------------------------------------------------------------------ the generator
def fit_generator(
    net: nn.Module,
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    iters: int,
    lr: float,
    batch: int | None,
    g: torch.Generator,
    name: str = "supervised_diffusion",
    checkpoint: Callable[[int], bool] | None = None,
) -> float:
    """Fit ``net`` to the pairs z (n, d) -> x (n, d) by MSE with Adam and the paper's step lr schedule; full
    batch when ``batch`` is None or >= n. Returns the final MSE over all pairs (per coordinate)."""
    full = batch is None or batch >= len(z)
    opt = Adam(net.parameters(), lr, schedule=lambda k: paper_lr_factor(k, iters))

    def step(k: int, idx: torch.Tensor | None) -> torch.Tensor:
        if full:
            return opt.step((net(z) - x).square().mean())
        return opt.step((net(z[idx]) - x[idx]).square().mean())

    train(
        step,
        iters,
        name=name,
        batches=None if full else minibatches(len(z), batch, iters, g, z.device),
        check_every=CHECK_EVERY,
        hook=_hook(checkpoint),
        desc="generator G",
    )
    with torch.no_grad():
        sq = sum(
            float((net(z[i : i + SAMPLE_BATCH]) - x[i : i + SAMPLE_BATCH]).square().sum())
            for i in range(0, len(z), SAMPLE_BATCH)
        )
    return check_finite(torch.tensor(sq / x.numel(), device="cpu"), iters, name)  # float32, as the labels


@register
class SupervisedDiffusion(Method):
    """Diffusion-assisted supervised generator G: z -> x, with an invertible student for the likelihood.

    1. labelling: n_pairs z ~ N(0, I), labels x0 = the probability-flow ODE from z at t = 1 back to
       t = 0 with the teacher's score (``teacher="training_free"``: the Monte-Carlo training-free
       score of the standardised data, the paper's; ``"score_model"`` / ``"flow_matching"``: a fitted
       ``score_diffusion`` / ``flow_matching`` model with ``teacher_profile``, whose fit is the phase
       "teacher");
    2. training: an MLP G (d -> H -> H -> d, tanh) fitted to the pairs by mean squared error (Adam,
       the paper's stepwise lr schedule);
    3. sampling: x = G(z) for fresh z, one forward pass.

    Likelihood (beyond the paper): G is not invertible, so a rational-quadratic coupling flow T
    (nflows) is regressed on the pairs (min mean |T^{-1}(z_i) - x_i|^2, ``student_steps``) and then
    fitted by maximum likelihood to fresh draws of G (``student_distill_steps``), so that its density
    describes G's samples. ``log_prob`` is log N(T(x); 0, I) + log|det dT/dx| (+ the standardiser's),
    normalised by construction (kind "exact"): the student's density, not G's own. ``info_`` records
    ``student_generator_gap`` (mean |T^{-1}(z) - G(z)|^2) and ``student_generator_ce`` (cross-entropy of
    4,096 draws of G under the student), and, for the training-free teacher, G's error against its
    teacher on held-out pairs (``teacher_fidelity_energy``...). The teacher is a Gaussian KDE of the
    standardised data with bandwidth sqrt(eps); ``eps="auto"`` picks eps by the validation
    log-likelihood of that KDE (``info_["eps"]``).

    Parameters
    ----------
    teacher, teacher_profile : the labelling teacher and a learned teacher's profile.
    eps, steps, solver, score_mode, mc_batch, chunk : the probability flow: eps (or "auto"), ODE steps,
        "euler" or "heun", score over all rows ("exact") or Monte-Carlo batches of ``mc_batch`` rows
        drawn once per ``chunk`` trajectories ("minibatch") or at every step ("minibatch_refresh").
    n_pairs, hidden, iters, lr, batch_size : pairs ("auto": max(200,000, N)), G's width ("auto": the
        paper's per dimension), Adam iterations, learning rate and minibatch (None: full batch).
    student_layers, student_bins, student_hidden, student_blocks, student_tail_bound : the coupling flow.
    student_steps, student_distill_steps, student_mle_steps, student_batch_size, student_lr : its three
        training stages (regression, distillation, optional maximum likelihood on the data).

    Profiles: ``paper`` is the authors' UCI code (explicit Euler, 500 steps, eps 0.01, Monte-Carlo
    batches of 1,000, 200,000 pairs, G of H = 256/512/1024/1400 on POWER/GAS/HEPMASS/MINIBOONE, Adam
    2e-3 full batch, 20,000 iterations with the lr halved at 5k, quartered at 10k, divided by 8 at 12k;
    the student is ours); ``quick``: 100 Euler steps, 20,000 pairs, G trained on 4,000 minibatches of
    512, a 4-layer student. Measurements: docs/flagship.md.

    References
    ----------
    Liu, Yang, Zhang, Bao, Cao & Zhang, "Diffusion-Model-Assisted Supervised Learning of Generative
    Models for Density Estimation", J. Mach. Learn. Model. Comput. 5(1), 2024 (arXiv 2310.14458).
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019 (the student).

    Example
    -------
    ::

        m = methods.create("supervised_diffusion", profile="quick", seed=0).fit(train)
        x = m.sample(5000, seed=1)      # (5000, d): one pass of G
        lp = m.log_prob(test)           # (n,) the invertible student's log density
        m.info_["student_generator_ce"] # how well that density describes G's samples
    """

    name: ClassVar[str] = "supervised_diffusion"
    log_prob_kind: ClassVar[str | None] = "exact"
    plot_style: ClassVar[tuple[str, str]] = ("#d62728", "o")
    profiles: ClassVar[dict[str, dict]] = {
        "smoke": dict(
            teacher="training_free",
            teacher_profile="smoke",
            eps=0.01,
            steps=20,
            solver="euler",
            score_mode="minibatch",
            mc_batch=256,
            chunk=5000,
            n_pairs=1024,
            hidden=32,
            iters=150,
            lr=2e-3,
            batch_size=256,
            student_layers=2,
            student_bins=8,
            student_hidden=16,
            student_blocks=1,
            student_tail_bound=5.0,
            student_steps=40,
            student_distill_steps=40,
            student_batch_size=256,
            student_lr=5e-3,
            student_mle_steps=0,
        ),
        "quick": dict(
            teacher="training_free",
            teacher_profile="quick",
            eps=0.01,
            steps=100,
            solver="euler",
            score_mode="minibatch",
            mc_batch=1000,
            chunk=5000,
            n_pairs=20_000,
            hidden=256,
            iters=4000,
            lr=2e-3,
            batch_size=512,
            student_layers=4,
            student_bins=16,
            student_hidden=64,
            student_blocks=1,
            student_tail_bound=5.0,
            student_steps=500,
            student_distill_steps=500,
            student_batch_size=512,
            student_lr=3e-3,
            student_mle_steps=0,
        ),
        "paper": dict(
            teacher="training_free",
            teacher_profile="paper",
            eps=0.01,
            steps=500,
            solver="euler",
            score_mode="minibatch",
            mc_batch=1000,
            chunk="auto",
            n_pairs="auto",
            hidden="auto",
            iters=20_000,
            lr=2e-3,
            batch_size=None,
            student_layers=8,
            student_bins=16,
            student_hidden=128,
            student_blocks=2,
            student_tail_bound=5.0,
            student_steps=5000,
            student_distill_steps=5000,
            student_batch_size=1024,
            student_lr=1e-3,
            student_mle_steps=0,
        ),
    }
    param_specs: ClassVar[dict[str, Spec]] = {
        **TEACHER_SPECS,
        "n_pairs": Choice("auto") | Int(min=1),
        "hidden": Choice("auto") | Int(min=1),
        "iters": Int(min=1),
        "lr": Float(gt=0),
        "batch_size": Choice(None) | Int(min=1),
        "student_layers": Int(min=1),
        "student_bins": Int(min=2),
        "student_hidden": Int(min=1),
        "student_blocks": Int(min=1),
        "student_tail_bound": Float(gt=0),
        "student_steps": Int(min=0),
        "student_distill_steps": Int(min=0),
        "student_batch_size": Int(min=1),
        "student_lr": Float(gt=0),
        "student_mle_steps": Int(min=0),
        "teacher": Choice(*TEACHERS),
        "teacher_profile": Choice(*TEACHER_PROFILES),
    }
    #: The teacher's bandwidth eps (the KDE the labels sample, docs/flagship.md), G's width and lr, the
    #: student's width and lr; the label count and step counts stay the profile's (docs/tuning.md).
    search_space: ClassVar[dict[str, Spec]] = {
        "eps": Float(1e-3, 0.3, log=True),
        "hidden": Int(32, 2048, log=True),
        "lr": Float(3e-4, 1e-2, log=True),
        "student_hidden": Int(16, 256, log=True),
        "student_lr": Float(3e-4, 1e-2, log=True),
    }

    # ----------------------------------------------------------------- fit
    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p, (n, d) = self.params, train.shape
        teacher = _teacher_settings(p, d)
        _check_choice("teacher", p["teacher"], tuple(TEACHERS))
        _check_choice("teacher_profile", p["teacher_profile"], TEACHER_PROFILES)
        n_pairs = max(PAPER_PAIRS, n) if p["n_pairs"] == "auto" else _check_int("n_pairs", p["n_pairs"])
        hidden = paper_hidden(d) if p["hidden"] == "auto" else _check_int("hidden", p["hidden"])
        student = self._student_settings()
        generator_fit = {
            "iters": _check_int("iters", p["iters"]),
            "lr": _check_positive("lr", p["lr"]),
            "batch": None if p["batch_size"] is None else _check_int("batch_size", p["batch_size"]),
        }
        self.device_ = device = resolve_device(self.device)
        self.scaler_ = Standardiser(train)
        data = to_tensor(self.scaler_.forward(train), device)

        with self.phase("bandwidth") if teacher["schedule"] is None else nullcontext():
            resolve_schedule(teacher, data, val, self.scaler_, self.seed, self.info_)
        z = torch.randn(n_pairs, d, generator=torch_stream(self.seed, _Z, device), device=device)
        x0, label_nfe = self._label(z, train, data, teacher)
        self.checkpoint("labels", 0, 0)  # labels done: a time, no quality (G does not exist yet)
        with self.phase("training"), single_cpu_thread(device):
            mse = self._train_generator(z, x0, hidden, **generator_fit)
        if self.params["teacher"] == "training_free":  # held-out labels from the same probability flow
            with self.phase("fidelity"):
                self.info_.update(self._teacher_fidelity(data, teacher, min(FIDELITY_PAIRS, n_pairs), val))
        with self.phase("student"), nflows_warnings_silenced(), single_cpu_thread(device):
            reg, distill, nll = self._train_student(z, x0, data, student)
            gap, cross_entropy = self._student_fidelity(d)

        self.info_.update(
            {
                "n_pairs": n_pairs,
                "hidden": hidden,
                "label_nfe": label_nfe,
                "label_mean_sq_norm": float(x0.square().sum(dim=1).mean()),
                "train_mse": mse,
                "student_regression_mse": reg,
                "student_distill_nll": distill,
                "student_mle_nll": nll,
                "student_generator_gap": gap,
                "student_generator_ce": cross_entropy,
            }
        )

    def _label(self, z: torch.Tensor, train: np.ndarray, data: torch.Tensor, teacher: dict[str, Any]):
        """Labels x0 (n, d) for the noise ``z`` (n, d), standardised, from the chosen teacher, and the teacher's
        evaluations per trajectory. A learned teacher (``TEACHERS``) is first fitted to ``train`` with
        ``teacher_profile``, in its own fit phase "teacher"; it standardises the data as we do."""
        name = self.params["teacher"]
        if name == "training_free":
            with self.phase("labeling"):
                x0 = flow_to_data(
                    z,
                    data,
                    teacher["schedule"],
                    steps=teacher["steps"],
                    solver=teacher["solver"],
                    mode=teacher["mode"],
                    mc_batch=teacher["mc_batch"],
                    chunk=teacher["chunk"],
                    generator=torch_stream(self.seed, _MC, self.device_),
                )
            return x0, _nfe(teacher["steps"], teacher["solver"])
        import methods

        with self.phase("teacher"):
            model = methods.create(
                TEACHERS[name],
                self.params["teacher_profile"],
                device=str(self.device_),
                seed=stream_seed(self.seed, _TEACHER),
            ).fit(train)
        with self.phase("labeling"):
            x0, nfe = model.transport(z)
        self.info_["teacher_final_loss"] = model.info_.get("final_loss")
        return x0, nfe / math.ceil(len(z) / model.params["eval_batch"])

    @torch.no_grad()
    def _teacher_fidelity(
        self, data: torch.Tensor, teacher: dict[str, Any], n: int, val: np.ndarray | None
    ) -> dict[str, float]:
        """How far G is from its teacher, on ``n`` fresh pairs labelled like the training ones but held out.

        In data units: ``teacher_fidelity_energy``, the energy distance between G(z) and the teacher's
        labels (G's error against what it was taught); ``heldout_mse``, mean |G(z) - x0|^2 per coordinate
        (standardised, comparable with ``train_mse``); with ``val``, ``teacher_val_energy`` and
        ``generator_val_energy``, the labels' and G's energy distance to up to ``n`` validation rows
        (the teacher's own error and G's, on the same footing).
        """
        z = torch.randn(n, data.shape[1], generator=torch_stream(self.seed, _HOLD_Z, self.device_), device=self.device_)
        x0 = flow_to_data(
            z,
            data,
            teacher["schedule"],
            steps=teacher["steps"],
            solver=teacher["solver"],
            mode=teacher["mode"],
            mc_batch=teacher["mc_batch"],
            chunk=teacher["chunk"],
            generator=torch_stream(self.seed, _HOLD_MC, self.device_),
        )
        x_g = batched(self.net_, z, SAMPLE_BATCH)
        out = {"heldout_mse": float((x_g - x0).square().mean())}
        labels, drawn = (self.scaler_.inverse(x.double().cpu().numpy()) for x in (x0, x_g))
        out["teacher_fidelity_energy"] = energy_distance(labels, drawn)
        if val is not None and len(val) >= 2:
            rows = val[numpy_stream(self.seed, _HOLD_Z).permutation(len(val))[:n]]
            out["teacher_val_energy"] = energy_distance(rows, labels)
            out["generator_val_energy"] = energy_distance(rows, drawn)
        return out

    def _train_generator(self, z: torch.Tensor, x0: torch.Tensor, hidden: int, **fit: Any) -> float:
        """Build G (d -> hidden -> hidden -> d, tanh; seeded init) and fit it to the pairs; returns the MSE."""
        d = z.shape[1]
        with seeded_init(stream_seed(self.seed, _INIT_G)):
            self.net_ = mlp(d, d, hidden, layers=2, act=nn.Tanh).to(self.device_)
        mse = fit_generator(
            self.net_,
            z,
            x0,
            g=torch_stream(self.seed, _BATCH, "cpu"),
            **fit,
            checkpoint=lambda step: self.checkpoint("generator", step, fit["iters"], sample=self._sample),
        )
        self.net_.eval()
        return mse

    def _train_student(self, z: torch.Tensor, x0: torch.Tensor, data: torch.Tensor, s: dict[str, Any]):
        """Build the coupling flow (seeded init), regress its inverse on the pairs, distil G's distribution
        into it by maximum likelihood on fresh draws of G, optionally fine-tune on the data.

        Returns the final regression MSE, distillation NLL and data NLL (None for a stage with no steps).
        """
        with seeded_init(stream_seed(self.seed, _INIT_T)):
            flow = build_student(z.shape[1], s["layers"], s["bins"], s["hidden"], s["blocks"], s["tail_bound"])
        self.student_ = flow.to(self.device_)
        g = torch_stream(self.seed, _STUDENT, "cpu")  # minibatch indices are drawn on the CPU
        reg = distill = nll = None

        def checkpoint(stage: str, planned: int) -> Callable[[int], bool]:
            return lambda step: self.checkpoint(stage, step, planned, val_loglik=self._log_prob)

        if s["steps"]:
            reg = fit_student_regression(
                self.student_,
                z,
                x0,
                steps=s["steps"],
                batch=s["batch"],
                lr=s["lr"],
                g=g,
                checkpoint=checkpoint("student_regression", s["steps"]),
            )
        if s["distill_steps"]:
            g_z = torch_stream(self.seed, _DISTILL_Z, self.device_)
            shape = (s["batch"], z.shape[1])

            @torch.no_grad()
            def generator_draws() -> torch.Tensor:
                return self.net_(torch.randn(shape, generator=g_z, device=self.device_))

            distill = fit_student_likelihood(
                self.student_,
                generator_draws,
                steps=s["distill_steps"],
                lr=s["lr"],
                checkpoint=checkpoint("student_distill", s["distill_steps"]),
            )
        if s["mle_steps"]:
            batches = minibatches(len(data), s["batch"], s["mle_steps"], g, data.device)
            nll = fit_student_likelihood(
                self.student_,
                lambda: data[next(batches)],
                steps=s["mle_steps"],
                lr=s["lr"],
                checkpoint=checkpoint("student_mle", s["mle_steps"]),
            )
        self.student_.eval()
        return reg, distill, nll

    def _student_settings(self) -> dict[str, Any]:
        p = self.params
        tail = _check_positive("student_tail_bound", p["student_tail_bound"])
        settings = {
            "layers": _check_int("student_layers", p["student_layers"]),
            "bins": _check_int("student_bins", p["student_bins"], 2),
            "hidden": _check_int("student_hidden", p["student_hidden"]),
            "blocks": _check_int("student_blocks", p["student_blocks"]),
            "tail_bound": tail,
            "steps": _check_int("student_steps", p["student_steps"], 0),
            "batch": _check_int("student_batch_size", p["student_batch_size"]),
            "lr": _check_positive("student_lr", p["student_lr"]),
            "distill_steps": _check_int("student_distill_steps", p["student_distill_steps"], 0),
            "mle_steps": _check_int("student_mle_steps", p["student_mle_steps"], 0),
        }
        if not settings["steps"] + settings["distill_steps"] + settings["mle_steps"]:
            raise ValueError(
                "the student needs training: student_steps, student_distill_steps and student_mle_steps are all 0"
            )
        return settings

    @torch.no_grad()
    def _student_fidelity(self, d: int, n: int = 4096) -> tuple[float, float]:
        """How closely the student tracks G on fresh z: in standardised units
        mean |T^{-1}(z) - G(z)|^2, and the cross-entropy -mean log q(G(z)) of G's draws under the student
        in nats of the data's units (comparable with a test log-likelihood)."""
        z = torch.randn(n, d, generator=torch_stream(self.seed, _GAP_Z, self.device_), device=self.device_)
        x_generator = self.net_(z)
        x_student, _ = self.student_._transform.inverse(z)
        gap = float((x_student - x_generator).square().sum(dim=1).mean())
        return gap, -float(self.student_.log_prob(x_generator).mean()) - float(self.scaler_.log_det)

    # ----------------------------------------------------------------- sample / log_prob
    @torch.no_grad()
    def _sample(self, n: int, seed: int) -> np.ndarray:
        z = torch.randn(n, self.dim_, generator=torch_stream(seed, _SAMPLE_Z, self.device_), device=self.device_)
        x = batched(self.net_, z, CPU_SAMPLE_BATCH if self.device_.type == "cpu" else SAMPLE_BATCH)
        return self.scaler_.inverse(x.double().cpu().numpy())

    @torch.no_grad()
    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        xs = to_tensor(self.scaler_.forward(x), self.device_)
        with nflows_warnings_silenced():
            lp = batched(self.student_.log_prob, xs, LOG_PROB_BATCH)
        return lp.double().cpu().numpy() + self.scaler_.log_det


@register
class TrainingFreeODE(Method):
    """The flagship's teacher as a sampler: the probability-flow ODE with the training-free score.

    ``fit`` standardises and stores the data (and picks eps for ``eps="auto"``); each ``sample`` call
    draws z ~ N(0, I) and integrates dZ/dt = f(t) Z - 0.5 g^2(t) S(Z, t) from t = 1 to 0 with the exact
    score S of the data smoothed by the forward process (``info_["nfe"]`` score evaluations per
    sample). No likelihood (its density is the KDE mean_j N(x_j, eps I) of the standardised data).

    Parameters
    ----------
    eps, steps, solver, score_mode, mc_batch, chunk : as ``supervised_diffusion``'s labelling.

    Profiles mirror the labelling settings of ``supervised_diffusion``.

    References
    ----------
    Liu et al., J. Mach. Learn. Model. Comput. 5(1), 2024 (arXiv 2310.14458).

    Example
    -------
    ::

        m = methods.create("training_free_ode", "smoke", seed=0).fit(x)
        m.sample(500, seed=1)           # (500, d); m.info_["nfe"] score evaluations each
    """

    name: ClassVar[str] = "training_free_ode"
    log_prob_kind: ClassVar[str | None] = None
    plot_style: ClassVar[tuple[str, str]] = ("#e377c2", "v")
    profiles: ClassVar[dict[str, dict]] = {
        "smoke": dict(eps=0.01, steps=20, solver="euler", score_mode="minibatch", mc_batch=256, chunk=5000),
        "quick": dict(eps=0.01, steps=100, solver="euler", score_mode="minibatch", mc_batch=1000, chunk=5000),
        "paper": dict(eps=0.01, steps=500, solver="euler", score_mode="minibatch", mc_batch=1000, chunk="auto"),
    }
    param_specs: ClassVar[dict[str, Spec]] = TEACHER_SPECS
    search_space: ClassVar[dict[str, Spec]] = {"eps": Float(1e-3, 0.3, log=True)}

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        self.teacher_ = _teacher_settings(self.params, train.shape[1])
        self.device_ = resolve_device(self.device)
        with self.phase("setup"):  # all the "training" there is: standardise and store the data
            self.scaler_ = Standardiser(train)
            self.data_ = to_tensor(self.scaler_.forward(train), self.device_)
        with self.phase("bandwidth") if self.teacher_["schedule"] is None else nullcontext():
            resolve_schedule(self.teacher_, self.data_, val, self.scaler_, self.seed, self.info_)
        self.info_["nfe"] = _nfe(self.teacher_["steps"], self.teacher_["solver"])

    def _sample(self, n: int, seed: int) -> np.ndarray:
        t = self.teacher_
        z = torch.randn(n, self.dim_, generator=torch_stream(seed, _SAMPLE_Z, self.device_), device=self.device_)
        x = flow_to_data(
            z,
            self.data_,
            t["schedule"],
            steps=t["steps"],
            solver=t["solver"],
            mode=t["mode"],
            mc_batch=t["mc_batch"],
            chunk=t["chunk"],
            generator=torch_stream(seed, _SAMPLE_MC, self.device_),
        )
        return self.scaler_.inverse(x.double().cpu().numpy())
