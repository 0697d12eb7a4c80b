"""Memorisation and outlying-sample metrics (harness.memorisation) against cases with known answers.

Tolerances come from the statistics of the fresh-data case: a sample median's quantile level has
sd 0.5 / sqrt(n); a fraction p of m points has sd sqrt(p (1 - p) / m); C_T of a model independent
of the training rows is a weighted mean of independent N(0, 1) cell z-scores, sd sqrt(sum w^2) / sum w.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.memorisation import (
    CLOSE_QUANTILE,
    OUTLIER_SDS,
    Standardiser,
    data_copying_ct,
    mann_whitney_z,
    memorisation_metrics,
    nearest_distances,
    outlying,
)

N = 3000


def _mixture(n: int, rng: np.random.Generator, d: int = 2) -> np.ndarray:
    """A 4-component Gaussian mixture in d dimensions (sd 0.3 around corners of a square)."""
    centres = np.zeros((4, d))
    centres[:, :2] = [[2, 2], [-2, 2], [2, -2], [-2, -2]]
    return centres[rng.integers(0, 4, n)] + 0.3 * rng.normal(size=(n, d))


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(12)
    return _mixture(N, rng), _mixture(N, rng), _mixture(N, rng)  # train, test, fresh samples


def test_nearest_distances_agree_between_kdtree_and_matrix_products():
    rng = np.random.default_rng(0)
    ref, q = rng.normal(size=(700, 20)), rng.normal(size=(300, 20))  # d = 20: the matrix-product path
    brute = np.sqrt(((q[:, None, :] - ref[None, :, :]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_allclose(nearest_distances(q, ref), brute, rtol=1e-4)
    np.testing.assert_allclose(
        nearest_distances(q[:, :3], ref[:, :3]),  # KD-tree path
        np.sqrt(((q[:, None, :3] - ref[None, :, :3]) ** 2).sum(-1)).min(axis=1),
        rtol=1e-12,
    )


def test_mann_whitney_z_matches_scipy():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=60), rng.normal(0.3, 1, size=80)
    u = mannwhitneyu(x, y, alternative="two-sided", use_continuity=False, method="asymptotic").statistic
    assert mann_whitney_z(x, y) == pytest.approx((u - 60 * 80 / 2) / math.sqrt(60 * 80 * 141 / 12), rel=1e-12)


def test_fresh_samples_look_like_test_data(splits):
    train, test, fresh = splits
    m = memorisation_metrics(train, test, fresh, seed=0)
    scale = Standardiser(train)
    d_test = np.sort(nearest_distances(scale(test), scale(train)))
    band = 4 * 0.5 / math.sqrt(N)  # 4 sd of the median's quantile level
    lo, hi = np.quantile(d_test, [0.5 - band, 0.5 + band])
    ratio_tol = math.sqrt(2) * (hi - lo) / (2 * np.median(d_test))  # two independent medians
    assert abs(m["nn_distance_ratio"] - 1) < ratio_tol
    frac_sd = math.sqrt(CLOSE_QUANTILE * (1 - CLOSE_QUANTILE) * (1 / N + 1 / N))
    assert abs(m["nn_close_fraction"] - CLOSE_QUANTILE) < 4 * frac_sd
    assert abs(m["data_copying_ct"]) < 4 / math.sqrt(m["data_copying_cells"]) * 1.5  # unequal cell masses: <= 1.5x
    assert m["outlier_fraction"] == 0.0


def test_copied_training_rows_are_caught(splits):
    train, test, _ = splits
    rng = np.random.default_rng(3)
    copies = train[rng.choice(N, N, replace=True)]
    m = memorisation_metrics(train, test, copies, seed=0)
    assert m["nn_distance_ratio"] == 0.0 and m["nn_close_fraction"] == 1.0
    # every sample distance is 0 < every test distance: each cell's z is -sqrt(3 m n / (m + n + 1)), >= 20 rows each
    assert m["data_copying_ct"] < -math.sqrt(3 * 20 * 20 / 41)


def test_ct_is_negative_for_copying_in_one_region_only(splits):
    """Copying in one mixture component only still pulls C_T down (a local test, Meehan et al. 2020)."""
    train, test, fresh = splits
    scale = Standardiser(train)
    tr, te = scale(train), scale(test)
    corner = tr[(tr[:, 0] > 0) & (tr[:, 1] > 0)]
    mixed = np.concatenate([scale(fresh)[~((scale(fresh)[:, 0] > 0) & (scale(fresh)[:, 1] > 0))], corner])
    ct, cells = data_copying_ct(tr, te, mixed, seed=0)
    assert cells >= 4 and ct < -3


def test_outliers_are_counted_exactly():
    rng = np.random.default_rng(5)
    train = rng.normal(size=(2000, 3))
    samples = rng.normal(size=(1000, 3))
    scale = Standardiser(train)
    clean = outlying(scale, samples)
    assert clean["outlier_fraction"] == 0.0 and clean["max_abs_z"] < OUTLIER_SDS
    planted = samples.copy()
    rows = [3, 70, 500, 999]
    planted[rows[0], 0] = scale.mean[0] + 10.5 * scale.std[0]
    planted[rows[1], 2] = scale.mean[2] - 50 * scale.std[2]
    planted[rows[2], :] = scale.mean + 5e8 * scale.std
    planted[rows[3], 1] = scale.mean[1] + 9.9 * scale.std[1]  # under the limit: not an outlier
    out = outlying(scale, planted)
    assert out["outlier_fraction"] == 3 / 1000
    assert out["max_abs_z"] == pytest.approx(5e8, rel=1e-9)


def _row(method: str, ratio: float, outliers: float, info: dict | None = None) -> dict:
    return {
        "cell_key": f"{method}-moons-0",
        "method": method,
        "dataset": "moons",
        "seed": 0,
        "profile": "smoke",
        "params": {},
        "device": "cpu",
        "status": "ok",
        "error": None,
        "code_version": "t",
        "config_hash": "h",
        "metrics": {
            "kind": None,
            "nn_distance_ratio": ratio,
            "data_copying_ct": -0.1,
            "outlier_fraction": outliers,
            "max_abs_z": 5e8 if outliers else 4.0,
        },
        "timings": {},
        "info": info or {},
    }


def test_report_shows_memorisation_and_flags_outliers():
    from harness.report import build, markdown

    rows = [
        _row("copier", 0.2, 0.0),
        _row("fresh", 1.05, 0.0006),
        _row("generator", 0.8, 0.0, {"teacher_fidelity_energy": 0.0123}),
    ]
    text = markdown(rows)
    assert "Warning." in text and "`fresh` on `moons` (0.06% of samples, up to 5e+08 SDs)" in text
    assert "`copier` on" not in text.split("Warning.")[1].split("\n")[0]
    ratio = next(t for t in build(rows).tables if t.spec.key == "nn_distance_ratio")
    assert ratio.entries[("fresh", "moons")].best and not ratio.entries[("copier", "moons")].best  # closest to 1
    fidelity = next(t for t in build(rows).tables if t.spec.key == "teacher_fidelity_energy")
    assert fidelity.entries[("generator", "moons")].mean == 0.0123
    assert fidelity.entries[("copier", "moons")].state == "missing"
    assert "Warning." not in markdown([_row("copier", 0.2, 0.0)])
