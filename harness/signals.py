"""The process's one signal policy: SIGINT (Ctrl-C), SIGTERM and SIGHUP interrupt a harness process
wherever they arrive (planning, cells, report writing) as ``KeyboardInterrupt``, which the CLI turns
into exit status 130 with every finished row kept. Writing the report or salvaging a database is a
critical section: a signal during it is remembered and acted on once it is done (a second signal
interrupts at once), so a report of the finished rows is never left half written. Cell workers ignore
the three signals: the harness stops them itself (and they die with it).

Example::

    with interrupt_on_signals():
        ...                                    # SIGTERM raises KeyboardInterrupt here
        with deferred_interrupts("writing the report") as deferred:
            write_report(run_dir)
        if deferred.signal is not None: ...    # exit 130 after the report is complete
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: The signals that interrupt a harness process (each handled like Ctrl-C).
INTERRUPTS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _handlers(handler) -> Iterator[None]:
    """``handler`` for every signal of INTERRUPTS not ignored (nohup's SIG_IGN stays) inside the block;
    the previous handlers after it. Outside the main thread (where signals are not delivered) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in INTERRUPTS:
        current = signal.getsignal(signum)
        if current is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Inside the block each interrupt signal raises KeyboardInterrupt, as Ctrl-C does."""
    with _handlers(_raise_interrupt):
        yield


@dataclass
class Deferred:
    """The first interrupt signal received inside ``deferred_interrupts`` (None: none)."""

    signal: int | None = None


@contextmanager
def deferred_interrupts(what: str) -> Iterator[Deferred]:
    """A critical section: the first interrupt signal inside it is recorded in the yielded ``Deferred``
    (and said on stderr) while ``what`` finishes; a second one raises KeyboardInterrupt at once."""
    state = Deferred()

    def remember(signum, frame) -> None:
        if state.signal is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        state.signal = signum
        print(f"interrupted: finishing {what} first (signal again to stop at once)", file=sys.stderr)

    with _handlers(remember):
        yield state


def ignore_interrupts() -> None:
    """A cell worker's policy: ignore the interrupt signals (its harness process stops it)."""
    for signum in INTERRUPTS:
        signal.signal(signum, signal.SIG_IGN)
