"""The grid runner: expands a Config into cells, runs the pending ones through an
executor and records their rows.

Executors (``harness.pool``: each cell in a child process; ``harness.ray_executor``:
Ray tasks) take the cells and the cell function (``harness.cells.CellTask``) and
yield ``(cell, result)``; an exception, a crash of the worker or an exceeded time
limit becomes a failed row while the grid goes on. The runner is the only writer
to the results store and commits each row as it arrives. Running again skips
finished cells (resume).

Planning comes first and writes nothing when it refuses: it loads every pending
(dataset, seed) once and checks it can be fitted (missing files and unfittable data
are exit 2, not failed cells), and it refuses to resume onto rows of a ``file:``
dataset whose content has changed since (its SHA-256 is kept in the run's meta).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import gpu
from harness.cells import Cell, CellTask, one_line, preload_optimiser_imports
from harness.config import Config, resolve_names
from harness.errors import UserError
from harness.gpu import resolve_device
from harness.pool import cell_threads, reap_stale_workers, run_pool
from harness.shards import Shard, check_run_directory, parse_shard
from harness.signals import INTERRUPTS, interrupt_on_signals
from harness.store import DB_NAME, ResultsStore, dumps


def code_version() -> str:
    """The package version plus the git commit (and '+dirty') when available; read without writing to
    the repository (``git --no-optional-locks``: ``git status`` would otherwise refresh its index)."""
    from harness import PROJECT_ROOT, __version__

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=PROJECT_ROOT,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=5,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__


def make_cells(cfg: Config, *, include_skipped: bool = False) -> tuple[list[Cell], dict[str, str]]:
    """The grid of cells of ``cfg`` (method-major) and the methods skipped with reasons; the cells of
    the skipped methods too when ``include_skipped``."""
    meths, dsets, skipped = resolve_names(cfg)
    cells = [
        Cell(
            v.base,
            d,
            s,
            cfg.profile,
            tuple(sorted(cfg.params.get(v.base, {}).items())),
            cfg.device,
            cfg.sample_size,
            cfg.data_root,
            getattr(cfg, "budget", None),
            variant=v.params,
        )
        for d in dsets
        for v in meths
        if include_skipped or v.name not in skipped
        for s in cfg.seeds
    ]
    if cfg.params_from is not None:  # the parameters tuning chose, as cells of their own (named "X (tuned)")
        from harness.studies import apply_choices

        runnable = apply_choices([c for c in cells if c.name not in skipped], cfg.params_from)
        cells = runnable + [c for c in cells if c.name in skipped]
    return cells, skipped


def base_row(cell: Cell, cfg_hash: str, version: str, device: str | None = None) -> dict[str, Any]:
    """The row fields the parent knows; ``device`` is the planned one (the worker reports the real one)."""
    try:
        params = cell.params()
    except Exception:
        params = cell.method_params()
    return {
        "cell_key": cell.key,
        "method": cell.name,
        "dataset": cell.dataset,
        "seed": cell.seed,
        "profile": cell.profile,
        "params": params,
        "device": device if device is not None else resolve_device(cell.device),
        "code_version": version,
        "config_hash": cfg_hash,
    }


def cell_row(
    cell: Cell, result: dict[str, Any], cfg_hash: str, version: str, device: str | None = None
) -> dict[str, Any]:
    """The results row of ``cell``: identity fields and ``result``; a variant's row also records its
    base method and parameters in ``info["variant"]``."""
    row = {**base_row(cell, cfg_hash, version, device), **result}
    if cell.variant:
        row["info"] = {**(row.get("info") or {}), "variant": {"method": cell.method, "params": dict(cell.variant)}}
    if cell.tuning:
        row["info"] = {**(row.get("info") or {}), "tuning": json.loads(cell.tuning)}
    return row


@dataclass
class RunSummary:
    total: int = 0
    skipped_done: int = 0
    ok: int = 0
    failed: int = 0
    method_skips: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0
    failed_in_grid: int = 0  # cells of the grid whose row is failed, this run's or earlier ones
    grid_cells: int = 0  # runnable cells of the whole grid (``total`` counts this shard's)


def load_splits(cells: Iterable[Cell], parts: tuple[str, ...] = ("train", "val", "test")) -> dict:
    """Planning: load each (dataset, seed) of ``cells`` once and check it can be fitted and evaluated
    (``Splits.check`` of ``parts``; tuning leaves the test split out). A dataset whose files are missing
    or whose data cannot be fitted is a one-line UserError (exit 2) before any cell runs; returns the
    splits by (dataset, seed)."""
    import datasets
    from harness.sample_metrics import min_sample_size

    cache = {}
    for cell in cells:
        key = (cell.dataset, cell.seed)
        if key in cache:
            continue
        try:
            splits = datasets.get(cell.dataset).load(seed=cell.seed, root=cell.data_root)
        except UserError:
            raise
        except MemoryError:
            raise UserError(f"dataset {cell.dataset} does not fit in memory") from None
        except datasets.DataUnavailable as e:
            raise UserError(f"dataset {cell.dataset}: {e}") from None
        except Exception as e:  # whatever a loader raises is the dataset's fault, named here
            raise UserError(f"dataset {cell.dataset} (seed {cell.seed}) cannot be loaded: {one_line(e)}") from None
        splits.check(f"dataset {cell.dataset}", min_test_rows=min_sample_size(), parts=parts)
        cache[key] = splits
    return cache


#: Meta entry of a run directory: dataset name -> SHA-256 of its file's content (``file:`` datasets).
FINGERPRINTS = "data_fingerprints"


def data_fingerprints(names: Iterable[str]) -> dict[str, str]:
    """The content hash of each dataset of ``names`` whose data a user may replace (``Dataset.fingerprint``)."""
    import datasets

    out = {}
    for name in dict.fromkeys(names):
        fingerprint = datasets.get(name).fingerprint()
        if fingerprint is not None:
            out[name] = fingerprint
    return out


def changed_data(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """The datasets whose content hash differs from the one recorded when their rows were computed."""
    return [name for name, sha in now.items() if recorded.get(name, sha) != sha]


def check_fingerprints(store: ResultsStore, now: dict[str, str]) -> None:
    """Refuse to resume onto rows computed from other data: a ``file:`` dataset replaced since."""
    recorded = store.meta().get(FINGERPRINTS, {})
    for name in changed_data(recorded, now):
        raise UserError(
            f"{name} has changed since rows of it were computed in {store.run_dir} (content sha256 "
            f"{recorded[name][:12]}... then, {now[name][:12]}... now): use another --out for the new data, "
            "or restore the file"
        )


def open_existing_store(run_dir: Path) -> ResultsStore | None:
    """The run directory's store, checked and locked, when it has one (None otherwise: nothing is made)."""
    if not os.path.lexists(Path(run_dir) / DB_NAME):
        return None
    store = ResultsStore(run_dir, create=False)
    try:
        store.acquire_run_lock()
    except BaseException:
        store.close()
        raise
    return store


def run_grid(
    cfg: Config,
    run_dir: Path,
    *,
    isolate: bool = True,
    progress: bool = True,
    on_row: Callable[[dict], None] | None = None,
    retry_failed: bool = False,
) -> RunSummary:
    """Run every pending cell of ``cfg`` into ``run_dir``'s store; returns a summary."""
    run_dir = Path(run_dir)
    if not progress:
        from harness.toolkit.device import NO_PROGRESS_ENV

        os.environ[NO_PROGRESS_ENV] = "1"
    cells, skipped = make_cells(cfg, include_skipped=True)
    shard = parse_shard(cfg.shard) if cfg.shard is not None else None
    grid_cells = sum(c.name not in skipped for c in cells)
    if shard is not None:  # this job's share of the grid (harness/shards.py)
        cells = list(shard.select(cells))
    skipped_cells = [c for c in cells if c.name in skipped]
    cells = [c for c in cells if c.name not in skipped]
    device = resolve_device(cfg.device)
    finished = {"ok"} if retry_failed else {"ok", "failed"}  # a "skipped" cell runs once it can
    with interrupt_on_signals():
        fingerprints = data_fingerprints(c.dataset for c in cells)
        store = open_existing_store(run_dir)
        try:  # planning: a refusal here writes nothing
            if store is not None:
                check_shard_directory(store, shard)
                check_fingerprints(store, fingerprints)
            done = store.statuses() if store is not None else {}
            rechosen = rechosen_cells(store, cells) if store is not None else set()
            splits = load_splits(c for c in cells if done.get(c.key) not in finished or c.key in rechosen)
            if store is None:
                store = ResultsStore(run_dir)
                store.acquire_run_lock()
        except BaseException:
            if store is not None:
                store.close()
            raise
        reap_stale_workers(run_dir)
        summary = RunSummary(total=len(cells), method_skips=skipped, grid_cells=grid_cells)
        t_start = time.perf_counter()
        try:
            store.set_meta(FINGERPRINTS, {**store.meta().get(FINGERPRINTS, {}), **fingerprints})
            _run_pending(
                cfg,
                cells,
                skipped_cells,
                skipped,
                run_dir,
                store,
                summary,
                device,
                isolate,
                progress,
                on_row,
                finished,
                rechosen,
                splits,
            )
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            summary.seconds = time.perf_counter() - t_start
            try:
                statuses = store.statuses()
                summary.failed_in_grid = sum(statuses.get(c.key) == "failed" for c in cells)
            finally:
                store.close()
    return summary


def check_shard_directory(store: ResultsStore, shard: Shard | None) -> None:
    """Refuse (UserError) when ``store`` already holds another share of the grid than ``shard``."""
    check_run_directory(store.meta().get("config"), bool(store.statuses()), shard, str(store.run_dir))


@contextmanager
def signals_for_the_main_thread() -> Iterator[None]:
    """Threads started inside the block (tqdm's monitor) block the interrupt signals, so the kernel delivers
    them to the main thread, which runs Python's handlers. A signal that lands on another thread can stay
    unhandled while the main thread waits on its workers (seen with CPython 3.11: SIGTERM ignored for
    minutes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(INTERRUPTS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _run_pending(
    cfg: Config,
    cells: list[Cell],
    skipped_cells: list[Cell],
    skipped: dict[str, str],
    run_dir: Path,
    store: ResultsStore,
    summary: RunSummary,
    device: str,
    isolate: bool,
    progress: bool,
    on_row: Callable[[dict], None] | None,
    finished: set[str],
    rechosen: set[str],
    splits: dict,
) -> None:
    from tqdm.auto import tqdm

    store.set_meta("config", cfg.to_dict())
    env = environment(cfg.device)
    if env["device"] == "cuda":  # keep the GPU a previous session of this run recorded
        old = store.meta().get("environment", {})
        env = {**{k: v for k, v in old.items() if k.startswith("gpu") or k == "cuda_version"}, **env}
    store.set_meta("environment", env)
    done = store.statuses()
    pending = [c for c in cells if done.get(c.key) not in finished or c.key in rechosen]
    summary.skipped_done = len(cells) - len(pending)
    cfg_hash, version = cfg.hash(), code_version()

    def record_result(cell: Cell, result: dict[str, Any]) -> None:
        record(store, summary, cell_row(cell, result, cfg_hash, version, device), on_row)

    for cell in skipped_cells:  # unavailable here: a "skipped" row with the reason (a finished row stays)
        if done.get(cell.key) in (None, "skipped"):
            store.put(
                {
                    **base_row(cell, cfg_hash, version, device),
                    "status": "skipped",
                    "error": skipped[cell.name],
                    "metrics": {},
                    "timings": {},
                    "info": {},
                }
            )
    ray = cfg.executor == "ray"
    with signals_for_the_main_thread():  # tqdm starts a monitor thread with its first bar
        bar = tqdm(
            total=len(pending),
            desc="cells (ray)" if ray else "cells",
            unit="cell",
            disable=not progress,
            dynamic_ncols=True,
        )
    try:
        if ray:  # each Ray worker loads the splits its cells need
            from harness.ray_executor import run_ray  # Ray is an optional extra

            results = run_ray(pending, CellTask(run_dir), time_limit=cfg.cell_time_limit(), address=cfg.address)
        else:
            results = _local_results(cfg, pending, splits, run_dir, device, isolate, bar)
        try:
            for cell, result in results:
                record_result(cell, result)
                if ray:
                    bar.set_postfix_str(cell.label)
                bar.update()
        finally:
            results.close()  # stops the workers still running when the loop ends early
    finally:
        bar.close()


def rechosen_cells(store: ResultsStore, cells: list[Cell]) -> set[str]:
    """Keys of tuned cells whose stored row ran other parameters than tuning chooses now (a study that
    got more trials since): they run again and their rows are replaced."""
    tuned = {c.key: c for c in cells if c.tuned}
    if not tuned:
        return set()
    return {
        r["cell_key"]
        for r in store.rows()
        if r["cell_key"] in tuned and r.get("params") != json.loads(dumps(tuned[r["cell_key"]].params()))
    }


def _local_results(
    cfg: Config,
    pending: list[Cell],
    splits: dict,
    run_dir: Path,
    device: str,
    isolate: bool,
    bar: Any,
) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """The local executor's results: every cell, with the splits loaded while planning, in a worker
    process (``isolate``) or in this one."""
    if pending:  # once here rather than in every forked worker (it initialises no CUDA)
        preload_optimiser_imports()
    task = CellTask(run_dir, splits)
    if isolate:
        jobs = cfg.cell_jobs()
        return run_pool(
            pending,
            task,
            time_limit=cfg.cell_time_limit(),
            jobs=jobs,
            threads=cell_threads(jobs),
            on_start=lambda c: bar.set_postfix_str(c.label),
            device=device,
            run_dir=run_dir,
        )
    return ((c, task(c)) for c in pending)


def record(store: ResultsStore, summary: RunSummary, row: dict, on_row: Callable[[dict], None] | None) -> None:
    """Commit one row and count it; the first row from a GPU puts the GPU into the run's environment."""
    store.put(row)
    gpu_name = (row.get("info") or {}).get("gpu")
    if gpu_name:
        env = store.meta().get("environment", {})
        if env.get("gpu") != gpu_name:
            store.set_meta(
                "environment",
                {**env, **{k: v for k, v in row["info"].items() if k.startswith("gpu") or k == "cuda_version"}},
            )
    if row["status"] == "ok":
        summary.ok += 1
    else:
        summary.failed += 1
    if on_row is not None:
        on_row(row)


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware, stored with the run for the report. Touches no CUDA API."""
    import platform

    import numpy
    import torch

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "device": resolve_device(device),
        "cpu_count": os.cpu_count(),
        "code_version": code_version(),
        "float32_matmul_precision": gpu.matmul_precision(),
        "sample_metrics_device": gpu.SAMPLE_METRICS_DEVICE,
    }
    return env  # the GPU's name and memory come from the workers that use it (see record)
