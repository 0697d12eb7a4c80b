"""Results store: one SQLite database per run directory, one row per cell.

Rows are written in one transaction each, in WAL mode, so a run killed at any
point leaves a consistent database and loses no finished cell. A cell is
identified by ``cell_key`` (a hash of its full specification); writing a key
again replaces the row, so a cell appears exactly once.

Storage faults are one-line ``UserError``s: a damaged database is detected when
it is opened (it says how many rows are readable; ``salvage`` moves it aside and
keeps those rows in a new one), and a failed write (disk full, read-only) keeps
every row already committed. A file that is not ours (another program's SQLite
file, an empty file, a FIFO) is refused before anything is written to it, and
left byte-identical. Every row is read through ``decode_row``: a damaged row is
left out with a one-line warning naming its cell key (a row whose JSON fields are
damaged is shown as a failed cell, which ``run`` recomputes), and a metric value
that is not a number is left out and counted.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.errors import UserError
from harness.toolkit.files import regular_file

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
#: The columns a database must have to be read as ours: a row's identity. The other COLUMNS read as
#: empty when absent (and are added when the store is opened); extra columns are ignored.
REQUIRED_COLUMNS = ("cell_key", "method", "dataset", "seed", "profile", "status")
#: SQLite types of the columns that may be added to a store lacking them.
_ADDED_TYPES = {"seed": "INTEGER", "created_at": "REAL"}
STATUSES = ("ok", "failed", "skipped")
#: What ``statuses`` says of a row it cannot decode: not finished, so ``run`` recomputes the cell.
DAMAGED = "damaged"
#: Metrics whose values are text; every other scalar metric is a number (or 'nan', 'inf', '-inf').
TEXT_METRICS = ("kind",)
#: Meta entries that are JSON objects (a damaged one is left out).
META_OBJECTS = ("config", "environment", "data_fingerprints")
#: The export of the rows ``report`` writes (protected by ``protect_export``).
EXPORT_NAME = "results.csv"

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


class DamagedDatabase(UserError):
    """The database file is damaged (pages unreadable, or not a database at all)."""


#: Warnings already printed by this process (a store opened twice warns once).
_WARNED: set[str] = set()


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr, once per process."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr)


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_object(text: Any, column: str) -> tuple[dict[str, Any], str | None]:
    """(the decoded JSON object, None) or ({}, what is wrong) for one JSON column's stored text."""
    if text is None or text == "":
        return {}, None
    if not isinstance(text, str):
        return {}, f"{column} is stored as {type(text).__name__}, not JSON text"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}, f"{column} is not valid JSON ({_shown(text)})"
    if not isinstance(value, dict):
        return {}, f"{column} is not a JSON object ({_shown(text)})"
    return value, None


def _identity_problem(row: dict[str, Any]) -> str | None:
    """What makes a row unattributable to a cell (its key, names, seed or status), or None."""
    for column in ("cell_key", "method", "dataset", "profile"):
        if not isinstance(row.get(column), str) or not row[column]:
            return f"{column} is {_shown(row.get(column))}, not a name"
    if not isinstance(row.get("seed"), int) or isinstance(row.get("seed"), bool):
        return f"seed is {_shown(row.get('seed'))}, not an integer"
    if row.get("status") not in STATUSES:
        return f"status is {_shown(row.get('status'))}, not one of {', '.join(STATUSES)}"
    return None


def _numeric_metrics(metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``metrics`` without the scalar values that are not numbers, and the names left out."""
    bad = [
        k
        for k, v in metrics.items()
        if not (
            isinstance(v, (int, float, dict, list))
            or v is None
            or (isinstance(v, str) and (k in TEXT_METRICS or v in ("nan", "inf", "-inf")))
        )
    ]
    return {k: v for k, v in metrics.items() if k not in bad}, bad


def decode_row(raw: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None, list[str]]:
    """The one decoder of stored rows: ``raw`` (column -> stored value) -> (row, problem, bad metrics).

    - identity damaged (key, names, seed, status): (None, why, []): the row cannot be shown;
    - a JSON column damaged: a failed row naming the damage (its results are lost; ``run`` recomputes it);
    - metric values that are not numbers: left out of ``metrics``, their names in ``bad metrics``.
    """
    row = {c: raw.get(c) for c in COLUMNS}
    why = _identity_problem(row)
    if why is not None:
        return None, why, []
    damage = []
    for column in JSON_COLUMNS:
        row[column], problem = _json_object(row[column], column)
        if problem:
            damage.append(problem)
    if damage:
        error = f"row damaged in {DB_NAME} ({'; '.join(damage)}); `run` recomputes the cell"
        return {**row, "status": "failed", "error": error, "metrics": {}, "timings": {}, "info": {}}, damage[0], []
    row["metrics"], bad = _numeric_metrics(row["metrics"])
    if bad:
        row["info"] = {**row["info"], "unreadable_metrics": ", ".join(bad)}
    return row, None, bad


class ResultsStore:
    """The SQLite results database of one run directory.

    An existing file is checked (read-only) before it is opened for writing: a regular, non-empty
    SQLite file holding our ``results`` table with ``REQUIRED_COLUMNS``; anything else is refused and
    left as it is. A new database is built beside its final name and renamed into place, so a run
    killed while creating it never leaves an empty file.
    """

    def __init__(self, run_dir: Path | str, *, create: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        exists = os.path.lexists(self.path)
        if not create and not exists:
            raise UserError(f"no results database at {self.path} (is '{run_dir}' a run directory?)")
        self._lock_fd: int | None = None
        if exists:
            self._guard("open", self._check_ours)
        else:
            self._guard("create", self._create)
        self.conn = self._guard("open", self._open)
        self._guard("open", self._check_integrity)

    def _check_ours(self) -> None:
        """Refuse (UserError, nothing written) a file that is not a results database of ours."""
        regular_file(self.path, "results database")
        if self.path.stat().st_size == 0:
            raise UserError(
                f"results database {self.path} is empty (0 bytes), not a densitybench results database; "
                "it is left as it is (remove it to start afresh, or use another run directory)"
            )
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {r[1] for r in conn.execute("PRAGMA table_info(results)")} if "results" in tables else set()
        finally:
            conn.close()
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            what = (
                f"its table 'results' lacks the column(s) {', '.join(missing)}"
                if "results" in tables
                else f"it has no table 'results' (tables: {', '.join(sorted(tables)) or 'none'})"
            )
            raise UserError(
                f"{self.path} is not a densitybench results database ({what}); it is left unchanged: "
                "use another run directory"
            )

    def _create(self) -> None:
        """Make the run directory (removing what it made if that fails) and an empty database in it."""
        made = make_directory(self.run_dir)
        staging = self.path.with_name(DB_NAME + ".new")
        sides = [Path(f"{staging}{side}") for side in ("", "-wal", "-shm", "-journal")]
        try:
            if not os.access(self.run_dir, os.W_OK):
                raise UserError(f"output directory {self.run_dir} is not writable")
            for side in sides:
                side.unlink(missing_ok=True)
            conn = sqlite3.connect(staging, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
            finally:
                conn.close()
            os.link(staging, self.path)  # fails rather than replace a database made meanwhile
        except BaseException:
            for side in sides:
                side.unlink(missing_ok=True)
            remove_made(made)
            raise
        staging.unlink()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            present = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
            for column in (c for c in COLUMNS if c not in present):  # a store of another version
                conn.execute(f"ALTER TABLE results ADD COLUMN {column} {_ADDED_TYPES.get(column, 'TEXT')}")
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
                raise DamagedDatabase(damaged_message(self.path, e)) from None
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

    def _raw_rows(self) -> list[dict[str, Any]]:
        """Every stored row as column -> value (the columns this database has), ordered by time of writing."""
        columns = [
            r[1] for r in self._guard("read", lambda: self.conn.execute("PRAGMA table_info(results)").fetchall())
        ]
        names = [c for c in COLUMNS if c in columns]
        query = f"SELECT {', '.join(names)} FROM results ORDER BY created_at, cell_key"
        return [
            dict(zip(names, r, strict=True)) for r in self._guard("read", lambda: self.conn.execute(query).fetchall())
        ]

    def rows(self) -> list[dict[str, Any]]:
        """Every readable row as a dict (JSON columns decoded by ``decode_row``), ordered by time of
        writing; a damaged row is left out or shown as failed, with a warning on stderr."""
        rows, bad_values = [], []
        for raw in self._raw_rows():
            row, problem, bad = decode_row(raw)
            if problem is not None:
                fate = "shown as failed" if row is not None else "left out"
                warn(f"{self.path}: row {_shown(raw.get('cell_key'))} is damaged ({problem}); {fate}")
            bad_values += [(row["cell_key"], k, raw.get("metrics")) for k in bad]
            if row is not None:
                rows.append(row)
        if bad_values:
            key, name, _ = bad_values[0]
            warn(
                f"{self.path}: {len(bad_values)} metric value(s) in {len({k for k, _, _ in bad_values})} row(s) are "
                f"not numbers and are left out (first: row {key!r}, metric {name!r})"
            )
        return rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows())

    def statuses(self) -> dict[str, str]:
        """cell_key -> status; ``DAMAGED`` for a row ``decode_row`` cannot read whole (so it runs again)."""
        out = {}
        for raw in self._raw_rows():
            row, problem, _ = decode_row(raw)
            if isinstance(raw.get("cell_key"), str):
                out[raw["cell_key"]] = DAMAGED if problem is not None else row["status"]
        return out

    def set_meta(self, key: str, value: Any) -> None:
        def write() -> None:
            with self.conn:
                self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, dumps(value)))

        self._guard("write to", write)

    def meta(self) -> dict[str, Any]:
        """The run's meta entries; a damaged one is left out with a warning."""
        pairs = self._guard("read", lambda: self.conn.execute("SELECT key, value FROM meta").fetchall())
        out = {}
        for key, text in pairs:
            try:
                value = json.loads(text)
            except (TypeError, ValueError, RecursionError):
                warn(f"{self.path}: meta entry {_shown(key)} is not valid JSON; left out")
                continue
            if key in META_OBJECTS and not isinstance(value, dict):
                warn(f"{self.path}: meta entry {key!r} is not a JSON object; left out")
                continue
            out[key] = value
        return out

    def close(self) -> None:
        self.release_run_lock()
        self.conn.close()


def make_directory(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns those created (deepest last). A failure removes
    them again and is a one-line UserError: a rejected output directory leaves nothing behind."""
    missing = []
    here = Path(path)
    while not os.path.lexists(here) and here != here.parent:
        missing.append(here)
        here = here.parent
    made = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        if not Path(path).is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except (OSError, ValueError) as e:
        remove_made(made)
        raise UserError(f"cannot create output directory {path}: {getattr(e, 'strerror', None) or e}") from None
    return made


def remove_made(made: list[Path]) -> None:
    """Remove the directories ``make_directory`` created (deepest first) while they are empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            return


# -------------------------------------------------------------------- damaged databases
def readable_rows(path: Path) -> tuple[list[tuple], list[tuple]]:
    """The (results, meta) rows of a damaged database that can still be read, as raw tuples.

    Each table is scanned forwards and backwards by rowid, each scan stopping at the first damaged
    page, so rows on both sides of a damaged stretch are kept (rows between two damaged stretches
    are not).
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        try:
            present = {r[1] for r in conn.execute("PRAGMA table_info(results)")} or set(COLUMNS)
        except sqlite3.DatabaseError:
            present = set(COLUMNS)
        columns = ", ".join(c if c in present else f"NULL AS {c}" for c in COLUMNS)
        results = _scan(conn, f"SELECT {columns} FROM results", key=0)
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
    """A salvaged results row is kept only when ``decode_row`` reads it whole."""
    return decode_row(dict(zip(COLUMNS, values, strict=False)))[1] is None


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
    """Move a damaged ``results.sqlite`` (damaged pages, or rows ``decode_row`` cannot read whole) aside
    and copy its sound rows into a new one.

    Returns (rows kept, where the damaged file now is). A database with nothing damaged, or one that is
    not ours, is left alone (UserError).
    """
    path = Path(run_dir) / DB_NAME
    if not os.path.lexists(path):
        raise UserError(f"no results database at {path} (is '{run_dir}' a run directory?)")
    try:
        store = ResultsStore(run_dir, create=False)
    except DamagedDatabase:
        pass
    else:
        try:
            damaged = [k for k, status in store.statuses().items() if status == DAMAGED]
            damaged += [r.get("cell_key") for r in store._raw_rows() if not isinstance(r.get("cell_key"), str)]
        finally:
            store.close()
        if not damaged:
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


# -------------------------------------------------------------------- the export
def protect_export(run_dir: Path | str, rows: int) -> Path | None:
    """Before an export of ``rows`` rows replaces ``results.csv``: when the existing file holds more rows,
    move it aside (``results.older.csv``, then ``results.older-2.csv``, ...) and say so on stderr; returns
    where it went. An export path that is not a regular file is refused (UserError)."""
    path = Path(run_dir) / EXPORT_NAME
    if not os.path.lexists(path):
        return None
    regular_file(path, "export")
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            held = max(sum(1 for _ in csv.reader(f)) - 1, 0)  # records, less the header
    except (OSError, csv.Error):
        held = 0  # unreadable as CSV: nothing a reader could use
    if held <= rows:
        return None
    aside, n = path.with_name("results.older.csv"), 1
    while os.path.lexists(aside):
        n += 1
        aside = path.with_name(f"results.older-{n}.csv")
    path.rename(aside)
    warn(f"{path} held {held} rows, the results database {rows}: the older export is kept as {aside.name}")
    return aside
