"""Fault injection: exceptions, NaNs, time limits, OOM, dead workers, SIGKILL and
resume, concurrent runs and determinism (bad inputs: tests/test_bad_inputs.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import methods
from harness.__main__ import EXIT_FAILED_CELLS, main
from harness.store import ResultsStore
from methods.base import DivergenceError, Method

PROFILES = ("smoke", "quick", "paper")


def _faulty(name: str, fit):
    """A throw-away method whose fit runs ``fit(self, train)``."""

    class Faulty(Method):
        log_prob_kind = "exact"
        profiles = {p: {} for p in PROFILES}

        def _fit(self, train, val):
            with self.phase("training"):
                self.mean_ = train.mean(0)
                fit(self, train)

        def _sample(self, n, seed):
            return np.random.default_rng(seed).standard_normal((n, self.dim_)) + self.mean_

        def _log_prob(self, x):
            return -0.5 * ((x - self.mean_) ** 2).sum(1) - np.log(2 * np.pi)

    Faulty.name = name
    Faulty.__qualname__ = f"Faulty_{name}"
    return Faulty


def _raise(exc):
    def fit(self, train):
        raise exc

    return fit


def _oom(self, train):
    import torch

    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


def _sleep(self, train):
    time.sleep(60)


def _die(self, train):
    os._exit(3)


FAULTS = {
    "fault_exception": (_raise(ValueError("injected failure")), "injected failure"),
    "fault_nan": (_raise(DivergenceError("training diverged (loss nan at step 3)")), "diverged"),
    "fault_oom": (_oom, "OutOfMemoryError"),
    "fault_timeout": (_sleep, "time limit"),
    "fault_dies": (_die, "WorkerDied"),
}


@pytest.fixture
def faulty_methods():
    for name, (fit, _) in FAULTS.items():
        methods.register(_faulty(name, fit))
    yield
    for name in FAULTS:
        methods.unregister(name)


def test_every_fault_gives_a_failed_row_and_the_grid_goes_on(tmp_path, faulty_methods):
    names = ",".join([*FAULTS, "gaussian"])
    code = main(
        [
            "run",
            "--methods",
            names,
            "--datasets",
            "8gaussians",
            "--seeds",
            "1",
            "--profile",
            "smoke",
            "--time-limit",
            "25",
            "--sample-size",
            "200",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == EXIT_FAILED_CELLS
    rows = {r["method"]: r for r in ResultsStore(tmp_path, create=False).rows()}
    assert rows["gaussian"]["status"] == "ok"
    for name, (_, needle) in FAULTS.items():
        assert rows[name]["status"] == "failed", name
        assert needle in rows[name]["error"], (name, rows[name]["error"])
    report = (tmp_path / "report.md").read_text()
    assert report.count("failed [") >= len(FAULTS)


def test_nan_metric_is_a_failure(tmp_path):
    class NaNSampler(_faulty("nan_sampler", lambda self, train: None)):
        def _sample(self, n, seed):
            return np.full((n, self.dim_), np.nan)

    NaNSampler.name = "nan_sampler"
    methods.register(NaNSampler)
    argv = [
        "run",
        "--methods",
        "nan_sampler",
        "--datasets",
        "rings",
        "--seeds",
        "1",
        "--profile",
        "smoke",
        "--sample-size",
        "100",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    try:
        assert main(argv) == EXIT_FAILED_CELLS
        (row,) = ResultsStore(tmp_path, create=False).rows()
        assert row["status"] == "failed" and "not finite" in row["error"]
        # resuming keeps the failed row (not retried): the grid still has a failed cell
        assert main(argv) == EXIT_FAILED_CELLS
        assert main([*argv, "--allow-failures"]) == 0
    finally:
        methods.unregister("nan_sampler")


GRID = [
    "--methods",
    "gaussian,kde",
    "--datasets",
    "8gaussians,rings,moons",
    "--seeds",
    "2",
    "--profile",
    "smoke",
    "--sample-size",
    "200",
    "--no-progress",
]


def _table(run_dir: Path) -> dict:
    rows = ResultsStore(run_dir, create=False).rows()
    return {
        (r["method"], r["dataset"], r["seed"]): (
            r["status"],
            r["metrics"].get("test_loglik"),
            r["metrics"].get("kl"),
            r["metrics"].get("mmd2"),
        )
        for r in rows
    }


def test_same_command_same_seeds_gives_identical_metrics(tmp_path):
    assert main(["run", *GRID, "--out", str(tmp_path / "a")]) == 0
    assert main(["run", *GRID, "--out", str(tmp_path / "b")]) == 0
    assert _table(tmp_path / "a") == _table(tmp_path / "b")


def test_parallel_cells_give_the_sequential_metrics(tmp_path):
    grid = [*GRID[:3], "8gaussians,rings", "--seeds", "1", *GRID[6:]]  # 2 methods x 2 datasets
    assert main(["run", *grid, "--jobs", "1", "--out", str(tmp_path / "one")]) == 0
    assert main(["run", *grid, "--jobs", "3", "--out", str(tmp_path / "three")]) == 0
    assert len(_table(tmp_path / "one")) == 4
    assert _table(tmp_path / "one") == _table(tmp_path / "three")


def _wait_for(condition, what: str, timeout: float = 300.0) -> None:
    """Poll ``condition`` (an event: a file, a row, a process state) until true; fail after ``timeout`` s,
    a bound far above any normal wait, so a loaded machine only makes the test slower."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def test_a_hung_cell_does_not_hold_up_the_others_with_two_jobs(tmp_path):
    """Seed 0 blocks until the other three seeds' rows have arrived (the test then writes a file). A runner
    that waited for seed 0 first would never release it (it gives up after 120 s and fails). No wall-clock
    assumption: the others may take as long as they need on a loaded machine."""
    from harness.config import Config
    from harness.runner import run_grid

    release = tmp_path / "release"

    def hang_on_seed_zero(self, train):
        if self.seed == 0:
            deadline = time.monotonic() + 120
            while not release.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("never released")
                time.sleep(0.05)

    def on_row(row):
        order.append((row["seed"], row["status"]))
        if sum(status == "ok" for _, status in order) == 3:
            release.touch()

    methods.register(_faulty("hang_seed0", hang_on_seed_zero))
    try:
        order = []
        cfg = Config(
            methods=["hang_seed0"],
            datasets=["8gaussians"],
            seeds=[0, 1, 2, 3],
            profile="smoke",
            time_limit=600,
            sample_size=100,
            jobs=2,
        )
        summary = run_grid(cfg, tmp_path / "run", progress=False, on_row=on_row)
    finally:
        methods.unregister("hang_seed0")
    assert (summary.ok, summary.failed) == (4, 0)
    assert order[-1] == (0, "ok") and sorted(order[:3]) == [(1, "ok"), (2, "ok"), (3, "ok")]


def _rows_in(run_dir: Path) -> int:
    """Committed rows, read without writing (0 before the database exists)."""
    import sqlite3

    db = run_dir / "results.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # created but no table yet
        return 0


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux /proc)."""
    from harness.pool import _alive

    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split() if _alive(int(c))]


def _hang_cli(out: Path) -> subprocess.Popen:
    """``harness run`` of one gaussian cell, then one cell whose fit hangs (tests/plugins_faulty.py)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        "DENSITYBENCH_PLUGINS": "plugins_faulty",
    }
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--methods",
        "gaussian,hang_worker",
        "--datasets",
        "8gaussians",
        "--profile",
        "smoke",
        "--sample-size",
        "100",
        "--no-progress",
        "--jobs",
        "1",
        "--out",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _wait_for_hanging_worker(proc: subprocess.Popen, out: Path) -> int:
    """The hang_worker cell's worker pid: after the gaussian row, the harness's one live child."""
    _wait_for(
        lambda: _rows_in(out) >= 1 and len(_children(proc.pid)) == 1 or proc.poll() is not None, "the hanging worker"
    )
    assert proc.poll() is None, proc.stderr.read()
    (pid,) = _children(proc.pid)
    return pid


def test_sigkill_of_the_group_and_of_the_parent_alone_then_resume_completes_exactly_once(tmp_path):
    """Two kills of the whole process group, each right after a row is committed (a worker is then
    mid-cell), then a kill of the harness process alone while its worker hangs: the worker dies with it,
    and the same command then resumes (the run lock is free) to the uninterrupted run's table."""
    from harness.pool import _alive

    grid = [*GRID[:3], "8gaussians,rings", "--seeds", "1", *GRID[6:]]  # 4 cells: each kill costs a start-up
    reference = tmp_path / "reference"
    assert main(["run", *grid, "--out", str(reference)]) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "harness", "run", *grid, "--out", str(out)]
    kills = 0
    for target in (1, 2):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for(lambda: _rows_in(out) >= target or proc.poll() is not None, f"{target} rows")  # noqa: B023
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    proc = _hang_cli(out)
    worker = _wait_for_hanging_worker(proc, out)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its group
    proc.wait()
    _wait_for(lambda: not _alive(worker), "the orphaned worker to die", timeout=30)
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr
    rows = ResultsStore(out, create=False).rows()  # none for hang_worker: it never finished
    assert len(rows) == len({r["cell_key"] for r in rows}) == 4
    assert _table(out) == _table(reference)


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    """SIGTERM to the harness alone: it exits 130, its hanging worker is stopped, the finished row is kept,
    and the run lock is released."""
    from harness.pool import _alive

    out = tmp_path / "run"
    proc = _hang_cli(out)
    worker = _wait_for_hanging_worker(proc, out)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == 130, proc.stderr.read()  # it still writes the report: minutes under load
    assert not _alive(worker) and not any((out / ".workers").iterdir())
    store = ResultsStore(out, create=False)
    store.acquire_run_lock()  # free again
    assert [(r["method"], r["status"]) for r in store.rows()] == [("gaussian", "ok")]
    store.close()


def test_second_run_on_same_directory_refuses(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    store.acquire_run_lock()
    try:
        code = main(["run", *GRID, "--out", str(tmp_path)])
    finally:
        store.close()
    err = capsys.readouterr().err
    assert code == 2 and "another run is using" in err


# The table of bad inputs is the corpus in tests/test_bad_inputs.py.


def test_cuda_without_gpu_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["run", "--device", "cuda", "--methods", "gaussian", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no CUDA GPU" in err


def test_debug_flag_shows_traceback(tmp_path):
    with pytest.raises(Exception, match="did you mean"):
        main(["--debug", "run", "--methods", "gausian", "--out", str(tmp_path)])
