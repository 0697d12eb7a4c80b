"""MAF loaders on small synthetic files written in each original raw format.

Each test checks one preprocessing step of the reference recipe (Papamakarios
et al. 2017) on data built so that a wrong step shows: marker columns that must
vanish, noise whose scale names its column, correlated sensor pairs, features
whose smallest value repeats, and the tail-split arithmetic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import datasets
from datasets import maf
from datasets.base import DataUnavailable
from harness.errors import UserError

MAF_NAMES = ("power", "gas", "hepmass", "miniboone", "bsds300")


@pytest.fixture(autouse=True)
def _fresh_cache():
    maf.clear_cache()
    yield
    maf.clear_cache()


# ---------------------------------------------------------------- split arithmetic


@pytest.mark.parametrize(
    "n, expected",
    [
        (2_049_280, (1_659_917, 184_435, 204_928)),  # POWER
        (1_052_065, (852_174, 94_685, 105_206)),  # GAS
        (36_488, (29_556, 3_284, 3_648)),  # MINIBOONE
        (1000, (810, 90, 100)),
    ],
)
def test_tail_split_sizes_reproduce_the_published_sizes(n, expected):
    assert maf.tail_split_sizes(n) == expected


def test_tail_split_keeps_row_order():
    data = np.arange(200.0)[:, None]
    train, val, test = maf.tail_split(data)
    assert np.array_equal(np.vstack((train, val, test)), data)
    assert (len(train), len(val), len(test)) == (162, 18, 20)


def test_registered_maf_sets_have_published_dims_and_sizes():
    expected = {
        "power": (6, (1_659_917, 184_435, 204_928)),
        "gas": (8, (852_174, 94_685, 105_206)),
        "hepmass": (21, (315_123, 35_013, 174_987)),
        "miniboone": (43, (29_556, 3_284, 3_648)),
        "bsds300": (63, (1_000_000, 50_000, 250_000)),
        "miniboone-small": (43, (2_956, 328, 3_648)),
    }
    for name, (dim, sizes) in expected.items():
        ds = datasets.get(name)
        assert (ds.dim, ds.sizes()) == (dim, sizes), name


# ---------------------------------------------------------------- POWER

OFFSETS = {0: 10.0, 2: 20.0, 4: 30.0, 5: 40.0, 6: 50.0}  # kept raw columns -> constant offset


def power_raw(n: int = 1000) -> np.ndarray:
    raw = np.zeros((n, 8))
    for j, offset in OFFSETS.items():
        raw[:, j] = offset
    raw[:, 1], raw[:, 3] = 1e6, 2e6  # reactive power and intensity: must be dropped
    raw[:, 7] = np.arange(n)  # time: row ids, never noised
    return raw


def test_power_drops_reactive_power_and_intensity_and_shuffles_with_seed_42():
    n = 1000
    data = maf.power_with_noise(power_raw(n))
    assert data.shape == (n, 6)
    assert data.max() < 1e5
    assert np.array_equal(data[:, 5], np.random.RandomState(42).permutation(n))


def test_power_noise_scales_and_draw_order_follow_the_reference():
    n = 1000
    data = maf.power_with_noise(power_raw(n))
    noise = data[:, :5] - np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    scales = [0.001, 0.01, 1.0, 1.0, 1.0]  # active power, voltage, three sub-meterings
    for j, scale in enumerate(scales):
        assert 0 <= noise[:, j].min() and noise[:, j].max() < scale
        assert noise[:, j].max() > 0.9 * scale
    rng = np.random.RandomState(42)
    rng.permutation(n)  # the shuffle consumes the same draws
    assert np.allclose(noise[:, 1], 0.01 * rng.rand(n))  # voltage first
    assert np.allclose(noise[:, 0], 0.001 * rng.rand(n))  # then active power
    assert np.allclose(noise[:, 2:5], rng.rand(n, 3))  # then the sub-meterings


def test_power_splits_are_normalised_with_train_and_validation():
    raw = power_raw(1000)
    train, val, test = maf.preprocess_power(raw)
    assert (len(train), len(val), len(test)) == (810, 90, 100)
    pooled = np.vstack((train, val))
    assert np.allclose(pooled.mean(0), 0, atol=1e-9) and np.allclose(pooled.std(0), 1)
    noisy = maf.power_with_noise(raw)
    mu, s = noisy[:900].mean(0), noisy[:900].std(0)
    assert np.allclose(test * s + mu, noisy[900:])


# ---------------------------------------------------------------- GAS


def gas_frame(n: int = 400) -> pd.DataFrame:
    """Sensors with known correlation structure; S1..S16 stand in for the sensor columns."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, 12))
    near = lambda col: col + 0.01 * rng.standard_normal(n)  # noqa: E731 - correlation ~0.9999
    sensors = [
        z[:, 0],
        near(z[:, 0]),  # pair: S1 goes
        z[:, 1],
        near(z[:, 1]),
        near(z[:, 1]),  # triple: S3 then S4 go
        z[:, 2],
        0.95 * z[:, 2] + 0.312 * z[:, 3],  # correlation 0.95: both stay
        z[:, 4],
        z[:, 5],
        z[:, 6],
        z[:, 7],
        z[:, 8],
        z[:, 9],
        near(z[:, 4]),  # pairs with S8: S8 goes
        z[:, 10],
        z[:, 11],
    ]
    frame = pd.DataFrame(np.column_stack(sensors), columns=[f"S{i}" for i in range(1, 17)])
    frame.insert(0, "Eth", z[:, 0])  # correlated with S1, but dropped before pruning
    frame.insert(0, "Meth", rng.standard_normal(n))
    frame.insert(0, "Time", np.arange(n, dtype=float))
    return frame


def test_gas_prunes_the_first_of_each_highly_correlated_group_repeatedly():
    pruned = maf.prune_correlated(gas_frame().drop(columns=["Meth", "Eth", "Time"]))
    gone = {"S1", "S3", "S4", "S8"}
    assert list(pruned.columns) == [f"S{i}" for i in range(1, 17) if f"S{i}" not in gone]


def test_gas_drops_by_label_like_the_reference():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 100))
    frame = pd.DataFrame(np.column_stack((a, a + 1e-3 * b, b)), columns=["x", "y", "x"])
    assert list(maf.prune_correlated(frame).columns) == ["y"]


def test_gas_zscores_the_whole_frame_with_ddof_1_and_tail_splits(tmp_path):
    frame = gas_frame()
    (tmp_path / "maf" / "gas").mkdir(parents=True)
    frame.to_pickle(tmp_path / "maf" / "gas" / "ethylene_CO.pickle")
    splits = datasets.get("gas").load(root=tmp_path)
    assert splits.sizes() == (324, 36, 40) and splits.dim == 12
    whole = np.vstack((splits.train, splits.val, splits.test))
    assert np.allclose(whole.mean(0), 0, atol=1e-12) and np.allclose(whole.std(0, ddof=1), 1)
    s2 = frame["S2"].to_numpy()
    assert np.allclose(whole[:, 0], (s2 - s2.mean()) / s2.std(ddof=1))  # row order kept


# ---------------------------------------------------------------- HEPMASS


def hepmass_files(folder: Path, *, unnamed_train_mass: bool, n1: int = 200) -> dict[str, np.ndarray]:
    """Write 1000_train.csv / 1000_test.csv: label, six features, mass (1000).

    Label-1 training features: f0 continuous; f1's minimum occurs 6 times
    (dropped); f2's exactly 5 times (kept); f3's maximum recurs but its
    minimum is unique (kept); f4 continuous; f5's minimum occurs 20 times
    (dropped). Label-0 rows hold -100 ten times in f0: they must be ignored.
    """
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((n1, 6))
    feats[:6, 1] = -9.0
    feats[:5, 2] = -9.0
    feats[:50, 3] = 9.0
    feats[:20, 5] = -9.0
    background = rng.standard_normal((30, 6))
    background[:10, 0] = -100.0
    rows = np.vstack((np.column_stack((np.ones(n1), feats)), np.column_stack((np.zeros(30), background))))
    test_feats = rng.standard_normal((100, 6))
    test_background = np.column_stack((np.zeros(7), rng.standard_normal((7, 6))))
    test_rows = np.vstack((np.column_stack((np.ones(100), test_feats)), test_background))
    names = ["# label"] + [f"f{i}" for i in range(6)]
    folder.mkdir(parents=True, exist_ok=True)
    mass = lambda r: np.column_stack((r, np.full(len(r), 1000.0)))  # noqa: E731
    train_body = mass(rows) if unnamed_train_mass else rows  # the train header never names mass
    np.savetxt(folder / "1000_train.csv", train_body, delimiter=",", header=",".join(names), comments="")
    np.savetxt(folder / "1000_test.csv", mass(test_rows), delimiter=",", header=",".join(names + ["mass"]), comments="")
    return {"train": feats, "test": test_feats}


@pytest.mark.parametrize(
    "unnamed_train_mass", [True, False], ids=["train-rows-carry-unnamed-mass", "train-without-mass"]
)
def test_hepmass_keeps_signal_drops_repeated_minima_and_uses_train_statistics(tmp_path, unnamed_train_mass):
    raw = hepmass_files(tmp_path / "maf" / "hepmass", unnamed_train_mass=unnamed_train_mass)
    splits = datasets.get("hepmass").load(root=tmp_path)
    kept = [0, 2, 3, 4]
    assert splits.sizes() == (180, 20, 100) and splits.dim == len(kept)
    train_raw = raw["train"][:, kept]
    mu, s = train_raw.mean(0), train_raw.std(0, ddof=1)
    assert np.allclose(np.vstack((splits.train, splits.val)), (train_raw - mu) / s)
    assert np.allclose(splits.test, (raw["test"][:, kept] - mu) / s)


def test_hepmass_smallest_value_count_counts_the_minimum_not_the_mode():
    column = np.array([0.0, 5, 5, 5, 5, 5, 5, 5, 1])
    assert maf.smallest_value_count(column) == 1
    assert maf.smallest_value_count(np.array([2.0, 2, 3])) == 2


def test_hepmass_mismatched_train_and_test_features_is_a_user_error(tmp_path):
    folder = tmp_path / "maf" / "hepmass"
    hepmass_files(folder, unnamed_train_mass=False)
    test = pd.read_csv(folder / "1000_test.csv").rename(columns={"f3": "g3"})
    test.to_csv(folder / "1000_test.csv", index=False)
    with pytest.raises(UserError, match="differ from test features"):
        datasets.get("hepmass").load(root=tmp_path)


# ---------------------------------------------------------------- MINIBOONE


def write_miniboone(root: Path, n: int = 200, d: int = 5) -> np.ndarray:
    data = np.random.default_rng(3).standard_normal((n, d)) * np.arange(1, d + 1) * 50 + 7
    (root / "maf" / "miniboone").mkdir(parents=True, exist_ok=True)
    np.save(root / "maf" / "miniboone" / "data.npy", data)
    return data


def test_miniboone_tail_split_and_pooled_normalisation(tmp_path):
    data = write_miniboone(tmp_path)
    splits = datasets.get("miniboone").load(root=tmp_path)
    assert splits.sizes() == (162, 18, 20)
    mu, s = data[:180].mean(0), data[:180].std(0)
    assert np.allclose(np.vstack((splits.train, splits.val, splits.test)), (data - mu) / s)


def test_miniboone_small_derives_its_splits_from_the_raw_file(tmp_path):
    write_miniboone(tmp_path)
    full = datasets.get("miniboone").load(root=tmp_path)
    small = datasets.get("miniboone-small").load(seed=4, root=tmp_path)
    assert np.array_equal(small.test, full.test)
    assert small.sizes() == (17, 1, 20)
    pooled = np.vstack((small.train, small.val))
    assert np.array_equal(pooled[np.lexsort(pooled.T)], full.val[np.lexsort(full.val.T)])


# ---------------------------------------------------------------- BSDS300


@pytest.mark.parametrize("width", [64, 63])
def test_bsds300_keeps_63_pixels(tmp_path, width):
    h5py = pytest.importorskip("h5py", reason="h5py is optional; bsds300 needs it")
    rng = np.random.default_rng(5)
    parts = {"train": rng.random((40, width)), "validation": rng.random((8, width)), "test": rng.random((12, width))}
    (tmp_path / "maf" / "BSDS300").mkdir(parents=True)
    with h5py.File(tmp_path / "maf" / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for key, value in parts.items():
            f.create_dataset(key, data=value.astype(np.float32))
    splits = datasets.get("bsds300").load(root=tmp_path)
    assert splits.dim == 63 and splits.sizes() == (40, 8, 12) and splits.train.dtype == np.float64
    assert np.array_equal(splits.test, parts["test"].astype(np.float32)[:, :63].astype(np.float64))


def test_bsds300_without_h5py_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    ok, reason = datasets.get("bsds300").available(tmp_path)
    assert not ok and "pip install h5py" in reason


# ---------------------------------------------------------------- availability and caching


@pytest.mark.parametrize("name", MAF_NAMES)
def test_missing_raw_files_name_the_fetch_command(tmp_path, name):
    pytest.importorskip("h5py") if name == "bsds300" else None
    ds = datasets.get(name)
    ok, reason = ds.available(tmp_path)
    assert not ok and "python -m harness data fetch maf" in reason and str(tmp_path / "maf") in reason
    with pytest.raises(DataUnavailable, match="data fetch maf"):
        ds.load(root=tmp_path)


def test_miniboone_small_missing_names_the_fetch_command(tmp_path):
    ok, reason = datasets.get("miniboone-small").available(tmp_path)
    assert not ok and "python -m harness data fetch maf" in reason
    with pytest.raises(DataUnavailable):
        datasets.get("miniboone-small").load(root=tmp_path)


def test_seed_is_ignored_and_cached_loads_are_independent_copies(tmp_path):
    write_miniboone(tmp_path)
    ds = datasets.get("miniboone")
    a = ds.load(seed=0, root=tmp_path)
    a.train[:] = 0.0
    b = ds.load(seed=1, root=tmp_path)
    assert np.abs(b.train).max() > 0
    assert np.array_equal(b.test, ds.load(seed=2, root=tmp_path).test)


def test_cache_notices_a_rewritten_file(tmp_path):
    write_miniboone(tmp_path)
    first = datasets.get("miniboone").load(root=tmp_path)
    write_miniboone(tmp_path, n=300)
    assert datasets.get("miniboone").load(root=tmp_path).sizes() != first.sizes()


# ---------------------------------------------------------------- robustness: damaged and foreign files


def test_normalise_pooled_refuses_constant_columns_and_non_finite_values():
    rng = np.random.default_rng(0)
    train, val, test = rng.standard_normal((50, 3)), rng.standard_normal((10, 3)), rng.standard_normal((10, 3))
    out = maf.normalise_pooled(train, val, test)
    assert all(np.isfinite(a).all() for a in out)
    flat = [a.copy() for a in (train, val, test)]
    for a in flat:
        a[:, 1] = 7.0
    with pytest.raises(ValueError, match=r"column\(s\) 2 are constant"):
        maf.normalise_pooled(*flat)
    bad = test.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="test rows hold 1 non-finite values .*row 4, column 3"):
        maf.normalise_pooled(train, val, bad)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_gas_pickle_that_would_run_code_is_refused(tmp_path):
    import pickle

    folder = tmp_path / "maf" / "gas"
    folder.mkdir(parents=True)
    marker = tmp_path / "ran"
    (folder / "ethylene_CO.pickle").write_bytes(pickle.dumps([gas_frame(50), _RunsCode(marker)]))
    with pytest.raises(UserError, match=r"ethylene_CO.pickle: the pickle refers to posix.system"):
        datasets.get("gas").load(root=tmp_path)
    assert not marker.exists()


class _OpensFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # an ndarray subclass whose constructor creates a file
        return np.memmap, (str(self.path), np.uint8, "w+", 0, (4,))


@pytest.mark.parametrize("protocol", [2, 5])
def test_data_pickle_reader_loads_frames_and_refuses_file_backed_arrays(tmp_path, protocol):
    import pickle

    frame = gas_frame(30)
    frame["label"] = ["a"] * 30
    path = tmp_path / "f.pickle"
    path.write_bytes(pickle.dumps(frame, protocol=protocol))
    assert maf.read_data_pickle(path).equals(frame)
    path.write_bytes(pickle.dumps(_OpensFile(tmp_path / "m.bin"), protocol=protocol))
    with pytest.raises(UserError, match="numpy.memmap"):
        maf.read_data_pickle(path)
    assert not (tmp_path / "m.bin").exists()
