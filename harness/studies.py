"""The tuning studies of a run directory (``tuning.sqlite``, Optuna's RDB storage) and what they chose.

``open_storage`` opens (or creates) the studies' database; ``study_summaries`` reads every study
back as a ``StudySummary`` (trials, pruned, failed, best validation value and parameters, compute);
``apply_choices`` turns a grid's cells into the cells of the chosen parameters (``run --params-from``,
the test phase of ``tune``). Written by ``harness.tuning``; read by the runner and the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import methods
from harness.cells import Cell
from harness.errors import UserError
from harness.trials import OBJECTIVES, objective_of

STUDY_DB = "tuning.sqlite"


def quiet_optuna():
    """Import optuna with its per-trial log lines and experimental-feature warnings silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(run_dir: Path | str, *, create: bool = True):
    """The Optuna storage of ``run_dir``'s studies (SQLite through SQLAlchemy; one writer: the driver)."""
    optuna = quiet_optuna()
    path = Path(run_dir) / STUDY_DB
    if not create and not path.is_file():
        raise UserError(
            f"{run_dir} holds no tuning studies ({STUDY_DB} is missing): run `python -m harness tune` first"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    except Exception as e:  # a damaged or foreign file: one line
        raise UserError(f"{path} is not a readable tuning database: {type(e).__name__}: {e}") from None


def describe_space(name: str) -> dict[str, str]:
    """{parameter: "1e-05 .. 0.01 (log)"} for reports."""
    from methods.base import Choice, Float, Int

    out = {}
    for key, spec in methods.get(name).search_space.items():
        if isinstance(spec, Float):
            out[key] = f"{spec.low:g} .. {spec.high:g}" + (" (log)" if spec.log else "")
        elif isinstance(spec, Int):
            out[key] = f"{spec.min} .. {spec.max}" + (" (log)" if spec.log else "")
        elif isinstance(spec, Choice):
            out[key] = " | ".join(map(str, spec.values))
    return out


@dataclass(frozen=True)
class StudyPlan:
    """One study: the trials' template ``cell`` (its seed is the split the trials use) and whether the
    study serves only that seed (``per_seed``: the dataset reshuffles its splits per seed)."""

    cell: Cell
    per_seed: bool
    objective: str

    @property
    def name(self) -> str:
        """Readable and unique: row, dataset, profile, seed when per seed, and a hash of what defines the
        trials (overrides, variant, space, objective, budget)."""
        c = self.cell
        spec = [c.method, c.profile, list(c.overrides), list(c.variant), describe_space(c.method), self.objective]
        if c.budget is not None:
            spec.append(c.budget)
        digest = hashlib.sha1(json.dumps(spec, default=str, sort_keys=True).encode()).hexdigest()[:8]
        seed = f" | seed {c.seed}" if self.per_seed else ""
        return f"{c.name} | {c.dataset} | {c.profile}{seed} | {digest}"

    def attrs(self, round_size: int) -> dict[str, Any]:
        c = self.cell
        return {
            "method": c.method,
            "row": c.name,
            "dataset": c.dataset,
            "profile": c.profile,
            "seed": c.seed,
            "per_seed": self.per_seed,
            "objective": self.objective,
            "direction": OBJECTIVES[self.objective],
            "space": describe_space(c.method),
            "round_size": round_size,
        }


@dataclass
class StudySummary:
    """One study: what it tuned (``row``: the method's row name, ``dataset``, the split ``seed`` or None
    when one study serves every seed), how its trials ended, the best validation value and parameters,
    and its compute: ``cpu_s`` summed over trials; ``full_fit_cpu_s`` the median of the completed
    trials'; ``pruning_saved_cpu_s`` what the pruned trials would have cost had they run to the end
    (each one's CPU time scaled by its planned steps over the steps it reached: a lower bound, phases
    not begun are not counted)."""

    name: str
    method: str
    row: str
    dataset: str
    profile: str
    seed: int | None
    objective: str
    direction: str
    space: dict[str, str]
    trials: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: float | None = None
    best_number: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    default_value: float | None = None
    cpu_s: float = 0.0
    fit_s: float = 0.0
    full_fit_cpu_s: float | None = None
    pruning_saved_cpu_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def saved(self) -> float:
        """Share of the study's CPU time without pruning that pruning saved (at least)."""
        total = self.cpu_s + self.pruning_saved_cpu_s
        return self.pruning_saved_cpu_s / total if total > 0 else 0.0

    @property
    def of_full_fits(self) -> float | None:
        """CPU time used over that of ``trials`` full fits (median completed trial); None without one."""
        return self.cpu_s / (self.trials * self.full_fit_cpu_s) if self.full_fit_cpu_s and self.trials else None

    def note(self) -> dict[str, Any]:
        """What a tuned row records in ``info["tuning"]``."""
        return {
            "study": self.name,
            "trials": self.trials,
            "pruned": self.pruned,
            "failed": self.failed,
            "objective": self.objective,
            "best_value": self.best_value,
            "best_trial": self.best_number,
            "params": self.best_params,
            "cpu_s": self.cpu_s,
            "split_seed": self.seed,
        }


def study_summaries(storage) -> list[StudySummary]:
    """Every study of ``storage`` with the attributes ``harness.tuning`` gave it, in creation order."""
    optuna = quiet_optuna()
    out = []
    for frozen in storage.get_all_studies():
        attrs = frozen.user_attrs
        if "method" not in attrs:  # not one of ours
            continue
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        out.append(summarise(study, attrs))
    return out


def summarise(study, attrs: dict[str, Any]) -> StudySummary:
    """The ``StudySummary`` of a loaded Optuna study with ``harness.tuning``'s attributes ``attrs``."""
    from optuna.trial import TrialState

    s = StudySummary(
        name=study.study_name,
        method=attrs["method"],
        row=attrs["row"],
        dataset=attrs["dataset"],
        profile=attrs["profile"],
        seed=attrs.get("seed") if attrs.get("per_seed") else None,
        objective=attrs["objective"],
        direction=attrs["direction"],
        space=dict(attrs.get("space", {})),
    )
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    finished.sort(key=lambda t: t.number)
    sign = 1.0 if s.direction == "maximize" else -1.0
    best = None
    full_fits = []
    for t in finished:
        cpu = t.user_attrs.get("cpu_s") or 0.0
        s.trials += 1
        s.cpu_s += cpu
        s.fit_s += t.user_attrs.get("fit_s") or 0.0
        if t.state == TrialState.COMPLETE:
            s.complete += 1
            full_fits.append(cpu)
            if best is None or sign * t.value > sign * best.value:
                best = t
            if t.user_attrs.get("default"):
                s.default_value = t.value
        elif t.state == TrialState.PRUNED:
            s.pruned += 1
            reached = t.user_attrs.get("progress") or 1.0
            s.pruning_saved_cpu_s += cpu * (1.0 / max(reached, 1e-3) - 1.0)
        else:
            s.failed += 1
        s.history.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value if t.state == TrialState.COMPLETE else None,
                "cpu_s": cpu,
                "best": best.value if best is not None else None,
            }
        )
    if best is not None:
        s.best_value, s.best_number, s.best_params = float(best.value), best.number, dict(best.params)
    s.full_fit_cpu_s = statistics.median(full_fits) if full_fits else None
    return s


def apply_choices(cells: list[Cell], run_dir: Path | str) -> list[Cell]:
    """The cells of ``cells`` with the parameters the studies of ``run_dir`` chose (named ``X (tuned)``):
    a cell takes the best completed trial of the study ``tune`` plans for it (``plan_for``). A method
    without a search space keeps its profile; one with a space but no such study is an error."""
    summaries = {s.name: s for s in study_summaries(open_storage(run_dir, create=False))}
    out = []
    for cell in cells:
        if not methods.get(cell.method).search_space:
            note = {"tuned": False, "reason": "the method declares no search space"}
            out.append(replace(cell, tuning=json.dumps(note)))
            continue
        study = summaries.get(plan_for(cell).name)
        if study is None or study.best_value is None:
            why = "no study" if study is None else "a study without a completed trial"
            raise UserError(
                f"{run_dir} has {why} for {cell.name} on {cell.dataset} (profile {cell.profile}, seed "
                f"{cell.seed}, these overrides): tune it first, or leave --params-from out"
            )
        note = _finite({"tuned": True, **study.note()})
        out.append(replace(cell, tuned=tuple(sorted(study.best_params.items())), tuning=json.dumps(note)))
    return out


def plan_for(cell: Cell) -> StudyPlan:
    """The study that tunes ``cell``: per seed when its dataset reshuffles splits per seed, else one for
    every seed (run on the grid's first seed; its name does not depend on the seed)."""
    return StudyPlan(cell, datasets.get(cell.dataset).reshuffled_splits, objective_of(cell.method))


def _finite(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def summaries_as_dicts(run_dir: Path | str) -> list[dict[str, Any]]:
    """Every study of ``run_dir`` as a plain dict (``StudySummary`` fields plus ``saved``); [] without studies."""
    if not (Path(run_dir) / STUDY_DB).is_file():
        return []
    summaries = study_summaries(open_storage(run_dir, create=False))
    return [{**asdict(s), "saved": s.saved, "of_full_fits": s.of_full_fits} for s in summaries]
