"""Cell workers that can use CUDA: the harness process never touches CUDA, workers
started by forkserver or spawn get everything they need and give the fork path's
metrics, and the GPU in a row comes from the worker that used it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import harness.gpu
import methods
from harness.__main__ import main
from harness.pool import START_METHOD_ENV, start_method
from harness.store import ResultsStore

TESTS = Path(__file__).resolve().parent
CUDA_QUERIES = (
    "is_available",
    "get_device_name",
    "get_device_properties",
    "init",
    "device_count",
    "current_device",
    "synchronize",
    "reset_peak_memory_stats",
    "max_memory_allocated",
    "_lazy_init",
)


def _table(run_dir: Path) -> dict:
    return {
        (r["method"], r["dataset"], r["seed"]): (r["status"], r["metrics"])
        for r in ResultsStore(run_dir, create=False).rows()
    }


def test_parent_never_touches_cuda_and_the_gpu_name_comes_from_the_worker(tmp_path, monkeypatch):
    """Every CUDA query raises in this (the harness) process; a child-process probe says one GPU is
    there. Planning a CUDA grid and running its forkserver workers must succeed, and the GPU's name,
    which only the workers' (pretend) torch.cuda knows, must reach the rows and the run's environment."""

    def forbidden(name):
        def call(*args, **kwargs):
            raise AssertionError(f"the harness process called torch.cuda.{name}")

        return call

    for name in CUDA_QUERIES:
        monkeypatch.setattr(torch.cuda, name, forbidden(name))
    monkeypatch.setattr(harness.gpu, "cuda_device_count", lambda: 1)
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("DENSITYBENCH_PLUGINS", "plugins_fake_gpu")
    monkeypatch.setenv("DENSITYBENCH_FAKE_GPU", "Pretend H200 (worker only)")
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    assert start_method("cuda") in ("forkserver", "spawn")
    importlib.import_module("plugins_fake_gpu")  # this registry may be loaded already (no fake GPU here)
    out = tmp_path / "run"
    try:
        code = main(
            [
                "run",
                "--device",
                "auto",
                "--methods",
                "fake_gpu_mean",
                "--datasets",
                "8gaussians,rings",
                "--seeds",
                "2",
                "--profile",
                "smoke",
                "--sample-size",
                "100",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
    finally:
        methods.unregister("fake_gpu_mean")  # other tests list this process's methods
    assert code == 0
    rows = ResultsStore(out, create=False).rows()
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["device"] == "cuda" and row["info"]["device_given"] == "cuda"
        assert row["info"]["gpu"] == "Pretend H200 (worker only)" and row["info"]["gpu_memory_gib"] == 141.0
        assert row["info"]["float32_matmul_precision"] == "highest"
        assert row["timings"]["peak_cuda_mib"] == 3.0
    env = ResultsStore(out, create=False).meta()["environment"]
    assert env["gpu"] == "Pretend H200 (worker only)" and env["device"] == "cuda"
    assert env["sample_metrics_device"] == "cpu"
    report = (out / "report.md").read_text()
    assert "Pretend H200 (worker only)" in report and "sample metrics on the CPU" in report


def test_no_gpu_probe_answer_means_cpu_and_cuda_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness.gpu, "cuda_device_count", lambda: 0)
    assert harness.gpu.resolve_device("auto") == "cpu"
    code = main(["run", "--device", "cuda", "--methods", "gaussian", "--out", str(tmp_path)])
    assert code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_cuda_probe_on_this_torch_creates_no_context_here():
    """The real probe (no monkeypatching): on CUDA-less torch it answers 0 without asking; in any case
    this process has not initialised CUDA afterwards."""
    harness.gpu.cuda_device_count.cache_clear()
    count = harness.gpu.cuda_device_count()
    assert count >= 0 and not torch.cuda.is_initialized()
    if not torch.backends.cuda.is_built():
        assert count == 0


FEW = [
    "--methods",
    "gaussian,kde,maf,training_free_ode",
    "--datasets",
    "8gaussians,rings",
    "--seeds",
    "1",
    "--profile",
    "smoke",
    "--sample-size",
    "200",
    "--no-progress",
    "--jobs",
    "2",
]


def _same_metrics_through(method: str, grid: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    assert main(["run", *grid, "--out", str(tmp_path / "fork")]) == 0
    monkeypatch.setenv(START_METHOD_ENV, method)
    assert main(["run", *grid, "--out", str(tmp_path / method)]) == 0
    fork, other = _table(tmp_path / "fork"), _table(tmp_path / method)
    assert fork.keys() == other.keys() and all(status == "ok" for status, _ in fork.values())
    for key, (_, metrics) in fork.items():
        assert other[key][1] == metrics, key


def test_forkserver_workers_give_the_fork_metrics(tmp_path, monkeypatch):
    """Same cells, same thread counts, same seeds: identical metrics (CPU arithmetic is deterministic)."""
    _same_metrics_through("forkserver", FEW, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_the_default_grid_on_two_datasets_gives_the_fork_metrics(method, tmp_path, monkeypatch):
    """Every available method (the default grid's) on two datasets; slow (minutes on 2 cores)."""
    grid = ["--datasets", "8gaussians,rings", "--profile", "smoke", "--sample-size", "200", "--no-progress"]
    _same_metrics_through(method, grid, tmp_path, monkeypatch)
