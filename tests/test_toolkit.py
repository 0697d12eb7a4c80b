"""The library layer (harness.toolkit): seed streams, the training loop, the standardiser, devices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.errors import DivergenceError
from harness.toolkit.device import resolve_device
from harness.toolkit.seeding import PRIMARY, numpy_stream, stream_seed, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training import Adam, minibatches, train


# ------------------------------------------------------------------ seed streams
def test_primary_stream_is_the_seed_itself():
    assert stream_seed(12, PRIMARY) == 12
    assert torch.equal(
        torch.rand(5, generator=torch_stream(12)), torch.rand(5, generator=torch.Generator().manual_seed(12))
    )
    np.testing.assert_array_equal(numpy_stream(12).random(5), np.random.default_rng(12).random(5))


def test_streams_are_distinct_across_purposes_and_seeds():
    """No (seed, purpose) pair shares a stream with another: in particular seed 0's second purpose is not
    seed 1's primary stream, which the old ``seed + k`` seeding made identical."""
    seeds = {stream_seed(s, p) for s in range(20) for p in range(6)}
    assert len(seeds) == 20 * 6
    assert stream_seed(0, 1) != stream_seed(1, PRIMARY)
    first = [float(torch.rand(1, generator=torch_stream(3, p))) for p in range(4)]
    assert len(set(first)) == 4
    assert stream_seed(3, 2) == stream_seed(3, 2)  # deterministic


# ------------------------------------------------------------------ the training loop
def test_loop_hooks_every_interval_and_at_the_end_with_the_window_mean():
    calls = []
    result = train(
        lambda k, _: torch.tensor(float(k)),
        10,
        name="toy",
        hook_every=4,
        hook=lambda k, window: calls.append((k, window)) or False,
        show_progress=False,
    )
    # windows: steps 1-4, 5-8, 9-10
    assert calls == [(4, 2.5), (8, 6.5), (10, 9.5)]
    assert (result.steps, float(result.loss), result.window_loss, result.stopped) == (10, 10.0, 9.5, False)


def test_loop_stops_when_the_hook_says_so_and_feeds_minibatches():
    seen = []
    result = train(
        lambda k, idx: seen.append(idx) or torch.tensor(0.0),
        100,
        name="toy",
        hook_every=10,
        batches=iter(range(1000)),
        hook=lambda k, _: k >= 30,
        show_progress=False,
    )
    assert result.stopped and result.steps == 30 and seen == list(range(30))


def test_loop_checks_divergence_every_check_every_steps():
    """A loss that turns NaN at step 3 is caught at the next check, step 5 (each check waits for the device)."""
    with pytest.raises(DivergenceError, match=r"toy: training diverged \(loss nan at step 5\)"):
        train(
            lambda k, _: torch.tensor(math.nan if k >= 3 else 1.0),
            20,
            name="toy",
            check_every=5,
            hook_every=20,
            show_progress=False,
        )


def test_minibatches_cover_every_row_once_per_epoch():
    batches = list(minibatches(10, 4, 5, torch_stream(0), "cpu"))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4]
    assert len(set(torch.cat(batches[:2]).tolist())) == 8
    assert len(set(torch.cat(batches[2:4]).tolist())) == 8  # a fresh permutation after 2 full batches


def test_adam_minimises_a_quadratic_and_the_cosine_schedule_ends_at_zero():
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = Adam([w], 0.1, schedule="cosine", steps=300)
    train(lambda k, _: opt.step((w - 1.0).square().sum()), 300, name="quadratic", show_progress=False)
    assert torch.allclose(w.detach(), torch.ones(2), atol=1e-2)
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ standardiser and devices
def test_standardiser_round_trip_log_det_and_constant_column():
    x = np.random.default_rng(0).normal(size=(500, 3)) * [2.0, 0.5, 0.0] + [1.0, -1.0, 4.0]
    scale = Standardiser(x)
    z = scale(x)
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-12)
    np.testing.assert_array_equal(z[:, 2], 0)  # a constant column is centred, not blown up
    np.testing.assert_allclose(scale.inverse(z), x, atol=1e-12)
    assert scale.log_det == pytest.approx(-np.log(x[:, :2].std(0)).sum())


def test_resolve_device_without_a_gpu():
    assert resolve_device("auto", cuda_available=lambda: False) == torch.device("cpu")
    assert resolve_device("cpu", cuda_available=lambda: True) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=lambda: True) == torch.device("cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda", cuda_available=lambda: False)
