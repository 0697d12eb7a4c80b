"""Devices: which one to use, tensors placed on it, batched evaluation, threads and progress bars."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = [
    "NO_PROGRESS_ENV",
    "resolve_device",
    "synchronize",
    "to_tensor",
    "in_dtype",
    "batched",
    "single_cpu_thread",
    "progress",
]

#: Set to "1" (``run --no-progress`` does) to silence every progress bar.
NO_PROGRESS_ENV = "DENSITYBENCH_NO_PROGRESS"


def resolve_device(requested: str = "auto", *, cuda_available: Callable[[], bool] | None = None) -> torch.device:
    """The device for ``requested`` ("auto", "cpu", "cuda", "cuda:1", ...).

    "auto" is "cuda" when a GPU is available, else "cpu"; a CUDA device without a GPU is a
    RuntimeError. ``cuda_available`` answers whether a GPU is there (default
    ``torch.cuda.is_available``, asked in this process); the harness parent passes a probe that
    creates no CUDA context (``harness.gpu``).
    """
    available = cuda_available or torch.cuda.is_available
    if requested == "auto":
        return torch.device("cuda" if available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not available():
        raise RuntimeError(f"device '{requested}' requested but no CUDA GPU is available")
    return dev


def in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` itself when its floating parameters are in ``dtype`` (or it has none), else a copy in ``dtype``."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    if not params or params[0].dtype == dtype:
        return module
    import copy

    return copy.deepcopy(module).to(dtype)


def synchronize(device: torch.device | str) -> None:
    """Wait for the kernels queued on ``device`` (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def to_tensor(x: np.ndarray, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Array (n, d) -> tensor (n, d) of ``dtype`` on ``device``."""
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """``fn`` applied to row batches of ``x`` (n, ...) and concatenated (bounded memory)."""
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


@contextmanager
def single_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run small-batch training on one CPU thread, restoring the caller's setting after; no-op off the CPU.

    Small kernels gain nothing from intra-op parallelism, and OpenMP's spinning barriers made a
    quick fit 10x slower (273 s against 20 s) when another process shared the two cores.
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


def progress(iterable: Iterable | None, total: int | None, desc: str, enabled: bool = True):
    """A tqdm bar on stderr that disappears when done; off when not ``enabled`` or ``$NO_PROGRESS_ENV`` is "1"."""
    from tqdm.auto import tqdm

    enabled = enabled and os.environ.get(NO_PROGRESS_ENV) != "1"
    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not enabled, mininterval=1.0)
