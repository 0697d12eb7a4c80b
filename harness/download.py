"""``python -m harness data fetch GROUP``: download a dataset group's files into the data root.

The datasets know their sources and checksums (``Dataset.fetch``, e.g.
``datasets/maf.py``); this module finds them through the registry.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from datasets.base import Dataset
from harness.errors import UserError


def fetchable_groups() -> list[str]:
    """Dataset groups whose files can be downloaded."""
    return [g for g in datasets.groups() if _fetcher(g) is not None]


def _fetcher(group: str) -> type[Dataset] | None:
    """The first dataset of ``group`` that overrides ``Dataset.fetch`` (it fetches the whole group)."""
    for name in datasets.in_group(group):
        cls = datasets.get_class(name)
        if cls.fetch.__func__ is not Dataset.fetch.__func__:
            return cls
    return None


def fetch(group: str, root: Path, *, progress: bool = True, url: str | None = None) -> list[Path]:
    """Download the files of dataset group ``group`` into the data root ``root``; returns their paths.

    ``url`` overrides the source. Files already present (with the right checksum,
    where one is recorded) are kept.
    """
    cls = _fetcher(group)
    if cls is None:
        raise UserError(f"unknown data family '{group}'; valid: {', '.join(fetchable_groups())}")
    return cls.fetch(Path(root).expanduser(), progress=progress, url=url)
