"""Shared fixtures: the real-data root and CPU-only, single-threaded determinism."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see harness.set_process_defaults)

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """``../shared/data`` beside the project. Skips when absent, except under CI=true."""
    if not (SHARED_DATA / "README.md").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the shared data folder {SHARED_DATA} is missing")
        pytest.skip(f"real data not found at {SHARED_DATA} (a fresh clone has none)")
    return SHARED_DATA


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the suite's models are tiny, and on a shared 2-core machine
    two threads each spin-wait for the other (measured 10x slower under load)."""
    import torch

    torch.set_num_threads(1)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
