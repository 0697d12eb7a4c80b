"""scripts/gpu_check.sh in its CPU dry mode (smoke profile, tiny grid, tiny ratios): the
script's logic runs in CI; a cell that is not ok makes it fail loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check(out: Path, methods: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GPU_CHECK_DEVICE": "cpu",
        "PY": sys.executable,
        "GPU_CHECK_METHODS": methods,
        "GPU_CHECK_DATASETS": "8gaussians",
        "DENSITYBENCH_PLUGINS": "plugins_faulty",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), str(out)], capture_output=True, text=True, env=env, timeout=1200
    )


def _check_files(out: Path) -> str:
    files = sorted(p.name for p in out.iterdir())
    assert files == ["log.txt", "ratios.json", "report.md", "results.csv", "summary.md", "tests.txt"]
    for name in ("over_training_free_ode_d2", "over_score_diffusion_d2", "over_maf_d2", "kernel_fraction_of_matmul_d2"):
        assert name in (out / "ratios.json").read_text()
    return (out / "summary.md").read_text()


def test_gpu_check_dry_run_fails_loudly_on_a_failed_cell(tmp_path):
    proc = _gpu_check(tmp_path / "out", "gaussian,crash_worker")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gpu_check: FAILED" in proc.stderr and "grid at smoke (exit 3)" in proc.stderr
    summary = _check_files(tmp_path / "out")
    assert summary.startswith("# GPU check: FAILED")
    assert "cells ok: **2 / 3**" in summary and "FAILED crash_worker/8gaussians/s0" in summary


@pytest.mark.slow
def test_gpu_check_dry_run_passes(tmp_path):
    proc = _gpu_check(tmp_path / "out", "gaussian")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _check_files(tmp_path / "out")
    assert summary.startswith("# GPU check: PASSED") and "cells ok: **2 / 2**" in summary
