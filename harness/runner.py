"""The grid runner: expands a Config into cells, runs the pending ones through an
executor and records their rows.

Executors (``harness.pool``: each cell in a child process; ``harness.ray_executor``:
Ray tasks) take the cells and the cell function (``harness.cells.CellTask``) and
yield ``(cell, result)``; an exception, a crash of the worker or an exceeded time
limit becomes a failed row while the grid goes on. The runner is the only writer
to the results store and commits each row as it arrives. Running again skips
finished cells (resume).
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
from harness.cells import Cell, CellTask, failed_result, one_line, preload_optimiser_imports
from harness.config import Config, resolve_names
from harness.errors import UserError
from harness.gpu import resolve_device
from harness.pool import cell_threads, reap_stale_workers, run_pool
from harness.shards import Shard, check_run_directory, parse_shard
from harness.store import ResultsStore, dumps


def code_version() -> str:
    """The package version plus the git commit (and '+dirty') when available."""
    from harness import PROJECT_ROOT, __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
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


def load_splits(cells: Iterable[Cell]) -> tuple[dict, dict[tuple[str, int], str]]:
    """Load each (dataset, seed) once; returns the cache and the load errors."""
    import datasets

    cache, errors = {}, {}
    for cell in cells:
        key = (cell.dataset, cell.seed)
        if key in cache or key in errors:
            continue
        try:
            cache[key] = datasets.get(cell.dataset).load(seed=cell.seed, root=cell.data_root)
        except Exception as e:  # the cells of this dataset fail, the grid goes on
            errors[key] = one_line(e)
    return cache, errors


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
    with sigterm_as_interrupt():
        store = ResultsStore(run_dir)
        store.acquire_run_lock()
        check_shard_directory(store, shard)
        reap_stale_workers(run_dir)
        summary = RunSummary(total=len(cells), method_skips=skipped, grid_cells=grid_cells)
        t_start = time.perf_counter()
        try:
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
                retry_failed,
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
    """Refuse (UserError) when ``store`` already holds another share of the grid than ``shard``; the
    store is closed first."""
    try:
        check_run_directory(store.meta().get("config"), bool(store.statuses()), shard, str(store.run_dir))
    except UserError:
        store.close()
        raise


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM like Ctrl-C (KeyboardInterrupt) inside the block: finished cells are kept,
    workers stopped, the run lock released. Only in the main thread (where signals arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_for_the_main_thread() -> Iterator[None]:
    """Threads started inside the block (tqdm's monitor) block SIGINT and SIGTERM, so the kernel delivers
    them to the main thread, which runs Python's handlers. A signal that lands on another thread can stay
    unhandled while the main thread waits on its workers (seen with CPython 3.11: SIGTERM ignored for
    minutes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
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
    retry_failed: bool,
) -> None:
    from tqdm.auto import tqdm

    store.set_meta("config", cfg.to_dict())
    env = environment(cfg.device)
    if env["device"] == "cuda":  # keep the GPU a previous session of this run recorded
        old = store.meta().get("environment", {})
        env = {**{k: v for k, v in old.items() if k.startswith("gpu") or k == "cuda_version"}, **env}
    store.set_meta("environment", env)
    done = store.statuses()
    finished = {"ok"} if retry_failed else {"ok", "failed"}  # a "skipped" cell runs once it can
    rechosen = rechosen_cells(store, cells)
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
            results = _local_results(cfg, pending, run_dir, device, isolate, bar, record_result)
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
    run_dir: Path,
    device: str,
    isolate: bool,
    bar: Any,
    record_result: Callable[[Cell, dict[str, Any]], None],
) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """The local executor's results: splits loaded here once (a dataset that fails to load fails its cells
    at once), then every cell in a worker process (``isolate``) or in this one."""
    splits_cache, load_errors = load_splits(pending)
    runnable = []
    for cell in pending:
        if (cell.dataset, cell.seed) in load_errors:
            record_result(cell, failed_result(load_errors[(cell.dataset, cell.seed)]))
            bar.update()
        else:
            runnable.append(cell)
    if runnable:  # once here rather than in every forked worker (it initialises no CUDA)
        preload_optimiser_imports()
    task = CellTask(run_dir, splits_cache)
    if isolate:
        jobs = cfg.cell_jobs()
        return run_pool(
            runnable,
            task,
            time_limit=cfg.cell_time_limit(),
            jobs=jobs,
            threads=cell_threads(jobs),
            on_start=lambda c: bar.set_postfix_str(c.label),
            device=device,
            run_dir=run_dir,
        )
    return ((c, task(c)) for c in runnable)


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
