"""Storage faults and the rows a run writes: a failed write (disk full, read-only) keeps the finished
rows and exits 2; a damaged database is salvaged and the run resumes; unavailable methods get
``skipped`` rows; the largest accepted time limit and seed run."""

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
