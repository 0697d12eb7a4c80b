"""Seed streams: independent random number generators per purpose from one seed.

A method holds one integer ``seed``; every purpose that draws random numbers (minibatch order,
training noise, validation, likelihood estimates, sampling...) gets its own stream,
``stream_seed(seed, purpose)``, so no two purposes share random numbers, and no two seeds share a
stream. Purposes are small integers each method names once (e.g. ``NOISE = 1``). The primary
stream (``PRIMARY``) is the seed itself: ``torch_stream(seed)`` is ``torch.Generator().manual_seed(seed)``.

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

__all__ = ["PRIMARY", "stream_seed", "torch_stream", "numpy_stream", "seeded_init", "global_torch_rng"]

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
