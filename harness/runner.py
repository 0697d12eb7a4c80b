"""The grid runner: expands a Config into cells and runs the pending ones.

Each cell runs in a forked child process (``isolate=True``, the default), so an
exception, a crash of the worker or an exceeded time limit becomes a failed row
while the grid goes on; the parent is the only writer to the results store and
commits each row as it arrives. Running again skips finished cells (resume).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import subprocess
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from harness.config import Config, resolve_names
from harness.store import ResultsStore

ARTIFACT_DIR = "artifacts"
#: Longest single wait on the workers (s): a far deadline is reached in slices (select's limit is ~24 days).
WAIT_SLICE = 3600.0


@dataclass(frozen=True)
class Cell:
    """One (method, dataset, seed) of a grid, with its profile, overrides and device."""

    method: str
    dataset: str
    seed: int
    profile: str
    overrides: tuple[tuple[str, Any], ...] = ()
    device: str = "auto"
    sample_size: int = 5000
    data_root: str | None = None
    budget: float | None = None  # training seconds (``run --budget``); None: train to the planned steps

    @property
    def key(self) -> str:
        spec = [self.method, self.dataset, self.seed, self.profile, list(self.overrides), self.device, self.sample_size]
        if self.budget is not None:  # cells without a budget keep their keys (resume of older runs)
            spec.append({"budget": self.budget})
        return hashlib.sha1(json.dumps(spec, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.method}/{self.dataset}/s{self.seed}"

    def params(self) -> dict[str, Any]:
        import methods

        return methods.resolve_params(self.method, self.profile, dict(self.overrides))


def code_version() -> str:
    """The package version plus the git commit (and '+dirty') when available."""
    from harness import PROJECT_ROOT, __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = "", ""
    return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__


def make_cells(cfg: Config, *, include_skipped: bool = False) -> tuple[list[Cell], dict[str, str]]:
    """The grid of cells of ``cfg`` (method-major) and the methods skipped with reasons; the cells of
    the skipped methods too when ``include_skipped``."""
    meths, dsets, skipped = resolve_names(cfg)
    cells = [
        Cell(m, d, s, cfg.profile, tuple(sorted(cfg.params.get(m, {}).items())), cfg.device,
             cfg.sample_size, cfg.data_root, getattr(cfg, "budget", None))
        for d in dsets for m in meths if include_skipped or m not in skipped for s in cfg.seeds
    ]
    return cells, skipped


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def base_row(cell: Cell, cfg_hash: str, version: str) -> dict[str, Any]:
    try:
        params = cell.params()
    except Exception:  # noqa: BLE001
        params = dict(cell.overrides)
    return {"cell_key": cell.key, "method": cell.method, "dataset": cell.dataset, "seed": cell.seed,
            "profile": cell.profile, "params": params, "device": resolve_device(cell.device),
            "code_version": version, "config_hash": cfg_hash}


def one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def preload_optimiser_imports() -> None:
    """Import what torch's first optimiser imports (torch._dynamo: 4-5 s on 2 cores) before a fit's clock
    starts, so fit times and training budgets measure training, not a one-off import per worker. A no-op
    once imported: the local executor imports it in the parent, whose forked workers inherit it."""
    import torch._dynamo  # noqa: F401


def run_cell(cell: Cell, splits_cache: dict, run_dir: Path | None) -> dict[str, Any]:
    """Fit and evaluate one cell in this process; returns the row's status fields."""
    import datasets
    import methods
    from harness.evaluate import evaluate_cell

    try:
        ds = datasets.get(cell.dataset)
        if (cell.dataset, cell.seed) not in splits_cache:
            splits_cache[(cell.dataset, cell.seed)] = ds.load(seed=cell.seed, root=cell.data_root)
        splits = splits_cache[(cell.dataset, cell.seed)]
        model = methods.create(cell.method, cell.profile, device=cell.device, seed=cell.seed, **dict(cell.overrides))
        model.budget_s = cell.budget
        preload_optimiser_imports()
        art = run_dir / ARTIFACT_DIR / f"{cell.key}.npz" if run_dir is not None else None
        out = evaluate_cell(model, ds, splits, seed=cell.seed, sample_size=cell.sample_size, artifact_path=art)
        return {"status": "ok", "error": None, **out}
    except BaseException as e:  # noqa: BLE001 - recorded as a failed row
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"status": "failed", "error": one_line(e), "metrics": {}, "timings": {},
                "info": {"traceback": traceback.format_exc(limit=8)}}


def _child(conn, cell: Cell, splits_cache: dict, run_dir: Path | None, threads: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    try:
        if threads is not None:  # one of several concurrent cells: no interleaved inner progress bars
            from methods._torch import NO_PROGRESS_ENV

            os.environ[NO_PROGRESS_ENV] = "1"
            import torch

            torch.set_num_threads(threads)
        result = run_cell(cell, splits_cache, run_dir)
    except BaseException as e:  # noqa: BLE001
        result = {"status": "failed", "error": one_line(e), "metrics": {}, "timings": {}, "info": {}}
    conn.send(result)
    conn.close()


@dataclass
class _Worker:
    """A forked child running one cell, with the read end of its result pipe."""

    cell: Cell
    proc: Any
    conn: Any
    deadline: float
    time_limit: float


def _start(cell: Cell, splits_cache: dict, run_dir: Path | None, time_limit: float, threads: int | None) -> _Worker:
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, cell, splits_cache, run_dir, threads), daemon=True)
    proc.start()
    send.close()
    return _Worker(cell, proc, recv, time.monotonic() + time_limit, time_limit)


def _reap(w: _Worker) -> None:
    """Kill the worker if it still runs (it timed out, or we are leaving), wait for it, close its pipe."""
    if w.proc.is_alive():
        w.proc.kill()
    w.proc.join(timeout=10)
    w.conn.close()


def _finish(w: _Worker, timed_out: bool) -> dict[str, Any]:
    """Collect a worker's result (its pipe is readable, or its deadline passed); a dead worker or an
    exceeded time limit gives a failed result."""
    result = None
    if not timed_out:
        try:
            result = w.conn.recv()
        except EOFError:  # the child died before sending
            pass
    _reap(w)
    if result is not None:
        return result
    if timed_out:
        return {"status": "failed", "error": f"TimeLimit: cell exceeded its time limit of {w.time_limit:g} s",
                "metrics": {}, "timings": {"time_limit_s": w.time_limit}, "info": {}}
    code = w.proc.exitcode
    why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return {"status": "failed", "error": f"WorkerDied: the worker process died ({why})",
            "metrics": {}, "timings": {}, "info": {}}


def run_pool(cells: Iterable[Cell], splits_cache: dict, run_dir: Path | None, time_limit: float, jobs: int = 1,
             threads: int | None = None, on_start: Callable[[Cell], None] | None = None
             ) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Run each cell in a forked child, at most ``jobs`` at a time; yield ``(cell, result)`` as each ends.

    ``threads`` sets torch's thread count in each child and silences the children's own progress bars,
    which would interleave (None, for one job at a time, leaves both). Leaving the loop early
    (Ctrl-C, or closing the generator) kills the children still running.
    """
    queue, running = deque(cells), {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                worker = _start(queue.popleft(), splits_cache, run_dir, time_limit, threads)
                running[worker.conn] = worker
                if on_start is not None:
                    on_start(worker.cell)
            wait = min(WAIT_SLICE, max(0.0, min(w.deadline for w in running.values()) - time.monotonic()))
            for conn in mp_connection.wait(list(running), timeout=wait):
                worker = running.pop(conn)
                yield worker.cell, _finish(worker, timed_out=False)
            now = time.monotonic()
            for conn in [c for c, w in running.items() if w.deadline <= now]:
                worker = running.pop(conn)
                yield worker.cell, _finish(worker, timed_out=True)
    finally:
        for worker in running.values():
            _reap(worker)


def cell_threads(jobs: int) -> int | None:
    """torch threads per cell when ``jobs`` cells share the CPU cores; None (torch's default) for one job."""
    return None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)


@dataclass
class RunSummary:
    total: int = 0
    skipped_done: int = 0
    ok: int = 0
    failed: int = 0
    method_skips: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0


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
        except Exception as e:  # noqa: BLE001 - the cells of this dataset fail, the grid goes on
            errors[key] = one_line(e)
    return cache, errors


def run_grid(cfg: Config, run_dir: Path, *, isolate: bool = True, progress: bool = True,
             on_row: Callable[[dict], None] | None = None, retry_failed: bool = False) -> RunSummary:
    """Run every pending cell of ``cfg`` into ``run_dir``'s store; returns a summary."""
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    if not progress:
        from methods._torch import NO_PROGRESS_ENV

        os.environ[NO_PROGRESS_ENV] = "1"
    cells, skipped = make_cells(cfg, include_skipped=True)
    skipped_cells = [c for c in cells if c.method in skipped]
    cells = [c for c in cells if c.method not in skipped]
    store = ResultsStore(run_dir)
    store.acquire_run_lock()
    summary = RunSummary(total=len(cells), method_skips=skipped)
    t_start = time.perf_counter()
    try:
        store.set_meta("config", cfg.to_dict())
        store.set_meta("environment", environment(cfg.device))
        done = store.statuses()
        finished = {"ok"} if retry_failed else {"ok", "failed"}  # a "skipped" cell runs once it can
        pending = [c for c in cells if done.get(c.key) not in finished]
        summary.skipped_done = len(cells) - len(pending)
        cfg_hash, version = cfg.hash(), code_version()
        for cell in skipped_cells:  # unavailable here: a "skipped" row with the reason (a finished row stays)
            if done.get(cell.key) in (None, "skipped"):
                store.put({**base_row(cell, cfg_hash, version), "status": "skipped", "error": skipped[cell.method],
                           "metrics": {}, "timings": {}, "info": {}})
        if cfg.executor == "ray":
            from harness.ray_executor import run_ray

            run_ray(pending, cfg, run_dir, store, summary, cfg_hash, version, progress=progress, on_row=on_row)
        else:
            splits_cache, load_errors = load_splits(pending)
            bar = tqdm(total=len(pending), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
            runnable = []
            for cell in pending:
                if (cell.dataset, cell.seed) in load_errors:
                    result = {"status": "failed", "error": load_errors[(cell.dataset, cell.seed)],
                              "metrics": {}, "timings": {}, "info": {}}
                    record(store, summary, {**base_row(cell, cfg_hash, version), **result}, on_row)
                    bar.update()
                else:
                    runnable.append(cell)
            if runnable:  # once here rather than in every forked worker (it initialises no CUDA)
                preload_optimiser_imports()
            if isolate:
                jobs = cfg.cell_jobs()
                results = run_pool(runnable, splits_cache, run_dir, cfg.cell_time_limit(), jobs, cell_threads(jobs),
                                   on_start=lambda c: bar.set_postfix_str(c.label))
            else:
                results = ((c, run_cell(c, splits_cache, run_dir)) for c in runnable)
            for cell, result in results:
                record(store, summary, {**base_row(cell, cfg_hash, version), **result}, on_row)
                bar.update()
            bar.close()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - t_start
        store.close()
    return summary


def record(store: ResultsStore, summary: RunSummary, row: dict, on_row: Callable[[dict], None] | None) -> None:
    """Commit one row and count it."""
    store.put(row)
    if row["status"] == "ok":
        summary.ok += 1
    else:
        summary.failed += 1
    if on_row is not None:
        on_row(row)


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware, stored with the run for the report."""
    import platform

    import numpy
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(), "numpy": numpy.__version__,
           "torch": torch.__version__, "device": resolve_device(device), "cpu_count": os.cpu_count(),
           "code_version": code_version()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
