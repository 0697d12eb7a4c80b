"""Normalizing-flow baselines (methods/flows.py) and the shared MLE loop (methods/_mle.py).

The generic contract (shapes, validation, seeding) lives in tests/test_methods.py;
here: invertibility, normalisation, fit quality against a Gaussian, divergence,
best-validation checkpointing and early stopping.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

import datasets
import methods
from harness.toolkit.compat import nflows_warnings_silenced
from harness.toolkit.mle import TrainConfig, fit_mle, hold_out
from methods.base import DivergenceError

FLOWS = ["maf", "realnvp", "nsf_ar", "nsf_c"]

# A short fit (a few hundred steps) that already separates every flow from a Gaussian.
SHORT_FIT = dict(steps=200, batch_size=256, eval_every=50, lr=5e-3)
SHORT_ARCH = {
    "maf": dict(n_layers=4, hidden=32, batch_norm=True),
    "realnvp": dict(n_layers=4, hidden=32, batch_norm=True),
}


def eight_gaussians(n: int, seed: int) -> np.ndarray:
    """FFJORD's 8gaussians: N(4 c_k, 0.5^2 I) / 1.414 on the 8 compass points (registry's when present)."""
    if "8gaussians" in datasets.names():
        return datasets.get("8gaussians").sample(n, seed)
    rng = np.random.default_rng(seed)
    d = 1.0 / np.sqrt(2.0)
    centers = 4.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (d, d), (d, -d), (-d, d), (-d, -d)])
    return (centers[rng.integers(0, 8, n)] + 0.5 * rng.normal(size=(n, 2))) / 1.414


def gaussian_mle_loglik(train: np.ndarray, test: np.ndarray) -> float:
    """Mean test log-likelihood of the full-covariance Gaussian fitted by maximum likelihood."""
    return float(multivariate_normal(train.mean(0), np.cov(train.T, bias=True)).logpdf(test).mean())


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These models are tiny: intra-op threads only add barriers (and stall badly on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy() -> dict[str, np.ndarray]:
    return {"train": eight_gaussians(4000, 1), "val": eight_gaussians(1000, 2), "test": eight_gaussians(2000, 3)}


@pytest.fixture(scope="module")
def short_fits(toy) -> dict[str, methods.Method]:
    """Each flow fitted once (smoke architecture, 200 steps) on 4,000 8gaussians points."""
    fits = {}
    for name in FLOWS:
        m = methods.create(name, "smoke", seed=0, **SHORT_FIT, **SHORT_ARCH.get(name, {}))
        fits[name] = m.fit(toy["train"], toy["val"])
    return fits


# ------------------------------------------------------------------ flows
@pytest.mark.parametrize("name", FLOWS)
def test_transform_inverse_round_trip(short_fits, name):
    flow = copy.deepcopy(short_fits[name].flow_).double().eval()
    x = 2.0 * torch.randn(1000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # reaches the tails
    with torch.no_grad(), nflows_warnings_silenced():
        z, logdet = flow._transform(x)
        x_back, logdet_inv = flow._transform.inverse(z)
    assert (z - x).abs().max() > 0.1  # a fitted flow is not the identity
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(logdet + logdet_inv, torch.zeros_like(logdet), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", FLOWS)
def test_density_integrates_to_one(short_fits, name):
    xs = np.linspace(-8.0, 8.0, 401)
    grid = np.stack(np.meshgrid(xs, xs), axis=-1).reshape(-1, 2)
    integral = np.exp(short_fits[name].log_prob(grid)).sum() * (xs[1] - xs[0]) ** 2
    assert integral == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("name", FLOWS)
def test_short_fit_beats_gaussian(short_fits, toy, name):
    flow_ll = short_fits[name].log_prob(toy["test"]).mean()
    assert flow_ll > gaussian_mle_loglik(toy["train"], toy["test"]) + 0.5


@pytest.mark.slow
def test_quick_profile_beats_gaussian_on_8gaussians():
    ds = datasets.get("8gaussians")
    splits = ds.load(seed=0)
    reference = gaussian_mle_loglik(splits.train, splits.test)
    for name in FLOWS:
        m = methods.create(name, "quick", seed=0).fit(splits.train, splits.val)
        assert m.log_prob(splits.test).mean() > reference + 1.0, name


@pytest.mark.parametrize("name", FLOWS)
def test_best_validation_state_is_restored(short_fits, toy, name):
    m = short_fits[name]
    info = m.info_
    assert m.log_prob(toy["val"]).mean() == pytest.approx(info["best_val_loglik"], abs=1e-5)
    vals = [v for _, _, v in info["history"]]
    assert info["best_val_loglik"] == pytest.approx(max(vals), abs=1e-9)
    assert info["best_step"] == info["history"][int(np.argmax(vals))][0]
    assert info["steps"] == SHORT_FIT["steps"] and math.isfinite(info["final_train_loss"])
    assert set(m.fit_phases_) == {"training"}


@pytest.mark.parametrize("name", ["realnvp", "nsf_c"])
def test_coupling_layers_transform_every_dimension_in_2d(short_fits, name):
    steps = [t for t in short_fits[name].flow_._transform._transforms if hasattr(t, "transform_features")]
    transformed = set().union(*(t.transform_features.tolist() for t in steps))
    assert transformed == {0, 1}


@pytest.mark.parametrize("name", FLOWS)
def test_absurd_learning_rate_raises_divergence(name):
    x = np.random.default_rng(0).normal(size=(256, 2))
    with pytest.raises(
        DivergenceError, match=rf"{name}: training diverged \(loss \w+ at step \d+\); try a lower learning rate"
    ):
        methods.create(name, "smoke", lr=1e6).fit(x)


def test_sampling_is_seeded_and_leaves_global_rng_alone(short_fits):
    m = short_fits["nsf_ar"]
    state = torch.get_rng_state()
    a, b, c = m.sample(300, seed=5), m.sample(300, seed=5), m.sample(300, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_is_reproducible_and_leaves_global_rng_alone(toy):
    state = torch.get_rng_state()
    fits = [methods.create("nsf_c", "smoke", seed=3, dropout=0.2).fit(toy["train"][:512]) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(fits[0].log_prob(toy["test"][:50]), fits[1].log_prob(toy["test"][:50]))


def test_one_dimensional_data_is_rejected():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        methods.create("maf", "smoke").fit(np.random.default_rng(0).normal(size=(64, 1)))


@pytest.mark.parametrize("name", FLOWS)
def test_profiles_share_keys_and_valid_training_settings(name):
    cls = methods.get(name)
    keys = [set(p) for p in cls.profiles.values()]
    assert all(k == keys[0] for k in keys)
    for params in cls.profiles.values():
        TrainConfig.from_params(params)  # raises on an invalid setting


# ------------------------------------------------------------------ the MLE loop
class _ShiftedGaussian(nn.Module):
    """N(mu, I) in 1-D with a learnable mean, started at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(1))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x - self.mu) ** 2).sum(1) - 0.5 * math.log(2 * math.pi)


def test_mle_restores_best_validation_parameters_and_stops_early():
    # Train mean 4, validation mean 1: training walks mu from 0 to 4, so the
    # validation likelihood peaks when mu passes 1 and falls afterwards.
    train = torch.full((64, 1), 4.0)
    val = torch.full((16, 1), 1.0)
    model = _ShiftedGaussian()
    config = TrainConfig(batch_size=64, lr=0.05, steps=400, eval_every=1, patience=10, anneal=False)
    info = fit_mle(model, model.log_prob, train, val, config, seed=0, name="toy", show_progress=False)
    assert info["stopped_early"] and info["steps"] == info["best_step"] + 10
    with torch.no_grad():
        assert float(model.mu) == pytest.approx(1.0, abs=0.06)  # the best state, not the last one
        assert info["best_val_loglik"] == pytest.approx(float(model.log_prob(val).mean()), abs=1e-6)
    assert info["history"][-1][2] < info["best_val_loglik"]
    assert not model.training


def test_mle_holds_out_a_tenth_of_train_without_validation():
    train = torch.arange(100.0).reshape(-1, 1)
    fit, val = hold_out(train, seed=0)
    assert (len(fit), len(val)) == (90, 10)
    assert sorted(torch.cat([fit, val]).flatten().tolist()) == train.flatten().tolist()


def test_mle_raises_on_nan_loss():
    model = _ShiftedGaussian()
    config = TrainConfig(batch_size=4, lr=1e-3, steps=5)
    with pytest.raises(DivergenceError, match="toy: training diverged"):
        fit_mle(
            model,
            lambda x: model.log_prob(x) * float("nan"),
            torch.zeros(8, 1),
            None,
            config,
            name="toy",
            show_progress=False,
        )


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(lr=-1.0), "lr"),
        (dict(eval_every="often"), "eval_every"),
        (dict(patience=0), "patience"),
        (dict(grad_clip=0), "grad_clip"),
    ],
)
def test_train_config_validates(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**dict(batch_size=8, lr=1e-3, steps=10), **bad})
