"""The local executor: each cell in a child process, at most ``jobs`` at a time.

``run_pool(cells, cell_fn)`` yields ``(cell, result)`` as each cell ends: an
exception, a crash of the worker or an exceeded time limit becomes a failed
result (``harness.cells.failed_result``) while the others go on.

Start methods (:func:`start_method`): the parent never initialises CUDA
(``harness.gpu``). CUDA cells start in ``forkserver`` workers: a clean process
that imported torch once, forked per cell, with nothing of the parent's state.
CPU cells are ``fork``ed: no re-import of torch per cell (seconds each on a
loaded 2-core machine), the loaded splits shared copy-on-write, and methods
registered at run time (tests, notebooks) stay visible; that is safe because
the parent holds no CUDA context. Either way the worker receives the cell, its
cell function, the ``DENSITYBENCH_*`` settings (plugins, progress, precision)
and its thread count explicitly. Workers die with the parent (PR_SET_PDEATHSIG
and a watchdog on the parent's pid), and a run reaps stale workers of its run
directory before it starts (see :func:`reap_stale_workers`).
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import set_process_defaults
from harness.cells import Cell, failed_result, one_line
from harness.signals import ignore_interrupts

#: Longest single wait on the workers (s). Short, because a signal that arrives after Python last checked
#: for signals but before the wait's select() starts is not seen until select() returns: on a loaded
#: machine SIGTERM to a run then went unanswered until its worker's deadline (minutes to hours).
WAIT_SLICE = 0.5


#: Run-directory folder holding one file per live worker (pid and start time) for start-up reaping.
WORKERS_DIR = ".workers"


#: Overrides the start method of every cell worker: fork | forkserver | spawn (default: see start_method).
START_METHOD_ENV = "DENSITYBENCH_START_METHOD"


START_METHODS = ("fork", "forkserver", "spawn")


#: Modules a forkserver imports once, before forking workers (none of them initialises CUDA).
FORKSERVER_PRELOAD = [
    "numpy",
    "torch",
    "torch._dynamo",
    "harness.pool",
    "harness.cells",
    "harness.evaluate",
    "methods",
    "datasets",
]


#: Environment variables handed to every worker (plugins, progress, precision, ...).
ENV_PREFIX = "DENSITYBENCH_"


_PR_SET_PDEATHSIG = 1


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


def _child(
    conn,
    cell_fn: Callable[[Cell], dict[str, Any]],
    cell: Cell,
    threads: int | None,
    env: dict[str, str],
    parent_pid: int,
) -> None:
    """Body of a cell worker (any start method): everything it needs arrives as arguments."""
    _die_with_parent(parent_pid)
    ignore_interrupts()  # the parent handles Ctrl-C, SIGTERM and SIGHUP, and stops this worker (harness/signals.py)
    try:
        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock (a named semaphore)
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX) and k not in env]:
            del os.environ[key]  # a forkserver keeps the environment it started with
        os.environ.update(env)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        result = cell_fn(cell)
    except BaseException as e:
        result = failed_result(one_line(e))
    conn.send(result)
    conn.close()


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
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, seconds) a live process has used so far; None where /proc cannot tell."""
    stat = _proc_stat(pid)
    try:
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") if stat else None
    except (IndexError, ValueError, OSError):
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
    (folder / str(pid)).write_text(f"{pid} {_start_time(pid)} {os.getpid()}\n", encoding="utf-8")


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
        if not entry.is_file():  # not one of ours (a FIFO would block the read)
            continue
        try:
            pid_text, started, *_ = entry.read_text(encoding="utf-8").split() + [""]
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


def _start(
    cell: Cell,
    cell_fn: Callable[[Cell], dict[str, Any]],
    run_dir: Path | None,
    time_limit: float,
    threads: int | None,
    device: str = "cpu",
    env: dict[str, str] | None = None,
) -> _Worker:
    set_process_defaults()  # before a spawned or forkserver worker imports torch
    ctx = _context(start_method(device))
    recv, send = ctx.Pipe(duplex=False)
    env = worker_env(quiet=False) if env is None else env
    fn = cell_fn.for_cell(cell) if hasattr(cell_fn, "for_cell") else cell_fn  # what this cell needs, no more
    proc = ctx.Process(target=_child, args=(send, fn, cell, threads, env, os.getpid()), daemon=True)
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
    cpu_s = _cpu_seconds(w.proc.pid) if timed_out else None
    _reap(w)
    if result is not None:
        return result
    if timed_out:
        timings = {"time_limit_s": w.time_limit, **({"cpu_s": cpu_s} if cpu_s is not None else {})}
        return failed_result(f"TimeLimit: cell exceeded its time limit of {w.time_limit:g} s", timings=timings)
    code = w.proc.exitcode
    why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return failed_result(f"WorkerDied: the worker process died ({why})")


def run_pool(
    cells: Iterable[Cell],
    cell_fn: Callable[[Cell], dict[str, Any]],
    *,
    time_limit: float,
    jobs: int = 1,
    threads: int | None = None,
    on_start: Callable[[Cell], None] | None = None,
    device: str = "cpu",
    run_dir: Path | None = None,
) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Run ``cell_fn(cell)`` for each cell in a child process, at most ``jobs`` at a time; yield
    ``(cell, result)`` as each ends.

    A cell function with a ``for_cell(cell)`` method (``harness.cells.CellTask``) hands each worker
    only what its cell needs. ``device`` (the planned one) chooses the start method. ``threads`` sets
    torch's thread count in each child (None: this process's count). With several jobs the children's
    own progress bars are silenced (they would interleave). ``run_dir`` keeps one file per live worker
    (see ``reap_stale_workers``). Leaving the loop early (Ctrl-C, SIGTERM, or closing the generator)
    kills the children still running.
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
                worker = _start(cell, cell_fn, run_dir, time_limit, threads, device, env)
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
