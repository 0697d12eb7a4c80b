"""Equal-budget tuning: bounded search spaces, reproducible studies, validation only, pruning, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

import datasets
import methods
from harness import config as config_mod
from harness.cells import Cell
from harness.errors import UserError
from harness.runner import run_grid
from harness.store import ResultsStore
from harness.studies import StudyPlan, open_storage, study_summaries
from harness.trials import TrialCell, run_trial
from harness.tuning import TuneSettings, _Driver, space_problems, tune
from methods.base import Choice, Float, Int, Method
from sqlite_reads import count_readonly

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True, scope="module")
def probe_plugin():
    """tuning_probe and guarded_test registered for this module's tests only (other modules run "all")."""
    import importlib

    module = importlib.import_module("plugins_tuning")
    yield module
    methods.unregister("tuning_probe")
    datasets.unregister("guarded_test")
    sys.modules.pop("plugins_tuning", None)


def probe_config(**raw) -> config_mod.Config:
    base = {"methods": ["tuning_probe"], "datasets": ["8gaussians"], "seeds": 1, "profile": "smoke", "jobs": 1}
    return config_mod.validate({**base, **raw})


def trial_table(run_dir: Path) -> list[tuple]:
    """(study, number, state, params, value) of every trial of ``run_dir``'s studies."""
    import optuna

    storage = open_storage(run_dir, create=False)
    out = []
    for frozen in storage.get_all_studies():
        for t in optuna.load_study(study_name=frozen.study_name, storage=storage).trials:
            out.append((frozen.study_name, t.number, t.state.name, tuple(sorted(t.params.items())), t.value))
    return sorted(out)


# ------------------------------------------------------------------------------------ search spaces
@pytest.mark.parametrize("name", methods.names())
def test_search_space_is_bounded_inside_the_specs_and_holds_every_profile(name):
    assert space_problems(name) == []


@contextmanager
def registered(space, profile_value=0.5, specs=None):
    cls = type(
        "BadSpace",
        (Method,),
        {
            "name": "bad_space",
            "log_prob_kind": None,
            "profiles": {p: {"a": profile_value} for p in methods.PROFILES},
            "param_specs": specs or {"a": Float(0.0, 1.0)},
            "search_space": space,
            "_fit": lambda self, train, val: None,
            "_sample": lambda self, n, seed: None,
        },
    )
    methods.register(cls)
    try:
        yield cls.name
    finally:
        methods.unregister(cls.name)


@pytest.mark.parametrize(
    "space, profile_value, expected",
    [
        ({"a": Float(min=0.0)}, 0.5, "closed finite bounds"),
        ({"a": Float(gt=0.0, lt=1.0)}, 0.5, "closed finite bounds"),
        ({"a": Float(0.0, 2.0)}, 0.5, "rejects it"),
        ({"a": Float(0.6, 0.9)}, 0.5, "lies outside"),
        ({"a": Float(0.0, 1.0, log=True)}, 0.5, "log-scale range needs min > 0"),
        ({"b": Float(0.0, 1.0)}, 0.5, "not a parameter"),
        ({"a": Choice(object())}, 0.5, "plain values"),
        ({"a": Int(0, 1)}, 0.5, "lies outside"),
    ],
)
def test_unbounded_or_out_of_spec_search_space_is_rejected(space, profile_value, expected):
    with registered(space, profile_value) as name:
        problems = space_problems(name)
    assert problems and expected in problems[0], problems


def test_planning_refuses_a_bad_search_space_with_one_line():
    from harness.tuning import plan_studies

    with registered({"a": Float(min=0.0)}) as name:
        with pytest.raises(UserError, match="closed finite bounds"):
            plan_studies([Cell(name, "8gaussians", 0, "smoke")])


# ------------------------------------------------------------------------------------ studies
def test_same_seed_and_command_give_the_same_trials(tmp_path):
    settings = TuneSettings(trials=6, round_size=2)
    for out in ("a", "b"):
        summary = tune(probe_config(), settings, tmp_path / out, progress=False, isolate=False)
        assert summary.trials_run == 6 and not summary.interrupted
    first, second = trial_table(tmp_path / "a"), trial_table(tmp_path / "b")
    assert first == second
    assert len({params for *_, params, _ in first}) == 6  # the trials explore, they do not repeat one point
    assert first[0][3] == (("log_scale", 1.0),)  # trial 0 runs the profile's own value


def test_second_invocation_resumes_without_new_trials(tmp_path):
    settings = TuneSettings(trials=4, round_size=2)
    tune(probe_config(), settings, tmp_path, progress=False, isolate=False)
    before = trial_table(tmp_path)
    again = tune(probe_config(), settings, tmp_path, progress=False, isolate=False)
    assert again.trials_run == 0 and trial_table(tmp_path) == before


def test_more_trials_continue_the_same_study(tmp_path):
    tune(probe_config(), TuneSettings(trials=4, round_size=2), tmp_path / "grown", progress=False, isolate=False)
    more = tune(probe_config(), TuneSettings(trials=6, round_size=2), tmp_path / "grown", progress=False, isolate=False)
    tune(probe_config(), TuneSettings(trials=6, round_size=2), tmp_path / "direct", progress=False, isolate=False)
    assert more.trials_run == 2
    assert trial_table(tmp_path / "grown") == trial_table(tmp_path / "direct")


def test_tuning_never_reads_the_test_split_and_the_test_phase_does(tmp_path):
    cfg = probe_config(datasets=["guarded_test"])
    summary = tune(cfg, TuneSettings(trials=4, round_size=2), tmp_path, progress=False)
    assert summary.ok == 4 and summary.failed == 0
    with pytest.raises(RuntimeError, match="the test split was read"):  # the test phase reads it at planning
        run_grid(replace(cfg, params_from=str(tmp_path)), tmp_path, progress=False)


def test_chosen_parameters_are_the_best_validation_trial_and_run_as_tuned_cells(tmp_path):
    cfg = probe_config(seeds=2)
    tune(cfg, TuneSettings(trials=6, round_size=2), tmp_path, progress=False)
    (study,) = study_summaries(open_storage(tmp_path, create=False))
    values = [v for *_, state, _, v in trial_table(tmp_path) if state == "COMPLETE"]
    assert study.best_value == max(values)
    run_grid(replace(cfg, params_from=str(tmp_path)), tmp_path, progress=False)
    rows = ResultsStore(tmp_path, create=False).rows()
    assert {r["seed"] for r in rows} == {0, 1} and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["params"]["log_scale"] == study.best_params["log_scale"]
        assert r["info"]["tuning"]["trials"] == 6 and r["info"]["tuning"]["best_value"] == study.best_value


def test_a_reshuffled_dataset_is_tuned_per_seed():
    from harness.tuning import plan_studies

    cells = [Cell("tuning_probe", d, s, "smoke") for d in ("8gaussians", "power-plant") for s in (0, 1, 2)]
    plans, _ = plan_studies(cells)
    per_dataset = {d: [p for p in plans if p.cell.dataset == d] for d in ("8gaussians", "power-plant")}
    assert len(per_dataset["8gaussians"]) == 1  # fresh draws per seed: one study on seed 0
    assert sorted(p.cell.seed for p in per_dataset["power-plant"]) == [0, 1, 2]


# ------------------------------------------------------------------------------------ pruning
def prunable_trial(tmp_path, history_value: float):
    """A driver, its study and trial 4 of ``tuning_probe``, whose pruner has seen four completed trials
    with the validation log-likelihood ``history_value`` at every checkpoint."""
    cell = Cell("tuning_probe", "8gaussians", 0, "smoke", variant=(("steps", 4),))
    plan = StudyPlan(cell, False, "val_loglik")
    driver = _Driver(probe_config(), TuneSettings(trials=8, round_size=4), open_storage(tmp_path), tmp_path, False)
    study = driver.open(plan)
    trials = [driver.ask(study, plan) for _ in range(5)]
    history = tuple(({s: history_value for s in range(4)}, history_value) for _ in range(4))
    tcell = TrialCell(cell, study.study_name, trials[4].number, (("log_scale", 1.0),), history=history)
    return driver, study, tcell


def test_a_trial_below_the_median_of_completed_trials_is_pruned_and_recorded_as_pruned(tmp_path):
    driver, study, tcell = prunable_trial(tmp_path, history_value=0.0)  # far above any Gaussian fit
    result = run_trial(tcell, {})
    assert result["status"] == "pruned"
    assert sorted(result["intermediate"]) == [0, 1]  # reported at the warm-up and the first later checkpoint
    assert driver.record(study, tcell, result, wall_s=1.0) == "pruned"
    frozen = study.trials[tcell.number]
    assert frozen.state.name == "PRUNED" and frozen.intermediate_values == result["intermediate"]
    (summary,) = study_summaries(driver.storage)
    assert summary.pruned == 1 and summary.trials == 1  # a pruned trial counts towards N
    assert result["progress"] == 0.5  # stopped at step 2 of 4: the rest would have cost as much again
    assert summary.pruning_saved_cpu_s == pytest.approx(summary.cpu_s) and summary.saved == pytest.approx(0.5)


def test_a_trial_above_the_median_runs_to_the_end(tmp_path):
    driver, study, tcell = prunable_trial(tmp_path, history_value=-1e9)
    result = run_trial(tcell, {})
    assert result["status"] == "ok" and sorted(result["intermediate"]) == [0, 1, 2, 3]
    assert driver.record(study, tcell, result, wall_s=1.0) == "ok"


def test_a_failed_trial_is_recorded_as_failed_and_the_study_goes_on(tmp_path):
    driver, study, tcell = prunable_trial(tmp_path, history_value=0.0)
    result = run_trial(replace(tcell, params=(("log_scale", float("nan")),)), {})
    assert result["status"] == "failed" and "log_scale" in result["error"]
    assert driver.record(study, tcell, result, wall_s=1.0) == "failed"
    assert study.trials[tcell.number].state.name == "FAIL"
    (summary,) = study_summaries(driver.storage)
    assert summary.failed == 1 and summary.trials == 1


# ------------------------------------------------------------------------------------ kill and resume
def tune_cli(out: Path, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DENSITYBENCH_PLUGINS": "plugins_tuning",
    }
    config = out.parent / "probe.toml"
    config.write_text("[params.tuning_probe]\ndelay = 0.3\n", encoding="utf-8")
    args = ["--methods", "tuning_probe", "--datasets", "8gaussians", "--profile", "smoke", "--seeds", "2"]
    cmd = [sys.executable, "-m", "harness", "tune", "--config", str(config), *args, "--jobs", "1", "--out", str(out)]
    return subprocess.Popen(
        [*cmd, "--trials", "6", "--trials-per-round", "2", "--no-progress", "--sample-size", "200", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def completed_trials(run_dir: Path) -> int:
    return count_readonly(run_dir / "tuning.sqlite", "SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'", timeout=1)


def final_table(run_dir: Path) -> dict:
    """Every test row's identity, parameters and metrics (timings excluded)."""
    rows = ResultsStore(run_dir, create=False).rows()
    return {(r["method"], r["dataset"], r["seed"]): (r["status"], r["params"], r["metrics"]) for r in rows}


def test_kill_9_in_the_middle_and_resume_gives_the_same_final_table(tmp_path):
    whole = tune_cli(tmp_path / "whole")
    killed = tune_cli(tmp_path / "killed")
    deadline = time.monotonic() + 300
    while completed_trials(tmp_path / "killed") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert completed_trials(tmp_path / "killed") >= 3
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert completed_trials(tmp_path / "killed") < 6  # it was killed in the middle
    resumed = tune_cli(tmp_path / "killed")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    assert trial_table(tmp_path / "killed") == trial_table(tmp_path / "whole")
    assert final_table(tmp_path / "killed") == final_table(tmp_path / "whole")


# ------------------------------------------------------------------------------------ Ray
def test_a_small_study_runs_on_a_local_ray_cluster(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[distributed]'")
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DENSITYBENCH_PLUGINS": "plugins_tuning",
        "RAY_ADDRESS": "",
        "RAY_NUM_CPUS": "2",
    }
    args = ["--methods", "tuning_probe", "--datasets", "8gaussians", "--profile", "smoke", "--seeds", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "harness", "tune", *args, "--executor", "ray", "--trials", "4", "--out", str(tmp_path)]
        + ["--trials-per-round", "2", "--no-progress", "--sample-size", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    states = [state for _, _, state, _, _ in trial_table(tmp_path)]
    assert states == ["COMPLETE"] * 4
    assert [r["status"] for r in ResultsStore(tmp_path, create=False).rows()] == ["ok"]


# ------------------------------------------------------------------------------------ real methods and the report
@pytest.mark.parametrize("method", ["maf", "supervised_diffusion", "gan"])
def test_a_real_method_reports_checkpoints_to_its_pruner(method, tmp_path):
    """A trial of a real method below the completed trials' median stops at its first checkpoint after
    the warm-up, and the share of its planned steps it reached is recorded (methods without a likelihood
    report the energy distance, oriented like their objective)."""
    from harness.trials import objective_of

    objective = objective_of(method)
    good = 1e9 if objective == "val_loglik" else -1e9  # any real fit is worse than this history
    history = tuple(({s: good for s in range(40)}, good) for _ in range(4))
    tcell = TrialCell(Cell(method, "8gaussians", 0, "smoke"), "s", 4, (), objective=objective, history=history)
    result = run_trial(tcell, {})
    assert result["status"] == "pruned", result.get("error")
    assert sorted(result["intermediate"]) == [0, 1]
    assert 0 < result["progress"] < 1


def test_tune_command_writes_the_tuning_report_and_resumes(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DENSITYBENCH_PLUGINS": "plugins_tuning",
    }
    grid = ["--methods", "gaussian,tuning_probe", "--datasets", "8gaussians", "--profile", "smoke", "--seeds", "2"]
    grid += ["--sample-size", "200"]
    cmd = [sys.executable, "-m", "harness", "tune", *grid, "--trials", "4", "--out", str(tmp_path), "--no-progress"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "not tuned: gaussian" in first.stderr
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    for part in ("## Tuning", "How each row was configured", "Chosen parameters", "Compute of the tuning"):
        assert part in report
    assert "tuning_probe (tuned)" in report and "default profile (no search space)" in report
    assert (tmp_path / "figures" / "fig_tuning.png").is_file()
    before = trial_table(tmp_path)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "0 trials run now" in second.stdout and "4 already done" in second.stdout
    assert trial_table(tmp_path) == before
    default = subprocess.run(
        [sys.executable, "-m", "harness", "run", *grid, "--out", str(tmp_path), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert default.returncode == 0, default.stderr
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Tuned minus the profile's parameters" in report


def test_params_from_a_directory_without_studies_is_refused(tmp_path):
    from harness.__main__ import main

    assert main(["run", "--methods", "maf", "--profile", "smoke", "--params-from", str(tmp_path)]) == 2


def test_a_fit_time_budget_stops_each_study_at_the_first_round_past_it(tmp_path):
    cfg = probe_config(params={"tuning_probe": {"delay": 0.05}})
    settings = TuneSettings(budget_s=0.5, round_size=2)
    tune(cfg, settings, tmp_path, progress=False, isolate=False)
    import optuna

    storage = open_storage(tmp_path, create=False)
    (frozen,) = storage.get_all_studies()
    fits = [t.user_attrs["fit_s"] for t in optuna.load_study(study_name=frozen.study_name, storage=storage).trials]
    assert len(fits) % 2 == 0 and sum(fits[:-2]) < 0.5 <= sum(fits)


def spin(cell):
    """A cell function that keeps a core busy until it is killed."""
    while True:
        pass


def test_a_timed_out_worker_reports_the_cpu_time_it_used():
    from harness.pool import run_pool

    cell = Cell("gaussian", "8gaussians", 0, "smoke")
    ((_, result),) = list(run_pool([cell], spin, time_limit=1.5, jobs=1))
    assert result["status"] == "failed" and result["error"].startswith("TimeLimit")
    assert 0 < result["timings"]["cpu_s"] <= 1.5 + 0.5


def test_a_dataset_whose_studies_have_no_finished_trial_gets_no_empty_panel(tmp_path):
    from matplotlib.image import imread

    from harness.report.figures_tuning import fig_tuning

    def study(dataset: str, history: list[dict]) -> dict:
        return {"dataset": dataset, "objective": "val_loglik", "row": "maf", "history": history}

    finished = [{"number": 0, "cpu_s": 2.0, "best": -3.1}, {"number": 1, "cpu_s": 3.0, "best": -3.0}]
    alone = fig_tuning([study("8gaussians", finished)], {}, tmp_path / "alone.png")
    beside = fig_tuning(
        [study("8gaussians", finished), study("kin8nm", [{"number": 0, "cpu_s": 9.0, "best": None}])],
        {},
        tmp_path / "beside.png",
    )
    assert imread(alone).shape == imread(beside).shape  # one dataset column in both
    assert fig_tuning([study("kin8nm", [])], {}, tmp_path / "none.png") is None
