"""scripts/compare_runs.py: two run directories compared cell by cell, times left out."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from harness.store import ResultsStore
from scripts_as_modules import load_script

compare_runs = load_script("compare_runs.py")

ROW = {
    "cell_key": "k1",
    "method": "gaussian",
    "dataset": "8gaussians",
    "seed": 0,
    "profile": "smoke",
    "params": {"ridge": 1e-6},
    "device": "cpu",
    "status": "ok",
    "error": None,
    "metrics": {"test_loglik": -2.5, "energy_distance": 0.125},
    "timings": {"fit_s": 1.0},
    "info": {
        "checkpoints": [{"phase": "training", "step": 10, "t": 0.5, "eval_s": 0.1, "val_loglik": -2.6}],
        "training_progress": {"steps": 10, "train_s": 0.5, "checkpoint_s": 0.1},
    },
    "code_version": "abc",
}


def write_run(path: Path, *rows: dict) -> str:
    store = ResultsStore(path)
    for row in rows:
        store.put(row)
    store.close()
    return str(path)


def changed(row: dict, section: str, key: str, value) -> dict:
    out = copy.deepcopy(row)
    out[section][key] = value
    return out


def test_times_and_bookkeeping_do_not_count(tmp_path, capsys):
    other = copy.deepcopy(ROW)
    other["timings"] = {"fit_s": 9.0}
    other["code_version"] = "def"
    other["info"]["checkpoints"][0].update(t=7.0, eval_s=3.0)
    other["info"]["training_progress"].update(train_s=7.0, checkpoint_s=3.0)
    a, b = write_run(tmp_path / "a", ROW), write_run(tmp_path / "b", other)
    assert compare_runs.main([a, b]) == 0
    assert capsys.readouterr().out.startswith("identical: 1 cells")


@pytest.mark.parametrize(
    "section, key, value, shown",
    [
        ("metrics", "test_loglik", -2.5000001, "metrics.test_loglik: A=-2.5 B=-2.5000001"),
        ("metrics", "kl", 0.1, "metrics.kl: A='<absent>' B=0.1"),
        ("params", "ridge", 1e-3, "params.ridge: A=1e-06 B=0.001"),
        ("info", "checkpoints", [{"phase": "training", "step": 11}], "info.checkpoints[0].step: A=10 B=11"),
    ],
)
def test_a_differing_field_is_named_with_both_values(tmp_path, capsys, section, key, value, shown):
    a = write_run(tmp_path / "a", ROW)
    b = write_run(tmp_path / "b", changed(ROW, section, key, value))
    assert compare_runs.main([a, b]) == 1
    assert f"gaussian/8gaussians/0/smoke: {shown}" in capsys.readouterr().out


def test_relative_tolerance(tmp_path):
    a = write_run(tmp_path / "a", ROW)
    b = write_run(tmp_path / "b", changed(ROW, "metrics", "test_loglik", -2.5 * (1 + 1e-7)))
    assert compare_runs.main([a, b, "--rtol", "1e-6"]) == 0
    assert compare_runs.main([a, b, "--rtol", "1e-8"]) == 1


def test_a_cell_in_one_run_only_is_reported(tmp_path, capsys):
    extra = {**ROW, "cell_key": "k2", "seed": 1}
    a, b = write_run(tmp_path / "a", ROW), write_run(tmp_path / "b", ROW, extra)
    assert compare_runs.main([a, b]) == 1
    assert "gaussian/8gaussians/1/smoke: only in B" in capsys.readouterr().out


def test_a_missing_run_directory_exits_2(tmp_path, capsys):
    a = write_run(tmp_path / "a", ROW)
    assert compare_runs.main([a, str(tmp_path / "nowhere")]) == 2
    assert "no results database" in capsys.readouterr().err
