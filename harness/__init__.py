"""densitybench engine: CLI, configuration, grid runner, results store, metrics, reports."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: A folder for the caches the harness's libraries write (matplotlib's config and font cache, torch's
#: compile caches). Unset: a private folder in the temporary directory, removed when the process ends,
#: so nothing is left in the home or temporary directory.
CACHE_ENV = "DENSITYBENCH_CACHE"
#: Each library's cache variable and its subfolder of the cache folder (a variable already set wins).
CACHE_VARS = {"MPLCONFIGDIR": "matplotlib", "TORCHINDUCTOR_CACHE_DIR": "torchinductor", "TRITON_CACHE_DIR": "triton"}


def set_process_defaults() -> None:
    """Environment defaults of a harness process, set where a process starts (``python -m harness``,
    cell workers) before torch or matplotlib is imported: passive OpenMP waiting (``OMP_WAIT_POLICY``;
    why: docs/cpu-threads.md), git commands that take no optional lock (no write to the repository),
    and the caches in ``$DENSITYBENCH_CACHE`` (see ``CACHE_ENV``). An explicit setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GIT_OPTIONAL_LOCKS", "0")
    unset = [var for var in CACHE_VARS if not os.environ.get(var)]
    if unset:
        root = os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV])) if os.environ.get(CACHE_ENV) else _scratch()
        for var in unset:
            os.environ[var] = os.path.join(root, CACHE_VARS[var])


def _scratch() -> str:
    """A private temporary folder removed at exit (forked workers leave by ``os._exit``: they keep it)."""
    folder = tempfile.mkdtemp(prefix="densitybench-cache-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


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
