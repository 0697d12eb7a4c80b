"""Training checkpoints (``Method.checkpoint``), quality-against-time reports and ``--budget`` runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import methods
from harness.__main__ import main
from harness.config import Config
from harness.report.curves import all_curves, methods_without_checkpoints, time_to_quality
from harness.runner import run_grid
from harness.store import ResultsStore
from harness.toolkit.checkpoint import checkpoint_every, gaussian_reference
from harness.toolkit.distances import energy_distance
from harness.toolkit.standardise import Standardiser


def eight_gaussians(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angles = rng.integers(0, 8, n) * np.pi / 4
    return 4 * np.stack([np.cos(angles), np.sin(angles)], axis=1) + 0.5 * rng.standard_normal((n, 2))


class StepClock:
    """A clock that advances one second per reading: fit timings depend only on the code path."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(scope="module")
def toy():
    return eight_gaussians(512, 0), eight_gaussians(256, 1)


def fit_with_clock(name: str, toy, budget: float | None, **overrides):
    model = methods.create(name, "smoke", device="cpu", seed=0, **overrides)
    model.clock, model.budget_s = StepClock(), budget
    return model.fit(*toy)


def test_checkpoint_times_exclude_evaluation_and_follow_the_schedule(toy):
    model = fit_with_clock("vae", toy, None)  # 200 steps: a checkpoint every 20
    steps = [c["step"] for c in model.checkpoints_]
    assert steps == list(range(checkpoint_every(200), 201, checkpoint_every(200)))
    # The step clock gives one second per reading: two readings per checkpoint (before and after its
    # evaluation), so evaluation time is exactly 1 s each and the training time excludes all of it.
    assert all(c["eval_s"] == 1.0 for c in model.checkpoints_)
    assert model.checkpoint_s_ == len(steps)
    assert all(np.isfinite(c["val_loglik"]) for c in model.checkpoints_)
    progress = model.info_["training_progress"]
    assert progress["steps"] == progress["planned_steps"] == 200 and not progress["stopped_by_budget"]


@pytest.mark.parametrize("name", ["vae", "supervised_diffusion", "flow_matching"])
def test_budget_stops_at_the_first_checkpoint_past_it_and_is_reproducible(name, toy):
    full = fit_with_clock(name, toy, None)
    times = [c["t"] for c in full.checkpoints_]
    budget = (times[2] + times[3]) / 2  # between the third and fourth checkpoints, far from both
    runs = [fit_with_clock(name, toy, budget) for _ in range(2)]
    first, second = runs
    # within one checkpoint: training stops at the first checkpoint past the budget (the fourth)
    ck = first.checkpoints_
    k = next(i for i, c in enumerate(ck) if c["t"] >= budget)
    assert k == 3 and ck[k - 1]["t"] < budget and first.info_["training_progress"]["stopped_by_budget"]
    assert all(c["phase"] != ck[k]["phase"] for c in ck[k + 1 :])
    later = [c["phase"] for c in ck[k + 1 :]]  # loops started after it stop at their first checkpoint
    assert len(later) == len(set(later))
    assert first.info_["training_progress"]["fraction"] < 1
    # the same seed and budget stop at the same step, with the same model
    assert [(c["phase"], c["step"]) for c in first.checkpoints_] == [
        (c["phase"], c["step"]) for c in second.checkpoints_
    ]
    np.testing.assert_array_equal(first.sample(64, seed=1), second.sample(64, seed=1))


def test_a_spent_budget_leaves_every_later_phase_one_checkpoint(toy):
    model = fit_with_clock("supervised_diffusion", toy, 1e-9)
    phases = model.info_["training_progress"]["phases"]
    p = model.params
    assert phases["generator"] == [checkpoint_every(p["iters"]), p["iters"]]
    assert phases["student_regression"] == [checkpoint_every(p["student_steps"]), p["student_steps"]]
    assert phases["student_distill"] == [checkpoint_every(p["student_distill_steps"]), p["student_distill_steps"]]
    assert np.isfinite(model.log_prob(toy[1])).all()


def test_energy_distance_and_gaussian_reference():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((400, 2)), rng.standard_normal((400, 2)) + [3.0, 0.0]
    # E|X - Y| >= E|X - X'| for a shift of 3: clearly positive; near 0 for the same law
    assert energy_distance(x, y) > 1.0 and abs(energy_distance(x, rng.standard_normal((400, 2)))) < 0.05
    train = rng.standard_normal((5000, 2)) * [2.0, 0.5]
    ref = gaussian_reference(train, train[:1000], Standardiser(train), np.random.default_rng(0))
    # the closed form: mean log N(x; 0, diag(4, 0.25)) = -log(2 pi) - log(2 * 0.5) - 1 (E of a chi2_2 / 2)
    assert ref["val_loglik"] == pytest.approx(-math.log(2 * math.pi) - 1.0, abs=0.06)
    assert abs(ref["val_energy"]) < 0.05


def row(method, dataset, points, ref, seed=0):
    return {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "status": "ok",
        "info": {
            "checkpoints": [
                {"phase": "training", "step": i + 1, "planned": len(points), "t": t, **v}
                for i, (t, v) in enumerate(points)
            ],
            "checkpoint_reference": ref,
        },
    }


def test_time_to_quality_against_hand_computed_values():
    ref = {"val_loglik": -3.0, "val_energy": 0.5}
    rows = [
        row("a", "d", [(1, {"val_loglik": -2.5}), (2, {"val_loglik": -1.5}), (4, {"val_loglik": -1.0})], ref),
        row("b", "d", [(1, {"val_loglik": -2.8}), (3, {"val_loglik": -2.0})], ref),
        row("g", "d", [(1, {"val_energy": 0.4}), (5, {"val_energy": 0.13}), (9, {"val_energy": 0.1})], ref),
        {"method": "flat", "dataset": "d", "seed": 0, "status": "ok", "info": {}},
    ]
    table = time_to_quality(rows, "val_loglik")
    # best final -1.0, reference -3.0: targets -2.0 (50%) and -1.2 (90%)
    assert table.times[("a", "d")] == {0.5: [2.0], 0.9: [4.0]}
    assert table.times[("b", "d")] == {0.5: [3.0], 0.9: [None]}
    assert table.entry("b", "d") == "3.0 / not reached"
    energy = time_to_quality(rows, "val_energy")  # lower is better: targets 0.3 and 0.14 (0.13 passes both)
    assert energy.times[("g", "d")] == {0.5: [5.0], 0.9: [5.0]}
    assert methods_without_checkpoints(rows) == ["flat"]


def test_time_to_quality_is_undefined_when_nobody_beats_the_reference():
    rows = [row("a", "d", [(1, {"val_loglik": -4.0})], {"val_loglik": -3.0})]
    table = time_to_quality(rows, "val_loglik")
    assert table.undefined == ["d"] and table.entry("a", "d") == "–"


def test_grid_stores_curves_that_survive_resume_and_reach_the_report(tmp_path):
    cfg = Config(
        methods=["gaussian", "vae"], datasets=["8gaussians"], seeds=[0], profile="smoke", sample_size=300, jobs=1
    )
    summary = run_grid(cfg, tmp_path, progress=False)
    assert summary.ok == 2
    rows = {r["method"]: r for r in ResultsStore(tmp_path, create=False).rows()}
    assert rows["gaussian"]["info"]["checkpoints"] == []  # no training loop: a row, no curve
    curves = all_curves(list(rows.values()))
    assert [c.method for c in curves] == ["vae"] and len(curves[0].times) == 10
    timings = rows["vae"]["timings"]
    assert timings["fit_s"] == pytest.approx(timings["fit_wall_s"] - timings["checkpoint_s"])
    again = run_grid(cfg, tmp_path, progress=False)  # resume: nothing reruns, the checkpoints are kept
    assert again.skipped_done == 2
    after = {r["method"]: r for r in ResultsStore(tmp_path, create=False).rows()}
    assert after["vae"]["info"]["checkpoints"] == rows["vae"]["info"]["checkpoints"]
    from harness.report import write_report

    paths = write_report(tmp_path, formats=("md", "html"))
    assert any(p.name == "fig_training_curves.png" for p in paths)
    report = (tmp_path / "report.md").read_text()
    assert (
        "Time to quality" in report
        and "Reported no checkpoints (no curve; their rows are in every other table): gaussian" in report
    )
    assert "Time to quality" in (tmp_path / "report.html").read_text()


def test_budget_from_the_command_line_reaches_every_trainable_cell(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--methods",
            "gaussian,vae",
            "--datasets",
            "8gaussians",
            "--profile",
            "smoke",
            "--sample-size",
            "300",
            "--jobs",
            "1",
            "--no-progress",
            "--budget",
            "1e-9",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = {r["method"]: r for r in ResultsStore(out, create=False).rows()}
    progress = rows["vae"]["info"]["training_progress"]
    # a budget far below the first checkpoint's time: the loop stops there, on any machine
    assert progress["budget_s"] == 1e-9 and progress["stopped_by_budget"] and progress["steps"] == checkpoint_every(200)
    assert "Training under a budget of 1e-09 s" in (out / "report.md").read_text()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_bad_budget_exits_2_with_one_line(value, tmp_path, capsys):
    code = main(["run", "--methods", "gaussian", "--budget", value, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "budget" in err and len(err.splitlines()) == 1


def test_bad_budget_in_toml_exits_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('methods = ["gaussian"]\nbudget = -5\n')
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "budget must be a finite positive number" in capsys.readouterr().err
