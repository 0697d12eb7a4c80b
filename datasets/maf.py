"""The MAF density-estimation suite (POWER, GAS, HEPMASS, MINIBOONE, BSDS300) and miniboone-small.

Preprocessing follows the reference code of Papamakarios, Pavlakou and Murray
(NeurIPS 2017) step for step on the original files of their bundle (zenodo record
1161203); the splits are fixed by that recipe. Sizes, files and caching:
docs/datasets.md. The published test log-likelihoods of the MAF and NSF papers
are declared here, beside the sets they describe.

Example::

    splits = datasets.get("miniboone-small").load(seed=0)   # (2956, 43), (328, 43), (3648, 43)
"""

from __future__ import annotations

import os
import shutil
import tarfile
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from datasets import register
from datasets._download import CHUNK, download, log
from datasets.base import Dataset, DataUnavailable, Published, Splits, resolve_root
from harness.errors import UserError

FETCH_MAF = "python -m harness data fetch maf"
#: The reference's threshold for "too correlated" GAS sensors (strictly above).
GAS_MAX_CORRELATION = 0.98
#: HEPMASS features whose smallest value occurs more often than this are dropped.
HEPMASS_MAX_MIN_COUNT = 5
MINIBOONE_SMALL_VAL_FRACTION = 0.1

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


# ---------------------------------------------------------------- shared steps


def tail_split_sizes(n: int) -> tuple[int, int, int]:
    """(train, val, test) sizes of ``tail_split`` for n rows."""
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    return n - n_test - n_val, n_val, n_test


def tail_split(data: np.ndarray) -> Arrays:
    """The reference split, in row order: the last 10 % is test, the last 10 % of the rest validation."""
    n_train, n_val, n_test = tail_split_sizes(len(data))
    if n_val == 0:
        raise ValueError(f"{len(data)} rows are too few for a 10 % tail split")
    return data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :]


def normalise_pooled(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Arrays:
    """Standardise all three with the mean and std (ddof 0) of train and validation together.

    Raises ValueError when a value is not finite or a column of train + validation is constant
    (its standard deviation is 0: the reference would divide by it).
    """
    pooled = np.vstack((train, val))
    for part, label in ((pooled, "train/validation"), (test, "test")):
        bad = np.argwhere(~np.isfinite(part))
        if len(bad):
            raise ValueError(
                f"{label} rows hold {len(bad)} non-finite values (first at row {bad[0][0] + 1}, column {bad[0][1] + 1})"
            )
    mu, s = pooled.mean(axis=0), pooled.std(axis=0)
    constant = np.flatnonzero(s == 0)
    if len(constant):
        raise ValueError(
            f"column(s) {', '.join(str(j + 1) for j in constant)} are constant over the training and "
            "validation rows (standard deviation 0)"
        )
    return (train - mu) / s, (val - mu) / s, (test - mu) / s


# ---------------------------------------------------------------- pickles without code


#: Env variable that lets ``read_data_pickle`` load any pickle (only for files you trust).
TRUST_PICKLES_ENV = "DENSITYBENCH_TRUST_PICKLES"


def _pickle_allowlist() -> tuple[set[int], tuple[type, ...]]:
    """(ids of the functions a pickled numpy/pandas table may call, the classes it may build)."""
    import builtins
    import codecs
    import copyreg
    import importlib

    import pandas as pd
    from pandas.api.extensions import ExtensionArray, ExtensionDtype

    functions: list[object] = [
        builtins.slice,
        builtins.object,
        codecs.encode,
        copyreg._reconstructor,
        np.ndarray,
    ]  # exactly: a subclass such as np.memmap would open files
    for module, name in [
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas._libs.internals", "BlockPlacement"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
        ("pandas.core.internals.blocks", "Block"),
    ]:
        try:
            with warnings.catch_warnings():  # numpy.core is numpy._core's deprecated alias
                warnings.simplefilter("ignore", DeprecationWarning)
                functions.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    classes = (pd.DataFrame, pd.Series, pd.Index, ExtensionArray, ExtensionDtype, np.dtype, np.generic)
    return {id(f) for f in functions}, classes


def read_data_pickle(path: Path):
    """Unpickle a pandas/numpy table at ``path`` without running code a pickle could carry.

    Only the numpy and pandas constructors of tables are resolved (pandas' own compatibility
    mapping applies first, so files written by old pandas versions load); any other global,
    e.g. ``os.system``, raises a UserError naming it. Set ``DENSITYBENCH_TRUST_PICKLES=1`` to
    load a trusted file that needs more.
    """
    import os

    import pandas as pd
    from pandas.compat.pickle_compat import Unpickler

    if os.environ.get(TRUST_PICKLES_ENV) == "1":
        return pd.read_pickle(path)
    functions, classes = _pickle_allowlist()

    class TablesOnly(Unpickler):
        def find_class(self, module: str, name: str):
            found = super().find_class(module, name)
            if id(found) in functions or (isinstance(found, type) and issubclass(found, classes)):
                return found
            raise UserError(
                f"{path}: the pickle refers to {module}.{name}, which a data table does not need; "
                f"it was not loaded (a pickle can run code). If you trust the file, set "
                f"{TRUST_PICKLES_ENV}=1"
            )

    for encoding in ("ASCII", "latin1"):  # latin1: pickles written by Python 2
        with open(path, "rb") as f:
            try:
                return TablesOnly(f, encoding=encoding).load()
            except UnicodeDecodeError:
                continue
    raise UserError(f"{path}: cannot decode the pickle's strings")


# ---------------------------------------------------------------- per-set recipes


def power_with_noise(raw: np.ndarray) -> np.ndarray:
    """POWER before splitting: (n, 8) raw rows -> (n, 6) shuffled, pruned, noisy rows.

    Raw columns: global active power, global reactive power, voltage, global
    intensity, sub-meterings 1-3, time. Shuffle with RandomState(42); drop
    global intensity and reactive power (columns 3, then 1); add noise drawn
    from the same generator in the reference's order: voltage 0.01 U, active
    power 0.001 U, sub-meterings U(0, 1), time none. Output columns: active
    power, voltage, sub-meterings 1-3, time.
    """
    if raw.ndim != 2 or raw.shape[1] != 8:
        raise ValueError(f"POWER raw data must have 8 columns, got shape {raw.shape}")
    rng = np.random.RandomState(42)
    data = np.array(raw, dtype=np.float64)
    rng.shuffle(data)
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    n = len(data)
    voltage = 0.01 * rng.rand(n, 1)
    active_power = 0.001 * rng.rand(n, 1)
    sub_metering = rng.rand(n, 3)
    data += np.hstack((active_power, voltage, sub_metering, np.zeros((n, 1))))
    return data


def preprocess_power(raw: np.ndarray) -> Arrays:
    """POWER splits: ``power_with_noise``, tail split, pooled normalisation; (n, 6) each."""
    return normalise_pooled(*tail_split(power_with_noise(raw)))


def prune_correlated(frame):
    """Drop, one at a time, the first column correlated above 0.98 with another.

    Columns are dropped by label, as the reference does (a label shared by
    several columns drops them all). Returns the pruned pandas frame.
    """
    while True:
        crowded = (frame.corr() > GAS_MAX_CORRELATION).to_numpy().sum(axis=1) > 1  # self counts once
        if not crowded.any():
            return frame
        frame = frame.drop(columns=frame.columns[np.flatnonzero(crowded)[0]])


def preprocess_gas(frame) -> Arrays:
    """GAS from the ethylene_CO pandas frame: drop Meth, Eth, Time; prune columns
    correlated above 0.98; z-score over the whole frame (pandas std, ddof 1);
    tail split. Returns (n, 8) splits for the real file.
    """
    frame = prune_correlated(frame.drop(columns=["Meth", "Eth", "Time"]))
    data = frame.to_numpy(dtype=np.float64)
    data = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)
    return tail_split(data)


def smallest_value_count(column: np.ndarray) -> int:
    """How many times the smallest value of ``column`` occurs."""
    return int(np.count_nonzero(column == column.min()))


def preprocess_hepmass(train_frame, test_frame) -> Arrays:
    """HEPMASS from the 1000_train / 1000_test pandas frames (first column the label).

    Keep label-1 rows; drop the label column, and the test file's last column;
    z-score both with the training mean and std (ddof 1); drop every feature
    whose smallest training value occurs more than 5 times (the reference's
    rule: its "max_count" is the count of the smallest value); the last 10 %
    of the training rows is validation. Returns (n, 21) splits for the real files.

    The rule is applied to the raw training values, which have the same ties
    as the z-scored ones, so a constant feature is dropped instead of turning
    into 0/0.
    """
    train = train_frame[train_frame.iloc[:, 0] == 1].iloc[:, 1:]
    test = test_frame[test_frame.iloc[:, 0] == 1].iloc[:, 1:-1]
    if list(train.columns) != list(test.columns):
        raise ValueError(f"train features {list(train.columns)} differ from test features {list(test.columns)}")
    train, test = train.to_numpy(dtype=np.float64), test.to_numpy(dtype=np.float64)
    keep = [j for j in range(train.shape[1]) if smallest_value_count(train[:, j]) <= HEPMASS_MAX_MIN_COUNT]
    train, test = train[:, keep], test[:, keep]
    mu, s = train.mean(axis=0), train.std(axis=0, ddof=1)
    train, test = (train - mu) / s, (test - mu) / s
    n_val = int(0.1 * len(train))
    return train[:-n_val], train[-n_val:], test


def preprocess_miniboone(data: np.ndarray) -> Arrays:
    """MINIBOONE from its (n, 43) array: tail split, pooled normalisation."""
    return normalise_pooled(*tail_split(np.asarray(data, dtype=np.float64)))


def preprocess_bsds300(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Arrays:
    """BSDS300 patches: 64 pixels per row lose the last one (the reference's
    rebuild keeps 63); rows that already have 63 are kept as they are."""
    out = []
    for part in (train, val, test):
        if part.ndim != 2 or part.shape[1] not in (63, 64):
            raise ValueError(f"BSDS300 rows must have 63 or 64 pixels, got shape {part.shape}")
        out.append(np.asarray(part[:, :63], dtype=np.float64))
    return out[0], out[1], out[2]


# ---------------------------------------------------------------- cache


_CACHE: OrderedDict[tuple, Arrays] = OrderedDict()
_CACHE_SIZE = 2


def _file_key(paths: list[Path]) -> tuple:
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def _cached(name: str, paths: list[Path], prepare: Callable[[], Arrays]) -> Splits:
    key = (name, _file_key(paths))
    if key in _CACHE:
        _CACHE.move_to_end(key)
    else:
        _CACHE[key] = tuple(np.ascontiguousarray(a, dtype=np.float64) for a in prepare())
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    train, val, test = _CACHE[key]
    return Splits(train.copy(), val.copy(), test.copy())


def clear_cache() -> None:
    """Forget every processed split held in memory."""
    _CACHE.clear()


# ---------------------------------------------------------------- published numbers

MAF_PAPER = "Papamakarios et al. 2017 (MAF), Table 1"
NSF_PAPER = "Durkan et al. 2019 (NSF), Table 1"
#: The suite's columns, in the papers' order.
SUITE = ("power", "gas", "hepmass", "miniboone", "bsds300")
#: Published mean test log-likelihoods (nats per example, higher is better; error bars left out) of
#: unconditional density estimation, copied from the tables named: (our closest method, the paper's
#: model, source, one value per SUITE column). "(5)" and "(10)" are numbers of flow layers. Only
#: numbers we are sure of are listed: a missing one means "not recorded here", not "not published".
PUBLISHED_TABLE = (
    ("gaussian", "Gaussian", MAF_PAPER, (-7.74, -3.58, -27.93, -37.24, 96.67)),
    ("realnvp", "Real NVP (5)", MAF_PAPER, (-0.02, 4.78, -19.62, -13.55, 152.97)),
    ("realnvp", "Real NVP (10)", MAF_PAPER, (0.17, 8.33, -18.71, -13.84, 153.28)),
    ("maf", "MAF (5)", MAF_PAPER, (0.14, 9.07, -17.70, -11.75, 155.69)),
    ("maf", "MAF (10)", MAF_PAPER, (0.24, 10.08, -17.73, -12.24, 154.93)),
    ("nsf_ar", "RQ-NSF (AR)", NSF_PAPER, (0.66, 13.09, -14.01, -9.22, 157.31)),
    ("nsf_c", "RQ-NSF (C)", NSF_PAPER, (0.64, 13.09, -14.75, -9.67, 157.54)),
)


def published_on(column: str) -> tuple[Published, ...]:
    """The published numbers of SUITE column ``column``, one per model of PUBLISHED_TABLE."""
    i = SUITE.index(column)
    return tuple(Published(method, model, source, values[i]) for method, model, source, values in PUBLISHED_TABLE)


# ---------------------------------------------------------------- datasets


class MAFDataset(Dataset):
    """Base of the MAF sets: raw ``files`` under ``<root>/maf/<folder>/``.

    Subclasses set ``folder``, ``files``, ``dim``, ``expected_sizes`` and
    implement ``_prepare(folder) -> (train, val, test)``.
    """

    folder: ClassVar[str]
    files: ClassVar[tuple[str, ...]]
    expected_sizes: ClassVar[tuple[int, int, int]]
    group: ClassVar[str] = "maf"

    @classmethod
    def fetch(cls, root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
        """The whole MAF bundle (``fetch_maf``)."""
        return fetch_maf(Path(root).expanduser(), progress=progress, url=url)

    def folder_path(self, root: Path | None = None) -> Path:
        return resolve_root(root) / "maf" / self.folder

    def available(self, root: Path | None = None) -> tuple[bool, str]:
        folder = self.folder_path(root)
        missing = [f for f in self.files if not (folder / f).is_file()]
        if missing:
            return False, f"raw files missing under {folder} ({', '.join(missing)}): run `{FETCH_MAF}`"
        return True, ""

    def load(self, seed: int = 0, root: Path | None = None) -> Splits:
        """The fixed MAF splits (``seed`` is ignored: the reference recipe fixes them)."""
        ok, reason = self.available(root)
        if not ok:
            raise DataUnavailable(reason)
        folder = self.folder_path(root)
        paths = [folder / f for f in self.files]
        return _cached(self.name, paths, lambda: self._checked_prepare(folder))

    def _checked_prepare(self, folder: Path) -> Arrays:
        try:
            return self._prepare(folder)
        except (ValueError, KeyError, OSError) as e:
            raise UserError(f"{self.name}: cannot read the raw files under {folder}: {e}") from None

    def _prepare(self, folder: Path) -> Arrays:
        raise NotImplementedError

    def sizes(self) -> tuple[int, int, int] | None:
        return self.expected_sizes


@register
class Power(MAFDataset):
    """UCI individual household electric power consumption, as in MAF (6-D)."""

    name = "power"
    published = published_on("power")
    dim = 6
    folder = "power"
    files = ("data.npy",)
    expected_sizes = (1_659_917, 184_435, 204_928)
    description = "household electric power consumption (MAF preprocessing)"

    def _prepare(self, folder: Path) -> Arrays:
        return preprocess_power(np.load(folder / "data.npy"))


@register
class Gas(MAFDataset):
    """UCI gas sensor array under dynamic gas mixtures (ethylene and CO), as in MAF (8-D)."""

    name = "gas"
    published = published_on("gas")
    dim = 8
    folder = "gas"
    files = ("ethylene_CO.pickle",)
    expected_sizes = (852_174, 94_685, 105_206)
    description = "gas sensor array readings, ethylene/CO mixtures (MAF preprocessing)"

    def _prepare(self, folder: Path) -> Arrays:
        import pandas as pd

        path = folder / "ethylene_CO.pickle"
        try:
            frame = read_data_pickle(path)
        except UserError:
            raise
        except Exception as e:  # an old or foreign pickle fails in many ways
            raise UserError(f"gas: pandas {pd.__version__} cannot read {path}: {type(e).__name__}: {e}") from None
        return preprocess_gas(frame)


@register
class Hepmass(MAFDataset):
    """UCI HEPMASS (signal events of the mass-1000 files), as in MAF (21-D)."""

    name = "hepmass"
    published = published_on("hepmass")
    dim = 21
    folder = "hepmass"
    files = ("1000_train.csv", "1000_test.csv")
    expected_sizes = (315_123, 35_013, 174_987)
    description = "particle-physics signal events, HEPMASS mass 1000 (MAF preprocessing)"

    def _prepare(self, folder: Path) -> Arrays:
        import pandas as pd

        with warnings.catch_warnings():  # index_col=False drops a field the header does not name
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            train = pd.read_csv(folder / "1000_train.csv", index_col=False)
            test = pd.read_csv(folder / "1000_test.csv", index_col=False)
        return preprocess_hepmass(train, test)


@register
class MiniBooNE(MAFDataset):
    """MiniBooNE particle identification (signal and background), as in MAF (43-D)."""

    name = "miniboone"
    published = published_on("miniboone")
    dim = 43
    folder = "miniboone"
    files = ("data.npy",)
    expected_sizes = (29_556, 3_284, 3_648)
    description = "MiniBooNE particle identification (MAF preprocessing)"

    def _prepare(self, folder: Path) -> Arrays:
        return preprocess_miniboone(np.load(folder / "data.npy"))


@register
class BSDS300(MAFDataset):
    """8x8 patches of BSDS300 natural images, as in MAF (63-D). Needs h5py."""

    name = "bsds300"
    published = published_on("bsds300")
    dim = 63
    folder = "BSDS300"
    files = ("BSDS300.hdf5",)
    expected_sizes = (1_000_000, 50_000, 250_000)
    description = "8x8 natural-image patches, Berkeley segmentation set (MAF preprocessing)"

    def available(self, root: Path | None = None) -> tuple[bool, str]:
        try:
            import h5py  # noqa: F401
        except ImportError:
            return False, "bsds300 reads HDF5 and needs h5py: `pip install h5py`"
        return super().available(root)

    def _prepare(self, folder: Path) -> Arrays:
        import h5py

        with h5py.File(folder / "BSDS300.hdf5", "r") as f:
            return preprocess_bsds300(f["train"][()], f["validation"][()], f["test"][()])


# ---------------------------------------------------------------- miniboone-small


def miniboone_split_paths(root: Path | None = None) -> tuple[Path, Path]:
    """``<root>/maf-splits/miniboone/{val,test}.npy``."""
    folder = resolve_root(root) / "maf-splits" / "miniboone"
    return folder / "val.npy", folder / "test.npy"


@register
class MiniBooNESmall(Dataset):
    """Real MINIBOONE rows every machine has: MAF's validation and test splits.

    Reads ``<root>/maf-splits/miniboone/{val,test}.npy`` (3,284 and 3,648 rows,
    43 columns, normalised by MAF with train+validation statistics; when absent
    they are derived from ``<root>/maf/miniboone/data.npy``). Training and
    validation are a ``seed``-ed 90/10 split of the validation rows; the test
    rows are MAF's test split, unchanged. No further standardisation.
    """

    name = "miniboone-small"
    dim = 43
    description = "MINIBOONE's MAF validation rows for fitting, its test rows for evaluation"
    group: ClassVar[str] = "maf"
    published = published_on("miniboone")
    published_note = (
        "published MINIBOONE numbers: those models were trained on 29,556 rows, miniboone-small fits "
        "on about 3,000 (MAF's validation rows) and tests on the same 3,648 rows, so expect lower values"
    )

    @classmethod
    def fetch(cls, root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
        """The whole MAF bundle (``fetch_maf``), from which the splits are derived."""
        return fetch_maf(Path(root).expanduser(), progress=progress, url=url)

    def _sources(self, root: Path | None) -> tuple[Path, Path] | Path | None:
        val, test = miniboone_split_paths(root)
        if val.is_file() and test.is_file():
            return val, test
        raw = MiniBooNE().folder_path(root) / "data.npy"
        return raw if raw.is_file() else None

    def available(self, root: Path | None = None) -> tuple[bool, str]:
        if self._sources(root) is None:
            folder = miniboone_split_paths(root)[0].parent
            return False, f"MINIBOONE splits missing under {folder}: run `{FETCH_MAF}`"
        return True, ""

    def load(self, seed: int = 0, root: Path | None = None) -> Splits:
        source = self._sources(root)
        if source is None:
            raise DataUnavailable(self.available(root)[1])
        if isinstance(source, Path):
            full = MiniBooNE().load(root=root)
            val, test = full.val, full.test
        else:
            val, test = (np.load(p).astype(np.float64) for p in source)
        if val.ndim != 2 or test.ndim != 2 or val.shape[1] != test.shape[1]:
            raise UserError(f"miniboone-small: val {val.shape} and test {test.shape} must be 2-D with equal widths")
        order = np.random.default_rng(seed).permutation(len(val))
        n_val = int(MINIBOONE_SMALL_VAL_FRACTION * len(val))
        return Splits(val[order[n_val:]], val[order[:n_val]], test)

    def sizes(self) -> tuple[int, int, int] | None:
        n_val = int(MINIBOONE_SMALL_VAL_FRACTION * 3_284)
        return 3_284 - n_val, n_val, 3_648


# ---------------------------------------------------------------- downloading (python -m harness data fetch maf)

#: Files of the MAF bundle the loaders read: archive folder -> file names.
MAF_FILES = {cls.folder: cls.files for cls in (Power, Gas, Hepmass, MiniBooNE, BSDS300)}
MAF_URL = "https://zenodo.org/record/1161203/files/data.tar.gz"
ENV_MAF_URL = "DENSITYBENCH_MAF_URL"
#: SHA-256 of the MAF bundle. Not recorded: it could not be measured from this
#: project's machines (no network) and no reliable published value was at hand,
#: so the archive is checked only by gzip's CRC and the presence of every file
#: the loaders need, and ``fetch`` warns and prints the archive's SHA-256 so that
#: it can be compared and recorded here. The one pickle in it (GAS) is read without
#: running code (``datasets.maf.read_data_pickle``), so an unverified copy cannot execute anything.
MAF_SHA256: str | None = None
#: SHA-256 of the reference copy of MINIBOONE's MAF validation and test splits
#: (``maf-splits/miniboone/{val,test}.npy``, float64, as ``numpy.save`` writes them).
MAF_SPLITS_SHA256 = {
    "maf-splits/miniboone/val.npy": "104f35c387c982cd550e5d6142e8b4075d746001508e65c1a90efcb83301839d",
    "maf-splits/miniboone/test.npy": "01b3fc605f334e951fed477a09a7fcd69cdc440d9204111ca253ecdf0e7590de",
}


def fetch_maf(root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
    """The MAF bundle's files, to ``root/maf/<folder>/``, plus ``root/maf-splits/miniboone``."""
    wanted = [root / "maf" / folder / name for folder, names in MAF_FILES.items() for name in names]
    if not all(p.is_file() for p in wanted):
        url = url or os.environ.get(ENV_MAF_URL) or MAF_URL
        archive = download(url, root / "maf" / "data.tar.gz", sha256=MAF_SHA256, progress=progress)
        extract_maf(archive, root / "maf", progress=progress)
        archive.unlink()
        log(progress, f"extracted the MAF files under {root / 'maf'} and deleted {archive.name}")
    return wanted + derive_miniboone_splits(root)


def extract_maf(archive: Path, dest: Path, *, progress: bool = True) -> list[Path]:
    """Extract the files of ``MAF_FILES`` from the bundle ``archive`` into ``dest/<folder>/``.

    Archive paths are ``<top>/<folder>/<file>`` (the bundle's top folder is
    ``data``); the folder name is matched case-insensitively and written in
    ``MAF_FILES``'s spelling. Nothing outside ``dest`` is ever written.
    """
    folders = {f.lower(): f for f in MAF_FILES}
    written = []
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 2:
                    continue
                folder, name = folders.get(parts[-2].lower()), parts[-1]
                if folder is None or name not in MAF_FILES[folder]:
                    continue
                target = dest / folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                with tar.extractfile(member) as src, part.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                part.replace(target)
                written.append(target)
                log(progress, f"  {target}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(
            f"{archive}: not a readable MAF archive ({type(e).__name__}: {e}); delete it and run the fetch again"
        ) from None
    missing = [
        f"{folder}/{name}"
        for folder, names in MAF_FILES.items()
        for name in names
        if not (dest / folder / name).is_file()
    ]
    if missing:
        raise UserError(f"{archive}: the archive lacks {', '.join(missing)}")
    return written


def derive_miniboone_splits(root: Path) -> list[Path]:
    """Write MINIBOONE's MAF validation and test splits to ``root/maf-splits/miniboone/``."""
    val_path, test_path = miniboone_split_paths(root)
    if not (val_path.is_file() and test_path.is_file()):
        splits = MiniBooNE().load(root=root)
        val_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(val_path, splits.val)
        np.save(test_path, splits.test)
    return [val_path, test_path]
