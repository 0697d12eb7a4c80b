"""The Ray executor gives the local executor's rows, survives a crashing worker, and resumes; a
cluster started with `ray start --head` (token authentication on) runs a grid through --address,
and a driver that cannot connect gets one line naming the cause."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


# ------------------------------------------------------------------ a cluster started with `ray start --head`

SMOKE = ["--methods", "gaussian,kde", "--datasets", "8gaussians", "--seeds", "1", "--profile", "smoke"]
SMOKE += ["--sample-size", "200", "--no-progress"]
#: Ray's variables for token authentication and addresses: each test sets its own.
RAY_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in RAY_AUTH_VARS}, **extra}


def refused_driver_env(**extra: str) -> dict[str, str]:
    """A driver's environment in which Ray tries a refused connection 3 times (its default: 20, a second apart)."""
    return ray_env(RAY_gcs_server_port_wait_time_s="3", **extra)


def processes_mentioning(text: str) -> list[int]:
    """Ids of the processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@dataclass
class Cluster:
    address: str
    token_path: Path


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A one-node cluster from `ray start --head --block` on free ports, with the token authentication
    the installed Ray turns on by default when a token exists (the token file given by
    RAY_AUTH_TOKEN_PATH; RAY_AUTH_MODE unset). Stopped by ending that process, which stops the
    cluster's processes; any process left (found by the cluster's own temp dir) is killed by id."""
    if not Path("/proc").is_dir():
        pytest.skip("the cluster test finds its processes in /proc (Linux)")
    base = tmp_path_factory.mktemp("cluster")
    token_path = base / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    temp_dir = Path(tempfile.mkdtemp(prefix="dbray-"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin), "start", "--head", "--block", "--port", str(port), "--num-cpus", "1"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(temp_dir)]
    for option in ("--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port"):
        cmd += [option, str(free_port())]
    log = (base / "head.log").open("w")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ray_env(RAY_AUTH_TOKEN_PATH=str(token_path)))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and head.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        assert head.poll() is None, f"ray start --head exited: {(base / 'head.log').read_text()[-2000:]}"
        assert "Token authentication is enabled" in (base / "head.log").read_text()
        yield Cluster(f"127.0.0.1:{port}", token_path)
    finally:
        head.terminate()
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        time.sleep(2)
        left = processes_mentioning(str(temp_dir))
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes outlived the cluster's head: {left}"


def run_against(cluster: Cluster, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    args = [*SMOKE, "--executor", "ray", "--address", cluster.address, "--out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "harness", "run", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_grid_runs_on_a_token_cluster_through_address(ray_cluster, tmp_path):
    env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(ray_cluster.token_path))
    proc = run_against(ray_cluster, tmp_path / "run", env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = ResultsStore(tmp_path / "run", create=False).rows()
    assert {(r["method"], r["status"]) for r in rows} == {("gaussian", "ok"), ("kde", "ok")}
    assert (tmp_path / "run" / "report.md").exists()


def test_driver_without_token_gets_one_line_naming_authentication(ray_cluster, tmp_path):
    proc = run_against(ray_cluster, tmp_path / "run", refused_driver_env())
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "token authentication" in proc.stderr and "RAY_AUTH_MODE=token" in proc.stderr


def test_driver_with_another_token_is_told_the_token_is_not_the_clusters(ray_cluster, tmp_path):
    wrong = tmp_path / "token"
    wrong.write_text(secrets.token_hex(32))
    env = refused_driver_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(wrong))
    proc = run_against(ray_cluster, tmp_path / "run", env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "refused this driver's token" in proc.stderr


def test_unreachable_address_fails_at_once_naming_the_address(tmp_path):
    cluster = Cluster(f"127.0.0.1:{free_port()}", tmp_path / "none")  # nothing listens there
    started = time.monotonic()
    proc = run_against(cluster, tmp_path / "run", ray_env())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot reach a Ray cluster at {cluster.address}" in proc.stderr and "address" in proc.stderr
    assert time.monotonic() - started < 120  # Ray alone retries an unanswered address for minutes
