"""Device placement without a GPU: with torch's default device set to ``meta``, a
tensor created without an explicit device lands on ``meta`` and the first
computation mixing it with real data fails loudly. Every method is asked for
``device="cpu"`` and must therefore place every tensor, module, generator and
base distribution itself (the same code then places them on ``cuda``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import methods

AVAILABLE = methods.available()


@pytest.fixture
def meta_default_device(monkeypatch):
    """Default device ``meta`` for the test, with a library-internal exception explained.

    - nflows' ``Distribution.log_prob`` starts with ``torch.as_tensor(inputs)``. On a real
      device that returns ``inputs`` unchanged (no device argument means "keep it"), but under
      a default-device override it copies them to the default device. The patch keeps
      ``inputs`` where they are; everything else nflows does is still checked.
    """
    try:
        from nflows.distributions.base import Distribution
    except ImportError:  # nflows missing: its methods are unavailable anyway
        Distribution = None
    if Distribution is not None:
        monkeypatch.setattr(
            Distribution, "log_prob", lambda self, inputs, context=None: self._log_prob(inputs, context)
        )
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def test_default_device_meta_catches_an_unplaced_tensor(meta_default_device):
    """The premise: a tensor made without a device under the fixture is on meta and unusable with data."""
    data = torch.ones(3, device="cpu")
    with pytest.raises((RuntimeError, NotImplementedError)):
        float((data + torch.ones(3)).sum())


@pytest.mark.parametrize("name", AVAILABLE)
def test_method_places_every_tensor_on_the_requested_device(name, meta_default_device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2)) @ np.array([[1.0, 0.4], [0.0, 0.8]])
    model = methods.create(name, "smoke", device="cpu", seed=0).fit(x[:256], x[256:])
    s = model.sample(32, seed=1)
    assert s.shape == (32, 2) and np.isfinite(s).all()
    if model.log_prob_kind is not None:
        assert np.isfinite(model.log_prob(x[:16])).all()
