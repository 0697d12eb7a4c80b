"""The 2-D toy sets: true densities are normalised and match the samplers; seeding is exact.

Densities are checked on a midpoint grid (exponentially accurate for these
smooth densities at spacing <= sigma / 3; exact for the checkerboard, whose
squares the grid cells tile). The sampler-vs-density check compares a 2-D
histogram of 200,000 samples with the density integrated over the same bins.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy.special import logsumexp

import datasets
from datasets.toy2d import Circles, EightGaussians, ToyDataset

TOY = ["8gaussians", "checkerboard", "rings", "circles", "moons", "swissroll", "pinwheel", "2spirals"]
WITH_DENSITY = ["8gaussians", "checkerboard", "rings", "circles", "moons", "swissroll"]
N_HIST = 200_000
DELTA = 1e-6  # allowed false-alarm probability of the histogram test

# name -> (half-width of the square box [-w, w]^2, grid cells per axis, grid cells per histogram bin).
# Every box holds the mass up to < 1e-6; spacing 2w/cells <= sigma/3 (rings: 0.025 vs 0.08).
GRIDS = {
    "8gaussians": (5.0, 250, 5),
    "checkerboard": (5.0, 250, 10),  # cell edges fall on the multiples of 2
    "rings": (4.0, 320, 8),
    "circles": (5.0, 250, 5),
    "moons": (4.5, 225, 5),
    "swissroll": (4.0, 200, 5),
}


@functools.cache
def grid_density(name: str) -> tuple[np.ndarray, float, float, int]:
    """Density at the cell midpoints (cells, cells), the box half-width, cell area, cells per bin."""
    half, cells, per_bin = GRIDS[name]
    h = 2 * half / cells
    mid = -half + h * (np.arange(cells) + 0.5)
    xx, yy = np.meshgrid(mid, mid, indexing="ij")
    dens = np.exp(datasets.get(name).log_prob(np.stack([xx.ravel(), yy.ravel()], axis=1)))
    return dens.reshape(cells, cells), half, h * h, per_bin


def histogram_tv(name: str, x: np.ndarray) -> tuple[float, float]:
    """(TV between the sample histogram and the binned density, a (1 - DELTA) bound on it if correct).

    Bound: E[TV] <= 1/2 sum_i sqrt(p_i (1 - p_i) / n) (Jensen, per bin), and TV moves by at
    most 1/n when one sample changes, so P(TV > E[TV] + t) <= exp(-2 n t^2) (McDiarmid);
    t = sqrt(log(1/DELTA) / (2n)). The outside-the-box mass counts as one more bin.
    """
    dens, half, area, per_bin = grid_density(name)
    bins = dens.shape[0] // per_bin
    p = (dens * area).reshape(bins, per_bin, bins, per_bin).sum(axis=(1, 3)).ravel()
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[[-half, half], [-half, half]])
    n = len(x)
    p_hat = counts.ravel() / n
    p = np.append(p, max(0.0, 1.0 - p.sum()))
    p_hat = np.append(p_hat, 1.0 - p_hat.sum())
    tv = 0.5 * np.abs(p_hat - p).sum()
    bound = 0.5 * np.sqrt(p * (1 - p) / n).sum() + math.sqrt(math.log(1 / DELTA) / (2 * n))
    return float(tv), float(bound)


# ----------------------------------------------------------------- true densities
@pytest.mark.parametrize("name", WITH_DENSITY)
def test_density_integrates_to_one(name):
    dens, _, area, _ = grid_density(name)
    total = dens.sum() * area
    tol = 1e-12 if name == "checkerboard" else 0.01
    assert abs(total - 1.0) < tol, f"{name}: grid integral {total}"


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_histogram_of_samples_matches_density(name):
    x = datasets.get(name).sample(N_HIST, seed=11)
    tv, bound = histogram_tv(name, x)
    assert tv < bound, f"{name}: TV {tv:.4f} >= bound {bound:.4f}"


def test_histogram_check_rejects_a_wrong_noise_level():
    """The TV bound has power: circles drawn with 10% more noise than the density assumes fail it."""

    class NoisierCircles(Circles):
        sigma = Circles.sigma * 1.1

    tv, bound = histogram_tv("circles", NoisierCircles().sample(N_HIST, seed=11))
    assert tv > bound


def test_eight_gaussians_closed_form():
    """At a centre, the density is the own component's peak plus the others' tails."""
    ds = EightGaussians()
    c, s = ds.centres, ds.std
    sq = ((c[0] - c) ** 2).sum(axis=1)
    expected = logsumexp(-sq / (2 * s * s)) - math.log(8 * 2 * math.pi * s * s)
    assert ds.log_prob(c[:1])[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["rings", "circles"])
def test_bessel_form_matches_angle_integral(name):
    """The I0 closed form equals the average over the angle of the Gaussian around the circle."""
    ds = datasets.get(name)
    x = np.array([[0.0, 0.0], [0.3, -0.2], [1.4, 0.5], [2.9, 0.4], [-3.3, 1.0], [6.0, 0.0]])
    theta = np.linspace(0.0, 2 * np.pi, 4001)[:-1]  # periodic trapezoid rule: spectrally accurate
    circle = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    parts = []
    for r in ds.radii:
        sq = ((x[:, None, :] - r * circle[None]) ** 2).sum(axis=-1)
        parts.append(logsumexp(-sq / (2 * ds.sigma**2), axis=1) - math.log(len(theta)))
    expected = logsumexp(parts, axis=0) - math.log(len(ds.radii) * 2 * math.pi * ds.sigma**2)
    np.testing.assert_allclose(ds.log_prob(x), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["moons", "swissroll"])
def test_quadrature_is_converged(name):
    """Doubling the panels and nodes changes log p by < 1e-8 where log p > -50."""
    ds = datasets.get(name)
    finer = type("Finer", (type(ds),), {"panels": 2 * ds.panels, "order": 16})()
    x = np.concatenate([ds.sample(500, seed=2), np.random.default_rng(0).uniform(-4, 4, (500, 2))])
    ref = finer.log_prob(x)
    keep = ref > -50
    np.testing.assert_allclose(ds.log_prob(x)[keep], ref[keep], rtol=0, atol=1e-8)


def test_checkerboard_support():
    ds = datasets.get("checkerboard")
    x = np.array([[0.5, 0.5], [-3.5, -3.5], [2.5, -0.5], [0.5, 2.5], [-2.5, -0.5], [4.5, 0.5]])
    lp = ds.log_prob(x)
    np.testing.assert_array_equal(lp[:3], -math.log(32))
    assert np.all(lp[3:] == -np.inf)


# ----------------------------------------------------------------- seeding and shapes
@pytest.mark.parametrize("name", TOY)
def test_seeds_reproduce_and_splits_are_independent(name):
    ds = datasets.get(name)
    a, b, c = ds.load(seed=3), ds.load(seed=3), ds.load(seed=4)
    for split in ("train", "val", "test"):
        arr = getattr(a, split)
        assert arr.dtype == np.float64 and arr.shape[1] == 2
        np.testing.assert_array_equal(arr, getattr(b, split))
        assert not np.array_equal(arr, getattr(c, split))
    assert a.sizes() == ds.sizes() == (20_000, 5_000, 5_000)
    assert not np.array_equal(a.train[:5_000], a.val) and not np.array_equal(a.val, a.test)
    rows = np.concatenate([a.train, a.val, a.test])
    assert len(np.unique(rows, axis=0)) == len(rows), "splits share points"
    s = ds.sample(1000, seed=3)
    assert s.shape == (1000, 2) and s.dtype == np.float64
    np.testing.assert_array_equal(s, ds.sample(1000, seed=3))
    assert not np.array_equal(s, ds.sample(1000, seed=4))
    assert not np.isin(s, rows).all(axis=1).any(), "sample() repeats split points"


def test_sizes_are_configurable():
    ds = datasets.get("moons")
    ds.n_train, ds.n_val, ds.n_test = 101, 7, 3
    assert ds.sizes() == (101, 7, 3) == ds.load(seed=0).sizes()
    assert datasets.get("moons").sizes() == (20_000, 5_000, 5_000)


def test_invalid_arguments_fail_clearly():
    ds = datasets.get("rings")
    with pytest.raises(ValueError, match="shape"):
        ds.log_prob(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        ds.log_prob(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="seed"):
        ds.load(seed=-1)
    with pytest.raises(ValueError, match="positive"):
        ds.sample(0, seed=0)
    with pytest.raises(NotImplementedError, match="no known density"):
        datasets.get("pinwheel").log_prob(np.zeros((2, 2)))


# ----------------------------------------------------------------- registry
def test_every_registered_toy_set_is_finite_with_correct_flags():
    toy = [n for n in datasets.names() if isinstance(datasets.get(n), ToyDataset)]
    assert sorted(toy) == sorted(TOY)
    for name in toy:
        ds = datasets.get(name)
        assert ds.synthetic and ds.dim == 2 and ds.description
        assert ds.has_density == (name in WITH_DENSITY)
        test = ds.load(seed=0).test
        assert np.isfinite(test).all()
        if ds.has_density:
            assert np.isfinite(ds.log_prob(test)).all(), f"{name}: -inf/nan on its own test points"
