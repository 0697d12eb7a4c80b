"""The grid runner: expands a Config into cells and runs the pending ones.

Each cell runs in a child process (``isolate=True``, the default), so an
exception, a crash of the worker or an exceeded time limit becomes a failed row
while the grid goes on; the parent is the only writer to the results store and
commits each row as it arrives. Running again skips finished cells (resume).

Start methods (:func:`start_method`): the parent never initialises CUDA
(``harness.gpu``). CUDA cells start in ``forkserver`` workers: a clean process
that imported torch once, forked per cell, with nothing of the parent's state.
CPU cells are ``fork``ed: no re-import of torch per cell (seconds each on a
loaded 2-core machine), the loaded splits shared copy-on-write, and methods
registered at run time (tests, notebooks) stay visible; that is safe because
the parent holds no CUDA context. Either way the worker receives the cell, its
splits, the ``DENSITYBENCH_*`` settings (plugins, progress, precision) and its
thread count explicitly. Workers die with the parent (PR_SET_PDEATHSIG and a
watchdog on the parent's pid), and a run reaps stale workers of its run
directory before it starts (see :func:`reap_stale_workers`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from harness import gpu
from harness.gpu import resolve_device
from harness.config import Config, resolve_names
from harness.store import ResultsStore
from harness.variants import Variant

ARTIFACT_DIR = "artifacts"
#: Longest single wait on the workers (s): a far deadline is reached in slices (select's limit is ~24 days).
WAIT_SLICE = 3600.0
#: Run-directory folder holding one file per live worker (pid and start time) for start-up reaping.
WORKERS_DIR = ".workers"
#: Overrides the start method of every cell worker: fork | forkserver | spawn (default: see start_method).
START_METHOD_ENV = "DENSITYBENCH_START_METHOD"
START_METHODS = ("fork", "forkserver", "spawn")
#: Modules a forkserver imports once, before forking workers (none of them initialises CUDA).
FORKSERVER_PRELOAD = ["numpy", "torch", "torch._dynamo", "harness.runner", "harness.evaluate", "methods", "datasets"]


@dataclass(frozen=True)
class Cell:
    """One (method, dataset, seed) of a grid, with its profile, overrides and device.

    ``method`` is the registered (base) method; ``variant`` the parameters of a method variant
    (harness/variants.py), applied over the config's ``overrides``; ``name`` the row's method name.
    """

    method: str
    dataset: str
    seed: int
    profile: str
    overrides: tuple[tuple[str, Any], ...] = ()
    device: str = "auto"
    sample_size: int = 5000
    data_root: str | None = None
    budget: float | None = None  # training seconds (``run --budget``); None: train to the planned steps
    variant: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        spec = [self.method, self.dataset, self.seed, self.profile, list(self.overrides), self.device, self.sample_size]
        if self.budget is not None:  # cells without a budget keep their keys (resume of older runs)
            spec.append({"budget": self.budget})
        if self.variant:  # plain methods keep the keys of earlier run directories
            spec.append(list(self.variant))
        return hashlib.sha1(json.dumps(spec, default=str).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return Variant(self.method, self.variant).name

    @property
    def label(self) -> str:
        return f"{self.name}/{self.dataset}/s{self.seed}"

    def method_params(self) -> dict[str, Any]:
        """The overrides of this cell: the config's ``[params.<method>]``, then the variant's."""
        return {**dict(self.overrides), **dict(self.variant)}

    def params(self) -> dict[str, Any]:
        import methods

        return methods.resolve_params(self.method, self.profile, self.method_params())


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
        Cell(v.base, d, s, cfg.profile, tuple(sorted(cfg.params.get(v.base, {}).items())), cfg.device,
             cfg.sample_size, cfg.data_root, getattr(cfg, "budget", None), variant=v.params)
        for d in dsets for v in meths if include_skipped or v.name not in skipped for s in cfg.seeds
    ]
    return cells, skipped


def start_method(device: str) -> str:
    """How a cell worker starts: ``forkserver`` for CUDA cells, ``fork`` for CPU cells (see the module
    docstring); ``$DENSITYBENCH_START_METHOD`` overrides both."""
    forced = os.environ.get(START_METHOD_ENV, "").strip()
    if forced:
        if forced not in START_METHODS:
            from harness.errors import UserError

            raise UserError(f"{START_METHOD_ENV} must be one of {', '.join(START_METHODS)}, got '{forced}'")
        return forced
    return "forkserver" if device.startswith("cuda") else "fork"


def base_row(cell: Cell, cfg_hash: str, version: str, device: str | None = None) -> dict[str, Any]:
    """The row fields the parent knows; ``device`` is the planned one (the worker reports the real one)."""
    try:
        params = cell.params()
    except Exception:  # noqa: BLE001
        params = cell.method_params()
    return {"cell_key": cell.key, "method": cell.name, "dataset": cell.dataset, "seed": cell.seed,
            "profile": cell.profile, "params": params,
            "device": device if device is not None else resolve_device(cell.device),
            "code_version": version, "config_hash": cfg_hash}


def cell_row(cell: Cell, result: dict[str, Any], cfg_hash: str, version: str, device: str | None = None
             ) -> dict[str, Any]:
    """The results row of ``cell``: identity fields and ``result``; a variant's row also records its
    base method and parameters in ``info["variant"]``."""
    row = {**base_row(cell, cfg_hash, version, device), **result}
    if cell.variant:
        row["info"] = {**(row.get("info") or {}), "variant": {"method": cell.method, "params": dict(cell.variant)}}
    return row


def one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def preload_optimiser_imports() -> None:
    """Import what torch's first optimiser imports (torch._dynamo: 4-5 s on 2 cores) before a fit's clock
    starts, so fit times and training budgets measure training, not a one-off import per worker. A no-op
    once imported: the local executor imports it in the parent, whose forked workers inherit it."""
    import torch._dynamo  # noqa: F401


def run_cell(cell: Cell, splits_cache: dict, run_dir: Path | None) -> dict[str, Any]:
    """Fit and evaluate one cell in this process; returns the row's status fields.

    The device is resolved here, in the process that uses it, and reported as the row's ``device``
    with the GPU's name and memory and the matmul-precision policy in ``info``.
    """
    import datasets
    import methods
    from harness.evaluate import evaluate_cell

    device_fields: dict[str, Any] = {}
    try:
        ds = datasets.get(cell.dataset)
        if (cell.dataset, cell.seed) not in splits_cache:
            splits_cache[(cell.dataset, cell.seed)] = ds.load(seed=cell.seed, root=cell.data_root)
        splits = splits_cache[(cell.dataset, cell.seed)]
        methods.get(cell.method)  # loads the registry (and plugin modules) before the device is resolved
        from harness.toolkit.device import resolve_device as torch_device

        device = str(torch_device(cell.device))
        device_fields = {"device": device, **gpu.device_info(device), **gpu.apply_precision_policy()}
        model = methods.create(cell.method, cell.profile, device=device, seed=cell.seed, **cell.method_params())
        model.budget_s = cell.budget
        preload_optimiser_imports()
        art = run_dir / ARTIFACT_DIR / f"{cell.key}.npz" if run_dir is not None else None
        out = evaluate_cell(model, ds, splits, seed=cell.seed, sample_size=cell.sample_size, artifact_path=art)
        out["info"] = {**out["info"], **{k: v for k, v in device_fields.items() if k != "device"}}
        return {"status": "ok", "error": None, **out, **({"device": device} if device_fields else {})}
    except BaseException as e:  # noqa: BLE001 - recorded as a failed row
        if isinstance(e, KeyboardInterrupt):
            raise
        info = {"traceback": traceback.format_exc(limit=8), **{k: v for k, v in device_fields.items() if k != "device"}}
        row = {"status": "failed", "error": one_line(e), "metrics": {}, "timings": {}, "info": info}
        if "device" in device_fields:
            row["device"] = device_fields["device"]
        return row


def _child(conn, cell: Cell, splits: Any, run_dir: Path | None, threads: int | None, env: dict[str, str],
           parent_pid: int) -> None:
    """Body of a cell worker (any start method): everything it needs arrives as arguments."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock (a named semaphore)
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX) and k not in env]:
            del os.environ[key]  # a forkserver keeps the environment it started with
        os.environ.update(env)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        cache = {} if splits is None else {(cell.dataset, cell.seed): splits}
        result = run_cell(cell, cache, run_dir)
    except BaseException as e:  # noqa: BLE001
        result = {"status": "failed", "error": one_line(e), "metrics": {}, "timings": {}, "info": {}}
    conn.send(result)
    conn.close()


#: Environment variables handed to every worker (plugins, progress, precision, ...).
ENV_PREFIX = "DENSITYBENCH_"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the harness process ends, even by SIGKILL.

    PR_SET_PDEATHSIG (Linux) kills a fork or spawn child when its parent dies; a forkserver
    child's parent is the server, so a watchdog thread also polls the harness's pid.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if not _alive(parent_pid):  # died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def _watch_parent(pid: int, every: float = 0.5) -> None:
    while _alive(pid):
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGKILL)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None (no such process, no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Is ``pid`` a running process (a zombie counts as dead)?"""
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not os.path.isdir("/proc")  # /proc exists but has no entry: gone


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" without /proc): with the pid, an identity."""
    stat = _proc_stat(pid)
    return stat[19] if stat is not None and len(stat) > 19 else ""


def _register_worker(run_dir: Path | None, pid: int) -> None:
    if run_dir is None:
        return
    folder = Path(run_dir) / WORKERS_DIR
    folder.mkdir(exist_ok=True)
    (folder / str(pid)).write_text(f"{pid} {_start_time(pid)} {os.getpid()}\n")


def _unregister_worker(run_dir: Path | None, pid: int | None) -> None:
    if run_dir is not None and pid is not None:
        (Path(run_dir) / WORKERS_DIR / str(pid)).unlink(missing_ok=True)


def reap_stale_workers(run_dir: Path) -> list[int]:
    """Kill workers of ``run_dir`` left by a run whose harness process died; returns their pids.

    Each live worker has a file ``.workers/PID`` (pid, start time, harness pid). Call it holding the
    run lock: the recorded harness is then gone, and a pid whose start time still matches is its worker.
    """
    folder = Path(run_dir) / WORKERS_DIR
    killed = []
    for entry in sorted(folder.glob("*")) if folder.is_dir() else []:
        try:
            pid_text, started, *_ = entry.read_text().split() + [""]
            pid = int(pid_text)
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        if pid != os.getpid() and _alive(pid) and started and _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        entry.unlink(missing_ok=True)
    return killed


@dataclass
class _Worker:
    """A child running one cell, with the read end of its result pipe."""

    cell: Cell
    proc: Any
    conn: Any
    deadline: float
    time_limit: float
    run_dir: Path | None = None


def _context(method: str):
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


def worker_env(quiet: bool) -> dict[str, str]:
    """The ``DENSITYBENCH_*`` settings a worker gets; ``quiet`` silences its progress bars (concurrent
    cells' bars would interleave)."""
    from harness.toolkit.device import NO_PROGRESS_ENV

    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    return {**env, NO_PROGRESS_ENV: "1"} if quiet else env


def _start(cell: Cell, splits: Any, run_dir: Path | None, time_limit: float, threads: int | None,
           device: str = "cpu", env: dict[str, str] | None = None) -> _Worker:
    ctx = _context(start_method(device))
    recv, send = ctx.Pipe(duplex=False)
    env = worker_env(quiet=False) if env is None else env
    proc = ctx.Process(target=_child, args=(send, cell, splits, run_dir, threads, env, os.getpid()), daemon=True)
    proc.start()
    send.close()
    _register_worker(run_dir, proc.pid)
    return _Worker(cell, proc, recv, time.monotonic() + time_limit, time_limit, run_dir)


def _reap(w: _Worker) -> None:
    """Kill the worker if it still runs (it timed out, or we are leaving), wait for it, close its pipe."""
    if w.proc.is_alive():
        w.proc.kill()
    w.proc.join(timeout=10)
    w.conn.close()
    _unregister_worker(w.run_dir, w.proc.pid)


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
             threads: int | None = None, on_start: Callable[[Cell], None] | None = None,
             device: str = "cpu") -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Run each cell in a child process, at most ``jobs`` at a time; yield ``(cell, result)`` as each ends.

    ``device`` (the planned one) chooses the start method. ``threads`` sets torch's thread count in
    each child (None: this process's count). With several jobs the children's own progress bars
    are silenced (they would interleave). Leaving the loop early (Ctrl-C, SIGTERM, or closing the
    generator) kills the children still running.
    """
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    env = worker_env(quiet=jobs > 1)
    queue, running = deque(cells), {}
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.popleft()
                worker = _start(cell, splits_cache.get((cell.dataset, cell.seed)), run_dir, time_limit, threads, device, env)
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
    failed_in_grid: int = 0  # cells of the grid whose row is failed, this run's or earlier ones


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
        from harness.toolkit.device import NO_PROGRESS_ENV

        os.environ[NO_PROGRESS_ENV] = "1"
    cells, skipped = make_cells(cfg, include_skipped=True)
    skipped_cells = [c for c in cells if c.name in skipped]
    cells = [c for c in cells if c.name not in skipped]
    device = resolve_device(cfg.device)
    with sigterm_as_interrupt():
        store = ResultsStore(run_dir)
        store.acquire_run_lock()
        reap_stale_workers(run_dir)
        summary = RunSummary(total=len(cells), method_skips=skipped)
        t_start = time.perf_counter()
        try:
            _run_pending(cfg, cells, skipped_cells, skipped, run_dir, store, summary, device, isolate, progress,
                         on_row, retry_failed)
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


def _run_pending(cfg: Config, cells: list[Cell], skipped_cells: list[Cell], skipped: dict[str, str], run_dir: Path,
                 store: ResultsStore, summary: RunSummary,
                 device: str, isolate: bool, progress: bool, on_row: Callable[[dict], None] | None,
                 retry_failed: bool) -> None:
    from tqdm.auto import tqdm

    store.set_meta("config", cfg.to_dict())
    env = environment(cfg.device)
    if env["device"] == "cuda":  # keep the GPU a previous session of this run recorded
        old = store.meta().get("environment", {})
        env = {**{k: v for k, v in old.items() if k.startswith("gpu") or k == "cuda_version"}, **env}
    store.set_meta("environment", env)
    done = store.statuses()
    finished = {"ok"} if retry_failed else {"ok", "failed"}  # a "skipped" cell runs once it can
    pending = [c for c in cells if done.get(c.key) not in finished]
    summary.skipped_done = len(cells) - len(pending)
    cfg_hash, version = cfg.hash(), code_version()
    for cell in skipped_cells:  # unavailable here: a "skipped" row with the reason (a finished row stays)
        if done.get(cell.key) in (None, "skipped"):
            store.put({**base_row(cell, cfg_hash, version, device), "status": "skipped", "error": skipped[cell.name],
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
                record(store, summary, cell_row(cell, result, cfg_hash, version, device), on_row)
                bar.update()
            else:
                runnable.append(cell)
        if runnable:  # once here rather than in every forked worker (it initialises no CUDA)
            preload_optimiser_imports()
        if isolate:
            jobs = cfg.cell_jobs()
            results = run_pool(runnable, splits_cache, run_dir, cfg.cell_time_limit(), jobs, cell_threads(jobs),
                               on_start=lambda c: bar.set_postfix_str(c.label), device=device)
        else:
            results = ((c, run_cell(c, splits_cache, run_dir)) for c in runnable)
        try:
            for cell, result in results:
                record(store, summary, cell_row(cell, result, cfg_hash, version, device), on_row)
                bar.update()
        finally:
            bar.close()


def record(store: ResultsStore, summary: RunSummary, row: dict, on_row: Callable[[dict], None] | None) -> None:
    """Commit one row and count it; the first row from a GPU puts the GPU into the run's environment."""
    store.put(row)
    gpu_name = (row.get("info") or {}).get("gpu")
    if gpu_name:
        env = store.meta().get("environment", {})
        if env.get("gpu") != gpu_name:
            store.set_meta("environment", {**env, **{k: v for k, v in row["info"].items()
                                                     if k.startswith("gpu") or k == "cuda_version"}})
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

    env = {"python": platform.python_version(), "platform": platform.platform(), "numpy": numpy.__version__,
           "torch": torch.__version__, "device": resolve_device(device), "cpu_count": os.cpu_count(),
           "code_version": code_version(), "float32_matmul_precision": gpu.matmul_precision(),
           "sample_metrics_device": gpu.SAMPLE_METRICS_DEVICE}
    return env  # the GPU's name and memory come from the workers that use it (see record)
