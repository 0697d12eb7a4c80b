"""``python -m harness merge OUT DIR...``: combine run directories (the shards of a grid, or
runs on several machines) into one new run directory with one report.

The inputs are only read (each database through a private copy: SQLite writes beside a file it
opens, even read-only). Every input is checked first:
a directory that is not a run directory, a file that is not a results database (foreign, or
damaged), a store whose table lacks the columns rows need, or a run still in progress stops
the merge with one line before anything is written. A cell found in several inputs is kept
once: copies with the same config hash and code version agree (an ok row wins over a failed
or skipped one, else the first listed); copies that differ are refused unless ``prefer``
says which wins ("first" or "last" listed, or "newest" written). Each kept row records where
it came from in ``info["source_run"]`` (its run directory and shard; a row merged before
keeps its first origin), and its artefacts (samples, density grids) are copied along.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.store import (
    ARTIFACT_DIR,
    COLUMNS,
    DB_NAME,
    LOCK_NAME,
    REQUIRED_COLUMNS,
    ResultsStore,
    decode_row,
    warn,
)

#: How ``--prefer`` picks between copies of a cell that differ in config hash or code version.
PREFER = ("first", "last", "newest")
#: Where a merged row records its origin.
SOURCE_KEY = "source_run"
#: Config entries that may differ between merged runs and are combined: list values are joined.
LIST_KEYS = ("methods", "datasets", "seeds")


@dataclass
class SourceRun:
    """One input run directory, read: its rows (store order) and meta."""

    path: Path
    rows: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def shard(self) -> str | None:
        return (self.meta.get("config") or {}).get("shard")


@dataclass
class MergeSummary:
    rows: int = 0
    sources: int = 0
    agreed: int = 0  # cells found more than once whose copies agreed
    preferred: int = 0  # cells whose differing copies ``prefer`` decided
    artifacts: int = 0
    failed: int = 0
    kept_from: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------ reading an input


def read_run(run_dir: Path | str) -> SourceRun:
    """Read a run directory's rows and meta without changing it; every problem is a one-line UserError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory")
    db = run_dir / DB_NAME
    if not db.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {DB_NAME} in it)")
    _refuse_running(run_dir)
    with tempfile.TemporaryDirectory(prefix="densitybench-merge-") as tmp:
        copy = Path(tmp) / DB_NAME
        try:  # SQLite writes beside a database it opens, even read-only: it reads a copy
            shutil.copyfile(db, copy)
            if db.with_name(DB_NAME + "-wal").is_file():  # committed rows not yet in the main file
                shutil.copyfile(db.with_name(DB_NAME + "-wal"), copy.with_name(DB_NAME + "-wal"))
        except OSError as e:
            raise UserError(f"cannot read {db}: {e.strerror or e}") from None
        try:
            conn = sqlite3.connect(copy, isolation_level=None)
            try:
                rows, meta = _read(conn, db)
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise UserError(_unreadable(db, e)) from None
    return SourceRun(run_dir.resolve(), rows, meta)


def _refuse_running(run_dir: Path) -> None:
    """A run still writing to ``run_dir`` holds its lock: merging it now would miss rows."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return  # no lock file: nothing runs there
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(
            f"a run is still writing to {run_dir} (lock {LOCK_NAME} held); merge it when that run has ended"
        ) from None
    finally:
        os.close(fd)


def _unreadable(db: Path, error: Exception) -> str:
    text = str(error)
    if "not a database" in text:
        return f"{db} is not an SQLite database (a foreign or damaged file): {text}"
    return (
        f"{db} is damaged ({text}); `python -m harness report {db.parent} --salvage` keeps its readable "
        f"rows, then merge again"
    )


def _read(conn: sqlite3.Connection, db: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(f"integrity check: {problems[0]}")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "results" not in tables:
        found = ", ".join(sorted(tables)) or "none"
        raise UserError(f"{db} holds no densitybench results table (tables: {found}); it is not a run's database")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(results)")]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(
            f"{db}: its results table lacks the column(s) {', '.join(missing)}; it was not written by "
            "densitybench (or by an incompatible version) and cannot be merged"
        )
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise UserError(
            f"{db}: its results table has column(s) this version does not know ({', '.join(unknown)}); it "
            "was written by a newer densitybench: merge with that version"
        )
    present = [c for c in COLUMNS if c in columns]
    order = "created_at, cell_key" if "created_at" in present else "cell_key"
    query = f"SELECT {', '.join(present)} FROM results ORDER BY {order}"
    rows = [_decode(dict(zip(present, values, strict=True)), db) for values in conn.execute(query)]
    meta: dict[str, Any] = {}
    if "meta" in tables:
        for key, value in conn.execute("SELECT key, value FROM meta"):
            try:
                meta[key] = json.loads(value)
            except (TypeError, ValueError):
                raise UserError(f"{db} is damaged: its meta entry '{key}' is not valid JSON") from None
    return rows, meta


def _decode(raw: dict[str, Any], db: Path) -> dict[str, Any]:
    """A stored row as ``ResultsStore.rows`` gives it (``store.decode_row``, the one decoder), or a
    UserError naming the flaw: a merge carries no damaged row."""
    row, problem, bad = decode_row(raw)
    if problem is not None:
        raise UserError(f"{db} is damaged: cell {raw.get('cell_key')}'s {problem}")
    if bad:
        warn(f"{db}: metric(s) {', '.join(bad)} of cell {row['cell_key']} are not numbers and are left out")
    return row


def _label(row: dict[str, Any]) -> str:
    return f"{row['method']}/{row['dataset']}/seed {row['seed']} ({row['profile']})"


def _agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("config_hash") == b.get("config_hash") and a.get("code_version") == b.get("code_version")


def _pick(old: dict[str, Any], new: dict[str, Any], prefer: str) -> bool:
    """Whether ``new`` (from a later input) replaces ``old`` under ``prefer``."""
    if prefer == "last":
        return True
    if prefer == "newest":
        return (new.get("created_at") or 0.0) > (old.get("created_at") or 0.0)
    return False


def combine(sources: list[SourceRun], prefer: str | None = None) -> tuple[list[tuple[dict, SourceRun]], MergeSummary]:
    """One (row, its input) per cell over ``sources`` in order, and the counts; differing copies of a
    cell without ``prefer`` are a UserError naming the first and how many more there are."""
    if prefer is not None and prefer not in PREFER:
        raise UserError(f"unknown --prefer '{prefer}'; valid: {', '.join(PREFER)}")
    chosen: dict[str, tuple[dict, SourceRun]] = {}
    summary = MergeSummary(sources=len(sources))
    conflicts: list[str] = []
    for src in sources:
        for row in src.rows:
            key = row["cell_key"]
            if key not in chosen:
                chosen[key] = (row, src)
                continue
            old, old_src = chosen[key]
            if _agree(old, row):
                summary.agreed += 1
                if old["status"] != "ok" and row["status"] == "ok":
                    chosen[key] = (row, src)
            elif prefer is None:
                conflicts.append(
                    f"cell {_label(row)} differs between {old_src.path} (config {old.get('config_hash')}, code "
                    f"{old.get('code_version')}) and {src.path} (config {row.get('config_hash')}, code "
                    f"{row.get('code_version')})"
                )
            else:
                summary.preferred += 1
                if _pick(old, row, prefer):
                    chosen[key] = (row, src)
    if conflicts:
        more = f", and {len(conflicts) - 1} more cell(s)" if len(conflicts) > 1 else ""
        raise UserError(
            f"{conflicts[0]}{more}; choose which copy wins with --prefer {'|'.join(PREFER)} (merged nothing)"
        )
    kept = list(chosen.values())
    summary.rows = len(kept)
    summary.failed = sum(row["status"] == "failed" for row, _ in kept)
    for _, src in kept:
        summary.kept_from[str(src.path)] = summary.kept_from.get(str(src.path), 0) + 1
    return kept, summary


def with_source(row: dict[str, Any], src: SourceRun) -> dict[str, Any]:
    """``row`` with its origin in ``info["source_run"]`` (a row merged before keeps the origin it has)."""
    info = dict(row.get("info") or {})
    info.setdefault(SOURCE_KEY, {"dir": str(src.path), "shard": src.shard})
    return {**row, "info": info}


def merged_meta(sources: list[SourceRun], summary: MergeSummary) -> dict[str, Any]:
    """The merged run's meta: the first input's entries, one config for the whole (no shard; the
    inputs' methods, datasets and seeds joined when they differ) and the list of inputs."""
    meta: dict[str, Any] = {}
    for src in sources:
        for key, value in src.meta.items():
            meta.setdefault(key, value)
    configs = [src.meta["config"] for src in sources if isinstance(src.meta.get("config"), dict)]
    if configs:
        config = {**configs[0], "shard": None}
        for key in LIST_KEYS:
            values = [c.get(key) for c in configs]
            if all(isinstance(v, list) for v in values):
                joined = list(dict.fromkeys(x for v in values for x in v))
                config[key] = sorted(joined) if key == "seeds" else joined
        meta["config"] = config
    meta["merged_from"] = [
        {
            "dir": str(src.path),
            "shard": src.shard,
            "rows": len(src.rows),
            "kept": summary.kept_from.get(str(src.path), 0),
            "code_version": (src.meta.get("environment") or {}).get("code_version"),
        }
        for src in sources
    ]
    return meta


# ------------------------------------------------------------------ writing


def check_output(out: Path, sources: list[Path]) -> bool:
    """Refuse an output that is an input or already holds something; returns whether it exists (empty)."""
    resolved = out.resolve()
    if any(resolved == s.resolve() for s in sources):
        raise UserError(f"the output {out} is also an input; merge into a new directory")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"the output {out} exists and is not a directory; merge into a new directory")
        if any(out.iterdir()):
            raise UserError(f"the output {out} is not empty; merge into a new (or empty) directory")
        return True
    return False


def merge_runs(out: Path | str, inputs: list[Path | str], prefer: str | None = None) -> MergeSummary:
    """Combine the run directories ``inputs`` into the new run directory ``out`` (rows, meta and
    artefacts; no report): every input is read and checked before anything is written, and a failed
    write leaves ``out`` as it was."""
    out = Path(out)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise UserError("merge needs at least one run directory to read")
    existed = check_output(out, paths)
    sources = [read_run(p) for p in paths]
    kept, summary = combine(sources, prefer)
    try:
        _write(out, kept, merged_meta(sources, summary), summary)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir(exist_ok=True)
        raise
    return summary


def _write(out: Path, kept: list[tuple[dict, SourceRun]], meta: dict[str, Any], summary: MergeSummary) -> None:
    store = ResultsStore(out)
    try:
        store.acquire_run_lock()
        for key, value in meta.items():
            store.set_meta(key, value)
        for row, src in kept:
            store.put(with_source(row, src))
    finally:
        store.close()
    for row, src in kept:
        artifact = src.path / ARTIFACT_DIR / f"{row['cell_key']}.npz"
        if artifact.is_file():
            (out / ARTIFACT_DIR).mkdir(exist_ok=True)
            shutil.copy2(artifact, out / ARTIFACT_DIR / artifact.name)
            summary.artifacts += 1
