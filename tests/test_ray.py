"""The Ray executor gives the local executor's rows, survives a crashing worker, and resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import ResultsStore

pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[distributed]'")

TESTS = Path(__file__).resolve().parent
GRID = [
    "--methods",
    "gaussian,kde",
    "--datasets",
    "8gaussians,rings",
    "--seeds",
    "2",
    "--profile",
    "smoke",
    "--sample-size",
    "200",
    "--no-progress",
]


def run_cli(*args: str, plugins: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_NUM_CPUS": "2"}
    if plugins:
        env["PYTHONPATH"] = f"{TESTS}{os.pathsep}{env.get('PYTHONPATH', '')}"
        env["DENSITYBENCH_PLUGINS"] = "plugins_faulty"
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", *args], capture_output=True, text=True, env=env, timeout=900
    )


def table(run_dir: Path) -> dict:
    return {(r["method"], r["dataset"], r["seed"]): r for r in ResultsStore(run_dir, create=False).rows()}


@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory):
    base = tmp_path_factory.mktemp("ray")
    local = run_cli(*GRID, "--out", str(base / "local"))
    assert local.returncode == 0, local.stderr
    ray_run = run_cli(
        *GRID, "--executor", "ray", "--out", str(base / "ray"), "--methods", "gaussian,kde,crash_worker", plugins=True
    )
    assert ray_run.returncode == 3, ray_run.stderr  # the crash_worker cells failed
    return base / "local", base / "ray"


def test_ray_rows_equal_local_rows(local_and_ray):
    local, ray_dir = (table(d) for d in local_and_ray)
    for key, row in local.items():
        other = ray_dir[key]
        assert other["status"] == row["status"] == "ok"
        for metric in ("test_loglik", "kl", "mmd2", "energy_distance"):
            if metric in row["metrics"]:
                assert other["metrics"][metric] == pytest.approx(row["metrics"][metric], rel=1e-5, abs=1e-7), metric


def test_crashing_worker_gives_failed_row(local_and_ray):
    rows = table(local_and_ray[1])
    crashed = [r for k, r in rows.items() if k[0] == "crash_worker"]
    assert len(crashed) == 4
    assert all(r["status"] == "failed" and "WorkerDied" in r["error"] for r in crashed)
    assert sum(r["status"] == "ok" for r in rows.values()) == 8


def test_resume_with_ray_skips_finished_cells(local_and_ray):
    ray_dir = local_and_ray[1]
    before = {r["cell_key"]: r["created_at"] for r in ResultsStore(ray_dir, create=False).rows()}
    again = run_cli(*GRID, "--executor", "ray", "--out", str(ray_dir))
    assert again.returncode == 0, again.stderr
    assert "8 already done" in again.stdout
    after = {r["cell_key"]: r["created_at"] for r in ResultsStore(ray_dir, create=False).rows()}
    assert after == before
