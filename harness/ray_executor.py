"""Ray executor (``--executor ray``): every cell becomes a Ray task.

``run_ray(cells, cell_fn)`` yields ``(cell, result)`` as each task ends, like
the local pool; the runner records the rows. Resources come from the cell: one
GPU for a CUDA cell, one CPU otherwise. A task whose worker dies is retried once
by Ray (``max_retries=1``) and then gives a failed result; a cell that exceeds
its time limit raises inside the task. Leaving the loop early (Ctrl-C) cancels
the outstanding tasks.

Connecting to a cluster (``--address HOST:PORT``) checks first that the head's port answers,
and a refused connection (most often token authentication: Ray 2.59+ turns it on for
``ray start --head``) becomes one line naming the cause and the fix (docs/cluster.md).

Ray is an optional extra: ``pip install -e '.[distributed]'``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from harness import set_process_defaults
from harness.cells import Cell, failed_result, one_line
from harness.errors import UserError
from harness.pool import WAIT_SLICE


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


#: Addresses that start or find a cluster on this machine (ray.init's own words).
LOCAL_ADDRESSES = ("auto", "local")
#: Where Ray looks for the cluster's token when RAY_AUTH_MODE=token (docs.ray.io, "Ray token authentication").
TOKEN_PLACES = "RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"
#: Seconds the reachability check waits for the head's port.
CONNECT_CHECK_S = 5.0


def _init_ray(address: str | None):
    """Ray, initialised: a local cluster for no address, else connected to the cluster at ``address``
    (a failure is one UserError line naming the likely cause: authentication or the address)."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[distributed]'") from None
    if ray.is_initialized():
        return ray
    if address in (None, "", *LOCAL_ADDRESSES):  # a local cluster, started or found by Ray
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return ray
    check_reachable(address)
    with stderr_held() as held:  # Ray's core logs a line a second while it retries a refused connection
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as e:  # every way of not connecting gets its one line
            held.drop()
            raise UserError(connection_failure(address, e)) from None
    return ray


def split_address(address: str) -> tuple[str, int] | None:
    """``"host:port"`` or ``"ray://host:port"`` (IPv6 hosts in brackets) -> (host, port); None when the
    address names no port."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(address: str) -> None:
    """A one-line UserError, at once, when nothing answers at ``address`` (Ray itself retries for minutes);
    nothing to check for the addresses of a local cluster ("auto", "local")."""
    if address in LOCAL_ADDRESSES:
        return
    parts = split_address(address)
    if parts is None:
        raise UserError(f"Ray address '{address}' names no port: give it as HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection(parts, timeout=CONNECT_CHECK_S).close()
    except OSError as e:
        raise UserError(
            f"cannot reach a Ray cluster at {address} ({e.strerror or e}): check the address (the head's "
            "`ray start --head --port PORT` prints it; `ray status` on the head says whether it runs) and "
            "that the port is open from this machine"
        ) from None


def connection_failure(address: str, exc: BaseException) -> str:
    """The one line for a failed ``ray.init(address)``: the likely cause (authentication or address)
    and its fix."""
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    if "InvalidAuthToken" in text or "Unauthenticated" in text:
        if not token_mode:
            return (
                f"the Ray cluster at {address} requires token authentication and this driver sent no token: "
                f"set RAY_AUTH_MODE=token for the driver, with the cluster's token in {TOKEN_PLACES} "
                "(`ray get-auth-token` on the head prints it)"
            )
        return (
            f"the Ray cluster at {address} refused this driver's token: the token in {TOKEN_PLACES} "
            "is not the cluster's; use the head's (`ray get-auth-token` on the head prints it)"
        )
    if "AuthenticationError" in text:  # token mode on, but no usable token here
        return (
            f"Ray token authentication is on (RAY_AUTH_MODE=token) but this driver has no usable token "
            f"({one_line(chain[-1])}): put the cluster's token in {TOKEN_PLACES}"
        )
    return (
        f"cannot connect to the Ray cluster at {address} ({one_line(exc)}): check the address (the head's "
        "`ray start --head --port PORT` prints it) and that this machine runs the cluster's Ray version"
    )


class _HeldStream:
    """What ``stderr_held`` captured: written back to stderr on leaving unless dropped."""

    def __init__(self) -> None:
        self.keep = True

    def drop(self) -> None:
        self.keep = False


@contextmanager
def stderr_held() -> Iterator[_HeldStream]:
    """Hold what is written to file descriptor 2 (C++ logs too) inside the block, and write it back to
    stderr on leaving unless ``drop()`` was called."""
    held = _HeldStream()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if held.keep:
                buffer.seek(0)
                sys.stderr.write(buffer.read().decode(errors="replace"))


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
            done, _ = ray.wait(list(refs), num_returns=1, timeout=WAIT_SLICE)  # short: see harness.pool.WAIT_SLICE
            if not done:
                continue
            ref = done[0]
            cell = refs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # lost worker (after one retry), task error
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
