"""GPU checks (skipped without CUDA): the score kernel reaches a fused backend and
agrees with the reference; every method fits, samples and evaluates on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import methods

pytestmark = pytest.mark.gpu


def test_score_kernel_uses_fused_cuda_backend_and_matches_reference():
    from harness.toolkit.training_free_score import Schedule, fused_backend, score, score_reference

    g = torch.Generator(device="cpu").manual_seed(0)
    for d in (2, 43):
        data = torch.randn(20_000, d, generator=g).cuda()
        z = torch.randn(4_000, d, generator=g).cuda()
        assert fused_backend("cuda", torch.float32, d) != "plain"
        fast = score(z, 0.3, data, Schedule(), data_chunk=8192)
        ref = score_reference(z.double(), 0.3, data.double(), Schedule()).float()
        torch.testing.assert_close(fast, ref, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("name", methods.available())
def test_method_runs_on_cuda(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])
    model = methods.create(name, "smoke", device="cuda", seed=0).fit(x[:900], x[900:])
    s = model.sample(256, seed=1)
    assert s.shape == (256, 2) and np.isfinite(s).all()
    np.testing.assert_array_equal(s, model.sample(256, seed=1))
    if model.log_prob_kind is not None:
        assert np.isfinite(model.log_prob(x[:100])).all()
