"""The run's artefacts as the figures read them (``RunData``): each cell's saved
samples and log-density grid (``artifacts/<cell_key>.npz``), the datasets'
splits at the figure seed, plotting boxes and true densities, loaded lazily and
cached.

Example::

    run = RunData(run_dir, rows, meta)
    run.artifact("maf", "8gaussians")["samples"]     # (n, 2) of the lowest ok seed
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import datasets
from harness.evaluate import GRID_POINTS, plot_bounds
from harness.store import ARTIFACT_DIR


class RunData:
    """Rows, artefacts and dataset splits of a run, loaded lazily and cached. ``rows`` carry the
    report's method labels (``frame.label_profiles``); artefacts are found by each row's cell key."""

    def __init__(self, run_dir: Path | None, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rows = rows
        self.data_root = (meta.get("config") or {}).get("data_root")
        self._splits: dict[tuple[str, int], Any] = {}
        self._datasets: dict[str, Any] = {}
        self._true_grid: dict[str, Any] = {}

    def ok_rows(self, method: str | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
        """Ok rows (optionally of one method / dataset), lowest seed first."""
        out = [
            r
            for r in self.rows
            if r["status"] == "ok" and method in (None, r["method"]) and dataset in (None, r["dataset"])
        ]
        return sorted(out, key=lambda r: r["seed"])

    def status(self, method: str, dataset: str) -> str:
        """'ok', 'failed' or 'missing' for a (method, dataset) over its seeds."""
        states = {r["status"] for r in self.rows if r["method"] == method and r["dataset"] == dataset}
        return "ok" if "ok" in states else "failed" if "failed" in states else "missing"

    def seed(self, dataset: str) -> int:
        """The seed figures use for ``dataset``: the lowest with an ok row (else the lowest)."""
        rows = self.ok_rows(dataset=dataset) or [r for r in self.rows if r["dataset"] == dataset]
        return min(r["seed"] for r in rows)

    def artifact(self, method: str, dataset: str) -> dict[str, np.ndarray] | None:
        """The artefact arrays of the dataset's figure seed, else of the method's lowest ok seed whose file
        reads (a missing or damaged one is passed over; None without any, or without a run directory)."""
        rows = self.ok_rows(method, dataset) if self.run_dir is not None else []
        preferred = self.seed(dataset)
        for r in sorted(rows, key=lambda r: (r["seed"] != preferred, r["seed"])):
            path = self.run_dir / ARTIFACT_DIR / f"{r['cell_key']}.npz"
            try:
                with np.load(path) as z:
                    return {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                continue
        return None

    def dataset(self, name: str) -> Any | None:
        if name not in self._datasets:
            try:
                self._datasets[name] = datasets.get(name)
            except Exception:  # an unknown or removed dataset: panels that need it stay blank
                self._datasets[name] = None
        return self._datasets[name]

    def splits(self, name: str) -> Any | None:
        """The dataset's splits at its figure seed, or None when they cannot be loaded."""
        key = (name, self.seed(name))
        if key not in self._splits:
            ds = self.dataset(name)
            try:
                self._splits[key] = ds.load(seed=key[1], root=self.data_root) if ds is not None else None
            except Exception:  # data gone since the run: no data panels
                self._splits[key] = None
        return self._splits[key]

    def dim(self, name: str) -> int | None:
        """The dataset's dimension, from its data or else from any artefact."""
        splits = self.splits(name)
        if splits is not None:
            return int(splits.test.shape[1])
        for r in self.ok_rows(dataset=name):
            art = self.artifact(r["method"], name)
            if art is not None and art["samples"].ndim == 2:
                return int(art["samples"].shape[1])
        return None

    def box(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The 2-D plotting box (lo, hi): the artefact grids' box, from the test split as in evaluate."""
        splits = self.splits(name)
        if splits is not None:
            return plot_bounds(splits.test)
        for r in self.ok_rows(dataset=name):
            art = self.artifact(r["method"], name)
            if art is not None and "grid_x" in art:
                return np.array([art["grid_x"][0], art["grid_y"][0]]), np.array([art["grid_x"][-1], art["grid_y"][-1]])
            if art is not None:
                s = art["samples"]
                return plot_bounds(s[np.isfinite(s).all(axis=1)])
        return None

    def true_log_density(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(xs, ys, log p) on the artefact grid for 2-D sets with a known density (rows index y)."""
        if name not in self._true_grid:
            self._true_grid[name] = None
            ds, box = self.dataset(name), self.box(name)
            if ds is not None and getattr(ds, "has_density", False) and box is not None:
                xs, ys = (np.linspace(box[0][i], box[1][i], GRID_POINTS) for i in (0, 1))
                gx, gy = np.meshgrid(xs, ys)
                try:
                    lp = np.asarray(ds.log_prob(np.stack([gx.ravel(), gy.ravel()], axis=1)), dtype=float)
                    self._true_grid[name] = (xs, ys, lp.reshape(GRID_POINTS, GRID_POINTS))
                except Exception:  # a density that fails stays blank
                    pass
        return self._true_grid[name]
