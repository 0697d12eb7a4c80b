"""Fitting the flagship's two networks (methods/supervised_diffusion.py) to its labelled pairs.

The generator G is regressed on the pairs with the paper's stepwise learning rate; the invertible
student (a rational-quadratic coupling flow, Durkan et al. 2019) is regressed on the same pairs,
then fitted by maximum likelihood to fresh draws of G. A private module: the registry skips it.

Example::

    settings = StudentSettings.from_params(methods.profile_params("supervised_diffusion", "smoke"))
    flow = settings.build(d=2)
    fit_student(flow, z, x0, data, settings, draw_generator=lambda: net(torch.randn(256, 2)), g=g)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.toolkit.training import Adam, check_finite, minibatches, train
from methods.base import Float, Int, Spec

__all__ = [
    "STUDENT_PROFILES",
    "STUDENT_SPECS",
    "StudentSettings",
    "build_student",
    "fit_student",
    "fit_student_regression",
    "fit_student_likelihood",
    "regress_generator",
    "paper_lr_factor",
]

CHECK_EVERY = 100  # optimiser steps between divergence checks (each one syncs the device)
ERROR_BATCH = 65_536  # rows per forward pass of G when its final error is summed
#: lr factor schedule of the authors' code, as (fraction of iterations, factor from then on).
PAPER_LR_STEPS = ((0.25, 0.5), (0.5, 0.25), (0.6, 0.125))
NAME = "supervised_diffusion"  # named in divergence errors

#: ``checkpoint(step)`` of one training stage; True: the training budget is spent, stop.
Checkpoint = Callable[[int], bool]


def paper_lr_factor(step: int, iters: int) -> float:
    """lr multiplier at ``step`` of ``iters``: 1, then 1/2, 1/4, 1/8 from 25%, 50%, 60% (5k/10k/12k of 20k)."""
    factor = 1.0
    for fraction, value in PAPER_LR_STEPS:
        if step >= fraction * iters:
            factor = value
    return factor


def _stop_at_checkpoint(checkpoint: Checkpoint | None) -> Callable[[int, float], bool] | None:
    """``train``'s hook (step, window loss) -> stop?, calling ``checkpoint(step)``."""
    return None if checkpoint is None else (lambda step, _: checkpoint(step))


# ------------------------------------------------------------------ the generator
def regress_generator(
    net: nn.Module,
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    iters: int,
    lr: float,
    batch: int | None,
    g: torch.Generator,
    checkpoint: Checkpoint | None = None,
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
        name=NAME,
        batches=None if full else minibatches(len(z), batch, iters, g, z.device),
        check_every=CHECK_EVERY,
        hook=_stop_at_checkpoint(checkpoint),
        desc="generator G",
    )
    with torch.no_grad():
        sq = sum(
            float((net(z[i : i + ERROR_BATCH]) - x[i : i + ERROR_BATCH]).square().sum())
            for i in range(0, len(z), ERROR_BATCH)
        )
    return check_finite(torch.tensor(sq / x.numel(), device="cpu"), iters, NAME)  # float32, as the labels


# ------------------------------------------------------------------ the invertible student
#: The invertible student per profile: its coupling flow, then its three training stages.
STUDENT_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
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
#: The ``student_*`` parameter specs.
STUDENT_SPECS: dict[str, Spec] = {
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
}


@dataclass(frozen=True)
class StudentSettings:
    """The student's architecture and its three training stages (the ``student_*`` parameters)."""

    layers: int
    bins: int
    hidden: int
    blocks: int
    tail_bound: float
    steps: int  # regression on the pairs
    distill_steps: int  # maximum likelihood on fresh draws of G
    mle_steps: int  # maximum likelihood on the data (optional fine-tune)
    batch: int
    lr: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> StudentSettings:
        p = {k.removeprefix("student_"): v for k, v in params.items() if k.startswith("student_")}
        batch, tail, lr = p.pop("batch_size"), float(p.pop("tail_bound")), float(p.pop("lr"))
        return cls(**p, batch=batch, tail_bound=tail, lr=lr)

    def build(self, d: int):
        return build_student(d, self.layers, self.bins, self.hidden, self.blocks, self.tail_bound)


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


def fit_student(
    flow,
    z: torch.Tensor,
    x0: torch.Tensor,
    data: torch.Tensor,
    settings: StudentSettings,
    *,
    draw_generator: Callable[[], torch.Tensor],
    g: torch.Generator,
    checkpoint: Callable[[str, int, int], bool] | None = None,
) -> tuple[float | None, float | None, float | None]:
    """The student's three stages, each skipped when it has no steps: regress its inverse on the pairs
    z -> x0 (n, d), distil G's distribution into it by maximum likelihood on ``draw_generator()`` (b, d),
    fine-tune it by maximum likelihood on ``data`` (N, d). Minibatch indices are drawn with ``g``;
    ``checkpoint(stage, step, planned)`` is called at each stage's checkpoints (True stops the stage).

    Returns the final regression MSE, distillation NLL and data NLL (None for a skipped stage).
    """

    def stage(name: str, planned: int) -> Checkpoint | None:
        return None if checkpoint is None else (lambda step: checkpoint(name, step, planned))

    batch, lr = settings.batch, settings.lr
    regression = distill = nll = None
    if settings.steps:
        at = stage("student_regression", settings.steps)
        regression = fit_student_regression(flow, z, x0, steps=settings.steps, batch=batch, lr=lr, g=g, checkpoint=at)
    if settings.distill_steps:
        at = stage("student_distill", settings.distill_steps)
        distill = fit_student_likelihood(flow, draw_generator, steps=settings.distill_steps, lr=lr, checkpoint=at)
    if settings.mle_steps:
        batches = minibatches(len(data), batch, settings.mle_steps, g, data.device)
        at = stage("student_mle", settings.mle_steps)
        nll = fit_student_likelihood(flow, lambda: data[next(batches)], steps=settings.mle_steps, lr=lr, checkpoint=at)
    return regression, distill, nll


def fit_student_regression(
    flow,
    z: torch.Tensor,
    x: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    g: torch.Generator,
    checkpoint: Checkpoint | None = None,
) -> float:
    """Fit the flow's inverse to the pairs z (n, d) -> x (n, d): minimise mean |T^{-1}(z_i) - x_i|^2 (Adam,
    cosine lr, minibatches drawn with ``g``). Returns the mean squared error per pair over the last
    checkpoint interval."""
    opt = Adam(flow.parameters(), lr, schedule="cosine", steps=steps)

    def step(k: int, idx: torch.Tensor) -> torch.Tensor:
        x_hat, _ = flow._transform.inverse(z[idx])
        return opt.step((x_hat - x[idx]).square().sum(dim=1).mean())

    return train(
        step,
        steps,
        name=NAME,
        batches=minibatches(len(z), batch, steps, g, z.device),
        check_every=CHECK_EVERY,
        hook=_stop_at_checkpoint(checkpoint),
        desc="student regression",
    ).window_loss


def fit_student_likelihood(
    flow,
    draw: Callable[[], torch.Tensor],
    *,
    steps: int,
    lr: float,
    checkpoint: Checkpoint | None = None,
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
        name=NAME,
        check_every=CHECK_EVERY,
        hook=_stop_at_checkpoint(checkpoint),
        desc="student likelihood",
    )
    return float(result.loss)
