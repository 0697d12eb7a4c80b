"""Pairwise-distance sums in bounded memory and the energy distance built on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = [
    "CHUNK_ENTRIES",
    "TORCH_THREADS",
    "check_samples",
    "check_pair",
    "torch_threads",
    "centred_float32",
    "cross_sum",
    "within_sum",
    "energy_distance",
]

CHUNK_ENTRIES = 4_000_000  #: pairwise-matrix entries held at once (16 MB in float32)
TORCH_THREADS = 1  #: torch intra-op threads of the pairwise sums (see ``torch_threads``)


def check_samples(x: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    """``x`` as a finite float64 (n, d) array with n >= ``min_rows``, or ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {arr.shape}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} rows and 1 column, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} has {bad} rows with NaN or inf")
    return arr


def check_pair(reference: np.ndarray, model: np.ndarray, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both samples checked by ``check_samples``, with the same number of columns."""
    ref = check_samples(reference, "reference", min_rows)
    mod = check_samples(model, "model", min_rows)
    if ref.shape[1] != mod.shape[1]:
        raise ValueError(f"reference has d={ref.shape[1]} but model has d={mod.shape[1]}")
    return ref, mod


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, restoring the previous count after.

    The blocks are small, so a second thread only spin-waits on a busy machine (measured in
    docs/sample-metrics.md).
    """
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if old != n:
            torch.set_num_threads(old)


def centred_float32(ref: np.ndarray, mod: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both samples (n, d), (m, d) minus their pooled mean, as float32 tensors.

    Centring keeps the |a|^2 + |b|^2 - 2 a.b expansion accurate in float32.
    """
    shift = np.concatenate([ref, mod]).mean(axis=0)
    return (torch.from_numpy((ref - shift).astype(np.float32)), torch.from_numpy((mod - shift).astype(np.float32)))


def _block_sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared distances (len(a), len(b)), clamped at 0."""
    out = torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0)
    return out.add_((a * a).sum(1)[:, None]).clamp_min_(0.0)


def cross_sum(a: torch.Tensor, b: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """sum_{i,j} fn(|a_i - b_j|^2) for a (n, d), b (m, d), in row chunks, accumulated in float64.

    ``fn`` may work in place on its (rows, m) block of squared distances.
    """
    b_sq = (b * b).sum(1)
    rows = max(1, CHUNK_ENTRIES // len(b))
    total = 0.0
    for start in range(0, len(a), rows):
        total += fn(_block_sq_dists(a[start : start + rows], b, b_sq)).sum(dtype=torch.float64).item()
    return total


def within_sum(a: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """sum_{i != j} fn(|a_i - a_j|^2) for a (n, d), computing each off-diagonal block once."""
    a_sq = (a * a).sum(1)
    rows = max(1, CHUNK_ENTRIES // len(a))
    total = 0.0
    for start in range(0, len(a), rows):
        stop = min(start + rows, len(a))
        values = fn(_block_sq_dists(a[start:stop], a[start:], a_sq[start:]))
        values.diagonal().zero_()  # the diagonal of this block is i == j
        diag_block = values[:, : stop - start].sum(dtype=torch.float64).item()
        later = values[:, stop - start :].sum(dtype=torch.float64).item()
        total += diag_block + 2.0 * later  # later columns stand for their mirror image too
    return total


def energy_distance(reference: np.ndarray, model: np.ndarray, *, seed: int = 0) -> float:
    """Energy statistic 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo 2013).

    This is the *squared* energy distance of texts that call its square root the energy distance;
    we return the statistic itself, with unbiased within-sample means over i != j (so it can be
    slightly negative when the laws agree). Deterministic: ``seed`` is accepted for the common
    metric signature only.

    reference (n, d), model (m, d) -> float. Lower is better; 0 is ideal.
    """
    ref, mod = check_pair(reference, model)
    x, y = centred_float32(ref, mod)
    n, m = len(x), len(y)
    with torch_threads(TORCH_THREADS):
        exy = cross_sum(x, y, torch.sqrt_) / (n * m)
        exx = within_sum(x, torch.sqrt_) / (n * (n - 1))
        eyy = within_sum(y, torch.sqrt_) / (m * (m - 1))
    return float(2.0 * exy - exx - eyy)
