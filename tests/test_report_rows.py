"""What the report's entries are made of: never an average over profiles, and ``k/n seeds ok`` when
some seeds of a cell failed."""

from __future__ import annotations

import pytest

from harness.report import build, latex, markdown


def row(
    seed: int, loglik: float | None, *, profile: str = "smoke", method: str = "gaussian", status: str = "ok"
) -> dict:
    return {
        "cell_key": f"{method}-{profile}-{seed}",
        "method": method,
        "dataset": "8gaussians",
        "seed": seed,
        "profile": profile,
        "device": "cpu",
        "status": status,
        "error": None if status == "ok" else "boom",
        "code_version": "v",
        "config_hash": "h",
        "params": {},
        "metrics": {} if loglik is None else {"kind": "exact", "test_loglik": loglik},
        "timings": {},
        "info": {},
    }


def entry(data, method: str):
    table = next(t for t in data.tables if t.spec.key == "test_loglik")
    return table.entries[(method, "8gaussians")]


def test_profiles_are_separate_rows_never_averaged():
    data = build([row(0, -1.0), row(1, -1.0), row(0, -3.0, profile="quick")])
    assert set(data.methods) == {"gaussian (smoke)", "gaussian (quick)"}
    assert entry(data, "gaussian (smoke)").mean == pytest.approx(-1.0)
    assert entry(data, "gaussian (quick)").mean == pytest.approx(-3.0)


def test_one_profile_keeps_the_plain_method_name():
    data = build([row(0, -1.0), row(0, -2.0, method="kde")])
    assert set(data.methods) == {"gaussian", "kde"}


def test_partly_failed_cell_says_how_many_seeds_are_in_its_mean():
    rows = [row(0, -1.0), row(1, -2.0), row(2, None, status="failed"), row(0, -5.0, method="kde")]
    data = build(rows)
    partial, whole = entry(data, "gaussian"), entry(data, "kde")
    assert (partial.mean, partial.seeds_ok, partial.seeds_run) == (pytest.approx(-1.5), 2, 3)
    assert whole.seeds_note() == ""
    # mean -1.5 ± the t-interval half-width 12.706 * 0.707 / sqrt 2 = 6.35 over the two seeds that ran
    assert "-1.50 ± 6.4 (2/3 seeds ok)" in markdown(rows)
    assert "(2/3 seeds ok)" in latex(rows)


def _timed(seed: int, loglik: float, rate: float, profile: str) -> dict:
    r = row(seed, loglik, profile=profile)
    r["timings"] = {"samples_per_s": rate}
    r["info"] = {"checkpoints": [{"t": 0.1 * rate, "phase": "training", "step": 1, "val_loglik": loglik}]}
    return r


def test_two_profiles_are_two_points_in_the_speed_figure_two_curves_and_two_verdict_entries():
    from harness.report.figures import speed_quality_figure

    rows = [_timed(s, -1.0, 100.0, "smoke") for s in (0, 1)] + [_timed(s, -3.0, 1000.0, "quick") for s in (0, 1)]
    data = build(rows)
    top = speed_quality_figure(data).axes[0]
    points = sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in top.lines if line.get_marker() != "None")
    # pooled, the figure would show one point at (550, -2.0)
    assert points == [pytest.approx((100.0, -1.0)), pytest.approx((1000.0, -3.0))]
    table = data.time_tables[0]
    assert table.methods == ["gaussian (quick)", "gaussian (smoke)"]
    density = next(line for line in data.verdict if line.quantity.name == "Density")
    assert density.answer.best == ["gaussian (smoke)"] and set(density.answer.average) == set(table.methods)
