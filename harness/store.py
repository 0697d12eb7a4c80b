"""Results store: one SQLite database per run directory, one row per cell.

Rows are written in one transaction each, in WAL mode, so a run killed at any
point leaves a consistent database and loses no finished cell. A cell is
identified by ``cell_key`` (a hash of its full specification); writing a key
again replaces the row, so a cell appears exactly once.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from harness.errors import UserError

DB_NAME = "results.sqlite"
LOCK_NAME = ".run.lock"

COLUMNS = (
    "cell_key", "method", "dataset", "seed", "profile", "params", "device", "status", "error",
    "metrics", "timings", "info", "code_version", "config_hash", "created_at",
)
JSON_COLUMNS = ("params", "metrics", "timings", "info")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS results (
    cell_key TEXT PRIMARY KEY,
    method TEXT NOT NULL, dataset TEXT NOT NULL, seed INTEGER NOT NULL, profile TEXT NOT NULL,
    params TEXT, device TEXT, status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'skipped')),
    error TEXT, metrics TEXT, timings TEXT, info TEXT, code_version TEXT, config_hash TEXT,
    created_at REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


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
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise UserError(f"results database {self.path} is unreadable: {e}") from None
        self._lock_fd: int | None = None

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

    def release_run_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---------------------------------------------------------------- rows
    def put(self, row: dict[str, Any]) -> None:
        """Insert or replace one cell's row in a single transaction."""
        row = dict(row)
        row.setdefault("created_at", time.time())
        values = [dumps(row.get(c)) if c in JSON_COLUMNS else row.get(c) for c in COLUMNS]
        marks = ", ".join("?" * len(COLUMNS))
        with self.conn:  # BEGIN ... COMMIT
            self.conn.execute(f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({marks})", values)

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a dict (JSON columns decoded), ordered by time of writing."""
        cur = self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY created_at, cell_key")
        return [self._decode(r) for r in cur.fetchall()]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def statuses(self) -> dict[str, str]:
        """cell_key -> status."""
        return dict(self.conn.execute("SELECT cell_key, status FROM results").fetchall())

    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, dumps(value)))

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta").fetchall()}

    def close(self) -> None:
        self.release_run_lock()
        self.conn.close()

    @staticmethod
    def _decode(values: tuple) -> dict[str, Any]:
        row = dict(zip(COLUMNS, values))
        for c in JSON_COLUMNS:
            row[c] = json.loads(row[c]) if row[c] else {}
        return row
