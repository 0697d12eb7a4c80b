"""Minibatch maximum-likelihood training (the flows' loop) on the shared ``train`` loop.

``fit_mle`` runs Adam (optionally cosine-annealed to zero) on the mean negative log-likelihood,
evaluates the validation log-likelihood every ``eval_every`` steps, restores the best-validation
parameters at the end and stops after ``patience`` evaluations without improvement. Each
evaluation is a training checkpoint. Randomness is local: minibatches come from the seed's
primary stream, and dropout draws from torch's global generator forked and seeded from ``seed``.

Example::

    cfg = TrainConfig.from_params(method.params)
    info = fit_mle(flow, flow.log_prob, x_train, x_val, cfg, seed=0, name="maf")
    info["best_val_loglik"], info["best_step"], info["steps"]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from harness.errors import DivergenceError
from harness.toolkit.checkpoint import CHECKPOINT_ROWS
from harness.toolkit.device import batched
from harness.toolkit.seeding import global_torch_rng, stream_seed, torch_stream
from harness.toolkit.training import Adam, minibatches
from harness.toolkit.training import train as train_loop

__all__ = ["VAL_FRACTION", "HOLD_OUT_STREAM", "DROPOUT_STREAM", "TrainConfig", "hold_out", "mean_log_prob", "fit_mle"]

VAL_FRACTION = 0.1  #: share of train held out when no validation set is given
EVAL_BATCH = 8192  #: rows per log_prob call during validation
HOLD_OUT_STREAM = 1  #: seed-stream purpose of the held-out rows (minibatches use the primary stream)
DROPOUT_STREAM = 2  #: seed-stream purpose of torch's global generator during training (dropout)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the field names are the methods' profile keys.

    batch_size : minibatch rows per step.
    lr : Adam learning rate (initial value when ``anneal``).
    steps : maximum number of optimiser steps.
    grad_clip : max gradient 2-norm (None: no clipping).
    eval_every : steps between validation evaluations, or "epoch" for one
        pass over the training rows (ceil(n_train / batch_size) steps).
    patience : evaluations without improvement before stopping (None: never).
    weight_decay : L2 coefficient passed to Adam (0: none).
    anneal : cosine-anneal the learning rate from ``lr`` to 0 over ``steps``.
    """

    batch_size: int
    lr: float
    steps: int
    grad_clip: float | None = None
    eval_every: int | str = 250
    patience: int | None = None
    weight_decay: float = 0.0
    anneal: bool = True

    def __post_init__(self) -> None:
        _positive_int("batch_size", self.batch_size)
        _positive_int("steps", self.steps)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or None, got {self.grad_clip!r}")
        if self.eval_every != "epoch":
            _positive_int("eval_every", self.eval_every, extra=' or "epoch"')
        if self.patience is not None:
            _positive_int("patience", self.patience, extra=" or None")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainConfig:
        """Pick this config's fields out of a method's parameter dict (others are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def eval_interval(self, n_train: int) -> int:
        """``eval_every`` in steps for ``n_train`` training rows."""
        if self.eval_every == "epoch":
            return max(1, math.ceil(n_train / self.batch_size))
        return int(self.eval_every)


def _positive_int(name: str, value: Any, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer{extra}, got {value!r}")


def hold_out(train: torch.Tensor, seed: int, fraction: float = VAL_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``train`` (n, d) into (train, val) with ``fraction`` of the rows (at least 1) held out at random."""
    n = train.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 training rows to hold out a validation set, got {n}")
    n_val = min(n - 1, max(1, round(fraction * n)))
    perm = torch.randperm(n, generator=torch_stream(seed, HOLD_OUT_STREAM)).to(train.device)
    return train[perm[n_val:]], train[perm[:n_val]]


@torch.no_grad()
def mean_log_prob(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = EVAL_BATCH) -> float:
    """Mean of ``log_prob`` over the rows of ``x``, evaluated in batches."""
    return float(batched(log_prob, x, batch).double().mean())


def fit_mle(
    model: nn.Module,
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    train: torch.Tensor,
    val: torch.Tensor | None,
    config: TrainConfig,
    *,
    seed: int = 0,
    name: str = "mle",
    show_progress: bool = True,
    checkpoint: Callable[[int, int, float], bool] | None = None,
) -> dict[str, Any]:
    """Fit ``model`` by maximum likelihood; return diagnostics for ``Method.info_``.

    ``log_prob`` maps a (b, d) tensor on the model's device to (b,) log
    densities and must be differentiable in ``model``'s parameters. ``val``
    None holds out 10% of ``train`` (seeded). On return the best-validation
    parameters are loaded and the model is in eval mode.

    Returns ``steps`` (optimiser steps run), ``best_val_loglik``, ``best_step``,
    ``final_train_loss`` (mean NLL over the last evaluation window),
    ``stopped_early`` (patience), ``stopped_by_budget`` (``checkpoint`` returned True) and the
    per-evaluation ``history`` of (step, train log-lik, val log-lik).
    """
    if val is None:
        train, val = hold_out(train, seed)
    with global_torch_rng(stream_seed(seed, DROPOUT_STREAM), train.device):
        return _run(model, log_prob, train, val, config, seed, name, show_progress, checkpoint)


def _run(model, log_prob, train, val, config, seed, name, show_progress, checkpoint) -> dict[str, Any]:
    opt = Adam(
        [p for p in model.parameters() if p.requires_grad],
        config.lr,
        weight_decay=config.weight_decay,
        schedule="cosine" if config.anneal else None,
        steps=config.steps,
        clip=config.grad_clip,
    )
    best = {"val": -math.inf, "step": 0, "state": None}
    history: list[tuple[int, float, float]] = []
    since_best = [0]
    stop = {"early": False, "budget": False}

    def evaluate(step: int, window_loss: float) -> bool:
        val_ll, head_ll = _validate(model, log_prob, val, step, name)
        history.append((step, -window_loss, val_ll))
        if val_ll > best["val"]:
            best.update(val=val_ll, step=step, state=_snapshot(model))
            since_best[0] = 0
        else:
            since_best[0] += 1
        if checkpoint is not None and checkpoint(step, config.steps, head_ll):
            stop["budget"] = True
        elif config.patience is not None and since_best[0] >= config.patience:
            stop["early"] = True
        return stop["budget"] or stop["early"]

    model.train()
    batches = minibatches(train.shape[0], config.batch_size, config.steps, torch_stream(seed), train.device)
    result = train_loop(
        lambda k, idx: opt.step(-log_prob(train[idx]).mean()),
        config.steps,
        name=name,
        batches=batches,
        hook=evaluate,
        hook_every=config.eval_interval(train.shape[0]),
        show_progress=show_progress,
    )
    model.load_state_dict(best["state"])
    model.eval()
    return {
        "steps": result.steps,
        "best_val_loglik": best["val"],
        "best_step": best["step"],
        "final_train_loss": -history[-1][1],
        "stopped_early": stop["early"],
        "stopped_by_budget": stop["budget"],
        "history": history,
    }


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of ``model.state_dict()`` (parameters and buffers, detached clones)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _validate(model, log_prob, val, step, name) -> tuple[float, float]:
    """Mean validation log-likelihood in eval mode, over every row and over the first ``CHECKPOINT_ROWS``;
    raises DivergenceError when not finite."""
    model.eval()
    with torch.no_grad():
        lp = batched(log_prob, val, EVAL_BATCH).double()
    model.train()
    val_ll = float(lp.mean())
    if not math.isfinite(val_ll):
        raise DivergenceError(
            f"{name}: training diverged (validation log-likelihood {val_ll} at step {step}); try a lower learning rate"
        )
    return val_ll, float(lp[:CHECKPOINT_ROWS].mean())
