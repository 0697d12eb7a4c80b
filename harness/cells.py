"""One cell of a grid and the cell function that runs it.

``run_cell`` fits and evaluates a (method, dataset, seed) in the calling
process and returns its result fields (``status``, ``error``, ``metrics``,
``timings``, ``info``); ``CellTask`` is that function bound to a run directory,
the picklable callable the executors (``harness.pool``, ``harness.ray_executor``)
call in their workers. ``failed_result`` is the one shape of a failed result.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import methods
from harness import gpu
from harness.store import ARTIFACT_DIR
from harness.variants import Variant

#: Appended to the row name of a cell that runs tuned parameters: ``maf (tuned)``.
TUNED_SUFFIX = "(tuned)"

#: Splits loaded by this process for the cells it ran (worker processes that load their own).
_PROCESS_SPLITS: dict = {}


@dataclass(frozen=True)
class Cell:
    """One (method, dataset, seed) of a grid, with its profile, overrides and device.

    ``method`` is the registered (base) method; ``variant`` the parameters of a method variant
    (harness/variants.py), applied over the config's ``overrides``; ``name`` the row's method name.
    """

    method: str
    dataset: str
    seed: int
    profile: str
    overrides: tuple[tuple[str, Any], ...] = ()
    device: str = "auto"
    sample_size: int = 5000
    data_root: str | None = None
    budget: float | None = None  # training seconds (``run --budget``); None: train to the planned steps
    variant: tuple[tuple[str, Any], ...] = ()
    #: Parameters chosen by tuning (harness/tuning.py), applied over the variant's; ``tuning`` is the
    #: study's summary as JSON (trials, pruned, best validation value...) for the row's ``info``.
    tuned: tuple[tuple[str, Any], ...] = ()
    tuning: str = ""

    @property
    def key(self) -> str:
        spec = [self.method, self.dataset, self.seed, self.profile, list(self.overrides), self.device, self.sample_size]
        if self.budget is not None:  # cells without a budget keep their keys (resume of older runs)
            spec.append({"budget": self.budget})
        if self.variant:  # plain methods keep the keys of earlier run directories
            spec.append(list(self.variant))
        if self.tuned:  # one cell whatever was chosen: a changed choice reruns it (harness/runner.py)
            spec.append("tuned")
        return hashlib.sha1(json.dumps(spec, default=str).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        name = Variant(self.method, self.variant).name
        return f"{name} {TUNED_SUFFIX}" if self.tuned else name

    @property
    def label(self) -> str:
        return f"{self.name}/{self.dataset}/s{self.seed}"

    def method_params(self) -> dict[str, Any]:
        """The overrides of this cell: the config's ``[params.<method>]``, then the variant's, then the
        tuned ones."""
        return {**dict(self.overrides), **dict(self.variant), **dict(self.tuned)}

    def params(self) -> dict[str, Any]:
        return methods.resolve_params(self.method, self.profile, self.method_params())


def one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def failed_result(error: str, **fields: Any) -> dict[str, Any]:
    """The result of a failed cell: ``error`` (one line) and empty metrics, timings and info, each
    replaced by ``fields`` where given (e.g. ``timings={"time_limit_s": 60}``)."""
    return {"status": "failed", "error": error, "metrics": {}, "timings": {}, "info": {}, **fields}


def preload_optimiser_imports() -> None:
    """Import what torch's first optimiser imports (torch._dynamo) before a fit's clock starts, so fit
    times and training budgets measure training, not a one-off import per worker (docs/cpu-threads.md).
    A no-op once imported: the local executor imports it in the parent, whose forked workers inherit it."""
    import torch._dynamo  # noqa: F401


def run_cell(cell: Cell, splits_cache: dict, run_dir: Path | None) -> dict[str, Any]:
    """Fit and evaluate one cell in this process; returns the row's status fields.

    The device is resolved here, in the process that uses it, and reported as the row's ``device``
    with the GPU's name and memory and the matmul-precision policy in ``info``.
    """
    from harness.evaluate import evaluate_cell  # numpy, scipy and the metrics: only where cells run

    device_fields: dict[str, Any] = {}
    try:
        ds = datasets.get(cell.dataset)
        if (cell.dataset, cell.seed) not in splits_cache:
            splits_cache[(cell.dataset, cell.seed)] = ds.load(seed=cell.seed, root=cell.data_root)
        splits = splits_cache[(cell.dataset, cell.seed)]
        methods.get(cell.method)  # loads the registry (and plugin modules) before the device is resolved
        from harness.toolkit.device import resolve_device as torch_device

        device = str(torch_device(cell.device))
        device_fields = {"device": device, **gpu.device_info(device), **gpu.apply_precision_policy()}
        model = methods.create(cell.method, cell.profile, device=device, seed=cell.seed, **cell.method_params())
        model.budget_s = cell.budget
        preload_optimiser_imports()
        art = run_dir / ARTIFACT_DIR / f"{cell.key}.npz" if run_dir is not None else None
        out = evaluate_cell(model, ds, splits, seed=cell.seed, sample_size=cell.sample_size, artifact_path=art)
        out["info"] = {**out["info"], **{k: v for k, v in device_fields.items() if k != "device"}}
        return {"status": "ok", "error": None, **out, **({"device": device} if device_fields else {})}
    except BaseException as e:  # recorded as a failed row
        if isinstance(e, KeyboardInterrupt):
            raise
        info = {"traceback": traceback.format_exc(limit=8), **{k: v for k, v in device_fields.items() if k != "device"}}
        row = failed_result(one_line(e), info=info)
        if "device" in device_fields:
            row["device"] = device_fields["device"]
        return row


@dataclass(frozen=True, eq=False)
class CellTask:
    """The cell function of a grid: ``task(cell)`` runs ``run_cell`` in the calling process.

    ``splits`` holds splits loaded beforehand, by (dataset, seed); None uses (and fills) this
    process's own cache, so a worker that runs several cells loads each dataset once. ``for_cell``
    gives the task holding only what one cell needs: what an executor hands to that cell's worker.
    """

    run_dir: Path | None = None
    splits: dict | None = None

    def __call__(self, cell: Cell) -> dict[str, Any]:
        return run_cell(cell, _PROCESS_SPLITS if self.splits is None else self.splits, self.run_dir)

    def for_cell(self, cell: Cell) -> CellTask:
        key = (cell.dataset, cell.seed)
        return CellTask(self.run_dir, {key: self.splits[key]} if self.splits and key in self.splits else None)
