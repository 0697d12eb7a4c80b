"""One tuning trial as a cell: fit on the training split, score on the validation split only.

``TrialCell`` wraps the grid's ``Cell`` with the trial's parameters and what its pruner needs;
``TrialTask`` is the picklable function the executors (``harness.pool``, ``harness.ray_executor``)
run in their workers. The pruner runs in the worker: an in-memory Optuna study holding the
completed trials of earlier rounds (their intermediate values) decides at each checkpoint
(``Method.on_checkpoint``) whether the trial goes on; the driver records the outcome in the
persistent study. The test split is never read here.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

import datasets
import methods
from harness.cells import Cell, one_line, preload_optimiser_imports

#: Validation rows the objective is computed on (the same rows for every method of a study).
OBJECTIVE_ROWS = 5000
#: Rows of the energy-distance objective (samples drawn and validation rows compared).
ENERGY_ROWS = 2000
#: The objectives: mean validation log-likelihood (higher is better) for methods with a likelihood,
#: else the energy distance of samples to validation rows (lower is better).
OBJECTIVES = {"val_loglik": "maximize", "val_energy": "minimize"}
PRUNERS = ("median", "halving", "none")
#: Completed trials the median pruner waits for before it prunes (one round of trials).
PRUNER_STARTUP = 4
#: Checkpoints of a trial before the median pruner may stop it.
PRUNER_WARMUP = 1


def objective_of(method: str) -> str:
    """ "val_loglik" for a method with a likelihood (exact, bound or estimate), else "val_energy"."""
    return "val_loglik" if methods.get(method).log_prob_kind is not None else "val_energy"


@dataclass(frozen=True, eq=False)
class TrialCell:
    """Trial ``number`` of study ``study``: ``cell`` (method, dataset, split seed, profile, overrides)
    fitted with ``params`` on top. ``history``: (intermediate values {step: value}, final value) of
    the completed trials of earlier rounds, what the pruner compares with."""

    cell: Cell
    study: str
    number: int
    params: tuple[tuple[str, Any], ...]
    objective: str = "val_loglik"
    pruner: str = "median"
    history: tuple[tuple[dict[int, float], float], ...] = ()

    @property
    def dataset(self) -> str:
        return self.cell.dataset

    @property
    def seed(self) -> int:
        return self.cell.seed

    @property
    def device(self) -> str:
        return self.cell.device

    @property
    def data_root(self) -> str | None:
        return self.cell.data_root

    @property
    def label(self) -> str:
        return f"{self.cell.name}/{self.cell.dataset}/trial {self.number}"

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    def method_params(self) -> dict[str, Any]:
        return {**self.cell.method_params(), **dict(self.params)}


def make_pruner(name: str):
    """Optuna's pruner ``name`` ("median": stop a trial whose checkpoint is worse than the median of the
    completed trials' at the same checkpoint; "halving": successive halving; "none")."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP, n_warmup_steps=PRUNER_WARMUP)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


class Pruning:
    """The trial's view of its study: ``observe(record)`` reports a checkpoint's validation quality as
    an intermediate value (oriented like the objective) and raises ``optuna.TrialPruned`` when the
    pruner says stop. ``values`` keeps what was reported, {step: value}."""

    def __init__(self, tcell: TrialCell) -> None:
        import optuna

        self.maximize = tcell.direction == "maximize"
        self.study = optuna.create_study(direction=tcell.direction, pruner=make_pruner(tcell.pruner))
        for intermediate, value in tcell.history:
            self.study.add_trial(optuna.trial.create_trial(value=value, intermediate_values=intermediate))
        self.trial = self.study.ask()
        self.values: dict[int, float] = {}

    def observe(self, record: dict[str, Any]) -> None:
        import optuna

        if "val_loglik" in record:
            value = record["val_loglik"] if self.maximize else -record["val_loglik"]
        elif "val_energy" in record:
            value = -record["val_energy"] if self.maximize else record["val_energy"]
        else:  # a checkpoint without a quality (e.g. the flagship's "labels done")
            return
        if not math.isfinite(value):
            return
        step = len(self.values)
        self.values[step] = float(value)
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at checkpoint {step} ({record.get('phase')}, step {record.get('step')})")


def validation_score(model, train: np.ndarray, val: np.ndarray, objective: str, seed: int) -> float:
    """The trial's objective on the validation rows (never the test split)."""
    if objective == "val_loglik":
        lp = model.log_prob(val[:OBJECTIVE_ROWS])
        bad = int((~np.isfinite(lp)).sum())
        if bad:
            raise ValueError(f"log_prob is not finite on {bad} of {len(lp)} validation rows")
        return float(lp.mean())
    from harness.toolkit.distances import energy_distance
    from harness.toolkit.standardise import Standardiser

    rows = val[:ENERGY_ROWS]
    scale = Standardiser(train)
    return float(energy_distance(scale.forward(model.sample(len(rows), seed=seed)), scale.forward(rows)))


def run_trial(tcell: TrialCell, splits_cache: dict) -> dict[str, Any]:
    """Fit and score one trial in this process; returns {"status": "ok" | "pruned" | "failed", "value",
    "intermediate", "cpu_s", "fit_s", "progress" (share of the planned steps a pruned fit reached), "error"}."""
    import optuna

    cpu0 = time.process_time()
    pruning = None
    try:
        key = (tcell.dataset, tcell.seed)
        if key not in splits_cache:
            splits_cache[key] = datasets.get(tcell.dataset).load(seed=tcell.seed, root=tcell.data_root)
        splits = splits_cache[key]
        train, val = splits.train, splits.val
        from harness.toolkit.device import resolve_device

        device = str(resolve_device(tcell.device))
        cell = tcell.cell
        model = methods.create(cell.method, cell.profile, device=device, seed=cell.seed, **tcell.method_params())
        pruning = Pruning(tcell)
        model.on_checkpoint = pruning.observe
        preload_optimiser_imports()
        t0 = time.perf_counter()
        try:
            model.fit(train, val)
        except optuna.TrialPruned as e:
            progress = _progress(model)
            return _result("pruned", pruning, cpu0, error=str(e), fit_s=_fit_seconds(model, t0), progress=progress)
        fit_s = _fit_seconds(model, t0)
        value = validation_score(model, train, val, tcell.objective, cell.seed)
        if not math.isfinite(value):
            raise ValueError(f"the validation {tcell.objective} is not finite ({value})")
        return _result("ok", pruning, cpu0, value=value, fit_s=fit_s)
    except BaseException as e:  # a failed trial is recorded, the study goes on
        if isinstance(e, KeyboardInterrupt):
            raise
        return {
            **_result("failed", pruning, cpu0, error=one_line(e)),
            "traceback": traceback.format_exc(limit=6),
        }


def _progress(model) -> float:
    """Share of the planned training steps a stopped fit reached, over the phases it began (so at least
    the share of the whole fit: phases not begun are not counted)."""
    last = {c["phase"]: c for c in getattr(model, "checkpoints_", []) if c.get("planned")}
    planned = sum(c["planned"] for c in last.values())
    return min(1.0, sum(c["step"] for c in last.values()) / planned) if planned else 1.0


def _fit_seconds(model, t0: float) -> float:
    """Training seconds since ``t0``, the checkpoints' validation evaluations excluded."""
    return time.perf_counter() - t0 - float(getattr(model, "checkpoint_s_", 0.0))


def _result(status: str, pruning: Pruning | None, cpu0: float, **fields: Any) -> dict[str, Any]:
    return {
        "status": status,
        "value": None,
        "fit_s": None,
        "error": None,
        "intermediate": dict(pruning.values) if pruning is not None else {},
        "cpu_s": time.process_time() - cpu0,
        **fields,
    }


@dataclass(frozen=True, eq=False)
class TrialTask:
    """The trial function of a study: ``task(tcell)`` runs ``run_trial`` in the calling process, with
    ``splits`` loaded beforehand by (dataset, seed) (None: the process loads its own)."""

    splits: dict | None = None

    def __call__(self, tcell: TrialCell) -> dict[str, Any]:
        return run_trial(tcell, _PROCESS_SPLITS if self.splits is None else self.splits)

    def for_cell(self, tcell: TrialCell) -> TrialTask:
        key = (tcell.dataset, tcell.seed)
        return TrialTask({key: self.splits[key]} if self.splits and key in self.splits else None)


_PROCESS_SPLITS: dict = {}


__all__ = [
    "TrialCell",
    "TrialTask",
    "run_trial",
    "objective_of",
    "validation_score",
    "make_pruner",
    "OBJECTIVES",
    "PRUNERS",
]
