"""Storage faults and the rows a run writes: a failed write (disk full, read-only) keeps the finished
rows and exits 2; a damaged database is salvaged and the run resumes; a database being created or
salvaged is never left half made; an export is never replaced by one with fewer rows unsaid; a store
with columns added by a later version still reads; unavailable methods get ``skipped`` rows; the
largest accepted time limit and seed run."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import methods
from harness.__main__ import main
from harness.config import MAX_SEED, MAX_TIME_LIMIT
from harness.errors import UserError
from harness.sample_metrics import c2st_accuracy, compute_sample_metrics, min_sample_size
from harness.store import DB_NAME, ResultsStore
from methods.base import Method
from test_bad_inputs import damaged_database

#: Cheap cells: the reference Gaussian, the fewest samples the metrics take.
GRID = [
    "run",
    "--methods",
    "gaussian",
    "--datasets",
    "8gaussians",
    "--seeds",
    "2",
    "--profile",
    "smoke",
    "--sample-size",
    str(min_sample_size()),
    "--jobs",
    "1",
    "--no-progress",
]


def _metrics(run_dir: Path) -> dict:
    return {
        r["cell_key"]: (r["status"], r["metrics"].get("test_loglik"))
        for r in ResultsStore(run_dir, create=False).rows()
    }


def test_disk_full_during_a_run_exits_2_and_keeps_finished_rows(tmp_path, monkeypatch, capsys):
    real_insert, calls = ResultsStore._insert, []

    def insert_then_fail(self, values):
        calls.append(values)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        real_insert(self, values)

    monkeypatch.setattr(ResultsStore, "_insert", insert_then_fail)
    code = main([*GRID, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"cannot write to the results database {tmp_path / DB_NAME}: database or disk is full" in err
    assert "finished cells are kept" in err
    monkeypatch.undo()
    assert len(ResultsStore(tmp_path, create=False).rows()) == 1


@pytest.mark.parametrize(
    "fault",
    [OSError(errno.EROFS, "Read-only file system"), sqlite3.OperationalError("attempt to write a readonly database")],
)
def test_failed_put_is_one_line_and_keeps_committed_rows(fault, tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    row = {"cell_key": "a", "method": "m", "dataset": "d", "seed": 0, "profile": "smoke", "status": "ok"}
    store.put(row)
    monkeypatch.setattr(ResultsStore, "_insert", lambda self, values: (_ for _ in ()).throw(fault))
    with pytest.raises(UserError, match=rf"cannot write to the results database .*{fault.args[-1]}.*kept"):
        store.put({**row, "cell_key": "b"})
    monkeypatch.undo()
    store.close()
    assert [r["cell_key"] for r in ResultsStore(tmp_path, create=False).rows()] == ["a"]


def test_damaged_database_is_salvaged_and_the_run_resumes(tmp_path, capsys):
    assert main([*GRID, "--seeds", "1", "--out", str(tmp_path)]) == 0
    before = _metrics(tmp_path)
    path = tmp_path / DB_NAME
    with open(path, "r+b") as f:  # the results table's root page
        f.seek(4096)
        f.write(b"\xff" * 4096)
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"results database {path} is damaged" in err and "--salvage" in err
    assert main(["report", str(tmp_path), "--salvage"]) == 0
    assert (tmp_path / (DB_NAME + ".damaged")).exists()
    kept = _metrics(tmp_path)
    assert kept == {}  # the only row was on the damaged page
    assert main([*GRID, "--seeds", "1", "--out", str(tmp_path)]) == 0
    assert _metrics(tmp_path) == before  # the same seeds recompute the lost cells exactly


def test_salvage_keeps_exactly_the_readable_rows(tmp_path, capsys):
    run = tmp_path / "run"
    damaged_database(run)
    assert main(["report", str(run)]) == 2
    readable = int(capsys.readouterr().err.split(";")[1].split()[0])
    assert 0 < readable < 60
    assert main(["report", str(run), "--salvage"]) == 0
    rows = ResultsStore(run, create=False).rows()
    assert len(rows) == readable and len({r["cell_key"] for r in rows}) == readable
    conn = sqlite3.connect(run / DB_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert main(["report", str(run)]) == 0


def test_an_interrupted_creation_leaves_no_database(tmp_path, monkeypatch):
    """A new database is built beside its name and renamed into place: a run stopped while creating it
    leaves no (empty) results.sqlite, which the next store would refuse as not ours."""
    real = sqlite3.connect

    def connect_then_stop(*args, **kwargs):
        conn = real(*args, **kwargs)
        conn.execute("CREATE TABLE half (x)")  # the file now exists
        raise KeyboardInterrupt

    monkeypatch.setattr(sqlite3, "connect", connect_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ResultsStore(tmp_path / "run")
    monkeypatch.undo()
    assert not (tmp_path / "run").exists()  # nor the directory it made
    ResultsStore(tmp_path / "run").close()
    assert ResultsStore(tmp_path / "run", create=False).rows() == []


def test_salvage_interrupted_by_sigterm_completes_then_exits_130(tmp_path):
    """Salvage is a critical section: SIGTERM while it copies rows waits until the new database is whole."""
    import subprocess
    import sys

    run = tmp_path / "run"
    damaged_database(run)
    patch = (
        "import os, signal, sys\nimport harness.store as store\nreal = store.readable_rows\n"
        "sent = []\ndef rows_then_term(path):\n    found = real(path)\n    if not sent:\n        sent.append(1)\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n    return found\n"
        f"store.readable_rows = rows_then_term\nfrom harness.__main__ import main\nsys.exit(main(['report', {str(run)!r}, '--salvage']))\n"
    )
    done = subprocess.run([sys.executable, "-c", patch], capture_output=True, text=True, timeout=600)
    assert done.returncode == 130, done.stderr
    assert "kept" in done.stderr and (run / (DB_NAME + ".damaged")).exists()
    rows = ResultsStore(run, create=False).rows()
    assert 0 < len(rows) < 60


def test_a_report_with_fewer_rows_keeps_the_older_export(tmp_path, capsys):
    """After a salvage lost rows, the next report moves the fuller results.csv aside and says so."""
    run = tmp_path / "run"
    damaged_database(run)
    assert main(["report", str(run), "--salvage", "--format", "csv"]) == 0
    kept = len(ResultsStore(run, create=False).rows())
    full = "method,dataset,seed,status\n" + "gaussian,8gaussians,0,failed\n" * 60
    (run / "results.csv").write_text(full, encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(run), "--format", "csv"]) == 0
    assert f"results.csv held 60 rows, the results database {kept}" in capsys.readouterr().err
    assert (run / "results.older.csv").read_text(encoding="utf-8") == full
    assert len((run / "results.csv").read_text(encoding="utf-8").splitlines()) == kept + 1
    assert main(["report", str(run), "--format", "csv"]) == 0  # as many rows now: replaced, nothing said
    assert capsys.readouterr().err == "" and not (run / "results.older-2.csv").exists()


def test_a_store_with_added_columns_still_reads_and_resumes(tmp_path):
    """The schema check asks for our table and columns, not an exact schema: a column added later (a
    shard's provenance, say) is ignored, and the run resumes."""
    assert main([*GRID, "--seeds", "1", "--out", str(tmp_path)]) == 0
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("ALTER TABLE results ADD COLUMN shard TEXT")
    conn.close()
    assert main([*GRID, "--seeds", "1", "--out", str(tmp_path)]) == 0
    assert [r["status"] for r in ResultsStore(tmp_path, create=False).rows()] == ["ok"]


class Unavailable(Method):
    name = "unavailable_test_method"
    log_prob_kind = "exact"
    profiles = {p: {} for p in ("smoke", "quick", "paper")}

    @classmethod
    def skip(cls):
        return True, "needs an instrument this machine lacks"

    def _fit(self, train, val):
        self.mean_ = train.mean(0)

    def _sample(self, n, seed):
        return self.mean_ + np.random.default_rng(seed).standard_normal((n, self.dim_))

    def _log_prob(self, x):
        return -0.5 * ((x - self.mean_) ** 2).sum(1) - np.log(2 * np.pi)


def test_unavailable_method_gets_skipped_rows_then_runs_once_available(tmp_path):
    grid = [*GRID, "--methods", f"{Unavailable.name},gaussian", "--seeds", "1", "--out", str(tmp_path)]
    methods.register(Unavailable)
    try:
        assert main(grid) == 0
    finally:
        methods.unregister(Unavailable.name)
    rows = ResultsStore(tmp_path, create=False).rows()
    skipped = [r for r in rows if r["method"] == Unavailable.name]
    assert [(r["dataset"], r["status"], r["error"]) for r in skipped] == [
        ("8gaussians", "skipped", "needs an instrument this machine lacks")
    ]
    assert "1 skipped (method unavailable here)" in (tmp_path / "report.md").read_text()
    available = type("Available", (Unavailable,), {"skip": classmethod(lambda cls: (False, ""))})
    methods.register(available)
    try:
        assert main(grid) == 0
    finally:
        methods.unregister(Unavailable.name)
    statuses = {r["cell_key"]: r["status"] for r in ResultsStore(tmp_path, create=False).rows()}
    assert sorted(statuses.values()) == ["ok"] * 2


def test_largest_time_limit_and_seed_run(tmp_path):
    """2,592,000 s overflowed select's timeout (it takes milliseconds in a C int); 2^32 - 1 is the top seed."""
    config = tmp_path / "largest.toml"
    config.write_text(f"seeds = [{MAX_SEED}]\ntime_limit = {MAX_TIME_LIMIT}\nsample_size = {min_sample_size()}\n")
    assert (
        main(
            [
                "run",
                "--config",
                str(config),
                "--methods",
                "gaussian",
                "--datasets",
                "8gaussians",
                "--profile",
                "smoke",
                "--no-progress",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    (row,) = ResultsStore(tmp_path / "run", create=False).rows()
    assert row["status"] == "ok" and row["seed"] == MAX_SEED


def test_min_sample_size_is_what_the_metrics_need():
    rng = np.random.default_rng(0)
    ref, mod = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    n = min_sample_size()
    assert compute_sample_metrics(ref, mod, max_samples=n)["errors"] == {}
    with pytest.raises(ValueError, match="c2st needs at least"):
        c2st_accuracy(ref[: n - 1], mod[: n - 1])
