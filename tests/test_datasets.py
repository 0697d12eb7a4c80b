"""The Dataset contract, checked for every registered dataset (generated from the registry).

Every dataset: splits that share no row, shapes matching ``dim`` (and ``sizes()`` when declared),
floating dtype, finite values, the same splits for the same seed. A known density integrates to
one; a synthetic set's samples are reproducible and consistent with its density. Real sets read
``../shared/data`` (the ``shared_data_root`` fixture); a set whose files that folder does not hold
(the large MAF sets) must say how to get them instead. A new dataset file is checked without a new test.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import datasets
from conftest import SHARED_DATA
from datasets import Dataset, DataUnavailable, Splits
from integrals import density, grid_integral, importance_integral, p_log_p, refined_grid_integral


def in_shared_data(name: str) -> bool:
    """False for a real set whose files the shared data folder, when there is one, does not hold."""
    dataset = datasets.get(name)
    if dataset.synthetic or not (SHARED_DATA / "README.md").exists():
        return True
    return dataset.available(SHARED_DATA)[0]


NAMES = [n for n in datasets.names() if in_shared_data(n)]
ABSENT = [n for n in datasets.names() if not in_shared_data(n)]
SYNTHETIC = [n for n in NAMES if datasets.get(n).synthetic]
WITH_DENSITY = [n for n in NAMES if datasets.get(n).has_density]
N_SAMPLE = 20_000
#: Monte-Carlo draws of the importance-sampling integral (d > 2).
N_IMPORTANCE = 200_000


@functools.cache
def load(name: str, root: Path | None) -> tuple[Dataset, Splits]:
    dataset = datasets.get(name)
    return dataset, dataset.load(seed=0, root=root)


def data_root(request: pytest.FixtureRequest, name: str) -> Path | None:
    """None for synthetic sets; else ``../shared/data``, skipping a set whose files are not there."""
    if datasets.get(name).synthetic:
        return None
    root = request.getfixturevalue("shared_data_root")
    ok, reason = datasets.get(name).available(root)
    if not ok:
        pytest.skip(f"{name}: not in the shared data: {reason}")
    return root


@pytest.fixture(scope="module", params=NAMES)
def loaded(request) -> tuple[Dataset, Splits, Path | None]:
    root = data_root(request, request.param)
    return (*load(request.param, root), root)


def rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(x, dtype=np.float64)}


def density_box(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training rows' bounding box widened by a quarter of its extent on every side."""
    low, high = train.min(axis=0), train.max(axis=0)
    margin = 0.25 * (high - low)
    return low - margin, high + margin


@functools.cache
def grid_moments(name: str, root: Path | None) -> list[tuple[float, float]]:
    """[(integral of p, last change), (integral of p log p, last change)] on the refined grid (d <= 2)
    over ``density_box`` of the training rows."""
    dataset, splits = load(name, root)
    box = density_box(splits.train)
    return refined_grid_integral(dataset.log_prob, *box, integrands=(density, p_log_p))


# ----------------------------------------------------------------- splits
def test_splits_have_shapes_dtype_and_finite_values(loaded):
    dataset, splits, _ = loaded
    for part, x in zip(("train", "val", "test"), (splits.train, splits.val, splits.test), strict=True):
        assert x.ndim == 2 and len(x) > 0, f"{part}: shape {x.shape}"
        assert x.shape[1] == dataset.dim == splits.dim, f"{part}: {x.shape[1]} columns, dim {dataset.dim}"
        assert np.issubdtype(x.dtype, np.floating), f"{part}: dtype {x.dtype}"
        assert np.isfinite(x).all(), f"{part}: non-finite values"
    if dataset.sizes() is not None:
        assert splits.sizes() == dataset.sizes()


def test_splits_share_no_row(loaded):
    _, splits, _ = loaded
    train, val, test = rows(splits.train), rows(splits.val), rows(splits.test)
    assert not train & val and not train & test and not val & test


def test_same_seed_same_splits(loaded):
    dataset, splits, root = loaded
    again = datasets.get(dataset.name).load(seed=0, root=root)
    for a, b in zip((splits.train, splits.val, splits.test), (again.train, again.val, again.test), strict=True):
        np.testing.assert_array_equal(a, b)


def test_log_prob_and_sample_only_when_declared(loaded):
    """Without a known density ``log_prob`` refuses; a real (not synthetic) set cannot be sampled."""
    dataset, splits, _ = loaded
    if not dataset.has_density:
        with pytest.raises(NotImplementedError):
            dataset.log_prob(splits.test[:5])
    if not dataset.synthetic:
        with pytest.raises(NotImplementedError):
            dataset.sample(5, seed=0)


@pytest.mark.parametrize("name", ABSENT)
def test_set_absent_from_the_shared_data_says_how_to_get_it(shared_data_root, name):
    dataset = datasets.get(name)
    ok, reason = dataset.available(shared_data_root)
    assert not ok and reason
    with pytest.raises(DataUnavailable) as raised:
        dataset.load(seed=0, root=shared_data_root)
    assert str(raised.value) == reason


# ----------------------------------------------------------------- known densities
@pytest.mark.parametrize("name", WITH_DENSITY)
def test_known_density_integrates_to_one(request, name):
    """d <= 2: midpoint grid on the training rows' box widened by a quarter of its extent on each side,
    halving the spacing (from 1/200 of the box) until two grids agree within 0.005 (so the finer
    one's error is below that even for a density with jumps); within 1% of one. d > 2: importance
    sampling with a Gaussian proposal twice as wide as the training rows, within 5 standard errors."""
    dataset, splits = load(name, data_root(request, name))
    if dataset.dim <= 2:
        (integral, change), _ = grid_moments(name, data_root(request, name))
        assert change < 5e-3, f"grid did not converge: last change {change:.3g}"
        assert abs(integral - 1.0) < 0.01, f"{name}: the density integrates to {integral:.4f}"
    else:
        integral, se = importance_integral(dataset.log_prob, splits.train, N_IMPORTANCE, seed=0)
        assert abs(integral - 1.0) < 5 * se, f"{name}: the density integrates to {integral:.4f} +- {se:.2g}"


@pytest.mark.parametrize("name", SYNTHETIC)
def test_samples_are_seeded_and_match_the_density(name):
    """Samples (n, dim) float, finite, the same for the same seed and new for another. With a known
    density: every sample has a finite log density, and their mean log density estimates
    E_p[log p] = integral of p log p (on the grid, normalised by the grid's integral of p, d <= 2)
    within 5 standard errors plus the grid's last change: a sampler that does not draw from p misses it."""
    dataset = datasets.get(name)
    x = dataset.sample(N_SAMPLE, seed=3)
    assert x.shape == (N_SAMPLE, dataset.dim) and np.issubdtype(x.dtype, np.floating)
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, dataset.sample(N_SAMPLE, seed=3))
    assert not np.array_equal(x, dataset.sample(N_SAMPLE, seed=4))
    if not dataset.has_density:
        return
    log_p = dataset.log_prob(x)
    assert log_p.shape == (N_SAMPLE,) and np.isfinite(log_p).all(), "samples outside the density's support"
    if dataset.dim > 2:
        return  # no grid: the normalisation test covers the density, the finite check the support
    (mass, mass_change), (neg_entropy, change) = grid_moments(name, None)
    expected = neg_entropy / mass
    se = log_p.std(ddof=1) / np.sqrt(N_SAMPLE)
    tolerance = 5 * se + change + abs(expected) * mass_change
    assert abs(log_p.mean() - expected) < tolerance, (
        f"{name}: mean log p of samples {log_p.mean():.4f}, E_p[log p] {expected:.4f} (tolerance {tolerance:.3g})"
    )


# ----------------------------------------------------------------- the integrators themselves
def gaussian_log_prob(scale: float):
    def log_prob(x: np.ndarray) -> np.ndarray:
        d = x.shape[1]
        return -0.5 * (x**2).sum(axis=1) / scale**2 - d * np.log(scale) - 0.5 * d * np.log(2 * np.pi)

    return log_prob


@pytest.mark.parametrize("d", [1, 2])
def test_grid_integral_of_a_gaussian(d):
    """N(0, 0.5^2 I) on [-4, 4]^d (8 sds): 1 and -entropy = -d/2 log(2 pi e 0.25), edge ~ 0; twice the
    density integrates to 2 (the integral can fail)."""
    log_prob, box = gaussian_log_prob(0.5), np.full(d, 4.0)
    integral = grid_integral(log_prob, -box, box, 80)
    assert abs(integral.value - 1.0) < 1e-9 and integral.spread < 1e-9 and integral.edge < 1e-9
    entropy = 0.5 * d * np.log(2 * np.pi * np.e * 0.25)
    assert abs(grid_integral(log_prob, -box, box, 80, integrand=p_log_p).value + entropy) < 1e-8
    doubled = grid_integral(lambda x: log_prob(x) + np.log(2.0), -box, box, 80)
    assert abs(doubled.value - 2.0) < 1e-9


def test_refined_grid_integral_of_a_square_with_jumps():
    """The uniform density on [0, 1]^2 over a box whose grid lines miss its edges converges to 1."""

    def log_prob(x: np.ndarray) -> np.ndarray:
        inside = ((x >= 0) & (x <= 1)).all(axis=1)
        return np.where(inside, 0.0, -np.inf)

    [(integral, change)] = refined_grid_integral(log_prob, np.full(2, -0.3333), np.full(2, 1.4142))
    assert change < 5e-3 and abs(integral - 1.0) < 5e-3


def test_importance_integral_of_a_five_dimensional_gaussian():
    """N(0, I_5): 1 within 5 standard errors; twice the density is 2, far outside them."""
    rows = np.random.default_rng(1).standard_normal((2_000, 5))
    value, se = importance_integral(gaussian_log_prob(1.0), rows, 50_000, seed=2)
    assert abs(value - 1.0) < 5 * se and se < 0.02
    doubled, se = importance_integral(lambda x: gaussian_log_prob(1.0)(x) + np.log(2.0), rows, 50_000, seed=2)
    assert abs(doubled - 1.0) > 5 * se
