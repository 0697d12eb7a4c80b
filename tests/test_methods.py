"""The Method contract, checked generically for every registered method (smoke profile)."""

from __future__ import annotations

import numpy as np
import pytest

import methods
from harness.variants import base_of, expand
from methods import NotFittedError, NotSupported

AVAILABLE = methods.available()
#: Registered methods plus method variants whose parameters change the procedure (each teacher of the generator).
VARIANTS = ["supervised_diffusion[teacher=score_model]", "supervised_diffusion[teacher=flow_matching]"]
CASES = AVAILABLE + [v for v in VARIANTS if base_of(v) in AVAILABLE]
N_TRAIN = 512


def create_case(case: str, **kwargs):
    """A smoke-profile instance of a method or method variant (``name[param=value,...]``)."""
    (variant,) = expand(case)
    return methods.create(variant.base, "smoke", **dict(variant.params), **kwargs)


def eight_gaussians(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = rng.integers(0, 8, n) * np.pi / 4
    centers = 4 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centers + 0.5 * rng.standard_normal((n, 2))) / 1.414


@pytest.fixture(scope="module")
def data():
    return eight_gaussians(N_TRAIN, 0), eight_gaussians(128, 1), eight_gaussians(64, 2)


@pytest.fixture(scope="module", params=CASES)
def fitted(request, data):
    train, val, _ = data
    return create_case(request.param, device="cpu", seed=0).fit(train, val)


def test_registry_lists_every_method_with_profiles():
    assert AVAILABLE, "no method is available"
    for name in methods.names():
        cls = methods.get(name)
        assert cls.name == name
        assert cls.log_prob_kind in ("exact", "bound", "estimate", None)
        assert set(cls.profiles) == {"smoke", "quick", "paper"}, name
        keys = [set(p) for p in cls.profiles.values()]
        assert all(k == keys[0] for k in keys), f"{name}: profiles define different parameter keys"


def test_samples_have_shape_and_are_finite(fitted):
    x = fitted.sample(100, seed=3)
    assert x.shape == (100, 2) and x.dtype == np.float64
    assert np.isfinite(x).all()


def test_same_seed_same_samples(fitted):
    np.testing.assert_array_equal(fitted.sample(50, seed=7), fitted.sample(50, seed=7))
    assert not np.array_equal(fitted.sample(50, seed=7), fitted.sample(50, seed=8))


def test_log_prob_shape_finite_or_not_supported(fitted, data):
    test = data[2]
    if fitted.log_prob_kind is None:
        with pytest.raises(NotSupported):
            fitted.log_prob(test)
    else:
        lp = fitted.log_prob(test)
        assert lp.shape == (len(test),)
        assert np.isfinite(lp).all()


def test_fit_records_phases(fitted):
    assert fitted.fit_phases_ and all(v >= 0 for v in fitted.fit_phases_.values())


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 3)), "columns"),
    (np.full((10, 2), np.nan), "NaN"),
    (np.zeros(10), "2-D"),
    ([["a", "b"]], "numeric"),
])
def test_bad_inputs_raise_clear_errors(fitted, bad, match):
    if fitted.log_prob_kind is None:  # no likelihood: NotSupported whatever the input
        with pytest.raises(NotSupported):
            fitted.log_prob(bad)
        return
    with pytest.raises(ValueError, match=match):
        fitted.log_prob(bad)


@pytest.mark.parametrize("name", AVAILABLE)
def test_fit_rejects_bad_training_data(name):
    model = methods.create(name, "smoke", device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="2-D"):
        model.fit(np.zeros(10))


@pytest.mark.parametrize("name", AVAILABLE)
def test_use_before_fit_raises(name):
    model = methods.create(name, "smoke", device="cpu")
    with pytest.raises(NotFittedError, match="fit"):
        model.sample(10)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_sample_count_validated(fitted, n):
    with pytest.raises(ValueError, match="positive integer"):
        fitted.sample(n)


def test_registry_rejects_duplicates():
    cls = methods.get("gaussian")
    with pytest.raises(ValueError, match="duplicate"):
        methods.register(type("Other", (cls,), {"name": "gaussian"}))


def test_unknown_override_suggests():
    from harness.errors import UserError

    with pytest.raises(UserError, match="did you mean 'ridge'"):
        methods.create("gaussian", "smoke", rigde=1.0)


@pytest.mark.parametrize("name", methods.names())
def test_profiles_satisfy_their_specs(name):
    """Every profile passes the parameter check, and every declared spec names a profile parameter."""
    cls = methods.get(name)
    for profile in cls.profiles:
        assert methods.resolve_params(name, profile) == cls.profiles[profile]
    profile_keys = set().union(*(p.keys() for p in cls.profiles.values()))
    assert set(cls.param_specs) <= profile_keys, f"{name}: specs for parameters no profile defines"
