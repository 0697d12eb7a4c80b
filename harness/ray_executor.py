"""Ray executor: every pending cell becomes a Ray task (``--executor ray``).

The driver is the only writer to the results store: tasks return their row's
fields and the driver commits each as it arrives, so resume and reports work
exactly as with the local executor. Resources come from the cell: one GPU for a
CUDA cell, one CPU otherwise. A task whose worker dies is retried once by Ray
(``max_retries=1``) and then recorded as failed; a cell that exceeds its time
limit raises inside the task. Ctrl-C cancels outstanding tasks.

Ray is an optional extra: ``pip install -e '.[distributed]'``.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Callable

from harness.errors import UserError
from harness.runner import Cell, RunSummary, cell_row, one_line, record, run_cell

#: Splits loaded by this worker process, reused by every cell it runs.
_WORKER_SPLITS: dict = {}


class CellTimeout(Exception):
    """The cell ran past its time limit."""


def _run_with_limit(cell: Cell, run_dir: str, time_limit: float) -> dict[str, Any]:
    """Body of a Ray task: run the cell in this worker with a time limit."""
    use_alarm = threading.current_thread() is threading.main_thread()
    if use_alarm:
        def on_alarm(signum, frame):
            raise CellTimeout(f"cell exceeded its time limit of {time_limit:g} s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        result = run_cell(cell, _WORKER_SPLITS, Path(run_dir))
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if result["status"] == "failed" and result["error"].startswith("CellTimeout"):
        result["error"] = "TimeLimit: " + result["error"].split(": ", 1)[1]
    return result


def _init_ray(address: str | None):
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[distributed]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def _wants_gpu(cell: Cell, ray) -> bool:
    if cell.device == "cuda":
        return True
    return cell.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0


def run_ray(pending: list[Cell], cfg, run_dir: Path, store, summary: RunSummary, cfg_hash: str, version: str,
            *, progress: bool = True, on_row: Callable[[dict], None] | None = None) -> None:
    """Run ``pending`` cells as Ray tasks, committing each row as it arrives."""
    from tqdm.auto import tqdm

    ray = _init_ray(cfg.address)
    task = ray.remote(max_retries=1, retry_exceptions=False)(_run_with_limit)
    refs: dict[Any, Cell] = {}
    for cell in pending:
        gpu = _wants_gpu(cell, ray)
        opts = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": 1}
        refs[task.options(**opts).remote(cell, str(run_dir), cfg.cell_time_limit())] = cell
    bar = tqdm(total=len(refs), desc="cells (ray)", unit="cell", disable=not progress, dynamic_ncols=True)
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            ref = done[0]
            cell = refs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - lost worker (after one retry), task error
                result = {"status": "failed", "error": _ray_error(e), "metrics": {}, "timings": {}, "info": {}}
            record(store, summary, cell_row(cell, result, cfg_hash, version), on_row)
            bar.set_postfix_str(cell.label)
            bar.update()
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()


def _ray_error(exc: BaseException) -> str:
    name = type(exc).__name__
    if "WorkerCrashed" in name or "ActorDied" in name or "NodeDied" in name or "OwnerDied" in name:
        return "WorkerDied: the Ray worker died (retried once)"
    return one_line(exc)
