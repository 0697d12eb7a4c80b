"""Grid shards (``run --shard I/N``): N independent jobs each run their share of one grid.

A cell belongs to shard ``int(sha256(cell_key)) mod N``, so a cell's shard depends on the
cell alone: not on its place in the grid, on the other cells, or on the seeds beside it.
Resuming, or adding seeds, methods or datasets later, moves no finished cell to another
shard, and the shards of one grid cover it exactly once. Indices count from 0, as
SLURM's ``--array=0-(N-1)`` and Kubernetes' indexed jobs (``JOB_COMPLETION_INDEX``) do.
``python -m harness merge`` (harness/merge.py) puts the shards' run directories together.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from harness.errors import UserError

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
#: Most shards one grid may be cut into (a guard against a mistyped count, not a limit of the scheme).
MAX_SHARDS = 100_000


class _Keyed(Protocol):
    key: str


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, cell_key: str) -> bool:
        """Whether the cell with key ``cell_key`` belongs to this shard."""
        return shard_index(cell_key, self.count) == self.index

    def select(self, cells: Iterable[_Keyed]) -> Iterator[Any]:
        """The cells of ``cells`` that belong to this shard, in their order."""
        return (c for c in cells if self.holds(c.key))


def shard_index(cell_key: str, count: int) -> int:
    """The shard (0 .. count - 1) of the cell with key ``cell_key`` when a grid is cut into ``count``."""
    return int.from_bytes(hashlib.sha256(cell_key.encode()).digest()[:8], "big") % count


def parse_shard(value: Any) -> Shard:
    """``"0/4"`` -> Shard(0, 4); anything else is a one-line UserError."""
    match = _FORM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise UserError(
            f"shard must be I/N with whole numbers, 0 <= I < N (e.g. 0/4: the first of four shards), got {value!r}"
        )
    index, count = int(match[1]), int(match[2])
    if count < 1 or count > MAX_SHARDS:
        raise UserError(f"shard {value!r}: the shard count N must be 1 .. {MAX_SHARDS}, got {count}")
    if index >= count:
        raise UserError(f"shard {value!r}: the index I counts from 0 and must be below N = {count} (0 .. {count - 1})")
    return Shard(index, count)


def check_run_directory(recorded: dict[str, Any] | None, has_rows: bool, shard: Shard | None, where: str) -> None:
    """Refuse to run ``shard`` into a run directory that holds another share of the grid.

    ``recorded`` is the directory's stored config (None for a new directory); ``has_rows`` whether
    its store holds rows. A directory without rows takes any shard.
    """
    if not has_rows or recorded is None:
        return
    before = recorded.get("shard")
    now = str(shard) if shard is not None else None
    if before == now:
        return
    held = f"shard {before} of its grid" if before else "the whole grid (no --shard)"
    asked = f"--shard {now}" if now else "the whole grid"
    raise UserError(
        f"run directory {where} holds {held}, but this run asks for {asked}: use another --out "
        f"for it, and `python -m harness merge` to combine the run directories"
    )
