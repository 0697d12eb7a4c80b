"""densitybench engine: CLI, configuration, grid runner, results store, metrics, reports."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def set_process_defaults() -> None:
    """Environment defaults of a harness process, set where a process starts (``python -m harness``,
    cell workers) before torch is imported: passive OpenMP waiting (``OMP_WAIT_POLICY``; why:
    docs/cpu-threads.md). An explicit setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_datasets_package() -> None:
    """Exit with a clear message if ``import datasets`` is not densitybench's own.

    Hugging Face's library shares the import name; with it shadowing ours the
    harness would fail in confusing ways.
    """
    spec = importlib.util.find_spec("datasets")
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    ours = Path(__file__).resolve().parent.parent / "datasets" / "__init__.py"
    if origin != ours:
        raise SystemExit(
            f"densitybench: 'import datasets' resolves to {origin or 'nothing'}, not to {ours}. "
            "Another package named 'datasets' (e.g. Hugging Face's) shadows ours: "
            "use the project's virtual environment (make run / .venv/bin/python -m harness)."
        )
