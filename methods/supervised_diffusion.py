"""The flagship: the diffusion-model-assisted supervised generator and its teacher.

Liu, Yang, Zhang, Bao, Cao and Zhang, "Diffusion-Model-Assisted Supervised
Learning of Generative Models for Density Estimation", arXiv 2310.14458
(J. Mach. Learn. Model. Comput. 5(1), 2024).

``training_free_ode`` (the teacher)
    Standardise the data; to sample, draw z ~ N(0, I) at t = 1 and integrate the
    probability-flow ODE back to t = 0 with the training-free score of the data
    (:func:`methods.training_free_score.flow_to_data`). No training, no
    likelihood; every sample costs ``steps`` score evaluations (``2 * steps``
    with Heun), recorded as ``info_["nfe"]``.

``supervised_diffusion`` (the student generator)
    1. labelling: n_pairs z ~ N(0, I), labels x0 = flow_to_data(z, train);
    2. training: an MLP G: z -> x (d -> H -> H -> d, tanh) fitted to the pairs
       by mean squared error with Adam;
    3. sampling: x = G(z) for fresh z, one forward pass.

Teachers (``teacher``; beyond the paper). ``"training_free"`` (default) is the paper's: the
Monte-Carlo score of the data, no training. ``"score_model"`` fits a VP score network
(``score_diffusion`` with ``teacher_profile``) and labels by its probability-flow ODE;
``"flow_matching"`` fits a flow-matching velocity field (``flow_matching``) and labels by
integrating it from the same noise, which makes G a one-step distillation of that flow (rectified
flow's distillation, Liu et al. 2023; Luhman & Luhman 2021). Same noise, G, student and budgets;
the learned teacher's training is the fit phase ``"teacher"``, its ODE solve is ``"labeling"``.
``info_["label_nfe"]`` is the teacher's evaluations per trajectory. Measured comparison: the README,
"What the training-free score buys".

Likelihood (beyond the paper). G is not invertible, so its density is not
available; we distil G into an *invertible student*: a rational-quadratic
coupling flow T: x -> z (nflows; Durkan et al. 2019), trained in two stages:

1. regression on the labelled pairs, min mean |T^{-1}(z_i) - x_i|^2
   (``student_steps``): ties the student's map to the probability-flow map;
2. distillation of G's distribution, maximum likelihood on fresh draws G(z)
   (``student_distill_steps``): minimises the cross-entropy of G's samples
   under the student, H(G) + KL(G || q), so the likelihood describes the
   samples the method actually produces.

``log_prob`` is the student's density log N(T(x); 0, I) + log|det dT/dx| (+ the
standardiser's log-det): exact and normalised by construction
(``log_prob_kind = "exact"``), the density of the student, not G's own. The
route was chosen over Newton inversion of G (fails on 6-30% of points) and an
inverse network H (folds space; integrates to 1.35 on 8gaussians), see
DESIGN.md. ``info_`` records ``student_generator_gap``, mean |T^{-1}(z) - G(z)|^2
on fresh z, and ``student_generator_ce``, the cross-entropy of 4,096 draws of G
under the student (nats, data units).

Why the second stage. Regression alone matches the map where labels are and
leaves the Jacobian, hence the density, unconstrained elsewhere; in 2-D that
is harmless, in 43-D it is not. Quick profile, seed 0, same G, regression
500 steps alone against 500 + 500 distillation steps (KL(p || q) on the 5,000
test points for the toys, test log-likelihood on miniboone-small, d = 43,
2,956 training rows; CE as above, lower = describes G better):

===============  ===================  ==========  ====================  ==========
dataset          regression: KL / LL  CE          + distil: KL / LL     CE
===============  ===================  ==========  ====================  ==========
8gaussians       KL 0.134             3.272       KL 0.175              3.188
checkerboard     KL 0.348             4.246       KL 0.545              4.062
rings            KL 0.777             3.530       KL 0.868              3.476
miniboone-small  LL -165.4            78.76       LL -34.97             10.45
===============  ===================  ==========  ====================  ==========

(1,000 regression steps alone: miniboone-small LL -184.8, CE 94.7.) On the 2-D
sets distillation moves the likelihood from the regression student's towards
G's own distribution, which is a little further from the data (G smears mass
across checkerboard's gaps), and that is the honest number for this method;
in 43-D it is the difference between a useless and a sensible likelihood
(``gaussian`` gets -37.7, ``maf`` -17.6 there).

Maximum-likelihood fine-tune on the *data* (``student_mle_steps``, off in every
profile). Measured earlier after 1,000 regression steps: it lowered KL to the
data (8gaussians 0.126 -> 0.038, checkerboard 0.318 -> 0.145, rings 0.728 ->
0.220) but raised CE by 0.13-0.64 nats: the student then describes the data,
not the generator (pure MLE is the coupling-flow baseline ``nsf_c``).

Much of the regression student's KL is the teacher's: the labels follow the
data smoothed by N(0, eps) in standardised units (bandwidth 0.15 against ring
width 0.08 on rings, about 0.35 nats of KL alone), and the student cannot
be sharper than its labels. Grid integrals of exp(log_prob) on the three sets
are 0.9988-0.9996 (quick profile, 401^2 grid).

The teacher is a kernel density (DESIGN.md, "The flagship"): its labels are samples of
p_0 = mean_j N(x_j, eps I) on standardised data, bandwidth sqrt(eps). ``eps="auto"`` (ours) picks
eps by the validation log-likelihood of that KDE (``resolve_schedule``; ``info_["eps"]`` records the
value used); docs/flagship.md compares it with the paper's fixed 0.01. ``info_`` also separates G's
error from its teacher's on 1,000 held-out labelled pairs (``_teacher_fidelity``): the energy distance
between G(z) and the labels of the same z, and (with validation data) both against validation rows.

Profiles
--------
``paper``: the authors' UCI code (DESIGN.md, "The flagship"): explicit Euler,
500 steps, eps 0.01, Monte-Carlo batch of 1,000 rows drawn once per chunk of
5,000 trajectories (2,000 when d = 43, MINIBOONE: ``chunk="auto"``),
200,000 pairs or N_train when larger (``n_pairs="auto"``), H = 256 / 512 /
1024 / 1400 for POWER (d 6) / GAS (8) / HEPMASS (21) / MINIBOONE (43), 256
otherwise (``hidden="auto"``), Adam lr 2e-3, full batch, 20,000 iterations
with the lr divided by 2, 4 and 8 at 25%, 50% and 60% of them (5k, 10k, 12k).
The student (ours, not in the paper): 8 coupling layers, 16 bins, residual
conditioners of 2 blocks x 128, tail bound 5, 5,000 regression steps of 1,024
pairs then 5,000 distillation steps of 1,024 draws of G, Adam 1e-3 with cosine
decay. Meant for a GPU.
``quick`` (ours): 100 Euler steps, 20,000 pairs, G of the paper's width trained
on minibatches (4,000 x 512) with the same relative lr schedule; student of
4 layers, 16 bins, 64 hidden x 1 block, 500 regression steps of 512 pairs and
500 distillation steps of 512 draws, Adam 3e-3. Measured on 20,000 2-D points,
one thread: fit 32-33 s (labelling 2-4 s, G 15-16.5 s, student 11-13 s).
G's training is what limits the quick method, not its labels or its student.
On circles (seed 0; KL of the distilled student, C2ST of 5,000 samples of G),
these were the results:

======================  ======  ======  =======
G minibatches           KL      C2ST    G time
======================  ======  ======  =======
1,500 x 256             0.452   0.691   4.7 s
3,000 x 512             0.217   0.611   13 s
4,000 x 512 (quick)     0.175   0.594   16 s
8,000 x 512             0.121   0.572   32 s
======================  ======  ======  =======

The teacher's own samples have a C2ST of 0.565 there. On checkerboard, going
from 1,500 x 256 to 4,000 x 512 took KL from 0.545 to 0.366. Doubling or
quadrupling the distillation steps changed the test log-likelihood by under
0.02 nats: the student already matches G. The distillation table above was
measured with a G trained on 1,500 x 256 minibatches.
``smoke``: about a second of everything on 512 points.

G's minibatch training and the student run on one CPU thread (their kernels
are too small for intra-op parallelism, and with a second process sharing the
two cores OpenMP's barriers made the quick fit 273 s instead of 20 s).

Example::

    m = methods.create("supervised_diffusion", profile="quick", seed=0).fit(train)
    x = m.sample(5000, seed=1)      # (5000, d): one pass of G
    lp = m.log_prob(test)           # (n,) the invertible student's log density
    m.info_["student_generator_ce"] # how well that density describes G's samples
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from methods import register
from methods._checkpoint import is_checkpoint
from methods._torch import seeded_init, Standardizer, batched, check_loss, generator, minibatches, mlp, resolve_device, to_tensor
from methods.base import Choice, Float, Int, Method, Spec
from methods.training_free_score import MODES, SOLVERS, Schedule, choose_eps, flow_to_data

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

# Streams of the seeded generators (labels' noise, Monte-Carlo rows, minibatches...).
_Z, _MC, _BATCH, _STUDENT, _INIT_G, _INIT_T, _SAMPLE_Z, _SAMPLE_MC, _GAP_Z, _DISTILL_Z, _TEACHER, _EPS, _HOLD_Z, _HOLD_MC = (
    range(1, 15))

#: Teachers of the labels: the training-free score (the paper) or a learned model, by its method name.
#: A learned one must offer ``transport(z) -> (x, nfe)``, the deterministic ODE map of noise to data.
TEACHERS = {"training_free": None, "score_model": "score_diffusion", "flow_matching": "flow_matching"}
TEACHER_PROFILES = ("smoke", "quick", "paper")


def _seed_for(seed: int, stream: int) -> int:
    """An integer seed for ``(seed, stream)``: independent streams from one method seed."""
    return int(np.random.SeedSequence([int(seed) % 2**32, stream]).generate_state(1, dtype=np.uint64)[0] % 2**63)


def _stream(seed: int, stream: int, device: torch.device) -> torch.Generator:
    return generator(_seed_for(seed, stream), device)


@contextmanager
def _nflows_warnings_silenced() -> Iterator[None]:
    """Silence nflows 0.14's known warnings on current torch, here only.

    ``LULinear.inverse`` calls the deprecated ``torch.triangular_solve`` (correct result).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.triangular_solve is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"nflows\.")
        yield


@contextmanager
def _single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run small-batch training on one CPU thread, restoring the caller's setting after.

    Its kernels are too small to gain from intra-op parallelism, and OpenMP's spinning
    barriers made the quick fit 10x slower (273 s against 20 s) when another process
    shared the two cores. No-op on GPU.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    "eps": Choice("auto") | Float(gt=0, lt=1), "steps": Int(min=1), "solver": Choice(*SOLVERS), "score_mode": Choice(*MODES),
    "mc_batch": Int(min=1), "chunk": Choice("auto") | Int(min=1),
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


def resolve_schedule(teacher: dict[str, Any], data: torch.Tensor, val: np.ndarray | None, scaler: Standardizer,
                     seed: int, info: dict[str, Any]) -> None:
    """Set ``teacher["schedule"]``, choosing eps on data when it is "auto" (beyond the paper).

    "auto": the eps whose kernel density p_0 = mean_j N(x_j, eps I) of the standardised training rows
    ``data`` (N, d) scores the highest mean log-likelihood on up to 2,000 validation rows
    (``choose_eps``; 10% of the training rows held out when ``val`` is None). p_0 is the density the
    teacher samples (DESIGN.md, "The flagship"), so this is a KDE's bandwidth selection. Records
    ``info["eps"]`` and, for "auto", ``info["eps_val_loglik"]`` ({eps: nats, standardised units}).
    """
    if teacher["schedule"] is None:
        g = np.random.default_rng(_seed_for(seed, _EPS))
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
    from nflows.transforms import CompositeTransform, LULinear, PiecewiseRationalQuadraticCDF, PiecewiseRationalQuadraticCouplingTransform
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
        parts.append(PiecewiseRationalQuadraticCouplingTransform(
            mask, conditioner, num_bins=bins, tails="linear", tail_bound=tail_bound))
    return Flow(CompositeTransform(parts), StandardNormal([d]))


def fit_student_regression(flow, z: torch.Tensor, x: torch.Tensor, *, steps: int, batch: int, lr: float,
                           g: torch.Generator, name: str = "supervised_diffusion",
                           checkpoint: Callable[[int], bool] | None = None) -> float:
    """Fit the flow's inverse to the pairs: minimise mean |T^{-1}(z_i) - x_i|^2 (Adam, cosine lr).

    Returns the mean squared error per pair of the last ``CHECK_EVERY`` steps. ``checkpoint(step)``
    is called at the checkpoint steps (``is_checkpoint``); True stops training (budget spent).
    """
    opt = torch.optim.Adam(flow.parameters(), lr=lr, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    window, count = torch.zeros((), device=z.device), 0
    for step, idx in enumerate(minibatches(len(z), batch, steps, g, z.device), 1):
        x_hat, _ = flow._transform.inverse(z[idx])
        loss = (x_hat - x[idx]).square().sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if count == CHECK_EVERY:
            window, count = torch.zeros((), device=z.device), 0
        window, count = window + loss.detach(), count + 1
        if step % CHECK_EVERY == 0:
            check_loss(window, step, name)
        if checkpoint is not None and is_checkpoint(step, steps) and checkpoint(step):
            break
    return check_loss(window / count, steps, name)


def minimise(params, batch_loss: Callable[[], torch.Tensor], *, steps: int, lr: float,
             schedule: Callable[[torch.optim.Optimizer], Any], name: str,
             checkpoint: Callable[[int], bool] | None = None) -> torch.Tensor:
    """``steps`` Adam steps on ``batch_loss()`` with the lr scheduler ``schedule(optimiser)``, checking for
    divergence every ``CHECK_EVERY`` steps; returns the last loss. ``checkpoint(step)`` is called at the
    checkpoint steps (``is_checkpoint``); True stops early (training budget spent)."""
    opt = torch.optim.Adam(params, lr=lr, foreach=True)
    sched = schedule(opt)
    loss = torch.zeros((), device="cpu")
    for step in range(1, steps + 1):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % CHECK_EVERY == 0:
            check_loss(loss, step, name)
        if checkpoint is not None and is_checkpoint(step, steps) and checkpoint(step):
            break
    return loss


def fit_student_likelihood(flow, draw: Callable[[], torch.Tensor], *, steps: int, lr: float,
                           name: str = "supervised_diffusion", checkpoint: Callable[[int], bool] | None = None) -> float:
    """Maximise the flow's log-likelihood of batches ``draw()`` (Adam, cosine lr); returns the last batch's NLL.

    With ``draw`` = fresh draws of G this distils the generator's *distribution* into the
    student (minimises the cross-entropy of G's samples); with minibatches of the data it is
    a plain maximum-likelihood fine-tune.
    """
    loss = minimise(flow.parameters(), lambda: -flow.log_prob(draw()).mean(), steps=steps, lr=lr,
                    schedule=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps), name=name,
                    checkpoint=checkpoint)
    return check_loss(loss, steps, name)


# ------------------------------------------------------------------ the generator
def fit_generator(net: nn.Module, z: torch.Tensor, x: torch.Tensor, *, iters: int, lr: float,
                  batch: int | None, g: torch.Generator, name: str = "supervised_diffusion",
                  checkpoint: Callable[[int], bool] | None = None) -> float:
    """Fit ``net`` to the pairs by MSE with Adam and the paper's step lr schedule; full batch when
    ``batch`` is None or >= len(z). Returns the final MSE over all pairs (per coordinate)."""
    full = batch is None or batch >= len(z)
    batches = None if full else minibatches(len(z), batch, iters, g, z.device)

    def batch_loss() -> torch.Tensor:
        if full:
            return (net(z) - x).square().mean()
        idx = next(batches)
        return (net(z[idx]) - x[idx]).square().mean()

    minimise(net.parameters(), batch_loss, steps=iters, lr=lr, name=name, checkpoint=checkpoint,
             schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: paper_lr_factor(k, iters)))
    with torch.no_grad():
        sq = sum(float((net(z[i : i + SAMPLE_BATCH]) - x[i : i + SAMPLE_BATCH]).square().sum())
                 for i in range(0, len(z), SAMPLE_BATCH))
    return check_loss(torch.tensor(sq / x.numel(), device="cpu"), iters, name)


@register
class SupervisedDiffusion(Method):
    """Diffusion-assisted supervised generator G: z -> x (Liu et al. 2024) with an invertible student
    for the likelihood. See the module docstring for the procedure, profiles and measurements."""

    name: ClassVar[str] = "supervised_diffusion"
    log_prob_kind: ClassVar[str | None] = "exact"
    profiles: ClassVar[dict[str, dict]] = {
        "smoke": dict(
            teacher="training_free", teacher_profile="smoke",
            eps=0.01, steps=20, solver="euler", score_mode="minibatch", mc_batch=256, chunk=5000,
            n_pairs=1024, hidden=32, iters=150, lr=2e-3, batch_size=256,
            student_layers=2, student_bins=8, student_hidden=16, student_blocks=1, student_tail_bound=5.0,
            student_steps=40, student_distill_steps=40, student_batch_size=256, student_lr=5e-3, student_mle_steps=0,
        ),
        "quick": dict(
            teacher="training_free", teacher_profile="quick",
            eps=0.01, steps=100, solver="euler", score_mode="minibatch", mc_batch=1000, chunk=5000,
            n_pairs=20_000, hidden=256, iters=4000, lr=2e-3, batch_size=512,
            student_layers=4, student_bins=16, student_hidden=64, student_blocks=1, student_tail_bound=5.0,
            student_steps=500, student_distill_steps=500, student_batch_size=512, student_lr=3e-3,
            student_mle_steps=0,
        ),
        "paper": dict(
            teacher="training_free", teacher_profile="paper",
            eps=0.01, steps=500, solver="euler", score_mode="minibatch", mc_batch=1000, chunk="auto",
            n_pairs="auto", hidden="auto", iters=20_000, lr=2e-3, batch_size=None,
            student_layers=8, student_bins=16, student_hidden=128, student_blocks=2, student_tail_bound=5.0,
            student_steps=5000, student_distill_steps=5000, student_batch_size=1024, student_lr=1e-3,
            student_mle_steps=0,
        ),
    }
    param_specs: ClassVar[dict[str, Spec]] = {
        **TEACHER_SPECS, "n_pairs": Choice("auto") | Int(min=1), "hidden": Choice("auto") | Int(min=1),
        "iters": Int(min=1), "lr": Float(gt=0), "batch_size": Choice(None) | Int(min=1),
        "student_layers": Int(min=1), "student_bins": Int(min=2), "student_hidden": Int(min=1),
        "student_blocks": Int(min=1), "student_tail_bound": Float(gt=0), "student_steps": Int(min=0),
        "student_distill_steps": Int(min=0), "student_batch_size": Int(min=1), "student_lr": Float(gt=0),
        "student_mle_steps": Int(min=0), "teacher": Choice(*TEACHERS), "teacher_profile": Choice(*TEACHER_PROFILES),
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
        self.scaler_ = Standardizer(train)
        data = to_tensor(self.scaler_.forward(train), device)

        with self.phase("bandwidth") if teacher["schedule"] is None else nullcontext():
            resolve_schedule(teacher, data, val, self.scaler_, self.seed, self.info_)
        z = torch.randn(n_pairs, d, generator=_stream(self.seed, _Z, device), device=device)
        x0, label_nfe = self._label(z, train, data, teacher)
        self.checkpoint("labels", 0, 0)  # labels done: a time, no quality (G does not exist yet)
        with self.phase("training"), _single_cpu_thread(device):
            mse = self._train_generator(z, x0, hidden, **generator_fit)
        if self.params["teacher"] == "training_free":  # held-out labels from the same probability flow
            with self.phase("fidelity"):
                self.info_.update(self._teacher_fidelity(data, teacher, min(FIDELITY_PAIRS, n_pairs), val))
        with self.phase("student"), _nflows_warnings_silenced(), _single_cpu_thread(device):
            reg, distill, nll = self._train_student(z, x0, data, student)
            gap, cross_entropy = self._student_fidelity(d)

        self.info_.update({
            "n_pairs": n_pairs, "hidden": hidden, "label_nfe": label_nfe,
            "label_mean_sq_norm": float(x0.square().sum(dim=1).mean()),
            "train_mse": mse, "student_regression_mse": reg, "student_distill_nll": distill,
            "student_mle_nll": nll, "student_generator_gap": gap, "student_generator_ce": cross_entropy,
        })

    def _label(self, z: torch.Tensor, train: np.ndarray, data: torch.Tensor, teacher: dict[str, Any]):
        """Labels x0 (n, d) for the noise ``z`` (n, d), standardised, from the chosen teacher, and the teacher's
        evaluations per trajectory. A learned teacher (``TEACHERS``) is first fitted to ``train`` with
        ``teacher_profile``, in its own fit phase "teacher"; it standardises the data as we do."""
        name = self.params["teacher"]
        if name == "training_free":
            with self.phase("labeling"):
                x0 = flow_to_data(z, data, teacher["schedule"], steps=teacher["steps"], solver=teacher["solver"],
                                  mode=teacher["mode"], mc_batch=teacher["mc_batch"], chunk=teacher["chunk"],
                                  generator=_stream(self.seed, _MC, self.device_))
            return x0, _nfe(teacher["steps"], teacher["solver"])
        import methods

        with self.phase("teacher"):
            model = methods.create(TEACHERS[name], self.params["teacher_profile"], device=str(self.device_),
                                   seed=_seed_for(self.seed, _TEACHER)).fit(train)
        with self.phase("labeling"):
            x0, nfe = model.transport(z)
        self.info_["teacher_final_loss"] = model.info_.get("final_loss")
        return x0, nfe / math.ceil(len(z) / model.params["eval_batch"])

    @torch.no_grad()
    def _teacher_fidelity(self, data: torch.Tensor, teacher: dict[str, Any], n: int,
                          val: np.ndarray | None) -> dict[str, float]:
        """How far G is from its teacher, on ``n`` fresh pairs labelled like the training ones but held out.

        In data units: ``teacher_fidelity_energy``, the energy distance between G(z) and the teacher's
        labels (G's error against what it was taught); ``heldout_mse``, mean |G(z) - x0|^2 per coordinate
        (standardised, comparable with ``train_mse``); with ``val``, ``teacher_val_energy`` and
        ``generator_val_energy``, the labels' and G's energy distance to up to ``n`` validation rows
        (the teacher's own error and G's, on the same footing).
        """
        from harness.sample_metrics import energy_distance

        z = torch.randn(n, data.shape[1], generator=_stream(self.seed, _HOLD_Z, self.device_), device=self.device_)
        x0 = flow_to_data(z, data, teacher["schedule"], steps=teacher["steps"], solver=teacher["solver"],
                          mode=teacher["mode"], mc_batch=teacher["mc_batch"], chunk=teacher["chunk"],
                          generator=_stream(self.seed, _HOLD_MC, self.device_))
        x_g = batched(self.net_, z, SAMPLE_BATCH)
        out = {"heldout_mse": float((x_g - x0).square().mean())}
        labels, drawn = (self.scaler_.inverse(x.double().cpu().numpy()) for x in (x0, x_g))
        out["teacher_fidelity_energy"] = energy_distance(labels, drawn)
        if val is not None and len(val) >= 2:
            rows = val[np.random.default_rng(_seed_for(self.seed, _HOLD_Z)).permutation(len(val))[:n]]
            out["teacher_val_energy"] = energy_distance(rows, labels)
            out["generator_val_energy"] = energy_distance(rows, drawn)
        return out

    def _train_generator(self, z: torch.Tensor, x0: torch.Tensor, hidden: int, **fit: Any) -> float:
        """Build G (d -> hidden -> hidden -> d, tanh; seeded init) and fit it to the pairs; returns the MSE."""
        d = z.shape[1]
        with seeded_init(_seed_for(self.seed, _INIT_G)):
            self.net_ = mlp(d, d, hidden, layers=2, act=nn.Tanh).to(self.device_)
        mse = fit_generator(self.net_, z, x0, g=_stream(self.seed, _BATCH, "cpu"), **fit,
                            checkpoint=lambda step: self.checkpoint("generator", step, fit["iters"], sample=self._sample))
        self.net_.eval()
        return mse

    def _train_student(self, z: torch.Tensor, x0: torch.Tensor, data: torch.Tensor, s: dict[str, Any]):
        """Build the coupling flow (seeded init), regress its inverse on the pairs, distil G's distribution
        into it by maximum likelihood on fresh draws of G, optionally fine-tune on the data.

        Returns the final regression MSE, distillation NLL and data NLL (None for a stage with no steps).
        """
        with seeded_init(_seed_for(self.seed, _INIT_T)):
            flow = build_student(z.shape[1], s["layers"], s["bins"], s["hidden"], s["blocks"], s["tail_bound"])
        self.student_ = flow.to(self.device_)
        g = _stream(self.seed, _STUDENT, "cpu")  # minibatch indices are drawn on the CPU
        reg = distill = nll = None

        def checkpoint(stage: str, planned: int) -> Callable[[int], bool]:
            return lambda step: self.checkpoint(stage, step, planned, val_loglik=self._log_prob)

        if s["steps"]:
            reg = fit_student_regression(self.student_, z, x0, steps=s["steps"], batch=s["batch"], lr=s["lr"], g=g,
                                         checkpoint=checkpoint("student_regression", s["steps"]))
        if s["distill_steps"]:
            g_z = _stream(self.seed, _DISTILL_Z, self.device_)
            shape = (s["batch"], z.shape[1])

            @torch.no_grad()
            def generator_draws() -> torch.Tensor:
                return self.net_(torch.randn(shape, generator=g_z, device=self.device_))

            distill = fit_student_likelihood(self.student_, generator_draws, steps=s["distill_steps"], lr=s["lr"],
                                             checkpoint=checkpoint("student_distill", s["distill_steps"]))
        if s["mle_steps"]:
            batches = minibatches(len(data), s["batch"], s["mle_steps"], g, data.device)
            nll = fit_student_likelihood(self.student_, lambda: data[next(batches)], steps=s["mle_steps"], lr=s["lr"],
                                         checkpoint=checkpoint("student_mle", s["mle_steps"]))
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
            raise ValueError("the student needs training: student_steps, student_distill_steps and "
                             "student_mle_steps are all 0")
        return settings

    @torch.no_grad()
    def _student_fidelity(self, d: int, n: int = 4096) -> tuple[float, float]:
        """How closely the student tracks G on fresh z: in standardised units
        mean |T^{-1}(z) - G(z)|^2, and the cross-entropy -mean log q(G(z)) of G's draws under the student
        in nats of the data's units (comparable with a test log-likelihood)."""
        z = torch.randn(n, d, generator=_stream(self.seed, _GAP_Z, self.device_), device=self.device_)
        x_generator = self.net_(z)
        x_student, _ = self.student_._transform.inverse(z)
        gap = float((x_student - x_generator).square().sum(dim=1).mean())
        return gap, -float(self.student_.log_prob(x_generator).mean()) - float(self.scaler_.log_det)

    # ----------------------------------------------------------------- sample / log_prob
    @torch.no_grad()
    def _sample(self, n: int, seed: int) -> np.ndarray:
        z = torch.randn(n, self.dim_, generator=_stream(seed, _SAMPLE_Z, self.device_), device=self.device_)
        x = batched(self.net_, z, CPU_SAMPLE_BATCH if self.device_.type == "cpu" else SAMPLE_BATCH)
        return self.scaler_.inverse(x.double().cpu().numpy())

    @torch.no_grad()
    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        xs = to_tensor(self.scaler_.forward(x), self.device_)
        with _nflows_warnings_silenced():
            lp = batched(self.student_.log_prob, xs, LOG_PROB_BATCH)
        return lp.double().cpu().numpy() + self.scaler_.log_det


@register
class TrainingFreeODE(Method):
    """The teacher as a sampler: probability-flow ODE with the training-free score (Liu et al. 2024).

    ``fit`` only standardises and stores the data; each ``sample`` call integrates the ODE for its
    n trajectories (``info_["nfe"]`` score evaluations each). No likelihood. Profiles mirror the
    labelling settings of ``supervised_diffusion``.
    """

    name: ClassVar[str] = "training_free_ode"
    log_prob_kind: ClassVar[str | None] = None
    profiles: ClassVar[dict[str, dict]] = {
        "smoke": dict(eps=0.01, steps=20, solver="euler", score_mode="minibatch", mc_batch=256, chunk=5000),
        "quick": dict(eps=0.01, steps=100, solver="euler", score_mode="minibatch", mc_batch=1000, chunk=5000),
        "paper": dict(eps=0.01, steps=500, solver="euler", score_mode="minibatch", mc_batch=1000, chunk="auto"),
    }
    param_specs: ClassVar[dict[str, Spec]] = TEACHER_SPECS

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        self.teacher_ = _teacher_settings(self.params, train.shape[1])
        self.device_ = resolve_device(self.device)
        with self.phase("setup"):  # all the "training" there is: standardise and store the data
            self.scaler_ = Standardizer(train)
            self.data_ = to_tensor(self.scaler_.forward(train), self.device_)
        with self.phase("bandwidth") if self.teacher_["schedule"] is None else nullcontext():
            resolve_schedule(self.teacher_, self.data_, val, self.scaler_, self.seed, self.info_)
        self.info_["nfe"] = _nfe(self.teacher_["steps"], self.teacher_["solver"])

    def _sample(self, n: int, seed: int) -> np.ndarray:
        t = self.teacher_
        z = torch.randn(n, self.dim_, generator=_stream(seed, _SAMPLE_Z, self.device_), device=self.device_)
        x = flow_to_data(z, self.data_, t["schedule"], steps=t["steps"], solver=t["solver"], mode=t["mode"],
                         mc_batch=t["mc_batch"], chunk=t["chunk"], generator=_stream(seed, _SAMPLE_MC, self.device_))
        return self.scaler_.inverse(x.double().cpu().numpy())
