"""Seed streams: independent random number generators per purpose from one seed.

A method holds one integer ``seed``; every purpose that draws random numbers (minibatch order,
training noise, validation, likelihood estimates, sampling...) gets its own stream,
``stream_seed(seed, purpose)``, so no two purposes share random numbers, and no two seeds share a
stream. Purposes are small integers each method names once (e.g. ``NOISE = 1``). The primary
stream (``PRIMARY``) is the seed itself: ``torch_stream(seed)`` is ``torch.Generator().manual_seed(seed)``.

Row-keyed draws (``row_uniform``, ``row_rademacher``, ``row_normal``) are functions of a row's own
values and a seed: a Monte-Carlo estimate for a row (Hutchinson probes, importance samples) never
depends on which rows share its batch or where it sits in it.

Example::

    batches = torch_stream(seed)                    # PRIMARY: training minibatches
    noise = torch_stream(seed, NOISE, device)       # a second, independent stream
    rng = numpy_stream(seed, SAMPLE)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = [
    "PRIMARY",
    "stream_seed",
    "torch_stream",
    "numpy_stream",
    "seeded_init",
    "global_torch_rng",
    "row_uniform",
    "row_rademacher",
    "row_normal",
]

PRIMARY = 0  #: the purpose whose stream is seeded by the seed itself


def stream_seed(seed: int, purpose: int = PRIMARY) -> int:
    """An integer in [0, 2^63) for ``(seed, purpose)``: ``seed`` itself for ``PRIMARY``, else the first
    word of ``numpy.random.SeedSequence([seed mod 2^32, purpose])``."""
    if purpose == PRIMARY:
        return int(seed) % 2**63
    state = np.random.SeedSequence([int(seed) % 2**32, int(purpose)]).generate_state(1, dtype=np.uint64)[0]
    return int(state % 2**63)


def torch_stream(seed: int, purpose: int = PRIMARY, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``stream_seed(seed, purpose)``; no global state is touched."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(stream_seed(seed, purpose))
    return g


def numpy_stream(seed: int, purpose: int = PRIMARY) -> np.random.Generator:
    """``numpy.random.default_rng(stream_seed(seed, purpose))``."""
    return np.random.default_rng(stream_seed(seed, purpose))


def _rng_devices(device: torch.device) -> list:
    """Devices whose RNG ``fork_rng`` must save: none on CPU, the GPU in use otherwise."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextmanager
def global_torch_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block torch's global generators (CPU and ``device``'s) are seeded with ``seed``; the
    caller's state is restored after. For libraries that draw from the global generator (dropout,
    nflows' base distribution)."""
    with torch.random.fork_rng(devices=_rng_devices(torch.device(device))):
        torch.manual_seed(seed)
        yield


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build networks inside this block: the global CPU generator is seeded with ``seed`` and restored after.

    Networks are built on the CPU whatever the default device (the same initial weights on every
    device); move them with ``.to(device)``.
    """
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- row-keyed draws
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele, Lea & Flood 2014), elementwise on uint64 (wrapping arithmetic)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def row_uniform(rows: torch.Tensor, seed: int, count: int, offset: int = 0) -> np.ndarray:
    """Draws ``offset`` .. ``offset + count - 1`` of each row's own uniform sequence on [0, 1): (count, n) float64.

    A row's sequence is a hash (splitmix64) of its float32 bits, ``seed`` and the draw number, so it
    is the same in any batch, at any position, on any device.
    """
    bits = rows.detach().to("cpu", torch.float32).contiguous().numpy().view(np.uint32).astype(np.uint64)
    key = np.full(len(bits), np.uint64(int(seed) % 2**64))
    for column in bits.T:
        key = _splitmix(key ^ column)
    draw = np.arange(offset, offset + count, dtype=np.uint64)[:, None] + np.uint64(1)
    return (_splitmix(key[None, :] + draw * _GOLDEN) >> np.uint64(11)) * 2.0**-53


def row_rademacher(rows: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """K Rademacher (+-1) vectors per row of ``rows`` (n, d), row-keyed (``row_uniform``): (K, n, d) in
    ``rows``' dtype and device."""
    n, d = rows.shape
    signs = np.where(row_uniform(rows, seed, k * d) < 0.5, -1.0, 1.0).reshape(k, d, n).transpose(0, 2, 1)
    return torch.from_numpy(np.ascontiguousarray(signs)).to(rows.device, rows.dtype)


def row_normal(rows: torch.Tensor, seed: int, k: int, dim: int, offset: int = 0) -> torch.Tensor:
    """Standard normal draws ``offset`` .. ``offset + k - 1`` of dimension ``dim`` per row of ``rows`` (n, d),
    row-keyed (``row_uniform``, Box-Muller): (k, n, dim) in ``rows``' dtype and device."""
    n = rows.shape[0]
    u = row_uniform(rows, seed, 2 * k * dim, 2 * offset * dim).reshape(k, dim, 2, n)
    radius = np.sqrt(-2.0 * np.log1p(-u[:, :, 0]))  # 1 - u in (0, 1]
    z = (radius * np.cos(2.0 * np.pi * u[:, :, 1])).transpose(0, 2, 1)
    return torch.from_numpy(np.ascontiguousarray(z)).to(rows.device, rows.dtype)
