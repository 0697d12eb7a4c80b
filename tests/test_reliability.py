"""Fault injection: exceptions, NaNs, time limits, OOM, dead workers, SIGKILL and resume, concurrent
runs and determinism; the signal policy outside the cells (planning, report writing, SIGHUP, a closed
pipe), a damaged row in a real run, a replaced data file on resume, and a run that writes nothing
outside its run directory (bad inputs: tests/test_bad_inputs.py)."""

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
from sqlite_reads import count_readonly

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
    return count_readonly(run_dir / "results.sqlite", "SELECT count(*) FROM results")


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
    # SIGHUP back to its default in the child: under nohup the harness keeps SIGHUP ignored, as it should
    hup = lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, preexec_fn=hup)


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


def _patched_main(patch: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``harness.__main__.main(argv)`` in a fresh process after running the Python code ``patch``."""
    code = f"import os, signal, sys\n{patch}\nfrom harness.__main__ import main\nsys.exit(main({argv!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, **kwargs)


#: Replaces ``module.name`` by a wrapper that sends this process SIGTERM, then calls the original.
SIGTERM_IN = """
import {module} as target
real = target.{name}
def with_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)
target.{name} = with_sigterm
"""


def test_sigterm_while_planning_exits_130_and_writes_nothing(tmp_path):
    """Planning loads every split before anything is written: SIGTERM there is Ctrl-C (exit 130)."""
    out = tmp_path / "run"
    argv = ["run", *GRID, "--out", str(out)]
    done = _patched_main(SIGTERM_IN.format(module="harness.runner", name="load_splits"), argv)
    assert done.returncode == 130 and done.stderr.strip().splitlines()[-1] == "interrupted", done.stderr
    assert not out.exists()


def test_sigterm_while_the_report_is_written_finishes_it_and_exits_130(tmp_path):
    """The report is a critical section: SIGTERM during it is acted on once every file is complete."""
    out = tmp_path / "run"
    argv = ["run", *GRID[:3], "8gaussians", "--seeds", "1", *GRID[6:], "--out", str(out)]
    done = _patched_main(SIGTERM_IN.format(module="harness.report.writer", name="render_markdown"), argv)
    assert done.returncode == 130, done.stderr
    assert "finishing writing the report" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[-1].startswith("interrupted: 2 ok")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "gaussian" in markdown and "kde" in markdown and "Traceback" not in markdown
    assert len((out / "results.csv").read_text(encoding="utf-8").splitlines()) == 3  # header and both rows
    again = subprocess.run(
        [sys.executable, "-m", "harness", "run", *argv[1:]], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "2 already done" in again.stdout, again.stderr


def test_sighup_is_handled_like_ctrl_c(tmp_path):
    """A closed terminal (SIGHUP) stops the run as Ctrl-C does: exit 130, worker stopped, row kept."""
    from harness.pool import _alive

    out = tmp_path / "run"
    proc = _hang_cli(out)
    worker = _wait_for_hanging_worker(proc, out)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=600) == 130, proc.stderr.read()
    assert not _alive(worker)
    assert [(r["method"], r["status"]) for r in ResultsStore(out, create=False).rows()] == [("gaussian", "ok")]
    assert (out / "report.md").is_file()


def test_a_closed_stdout_ends_quietly():
    """``python -m harness list | head -1``: status 141 (SIGPIPE's), no traceback, no error line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )
    proc.stdout.read(1)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and err == "", err


def test_report_of_a_run_with_a_damaged_row_keeps_every_other_row_and_run_recomputes_it(tmp_path, capsys):
    import sqlite3

    out = tmp_path / "run"
    grid = ["run", *GRID[:3], "8gaussians", "--seeds", "2", *GRID[6:], "--out", str(out)]
    assert main(grid) == 0
    before = _table(out)
    damaged = next(r["cell_key"] for r in ResultsStore(out, create=False).rows() if r["method"] == "kde")
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("UPDATE results SET metrics = '{x' WHERE cell_key = ?", (damaged,))
    conn.close()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"warning: {out / 'results.sqlite'}: row '{damaged}' is damaged (metrics is not valid JSON ('{{x')); "
        "shown as failed"
    ]
    html = (out / "report.html").read_text(encoding="utf-8")  # says which row was skipped, and why
    assert "row damaged in results.sqlite (metrics is not valid JSON" in html
    assert "(1/2 seeds ok)" in (out / "report.md").read_text(encoding="utf-8")
    import pandas as pd

    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 4 and (csv.status == "ok").sum() == 3
    for key, (_, loglik, *_) in before.items():  # every other row is reported with its values
        rows = csv[(csv.method == key[0]) & (csv.seed == key[2])]
        if rows.cell_key.iloc[0] != damaged:
            assert rows["metrics.test_loglik"].iloc[0] == pytest.approx(loglik, rel=1e-12)
    assert main(grid) == 0  # the damaged cell is not finished: it runs again, to the same values
    assert _table(out) == before


def test_a_replaced_data_file_is_refused_on_resume(tmp_path, capsys):
    """The content hash of a file: dataset is kept with its rows: a resume onto other content is exit 2,
    the original content resumes, and a report of changed data says so."""
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, rng.standard_normal((200, 3)), delimiter=",")
    original = data.read_bytes()
    grid = ["run", "--methods", "gaussian", "--datasets", f"file:{data}", "--seeds", "1", *GRID[6:]]
    assert main([*grid, "--out", str(tmp_path / "run")]) == 0
    np.savetxt(data, rng.standard_normal((200, 3)), delimiter=",")
    capsys.readouterr()
    assert main([*grid, "--out", str(tmp_path / "run")]) == 2
    assert f"file:{data} has changed since rows of it were computed" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "run")]) == 0
    assert f"file:{data} has changed since its rows were computed" in capsys.readouterr().err
    data.write_bytes(original)
    assert main([*grid, "--out", str(tmp_path / "run")]) == 0
    assert "1 already done" in capsys.readouterr().out


def test_figure_names_are_unique_per_dataset():
    from harness.report.figures import slug

    names = ["file:/data/a/b.csv", "file:/data/a_b.csv", "file:/data/a b.csv", "8gaussians", "miniboone-small"]
    assert len({slug(n) for n in names}) == len(names)
    assert slug("8gaussians") == "8gaussians" and slug("miniboone-small") == "miniboone-small"


def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` (itself included) with its modification time (ns)."""
    out = {".": root.stat().st_mtime_ns}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = path.lstat().st_mtime_ns
    return out


def _git_state() -> dict[str, int]:
    """Modification times (ns) of the checkout's git directory and its index (a worktree's own, not the
    common directory other checkouts share); empty outside a git checkout."""
    from harness import PROJECT_ROOT

    found = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    folder = Path(found.stdout.strip()) if found.returncode == 0 else None
    return {str(p): p.stat().st_mtime_ns for p in (folder, folder / "index") if p.exists()} if folder else {}


def test_a_run_writes_nothing_outside_its_run_directory(tmp_path):
    """A smoke run (a flow: nflows imports matplotlib, training imports torch's compiler) changes neither
    the repository's git directories nor the home directory, and leaves nothing in the temporary one."""
    home, scratch, out = tmp_path / "home", tmp_path / "tmp", tmp_path / "run"
    home.mkdir()
    scratch.mkdir()
    caches = ("DENSITYBENCH_CACHE", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME")
    env = {**{k: v for k, v in os.environ.items() if k not in caches}, "HOME": str(home), "TMPDIR": str(scratch)}
    git_before, home_before = _git_state(), _tree(home)
    cmd = [sys.executable, "-m", "harness", "run", "--methods", "gaussian,maf", "--datasets", "8gaussians"]
    done = subprocess.run(
        [*cmd, "--seeds", "1", *GRID[6:], "--out", str(out)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file()
    assert _tree(home) == home_before
    assert list(scratch.iterdir()) == []
    assert _git_state() == git_before


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
