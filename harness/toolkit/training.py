"""The shared training loop: Adam updates, minibatch order, one divergence check, checkpoints, progress.

Every method that trains runs ``train``: it owns the step count, the minibatch stream, the
divergence check, the checkpoint hook (``Method.checkpoint``: quality records and the training
budget) and the progress bar; the method's ``step(k, batch)`` computes a loss and updates its
parameters, with one ``Adam`` (or two for a GAN's alternating steps), and returns the loss.

Example::

    opt = Adam(net.parameters(), lr=1e-3, schedule="cosine", steps=1000)
    batches = minibatches(len(x), 256, 1000, torch_stream(seed), x.device)
    result = train(lambda k, idx: opt.step(loss(x[idx])), 1000, batches=batches, name="mlp",
                   hook=lambda k, window: method.checkpoint("training", k, 1000))
    result.steps, result.window_loss
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import DivergenceError
from harness.toolkit.checkpoint import checkpoint_every
from harness.toolkit.device import progress

__all__ = ["Adam", "Trained", "train", "minibatches", "check_finite", "CHECK_EVERY"]

#: Steps between divergence checks (``train``'s ``check_every``) for loops of many cheap steps: each
#: check waits for the device, so checking every step would serialise a GPU loop.
CHECK_EVERY = 100

Schedule = Callable[[int], float]  # step count -> learning-rate factor


class Adam:
    """Adam on ``params`` with an optional learning-rate schedule and gradient-norm clipping.

    ``schedule``: None (constant), "cosine" (annealed to 0 over ``steps``) or a function of the
    step count giving the factor on ``lr``. ``clip``: max gradient 2-norm (None: no clipping).
    ``step(loss)`` is one update: zero the gradients, backpropagate ``loss``, clip, step, schedule.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        schedule: str | Schedule | None = None,
        steps: int | None = None,
        clip: float | None = None,
    ) -> None:
        self.params = list(params)
        # foreach: one fused kernel per update instead of one per tensor (the same numbers on CPU)
        self.optimizer = torch.optim.Adam(
            self.params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=True
        )
        self.scheduler = _scheduler(self.optimizer, schedule, steps)
        self.clip = clip

    def step(self, loss: torch.Tensor) -> torch.Tensor:
        """One update on ``loss`` (a scalar); returns it."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss


def _scheduler(optimizer: torch.optim.Optimizer, schedule: str | Schedule | None, steps: int | None):
    if schedule is None:
        return None
    if schedule == "cosine":
        if steps is None:
            raise ValueError("a cosine schedule needs the number of steps")
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    if callable(schedule):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    raise ValueError(f"schedule must be None, 'cosine' or a function of the step, got {schedule!r}")


@dataclass
class Trained:
    """What ``train`` did: ``steps`` run, the last ``loss`` (detached), ``window_loss`` (mean step loss
    over the last hook interval) and whether a hook ``stopped`` it."""

    steps: int
    loss: torch.Tensor
    window_loss: float
    stopped: bool


def train(
    step: Callable[[int, torch.Tensor | None], torch.Tensor],
    steps: int,
    *,
    name: str,
    batches: Iterable | None = None,
    check_every: int = 1,
    hook: Callable[[int, float], bool] | None = None,
    hook_every: int | None = None,
    desc: str | None = None,
    show_progress: bool = True,
) -> Trained:
    """Run ``step(k, batch)`` for k = 1..``steps``; ``batch`` is the next item of ``batches`` (None without).

    ``step`` returns its loss (a tensor; several losses may be stacked). Every ``check_every`` steps
    and at every hook the loss must be finite, else DivergenceError (each check waits for the
    device). Every ``hook_every`` steps (default: ``checkpoint_every(steps)``) and at the last one,
    ``hook(k, window_loss)`` gets the mean step loss since the previous hook; True stops training
    (e.g. ``Method.checkpoint``: the training budget is spent).
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    hook_every = hook_every or checkpoint_every(steps)
    items = iter(batches) if batches is not None else None
    bar = progress(None, steps, desc or f"{name} training", enabled=show_progress)
    window, count, window_loss, stopped, k = None, 0, math.nan, False, 0
    loss = torch.zeros((), device="cpu")
    try:
        for k in range(1, steps + 1):
            loss = step(k, next(items) if items is not None else None).detach()
            window = loss.double() if count == 0 else window + loss.double()
            count += 1
            at_hook = k % hook_every == 0 or k == steps
            if at_hook or k % check_every == 0:
                check_finite(loss, k, name)
            bar.update(1)
            if at_hook:
                window_loss, count = float(window.sum() / count), 0
                bar.set_postfix(loss=f"{window_loss:.4g}", refresh=False)
                if hook is not None and hook(k, window_loss):
                    stopped = True
                    break
    finally:
        bar.close()
    return Trained(steps=k, loss=loss, window_loss=window_loss, stopped=stopped)


def check_finite(loss: torch.Tensor, step: int, name: str) -> float:
    """The loss (summed when several) as a float; DivergenceError when it is NaN or infinite."""
    value = float(loss.detach().double().sum())
    if not math.isfinite(value):
        raise DivergenceError(f"{name}: training diverged (loss {value} at step {step}); try a lower learning rate")
    return value


def minibatches(
    n: int, batch: int, steps: int, g: torch.Generator, device: torch.device | str
) -> Iterator[torch.Tensor]:
    """``steps`` index tensors of min(batch, n) rows of n, without replacement within each epoch (drawn with ``g`` on the CPU)."""
    batch = min(batch, n)
    perm = torch.randperm(n, generator=g, device="cpu").to(device)
    pos = 0
    for _ in range(steps):
        if pos + batch > n:
            perm = torch.randperm(n, generator=g, device="cpu").to(device)
            pos = 0
        yield perm[pos : pos + batch]
        pos += batch
