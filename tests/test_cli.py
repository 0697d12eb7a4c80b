"""End to end: the CLI runs a tiny grid, writes the report, resumes, isolates failures
and rejects bad input with exit status 2 and a one-line message."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import methods
from harness.__main__ import EXIT_FAILED_CELLS, main
from harness.store import ResultsStore
from methods.base import Method

TINY = [
    "--methods",
    "gaussian,kde",
    "--datasets",
    "8gaussians,rings",
    "--profile",
    "smoke",
    "--sample-size",
    "300",
    "--no-progress",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("run", *TINY, "--seeds", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_tiny_grid_writes_every_cell(tiny_run):
    rows = ResultsStore(tiny_run, create=False).rows()
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert {(r["method"], r["dataset"], r["seed"]) for r in rows} == {
        (m, d, s) for m in ("gaussian", "kde") for d in ("8gaussians", "rings") for s in (0, 1)
    }
    for r in rows:
        assert np.isfinite(r["metrics"]["test_loglik"]) and r["metrics"]["kind"] == "exact"
        assert r["timings"]["fit_s"] > 0 and r["timings"]["samples_per_s"] > 0
        assert r["code_version"] and r["config_hash"] and r["params"]


def test_report_lists_every_cell_and_regenerates_identically(tiny_run):
    text = (tiny_run / "report.md").read_text()
    for name in ("gaussian", "kde", "8gaussians", "rings", "Test log-likelihood", "KL(p"):
        assert name in text
    assert "± " in text and "**" in text  # two seeds give a std; best entries are bold
    proc = run_cli("report", str(tiny_run))
    assert proc.returncode == 0, proc.stderr
    assert (tiny_run / "report.md").read_text() == text
    assert (tiny_run / "report.html").exists() and (tiny_run / "figures" / "fig_samples_2d.png").exists()
    csv = (tiny_run / "results.csv").read_text().splitlines()
    assert len(csv) == 1 + 8


def test_kde_beats_gaussian_on_multimodal_data(tiny_run):
    rows = ResultsStore(tiny_run, create=False).rows()
    ll = {(r["method"], r["dataset"]): r["metrics"]["test_loglik"] for r in rows if r["seed"] == 0}
    assert ll[("kde", "8gaussians")] > ll[("gaussian", "8gaussians")] + 0.5


def test_resume_skips_finished_cells(tiny_run):
    before = {r["cell_key"]: r["created_at"] for r in ResultsStore(tiny_run, create=False).rows()}
    proc = run_cli("run", *TINY, "--seeds", "2", "--out", str(tiny_run))
    assert proc.returncode == 0
    assert "8 already done" in proc.stdout
    after = {r["cell_key"]: r["created_at"] for r in ResultsStore(tiny_run, create=False).rows()}
    assert after == before


class Exploding(Method):
    name = "exploding_test_method"
    log_prob_kind = "exact"
    profiles = {p: {} for p in methods.PROFILES}

    def _fit(self, train, val):
        raise RuntimeError("boom in fit")

    def _sample(self, n, seed):  # pragma: no cover
        return np.zeros((n, self.dim_))


class NaNDensity(Method):
    name = "nan_test_method"
    log_prob_kind = "exact"
    profiles = {p: {} for p in methods.PROFILES}

    def _fit(self, train, val):
        with self.phase("training"):
            self.mean_ = train.mean(0)

    def _sample(self, n, seed):
        return np.random.default_rng(seed).standard_normal((n, self.dim_)) + self.mean_

    def _log_prob(self, x):
        return np.full(len(x), np.nan)


@pytest.fixture
def broken_methods():
    methods.register(Exploding)
    methods.register(NaNDensity)
    yield
    methods.unregister(Exploding.name)
    methods.unregister(NaNDensity.name)


def test_failing_method_gives_failed_row_and_grid_goes_on(tmp_path, broken_methods, capsys):
    code = main(
        [
            "run",
            "--methods",
            "exploding_test_method,nan_test_method,gaussian",
            "--datasets",
            "8gaussians",
            "--seeds",
            "1",
            "--profile",
            "smoke",
            "--sample-size",
            "200",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == EXIT_FAILED_CELLS  # the report is written, and the status says cells failed
    rows = {r["method"]: r for r in ResultsStore(tmp_path, create=False).rows()}
    assert rows["gaussian"]["status"] == "ok"
    assert rows["exploding_test_method"]["status"] == "failed"
    assert "boom in fit" in rows["exploding_test_method"]["error"]
    assert rows["nan_test_method"]["status"] == "failed"
    assert "not finite" in rows["nan_test_method"]["error"]
    report = (tmp_path / "report.md").read_text()
    assert "failed [" in report and "boom in fit" in report


def test_database_is_consistent_sqlite(tiny_run):
    conn = sqlite3.connect(tiny_run / "results.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(DISTINCT cell_key) FROM results").fetchone()[0] == 8


# Bad command lines and configs: the corpus in tests/test_bad_inputs.py.


def test_config_file_and_command_line_override(tmp_path):
    from harness.config import build

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('methods = ["kde"]\nseeds = [0, 3]\nprofile = "smoke"\n[params.kde]\nmax_train = 100\n')
    cfg = build(str(cfg_file), {"profile": "quick", "seeds": "2"})
    assert cfg.methods == ["kde"] and cfg.profile == "quick" and cfg.seeds == [0, 1]
    assert cfg.params == {"kde": {"max_train": 100}} and cfg.name == "c"


def test_list_shows_methods_and_datasets():
    proc = run_cli("list")
    assert proc.returncode == 0
    for name in ("gaussian", "kde", "8gaussians", "checkerboard", "smoke"):
        assert name in proc.stdout


def test_refuses_to_start_when_datasets_is_shadowed(tmp_path):
    fake = tmp_path / "datasets"
    fake.mkdir()
    (fake / "__init__.py").write_text("# not densitybench's\n")
    import os

    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode != 0
    assert "shadows ours" in proc.stderr and "Traceback" not in proc.stderr
