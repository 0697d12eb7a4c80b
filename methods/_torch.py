"""Torch plumbing shared by the neural methods: devices, seeding, scaling,
MLPs, batched evaluation and a divergence-aware training step."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from methods.base import DivergenceError


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> cuda when available else cpu; "cuda" without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available")
    return dev


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded torch.Generator on ``device`` (no global RNG state is touched)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed) % (2**63))
    return g


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build networks inside this block: the CPU RNG is seeded with ``seed`` and the
    caller's global RNG state is restored afterwards. Networks are built on the CPU
    whatever the default device (the same initial weights on every device); move
    them with ``.to(device)``."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        yield


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Standardizer:
    """Affine map x -> (x - mean) / std fitted on training data.

    ``log_det`` is log|det d(x_std)/dx| = -sum(log std), to add to a density
    computed in standardised space.
    """

    def __init__(self, x: np.ndarray, min_std: float = 1e-8) -> None:
        self.mean = x.mean(axis=0)
        self.std = np.maximum(x.std(axis=0), min_std)
        self.log_det = float(-np.log(self.std).sum())

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y * self.std + self.mean


def mlp(d_in: int, d_out: int, hidden: int, layers: int = 2, act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Plain MLP d_in -> hidden x layers -> d_out."""
    mods: list[nn.Module] = []
    width = d_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), act()]
        width = hidden
    mods.append(nn.Linear(width, d_out))
    return nn.Sequential(*mods)


def to_tensor(x: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in row batches and concatenate (bounded memory)."""
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def check_loss(loss: torch.Tensor, step: int, method: str) -> float:
    """Return the loss as float; raise DivergenceError on NaN or inf."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise DivergenceError(f"{method}: training diverged (loss {value} at step {step}); try a lower learning rate")
    return value


def minibatches(n: int, batch: int, steps: int, g: torch.Generator, device: torch.device) -> Iterable[torch.Tensor]:
    """Yield ``steps`` index tensors of size min(batch, n), sampled without replacement per epoch."""
    batch = min(batch, n)
    perm = torch.randperm(n, generator=g, device="cpu").to(device)
    pos = 0
    for _ in range(steps):
        if pos + batch > n:
            perm = torch.randperm(n, generator=g, device="cpu").to(device)
            pos = 0
        yield perm[pos : pos + batch]
        pos += batch


#: Set to "1" (``run --no-progress`` does) to silence every method's progress bar.
NO_PROGRESS_ENV = "DENSITYBENCH_NO_PROGRESS"


def progress(iterable: Iterable, total: int | None, desc: str, enabled: bool = True):
    """A tqdm bar on stderr that disappears when done; disabled when not wanted."""
    import os

    from tqdm.auto import tqdm

    enabled = enabled and os.environ.get(NO_PROGRESS_ENV) != "1"
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not enabled, mininterval=1.0)
