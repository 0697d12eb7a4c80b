"""Ray executor (``--executor ray``): every cell becomes a Ray task.

``run_ray(cells, cell_fn)`` yields ``(cell, result)`` as each task ends, like
the local pool; the runner records the rows. Resources come from the cell: one
GPU for a CUDA cell, one CPU otherwise. A task whose worker dies is retried once
by Ray (``max_retries=1``) and then gives a failed result; a cell that exceeds
its time limit raises inside the task. Leaving the loop early (Ctrl-C) cancels
the outstanding tasks.

Ray is an optional extra: ``pip install -e '.[distributed]'``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from harness import set_process_defaults
from harness.cells import Cell, failed_result, one_line
from harness.errors import UserError


class CellTimeout(Exception):
    """The cell ran past its time limit."""


def _run_with_limit(cell_fn: Callable[[Cell], dict[str, Any]], cell: Cell, time_limit: float) -> dict[str, Any]:
    """Body of a Ray task: ``cell_fn(cell)`` in this worker with a time limit."""
    set_process_defaults()
    use_alarm = threading.current_thread() is threading.main_thread()
    if use_alarm:

        def on_alarm(signum, frame):
            raise CellTimeout(f"cell exceeded its time limit of {time_limit:g} s")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        result = cell_fn(cell)
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


def run_ray(
    cells: Iterable[Cell], cell_fn: Callable[[Cell], dict[str, Any]], *, time_limit: float, address: str | None = None
) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Run ``cell_fn(cell)`` for each cell as a Ray task (``cell_fn`` must pickle); yield ``(cell, result)``
    as each ends. ``address``: the Ray cluster's (None: start or join a local one)."""
    ray = _init_ray(address)
    task = ray.remote(max_retries=1, retry_exceptions=False)(_run_with_limit)
    refs: dict[Any, Cell] = {}
    for cell in cells:
        opts = {"num_gpus": 1, "num_cpus": 1} if _wants_gpu(cell, ray) else {"num_cpus": 1}
        refs[task.options(**opts).remote(cell_fn, cell, time_limit)] = cell
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            ref = done[0]
            cell = refs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - lost worker (after one retry), task error
                result = failed_result(_ray_error(e))
            yield cell, result
    finally:  # interrupted, or the caller stopped early
        for ref in refs:
            ray.cancel(ref, force=True)


def _ray_error(exc: BaseException) -> str:
    name = type(exc).__name__
    if "WorkerCrashed" in name or "ActorDied" in name or "NodeDied" in name or "OwnerDied" in name:
        return "WorkerDied: the Ray worker died (retried once)"
    return one_line(exc)
