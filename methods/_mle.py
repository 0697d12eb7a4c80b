"""Minibatch maximum-likelihood training shared by the likelihood-based methods.

``fit_mle(model, log_prob, train, val, config, seed=..., name=...)`` runs Adam
(optionally cosine-annealed to zero over ``config.steps``) on the mean negative
log-likelihood, clips the gradient norm, evaluates the validation
log-likelihood every ``config.eval_every`` steps, keeps a deep copy of the
best-validation ``state_dict`` and restores it at the end, and stops early after
``config.patience`` evaluations without improvement. A NaN/inf loss or gradient
raises :class:`methods.base.DivergenceError`. Each evaluation is also a training
checkpoint: ``checkpoint(step, planned, val_loglik)`` (``Method.checkpoint``)
gets the mean log-likelihood of the first ``CHECKPOINT_ROWS`` validation rows
and training stops when it returns True (budget spent).

Randomness is local: minibatches come from a seeded ``torch.Generator``; dropout
and anything else that draws from torch's global generator runs inside
``torch.random.fork_rng`` seeded from ``seed``, so the caller's global RNG state
is left untouched and a fit is reproducible.

Example::

    cfg = TrainConfig.from_params(method.params)
    info = fit_mle(flow, flow.log_prob, x_train, x_val, cfg, seed=0, name="maf")
    info["best_val_loglik"], info["best_step"], info["steps"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import torch
from torch import nn

from methods._checkpoint import CHECKPOINT_ROWS
from methods._torch import batched, check_loss, generator, minibatches, progress
from methods.base import DivergenceError

VAL_FRACTION = 0.1  # share of train held out when no validation set is given
EVAL_BATCH = 8192  # rows per log_prob call during validation


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
    def from_params(cls, params: Mapping[str, Any]) -> "TrainConfig":
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
    """Split ``train`` (n, d) into (train, val) with ``fraction`` of the rows (at least 1) held out."""
    n = train.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 training rows to hold out a validation set, got {n}")
    n_val = min(n - 1, max(1, round(fraction * n)))
    perm = torch.randperm(n, generator=generator(seed)).to(train.device)
    return train[perm[n_val:]], train[perm[:n_val]]


@torch.no_grad()
def mean_log_prob(log_prob: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = EVAL_BATCH) -> float:
    """Mean of ``log_prob`` over the rows of ``x``, evaluated in batches."""
    return float(batched(log_prob, x, batch).double().mean())


def rng_devices(device: torch.device) -> list:
    """Devices whose RNG ``fork_rng`` must save: none on CPU, the GPU in use otherwise."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


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
    device = train.device
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(seed)
        return _run(model, log_prob, train, val, config, seed, name, show_progress, checkpoint)


def _run(model, log_prob, train, val, config, seed, name, show_progress, checkpoint) -> dict[str, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one fused kernel per update instead of one per tensor (the default only on GPU)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps) if config.anneal else None
    interval = config.eval_interval(train.shape[0])
    batches = minibatches(train.shape[0], config.batch_size, config.steps, generator(seed), train.device)

    best = {"val": -math.inf, "step": 0, "state": None}
    history: list[tuple[int, float, float]] = []
    window_sum, window_n, evals_since_best, step, stopped_early, over_budget = 0.0, 0, 0, 0, False, False
    bar = progress(batches, total=config.steps, desc=f"{name} training", enabled=show_progress)
    model.train()
    for step, idx in enumerate(bar, start=1):
        window_sum += _train_step(params, log_prob, train[idx], optimizer, config.grad_clip, step, name)
        window_n += 1
        if scheduler is not None:
            scheduler.step()
        if step % interval and step != config.steps:
            continue
        train_ll = -window_sum / window_n
        val_ll, head_ll = _validate(model, log_prob, val, step, name)
        history.append((step, train_ll, val_ll))
        window_sum, window_n = 0.0, 0
        if val_ll > best["val"]:
            best.update(val=val_ll, step=step, state=_snapshot(model))
            evals_since_best = 0
        else:
            evals_since_best += 1
        bar.set_postfix(train_ll=f"{train_ll:.3f}", val_ll=f"{val_ll:.3f}", best=f"{best['val']:.3f}", refresh=False)
        if checkpoint is not None and checkpoint(step, config.steps, head_ll):
            over_budget = True
            break
        if config.patience is not None and evals_since_best >= config.patience:
            stopped_early = True
            break
    bar.close()
    model.load_state_dict(best["state"])
    model.eval()
    return {
        "steps": step,
        "best_val_loglik": best["val"],
        "best_step": best["step"],
        "final_train_loss": -history[-1][1],
        "stopped_early": stopped_early,
        "stopped_by_budget": over_budget,
        "history": history,
    }


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of ``model.state_dict()`` (parameters and buffers, detached clones)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_step(params, log_prob, batch, optimizer, grad_clip, step, name) -> float:
    """One Adam step on the mean NLL of ``batch``; returns the loss; raises on NaN/inf."""
    optimizer.zero_grad(set_to_none=True)
    loss = -log_prob(batch).mean()
    value = check_loss(loss, step, name)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf, foreach=True)
    if not torch.isfinite(norm):
        raise DivergenceError(f"{name}: training diverged (gradient norm {float(norm)} at step {step}); try a lower learning rate")
    optimizer.step()
    return value


def _validate(model, log_prob, val, step, name) -> tuple[float, float]:
    """Mean validation log-likelihood in eval mode, over every row and over the first ``CHECKPOINT_ROWS``;
    raises DivergenceError when not finite."""
    model.eval()
    with torch.no_grad():
        lp = batched(log_prob, val, EVAL_BATCH).double()
    model.train()
    val_ll = float(lp.mean())
    if not math.isfinite(val_ll):
        raise DivergenceError(f"{name}: training diverged (validation log-likelihood {val_ll} at step {step}); try a lower learning rate")
    return val_ll, float(lp[:CHECKPOINT_ROWS].mean())
