"""Results store: one SQLite database per run directory, one row per cell.

Rows are written in one transaction each, in WAL mode, so a run killed at any
point leaves a consistent database and loses no finished cell. A cell is
identified by ``cell_key`` (a hash of its full specification); writing a key
again replaces the row, so a cell appears exactly once.

Storage faults are one-line ``UserError``s: a damaged database is detected when
it is opened (it says how many rows are readable; ``salvage`` moves it aside and
keeps those rows in a new one), and a failed write (disk full, read-only) keeps
every row already committed.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.errors import UserError

DB_NAME = "results.sqlite"
#: Run-directory folder of the per-cell artefacts (``<cell_key>.npz``: samples and 2-D log-density grids).
ARTIFACT_DIR = "artifacts"
LOCK_NAME = ".run.lock"
#: What ``salvage`` renames a damaged database to (with a number when taken).
DAMAGED_SUFFIX = ".damaged"
#: SQLite result codes that mean the file itself is damaged or is not a database.
CORRUPT_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
T = TypeVar("T")

COLUMNS = (
    "cell_key",
    "method",
    "dataset",
    "seed",
    "profile",
    "params",
    "device",
    "status",
    "error",
    "metrics",
    "timings",
    "info",
    "code_version",
    "config_hash",
    "created_at",
)
JSON_COLUMNS = ("params", "metrics", "timings", "info")

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    cell_key TEXT PRIMARY KEY,
    method TEXT NOT NULL, dataset TEXT NOT NULL, seed INTEGER NOT NULL, profile TEXT NOT NULL,
    params TEXT, device TEXT, status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
    error TEXT, metrics TEXT, timings TEXT, info TEXT, code_version TEXT, config_hash TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


#: Run-lock descriptors held by this process. A forked child closes its copies at once: a flock
#: belongs to the open file, so a worker outliving its parent would otherwise keep the lock.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats to JSON-safe values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else repr(f)  # 'nan', 'inf', '-inf' as strings
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return repr(obj)


def dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True)


class ResultsStore:
    """The SQLite results database of one run directory."""

    def __init__(self, run_dir: Path | str, *, create: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        if not create and not self.path.exists():
            raise UserError(f"no results database at {self.path} (is '{run_dir}' a run directory?)")
        if create:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create output directory {self.run_dir}: {e.strerror}") from None
            if not os.access(self.run_dir, os.W_OK):
                raise UserError(f"output directory {self.run_dir} is not writable")
        self._lock_fd: int | None = None
        self.conn = self._guard("open", self._open)
        self._guard("open", self._check_integrity)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_integrity(self) -> None:
        """Raise SQLITE_CORRUPT's DatabaseError when any page is damaged (cost: one pass over the file)."""
        problems = [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            err = sqlite3.DatabaseError(f"integrity check: {problems[0]}")
            err.sqlite_errorname = "SQLITE_CORRUPT"
            raise err

    def _guard(self, action: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; a damaged file or a failed read/write becomes a one-line UserError."""
        try:
            return fn()
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "") in CORRUPT_CODES or "malformed" in str(e):
                if hasattr(self, "conn"):
                    self.close()
                raise UserError(damaged_message(self.path, e)) from None
            raise UserError(
                f"cannot {action} the results database {self.path}: {e} (disk full, read-only, or "
                f"removed?); finished cells are kept: fix it and rerun the same command"
            ) from None
        except OSError as e:
            raise UserError(
                f"cannot {action} the results database {self.path}: {e.strerror or e} (disk full or "
                f"read-only?); finished cells are kept: fix it and rerun the same command"
            ) from None

    # ---------------------------------------------------------------- locking
    def acquire_run_lock(self) -> None:
        """Hold an exclusive lock on the run directory; a second run refuses clearly.

        The lock is released by the OS when the process exits, even on SIGKILL.
        """
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(
                f"another run is using {self.run_dir} (lock {LOCK_NAME} held); wait for it or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        _HELD_LOCKS.add(fd)

    def release_run_lock(self) -> None:
        if self._lock_fd is not None:
            _HELD_LOCKS.discard(self._lock_fd)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---------------------------------------------------------------- rows
    def put(self, row: dict[str, Any]) -> None:
        """Insert or replace one cell's row in a single transaction."""
        row = dict(row)
        row.setdefault("created_at", time.time())
        values = [dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c) for c in COLUMNS]
        self._guard("write to", lambda: self._insert(values))

    def _insert(self, values: list[Any]) -> None:
        marks = ", ".join("?" * len(COLUMNS))
        with self.conn:  # BEGIN ... COMMIT
            self.conn.execute(f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({marks})", values)

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict (JSON columns decoded), ordered by time of writing."""
        query = f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY created_at, cell_key"
        return [self._decode(r) for r in self._guard("read", lambda: self.conn.execute(query).fetchall())]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def statuses(self) -> dict[str, str]:
        """cell_key -> status."""
        return dict(self._guard("read", lambda: self.conn.execute("SELECT cell_key, status FROM results").fetchall()))

    def set_meta(self, key: str, value: Any) -> None:
        def write() -> None:
            with self.conn:
                self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, dumps(value)))

        self._guard("write to", write)

    def meta(self) -> dict[str, Any]:
        pairs = self._guard("read", lambda: self.conn.execute("SELECT key, value FROM meta").fetchall())
        return {k: json.loads(v) for k, v in pairs}

    def close(self) -> None:
        self.release_run_lock()
        self.conn.close()

    @staticmethod
    def _decode(values: tuple) -> dict[str, Any]:
        row = dict(zip(COLUMNS, values, strict=False))
        for c in JSON_COLUMNS:
            row[c] = json.loads(row[c]) if row[c] else {}
        return row


# -------------------------------------------------------------------- damaged databases
def readable_rows(path: Path) -> tuple[list[tuple], list[tuple]]:
    """The (results, meta) rows of a damaged database that can still be read, as raw tuples.

    Each table is scanned forwards and backwards by rowid, each scan stopping at the first damaged
    page, so rows on both sides of a damaged stretch are kept (rows between two damaged stretches
    are not).
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        results = _scan(conn, f"SELECT {', '.join(COLUMNS)} FROM results", key=0)
        meta = _scan(conn, "SELECT key, value FROM meta", key=0)
    finally:
        conn.close()
    return results, meta


def _scan(conn: sqlite3.Connection, query: str, key: int) -> list[tuple]:
    found: dict[Any, tuple] = {}
    for order in ("ASC", "DESC"):
        try:
            for row in conn.execute(f"{query} ORDER BY rowid {order}"):
                found.setdefault(row[key], row)
        except sqlite3.DatabaseError:
            pass
    return list(found.values())


def _sound(values: tuple) -> bool:
    """A salvaged results row is kept only when its status is valid and its JSON columns parse."""
    row = dict(zip(COLUMNS, values, strict=False))
    try:
        for c in JSON_COLUMNS:
            if row[c]:
                json.loads(row[c])
    except (TypeError, ValueError):
        return False
    return row["status"] in ("ok", "failed", "skipped") and isinstance(row["cell_key"], str)


def damaged_message(path: Path, error: Exception) -> str:
    """One line: which file is damaged, how many rows are readable, and how to recover them."""
    try:
        count = f"{len(readable_rows(path)[0])} rows are readable"
    except sqlite3.DatabaseError:
        count = "no rows are readable"
    return (
        f"results database {path} is damaged ({error}); {count}: `python -m harness report "
        f"{path.parent} --salvage` keeps them in a new database (the damaged file is kept beside it), "
        f"then the same `run` command recomputes the rest"
    )


def salvage(run_dir: Path | str) -> tuple[int, Path]:
    """Move a damaged ``results.sqlite`` aside and copy its readable rows into a new one.

    Returns (rows kept, where the damaged file now is). A database that is not damaged is left alone
    (UserError).
    """
    path = Path(run_dir) / DB_NAME
    if not path.exists():
        raise UserError(f"no results database at {path} (is '{run_dir}' a run directory?)")
    try:
        ResultsStore(run_dir, create=False).close()
    except UserError as e:
        if "is damaged" not in str(e):
            raise
    else:
        raise UserError(f"results database {path} is not damaged; nothing to salvage")
    results, meta = readable_rows(path)
    results = [r for r in results if _sound(r)]
    aside = path.with_name(path.name + DAMAGED_SUFFIX)
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}")
    path.rename(aside)
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists():
            side.rename(aside.with_name(aside.name + extra))
    store = ResultsStore(run_dir)
    try:
        with store.conn:
            store.conn.executemany(
                f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                results,
            )
            store.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
    finally:
        store.close()
    return len(results), aside
