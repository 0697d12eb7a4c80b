"""The verdict at the top of every report, on hand-made stores whose answer is known (average ranks and
the Nemenyi critical difference computed by hand in comments), and the likelihood error bars: shown,
warned about, and never called a difference."""

from __future__ import annotations

import io
import math

import pytest

from harness.__main__ import main
from harness.errors import UserError
from harness.report import build, markdown, print_verdict, write_report
from harness.report.errorbars import error_bar_warnings
from harness.report.html import render_html
from harness.report.verdict import line_text
from harness.store import ResultsStore

TWO_D = ["8gaussians", "moons", "circles", "rings", "pinwheel", "checkerboard"]  # group "2d"
MAF = ["power", "gas", "hepmass", "miniboone"]  # group "maf"


def _row(method: str, dataset: str, seed: int, metrics: dict, timings: dict | None = None) -> dict:
    return {
        "cell_key": f"{method}-{dataset}-{seed}",
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "profile": "quick",
        "params": {},
        "device": "cpu",
        "code_version": "t",
        "config_hash": "h",
        "status": "ok",
        "error": None,
        "metrics": metrics,
        "timings": timings or {},
        "info": {},
    }


def _grid_rows() -> list[dict]:
    """a, b, c have likelihoods, g has none. Log-likelihood: a > b > c on the six 2-D sets (where KL is
    known too), b > a > c on the four MAF sets. Energy distance: g < a < b < c everywhere. Fit time:
    c < a < b < g. Sampling rate: g > c > b > a. Two seeds, a little apart."""
    loglik = {"a": (-1.0, -2.0), "b": (-2.0, -1.0), "c": (-3.0, -3.0)}  # (2-D, MAF)
    order = {"g": 0, "a": 1, "b": 2, "c": 3}
    fit = {"c": 1.0, "a": 2.0, "b": 3.0, "g": 4.0}
    rate = {"g": 1e6, "c": 1e5, "b": 1e4, "a": 1e3}
    rows = []
    for ds in TWO_D + MAF:
        for seed in (0, 1):
            for m in ("a", "b", "c", "g"):
                metrics = {
                    "kind": None if m == "g" else "exact",
                    "energy_distance": 0.01 * (1 + order[m]) + 1e-4 * seed,
                }
                metrics["mmd2"] = 0.01 * (4 - order[m])  # reversed: c best on MMD²
                if m != "g":
                    ll = loglik[m][ds in MAF] - 0.01 * seed
                    metrics.update(test_loglik=ll, test_loglik_se=0.01)
                    if ds in TWO_D:
                        metrics.update(kl=-1.0 - ll, kl_se=0.01)
                timings = {"fit_s": fit[m] * (1 + 0.01 * seed), "samples_per_s": rate[m] * (1 + 0.01 * seed)}
                rows.append(_row(m, ds, seed, metrics, timings))
    return rows


META = {"config": {"methods": ["a", "b", "c", "g"], "datasets": TWO_D + MAF}}


def _lines(data) -> dict:
    return {line.quantity.name: line for line in data.verdict}


def test_verdict_names_the_best_by_average_rank_marks_ties_and_answers_per_group():
    lines = _lines(build(_grid_rows(), META))
    density = lines["Density"]
    # a ranks 1 on six sets and 2 on four: (6 + 8) / 10 = 1.4; b (12 + 4) / 10 = 1.6; c 3.
    # CD(k=3, N=10) = 2.343 * sqrt(12 / 60) = 1.048: b is within it (tied), c is not
    assert density.answer.best == ["a"] and density.answer.tied == ["b"]
    assert density.answer.average == pytest.approx({"a": 1.4, "b": 1.6, "c": 3.0})
    assert density.answer.cd == pytest.approx(1.048, abs=1e-3)
    assert density.quantity.metric == "test log-likelihood; KL(p ‖ q) where the density is known"
    # the MAF sets prefer b; the 2-D answer is the overall one, so only the MAF group is stated
    assert list(density.groups) == ["maf"] and density.groups["maf"].best == ["b"]
    # g has no likelihood: named, not ranked (and so not last)
    assert density.no_likelihood == ["g"] and "g" not in density.answer.average
    # energy distance: g 1, a 2, b 3, c 4 everywhere; CD(k=4, N=10) = 2.569 * sqrt(20 / 60) = 1.483
    quality = lines["Sample quality"]
    assert quality.quantity.metric == "energy distance" and quality.answer.best == ["g"]
    assert quality.answer.tied == ["a"] and not quality.groups and not quality.no_likelihood
    assert lines["Fit time"].answer.best == ["c"] and lines["Sampling rate"].answer.best == ["g"]
    text = line_text(density)
    assert text.startswith("Density (test log-likelihood; KL(p ‖ q) where the density is known): a (average rank")
    assert "† b" in text and "By group: maf: b" in text and "No likelihood (not ranked): g" in text


def test_verdict_opens_every_report_and_its_metric_is_configurable():
    rows = _grid_rows()
    md = markdown(rows, META)
    assert md.index("## Verdict") < md.index("## Summary")
    first = md.split("## Verdict")[1].split("\n\n")[1].splitlines()
    assert [ln.split("**")[1] for ln in first] == ["Density", "Sample quality", "Fit time", "Sampling rate"]
    page = render_html(build(rows, META), [])
    assert page.index('id="verdict"') < page.index('id="summary"') and '<a href="#verdict">' in page
    # MMD² is ordered the other way: c is its best
    mmd = _lines(build(rows, META, quality_metric="mmd2"))["Sample quality"]
    assert mmd.quantity.metric == "mmd2" and mmd.answer.best == ["c"]
    with pytest.raises(UserError, match="unknown sample-quality metric 'fid'"):
        build(rows, META, quality_metric="fid")


def test_verdict_on_one_dataset_uses_the_intervals_over_seeds():
    # a: -1.00, -1.02 and b: -1.01, -1.04 overlap (t-intervals over two seeds are wide); c far below
    values = {"a": (-1.00, -1.02), "b": (-1.01, -1.04), "c": (-3.0, -3.01)}
    rows = [
        _row(m, "8gaussians", s, {"kind": "exact", "test_loglik": v[s], "test_loglik_se": 0.01})
        for m, v in values.items()
        for s in (0, 1)
    ]
    density = _lines(build(rows))["Density"]
    assert density.quantity.metric == "test log-likelihood"
    assert density.answer.best == ["a"] and density.answer.tied == ["b"] and density.answer.test == "intervals"
    assert "a (best on 8gaussians; next: b 2.00, c 3.00); † b" in line_text(density)
    assert _lines(build(rows))["Fit time"].answer is None  # no timings: said, not guessed


def _bars_rows(bars: dict[str, dict] | None) -> list[dict]:
    """One seed, two datasets; a is 0.01 nats above b on both, c far below. ``bars``: extra metrics."""
    rows = []
    for ds in ("8gaussians", "moons"):
        for m, ll in (("a", -1.00), ("b", -1.01), ("c", -5.0)):
            metrics = {"kind": "exact", "test_loglik": ll, "test_loglik_se": 0.01, **((bars or {}).get(m, {}))}
            rows.append(_row(m, ds, 0, metrics))
    return rows


BARS = {
    "a": {"solver_err": 0.004, "loglik_error_bar": 0.004},
    "b": {"solver_err": 0.01, "estimator_se": 0.005, "loglik_error_bar": 0.015},
    "c": {"loglik_error_bar": 0.0},
}


def test_error_bars_are_shown_tie_within_their_sum_and_warn_when_wider_than_the_gap():
    data = build(_bars_rows(BARS))
    table = data.table("test_loglik")
    a, b, c = (table.entries[(m, "8gaussians")] for m in "abc")
    # |a - b| = 0.01 <= 0.004 + 0.015: tied, on one seed, where no interval could tie them
    assert a.best and b.tied and not c.tied
    assert b.text() == "-1.01 (se 0.010, eb 0.015)" and c.text() == "-5.00 (se 0.010)"  # 0 is exact: no eb
    # equal ranks on both datasets: a and b share the best average rank, so no sentence calls them different
    assert table.ranking.average == pytest.approx({"a": 1.5, "b": 1.5, "c": 3.0})
    md = markdown(_bars_rows(BARS))
    assert "Test log-lik.: best average rank a, b (1.50 over 2 dataset(s))" in md
    assert _lines(data)["Density"].answer.best == ["a", "b"]
    # b's error bar 0.015 is wider than the 0.01 gap to a; a's 0.004 is not
    assert error_bar_warnings(table) == [
        "b on 8gaussians: error bar 0.015 > gap 0.010 to a",
        "b on moons: error bar 0.015 > gap 0.010 to a",
    ]
    assert "**Warning.** Log-likelihood error bars wider than the gap" in md
    assert "### Likelihood error bars (nats)" in md and "| a        | 8gaussians | exact  | 0.0040" in md
    assert "eb: the likelihood's error bar" in md


def test_without_error_bars_the_same_values_differ_and_old_stores_report():
    data = build(_bars_rows(None))
    table = data.table("test_loglik")
    assert not table.entries[("b", "8gaussians")].tied and math.isnan(table.entries[("b", "8gaussians")].error_bar)
    assert table.ranking.average == pytest.approx({"a": 1.0, "b": 2.0, "c": 3.0})
    md = markdown(_bars_rows(None))
    assert "Likelihood error bars" not in md and "eb " not in md and "Warning" not in md


def test_run_and_report_print_the_verdict(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    store.set_meta("config", META["config"])
    for row in _grid_rows():
        store.put({**row, "metrics": dict(row["metrics"])})
    store.close()
    out = io.StringIO()
    print_verdict(tmp_path, file=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Verdict") and lines[1].startswith("  Density (") and len(lines) == 5
    ascii_log = io.TextIOWrapper(io.BytesIO(), encoding="ascii")  # a job's log in a C locale
    print_verdict(tmp_path, file=ascii_log)
    ascii_log.flush()
    assert "? b" in ascii_log.buffer.getvalue().decode("ascii")  # the tie mark replaced, nothing raised
    assert main(["report", str(tmp_path), "--format", "md", "--quality-metric", "fid"]) == 2
    assert "unknown sample-quality metric 'fid'" in capsys.readouterr().err
    write_report(tmp_path, formats=("md",), quality_metric="mmd2")
    assert "**Sample quality** (mmd2): `c`" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_run_prints_the_verdict_before_its_last_line(tmp_path, capsys):
    code = main(
        [
            "run",
            "--methods",
            "gaussian,kde",
            "--datasets",
            "8gaussians",
            "--profile",
            "smoke",
            "--sample-size",
            "200",
            "--jobs",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    start = next(i for i, line in enumerate(out) if line.startswith("Verdict"))
    assert [line.split(" (")[0].strip() for line in out[start + 1 : start + 5]] == [
        "Density",
        "Sample quality",
        "Fit time",
        "Sampling rate",
    ]
    assert out[-1].startswith("done:")
