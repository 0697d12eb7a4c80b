"""Equal-budget tuning on validation data (``python -m harness tune``).

For every (method, dataset) of a grid a seeded Optuna study (TPE sampler, median pruner) searches
the method's ``search_space`` with the same number of trials (or the same fit seconds) for every
method. A trial is a cell (``harness.trials``): it fits on the training split and is scored on the
validation split only. Trials are proposed in rounds of ``round_size`` (the same trials whatever
``--jobs`` is), run through the grid's executors (process pool or Ray) and recorded in the run
directory's ``tuning.sqlite`` by this process alone, so a killed ``tune`` resumes where it stopped:
finished trials are kept, the interrupted round is rerun with the same parameters. docs/tuning.md.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import methods
from harness.cells import Cell
from harness.config import Config
from harness.errors import UserError
from harness.studies import StudyPlan, open_storage, plan_for, quiet_optuna, study_summaries
from harness.trials import OBJECTIVES, PRUNERS, TrialCell, TrialTask

#: Trials proposed (and run) together per study: the sampler sees the trials of earlier rounds only.
ROUND_SIZE = 4
#: Largest number of trials one study may be asked for.
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class TuneSettings:
    """``trials`` per study, or a ``budget_s`` of fit seconds per study (the same for every method);
    the pruner; trials per round."""

    trials: int | None = None
    budget_s: float | None = None
    pruner: str = "median"
    round_size: int = ROUND_SIZE

    def __post_init__(self) -> None:
        if (self.trials is None) == (self.budget_s is None):
            raise UserError("tune needs exactly one of --trials N and --tune-budget SECONDS")
        if self.trials is not None and not (
            isinstance(self.trials, int) and not isinstance(self.trials, bool) and 1 <= self.trials <= MAX_TRIALS
        ):
            raise UserError(f"--trials must be a whole number in 1..{MAX_TRIALS}, got {self.trials!r}")
        if self.budget_s is not None and not (math.isfinite(self.budget_s) and self.budget_s > 0):
            raise UserError(f"--tune-budget must be a finite positive number of seconds, got {self.budget_s!r}")
        if self.pruner not in PRUNERS:
            raise UserError(f"unknown pruner '{self.pruner}'; valid: {', '.join(PRUNERS)}")
        if not (isinstance(self.round_size, int) and self.round_size >= 1):
            raise UserError(f"--trials-per-round must be a positive whole number, got {self.round_size!r}")

    def round_target(self, start: int) -> int:
        """Trials of the round that starts at trial ``start``."""
        return self.round_size if self.trials is None else max(0, min(self.round_size, self.trials - start))

    def done(self, finished: list) -> bool:
        """Whether a study whose finished trials are ``finished`` has had its share."""
        if self.trials is not None:
            return len(finished) >= self.trials
        return sum(_train_seconds(t) for t in finished) >= self.budget_s

    def to_dict(self) -> dict[str, Any]:
        return {"trials": self.trials, "budget_s": self.budget_s, "pruner": self.pruner, "round_size": self.round_size}


def _train_seconds(trial) -> float:
    attrs = trial.user_attrs
    return float(attrs.get("fit_s") if attrs.get("fit_s") is not None else attrs.get("wall_s") or 0.0)


# ----------------------------------------------------------------------------------- search spaces
def space_problems(name: str) -> list[str]:
    """What is wrong with method ``name``'s ``search_space`` (empty: nothing): every entry a bounded
    ``Float``/``Int`` (log scale only above 0) or a ``Choice`` of plain values, a parameter of the method
    whose bounds and choices its ``param_specs`` accept, and every profile's value inside it (a
    data-dependent "auto" or None excepted: trials replace it)."""
    from methods.base import Choice, Float, Int

    cls = methods.get(name)
    specs = methods.param_specs(name)
    problems = []
    for key, spec in cls.search_space.items():
        where = f"{name}.search_space[{key!r}]"
        if key not in specs:
            problems.append(f"{where}: '{key}' is not a parameter of {name}")
            continue
        if isinstance(spec, Float):
            lo, hi = spec.low, spec.high
            if lo is None or hi is None or spec.low_open or spec.high_open or not lo < hi:
                problems.append(f"{where}: a Float in a search space needs closed finite bounds min < max")
                continue
            points = [lo, hi, (lo + hi) / 2]
        elif isinstance(spec, Int):
            lo, hi = spec.min, spec.max
            if lo is None or hi is None or not lo < hi:
                problems.append(f"{where}: an Int in a search space needs bounds min < max")
                continue
            points = [lo, hi, (lo + hi) // 2]
        elif isinstance(spec, Choice):
            points = list(spec.values)
            if not points or not all(v is None or isinstance(v, (bool, int, float, str)) for v in points):
                problems.append(f"{where}: a Choice needs plain values (None, bool, int, float, str)")
                continue
        else:
            problems.append(f"{where}: {spec!r} is not a Float(min, max), Int(min, max) or Choice(...)")
            continue
        if getattr(spec, "log", False) and not lo > 0:
            problems.append(f"{where}: a log-scale range needs min > 0, got {lo}")
        for v in points:
            if not specs[key].accepts(v):
                problems.append(f"{where}: {v!r} is inside the space but {name} rejects it ({specs[key].describe()})")
        for profile, values in cls.profiles.items():
            v = values.get(key)
            if key in values and v not in ("auto", None) and not spec.accepts(v):
                problems.append(f"{where}: the {profile} profile's {key} = {v!r} lies outside {spec.describe()}")
    return problems


def distributions(name: str) -> dict[str, Any]:
    """Method ``name``'s search space as Optuna distributions."""
    optuna = quiet_optuna()
    from methods.base import Choice, Float, Int

    out = {}
    for key, spec in methods.get(name).search_space.items():
        if isinstance(spec, Float):
            out[key] = optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Int):
            out[key] = optuna.distributions.IntDistribution(spec.min, spec.max, log=spec.log)
        elif isinstance(spec, Choice):
            out[key] = optuna.distributions.CategoricalDistribution(list(spec.values))
    return out


# ----------------------------------------------------------------------------------- planning
def plan_studies(cells: list[Cell]) -> tuple[list[StudyPlan], dict[str, str]]:
    """The studies of a grid's ``cells`` (``plan_for``: one per row and dataset, run on the first seed's
    split, or one per seed where the dataset reshuffles its splits) and {row: why} for rows not tuned."""
    plans: dict[str, StudyPlan] = {}
    untuned: dict[str, str] = {}
    first_seed = min((c.seed for c in cells), default=0)
    for cell in cells:
        problems = space_problems(cell.method)
        if problems:
            raise UserError(problems[0])
        if not methods.get(cell.method).search_space:
            untuned[cell.name] = "the method declares no search space; it runs its profile"
            continue
        plan = plan_for(cell)
        if plan.per_seed or cell.seed == first_seed:
            plans.setdefault(plan.name, plan)
    return list(plans.values()), untuned


# ----------------------------------------------------------------------------------- the driver
@dataclass
class TuneSummary:
    studies: int = 0
    trials_run: int = 0
    ok: int = 0
    pruned: int = 0
    failed: int = 0
    untuned: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    seconds: float = 0.0


def tune(
    cfg: Config, settings: TuneSettings, run_dir: Path, *, progress: bool = True, isolate: bool = True
) -> TuneSummary:
    """Run every study of ``cfg``'s grid to its share of trials in ``run_dir`` (resuming what is there)."""
    from harness import runner
    from harness.signals import interrupt_on_signals
    from harness.store import ResultsStore

    cells, _ = runner.make_cells(cfg)
    plans, untuned = plan_studies(cells)
    summary = TuneSummary(studies=len(plans), untuned=untuned)
    run_dir = Path(run_dir)
    with interrupt_on_signals():
        # planning, before anything is written: the trials' splits (never the test split) and the data's hashes
        splits = runner.load_splits([p.cell for p in plans], parts=("train", "val"))
        fingerprints = runner.data_fingerprints(p.cell.dataset for p in plans)
        store = runner.open_existing_store(run_dir)
        try:
            if store is not None:
                runner.check_fingerprints(store, fingerprints)
            else:
                store = ResultsStore(run_dir)
                store.acquire_run_lock()
        except BaseException:
            if store is not None:
                store.close()
            raise
        t_start = time.perf_counter()
        try:
            store.set_meta(runner.FINGERPRINTS, {**store.meta().get(runner.FINGERPRINTS, {}), **fingerprints})
            store.set_meta("tuning", settings.to_dict())
            driver = _Driver(cfg, settings, open_storage(run_dir), run_dir, isolate, splits)
            driver.run(plans, summary, progress)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            summary.seconds = time.perf_counter() - t_start
            store.close()
    return summary


class _Driver:
    """Proposes, runs and records the trials of a grid's studies (the only writer of ``tuning.sqlite``)."""

    def __init__(
        self, cfg: Config, settings: TuneSettings, storage, run_dir: Path, isolate: bool, splits: dict | None = None
    ) -> None:
        self.optuna = quiet_optuna()
        self.cfg, self.settings, self.storage, self.run_dir, self.isolate = cfg, settings, storage, run_dir, isolate
        self.splits = splits if splits is not None else {}

    def run(self, plans: list[StudyPlan], summary: TuneSummary, progress: bool) -> None:
        from tqdm.auto import tqdm

        from harness.runner import signals_for_the_main_thread

        studies = {plan.name: (plan, self.open(plan)) for plan in plans}
        total = self.settings.trials * len(plans) if self.settings.trials is not None else None
        finished = sum(self.finished_count(study) for _, study in studies.values())
        with signals_for_the_main_thread():  # tqdm starts a monitor thread with its first bar
            bar = tqdm(total=total, initial=finished if total else 0, desc="trials", unit="trial", disable=not progress)
        try:
            while batch := [t for plan, study in studies.values() for t in self.next_trials(study, plan)]:
                for tcell, result, wall_s in self.execute(batch, bar):
                    state = self.record(studies[tcell.study][1], tcell, result, wall_s)
                    summary.trials_run += 1
                    setattr(summary, state, getattr(summary, state) + 1)
                    bar.update()
        finally:
            bar.close()

    @staticmethod
    def finished_count(study) -> int:
        return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))

    def open(self, plan: StudyPlan):
        """``plan``'s study, created with its attributes (its round size is kept from then on)."""
        direction = OBJECTIVES[plan.objective]
        study = self.optuna.create_study(
            study_name=plan.name, storage=self.storage, direction=direction, load_if_exists=True
        )
        if "method" not in study.user_attrs:
            for key, value in plan.attrs(self.settings.round_size).items():
                study.set_user_attr(key, value)
        return study

    def next_trials(self, study, plan: StudyPlan) -> list[TrialCell]:
        """The trials of ``study`` to run now: finish the asks of a round cut short by a kill, or start a
        new round when the study has not had its share; then every trial still running (a kill's too)."""
        from optuna.trial import TrialState

        settings = self.settings
        trials = study.get_trials(deepcopy=False)
        n = len(trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        round_size = int(study.user_attrs.get("round_size", settings.round_size))
        if n % round_size:
            start = n - n % round_size
            to_ask = (settings.round_target(start) if settings.trials is not None else round_size) - (n - start)
        elif not running and not settings.done([t for t in trials if t.state.is_finished()]):
            to_ask = settings.round_target(n)
        else:
            to_ask = 0
        running += [self.ask(study, plan) for _ in range(max(0, to_ask))]
        return [self.trial_cell(study, plan, t, round_size) for t in sorted(running, key=lambda t: t.number)]

    def ask(self, study, plan: StudyPlan):
        """A new trial: the first runs the profile's own values when they lie in the space (so that a tuned
        method is never worse on validation than its profile), the others are proposed by TPE, reseeded
        per trial number so that a resumed study proposes what an uninterrupted one would."""
        number = len(study.get_trials(deepcopy=False))
        space = methods.get(plan.cell.method).search_space
        if number == 0:
            values = plan.cell.params()
            if all(k in values and spec.accepts(values[k]) for k, spec in space.items()):
                study.enqueue_trial({k: values[k] for k in space}, user_attrs={"default": True})
        seed = int(np.random.SeedSequence([plan.cell.seed, number, _stable_int(plan.name)]).generate_state(1)[0])
        proposer = self.optuna.load_study(
            study_name=study.study_name,
            storage=self.storage,
            sampler=self.optuna.samplers.TPESampler(seed=seed, multivariate=True),
        )
        trial = proposer.ask(fixed_distributions=distributions(plan.cell.method))
        return study.get_trials(deepcopy=False)[trial.number]

    def trial_cell(self, study, plan: StudyPlan, trial, round_size: int) -> TrialCell:
        """The cell of ``trial``; its pruner compares with the completed trials of earlier rounds only."""
        from optuna.trial import TrialState

        start = trial.number - trial.number % round_size
        history = tuple(
            (dict(t.intermediate_values), float(t.value))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.number < start
        )
        return TrialCell(
            cell=plan.cell,
            study=study.study_name,
            number=trial.number,
            params=tuple(sorted(trial.params.items())),
            objective=plan.objective,
            pruner=self.settings.pruner,
            history=history,
        )

    def execute(self, batch: list[TrialCell], bar) -> Iterator[tuple[TrialCell, dict[str, Any], float]]:
        """Run ``batch`` through the grid's executor; yields (trial cell, result, wall seconds)."""
        from harness.pool import cell_threads, reap_stale_workers, run_pool
        from harness.runner import resolve_device

        cfg, started, t0 = self.cfg, {}, time.monotonic()

        def on_start(tcell: TrialCell) -> None:
            started[id(tcell)] = time.monotonic()
            bar.set_postfix_str(tcell.label)

        if cfg.executor == "ray":
            from harness.ray_executor import run_ray  # Ray is an optional extra

            results = run_ray(batch, TrialTask(), time_limit=cfg.cell_time_limit(), address=cfg.address)
        else:
            reap_stale_workers(self.run_dir)
            task = TrialTask(self.splits)
            if self.isolate:
                jobs = cfg.cell_jobs()
                results = run_pool(
                    batch,
                    task,
                    time_limit=cfg.cell_time_limit(),
                    jobs=jobs,
                    threads=cell_threads(jobs),
                    on_start=on_start,
                    device=resolve_device(cfg.device),
                    run_dir=self.run_dir,
                )
            else:
                results = ((t, task(t)) for t in batch)
        try:
            for tcell, result in results:
                yield tcell, result, time.monotonic() - started.get(id(tcell), t0)
        finally:
            results.close()

    def record(self, study, tcell: TrialCell, result: dict[str, Any], wall_s: float) -> str:
        """Tell the persistent study how ``tcell`` ended; returns "ok", "pruned" or "failed"."""
        from optuna.trial import TrialState

        study_id = self.storage.get_study_id_from_name(study.study_name)
        trial = self.optuna.trial.Trial(
            study, self.storage.get_trial_id_from_study_id_trial_number(study_id, tcell.number)
        )
        for step, value in sorted((result.get("intermediate") or {}).items()):
            trial.report(float(value), int(step))
        cpu_s = result.get("cpu_s", (result.get("timings") or {}).get("cpu_s"))
        attrs = {
            "cpu_s": cpu_s if cpu_s is not None else wall_s,
            "cpu_estimated": cpu_s is None,
            "fit_s": result.get("fit_s"),
            "wall_s": wall_s,
            "progress": result.get("progress"),
            "error": result.get("error"),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        status = result.get("status")
        if status == "ok":
            study.tell(trial, values=float(result["value"]))
            return "ok"
        study.tell(trial, state=TrialState.PRUNED if status == "pruned" else TrialState.FAIL)
        return "pruned" if status == "pruned" else "failed"


def _stable_int(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)


def summaries(run_dir: Path):
    """The ``StudySummary`` of every study in ``run_dir`` (none without ``tuning.sqlite``)."""
    if not (Path(run_dir) / "tuning.sqlite").is_file():
        return []
    return study_summaries(open_storage(run_dir, create=False))
