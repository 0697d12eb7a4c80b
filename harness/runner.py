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
import os
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.config import Config, resolve_names
from harness.store import ResultsStore

ARTIFACT_DIR = "artifacts"


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

    @property
    def key(self) -> str:
        spec = [self.method, self.dataset, self.seed, self.profile, list(self.overrides), self.device, self.sample_size]
        return hashlib.sha1(json.dumps(spec, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.method}/{self.dataset}/s{self.seed}"

    def params(self) -> dict[str, Any]:
        import methods

        return {**methods.profile_params(self.method, self.profile), **dict(self.overrides)}


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


def make_cells(cfg: Config) -> tuple[list[Cell], dict[str, str]]:
    """The grid of cells of ``cfg`` (method-major) and the methods skipped with reasons."""
    meths, dsets, skipped = resolve_names(cfg)
    cells = [
        Cell(m, d, s, cfg.profile, tuple(sorted(cfg.params.get(m, {}).items())), cfg.device,
             cfg.sample_size, cfg.data_root)
        for d in dsets for m in meths if m not in skipped for s in cfg.seeds
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
        art = run_dir / ARTIFACT_DIR / f"{cell.key}.npz" if run_dir is not None else None
        out = evaluate_cell(model, ds, splits, seed=cell.seed, sample_size=cell.sample_size, artifact_path=art)
        return {"status": "ok", "error": None, **out}
    except BaseException as e:  # noqa: BLE001 - recorded as a failed row
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"status": "failed", "error": one_line(e), "metrics": {}, "timings": {},
                "info": {"traceback": traceback.format_exc(limit=8)}}


def _child(conn, cell: Cell, splits_cache: dict, run_dir: Path | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    try:
        result = run_cell(cell, splits_cache, run_dir)
    except BaseException as e:  # noqa: BLE001
        result = {"status": "failed", "error": one_line(e), "metrics": {}, "timings": {}, "info": {}}
    conn.send(result)
    conn.close()


def run_isolated(cell: Cell, splits_cache: dict, run_dir: Path | None, time_limit: float) -> dict[str, Any]:
    """Run a cell in a forked child; a dead worker or an exceeded time limit gives a failed result."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, cell, splits_cache, run_dir), daemon=True)
    proc.start()
    send.close()
    result, timed_out = None, False
    try:
        if recv.poll(time_limit):  # True on data or on EOF (the child died)
            result = recv.recv()
        else:
            timed_out = True
    except EOFError:
        pass
    finally:
        if result is None and proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        recv.close()
    if result is not None:
        return result
    if timed_out:
        return {"status": "failed", "error": f"TimeLimit: cell exceeded its time limit of {time_limit:g} s",
                "metrics": {}, "timings": {"time_limit_s": time_limit}, "info": {}}
    code = proc.exitcode
    why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return {"status": "failed", "error": f"WorkerDied: the worker process died ({why})",
            "metrics": {}, "timings": {}, "info": {}}


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
    cells, skipped = make_cells(cfg)
    store = ResultsStore(run_dir)
    store.acquire_run_lock()
    summary = RunSummary(total=len(cells), method_skips=skipped)
    t_start = time.perf_counter()
    try:
        store.set_meta("config", cfg.to_dict())
        store.set_meta("environment", environment(cfg.device))
        done = store.statuses()
        finished = {"ok", "skipped"} if retry_failed else {"ok", "failed", "skipped"}
        pending = [c for c in cells if done.get(c.key) not in finished]
        summary.skipped_done = len(cells) - len(pending)
        cfg_hash, version = cfg.hash(), code_version()
        if cfg.executor == "ray":
            from harness.ray_executor import run_ray

            run_ray(pending, cfg, run_dir, store, summary, cfg_hash, version, progress=progress, on_row=on_row)
        else:
            splits_cache, load_errors = load_splits(pending)
            bar = tqdm(pending, desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
            for cell in bar:
                bar.set_postfix_str(cell.label)
                if (cell.dataset, cell.seed) in load_errors:
                    result = {"status": "failed", "error": load_errors[(cell.dataset, cell.seed)],
                              "metrics": {}, "timings": {}, "info": {}}
                elif isolate:
                    result = run_isolated(cell, splits_cache, run_dir, cfg.cell_time_limit())
                else:
                    result = run_cell(cell, splits_cache, run_dir)
                record(store, summary, {**base_row(cell, cfg_hash, version), **result}, on_row)
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
