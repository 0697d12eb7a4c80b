"""The report's comparisons on a hand-made results table: intervals, ties, standard errors, ranks,
missing cells, significant figures, and the summary first (values computed by hand in comments)."""

from __future__ import annotations

import re

import pytest

from harness.report import build, latex, markdown
from harness.report.html import render_html

T975_1 = 12.7062  # t_{1, 0.975}: two seeds


def _row(method: str, dataset: str, seed: int, metrics: dict, status: str = "ok") -> dict:
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
        "status": status,
        "error": "RuntimeError: diverged" if status == "failed" else None,
        "metrics": {"kind": "exact", **metrics} if status == "ok" else {},
        "timings": {},
        "info": {},
    }


#: (method, dataset) -> test log-likelihood per seed (seeds 0 and 1); None: both seeds failed.
LOGLIK = {
    ("a", "x"): (-1.0, -1.2),
    ("b", "x"): (-3.0, -3.2),
    ("c", "x"): (-10.0, -10.2),
    ("a", "y"): (-1.0, -1.0),
    ("b", "y"): (-0.5, -0.5),
    ("c", "y"): (-0.9, -0.7),
    ("a", "z"): (-1.0, -1.0),
    ("b", "z"): (-2.0, -2.0),
    ("c", "z"): None,
}
#: MMD² on x only (tiny values that four decimals would print as 0.0000 / -0.0000).
MMD2 = {"a": (1e-5, 3e-5), "b": (-1e-5, -1e-5), "c": (4e-4, 5e-4)}


def _rows(seeds=(0, 1)) -> list[dict]:
    rows = []
    for (m, ds), vals in LOGLIK.items():
        for seed in seeds:
            if vals is None:
                rows.append(_row(m, ds, seed, {}, status="failed"))
                continue
            metrics = {"test_loglik": vals[seed], "test_loglik_se": 0.03 + 0.01 * seed}
            if ds == "x":
                metrics["mmd2"] = MMD2[m][seed]
            rows.append(_row(m, ds, seed, metrics))
    return rows


META = {
    "config": {"methods": ["a", "b", "c"], "datasets": ["x", "y", "z"], "seeds": [0, 1]},
    "environment": {"device": "cpu", "code_version": "t"},
}


def _md_cells(md: str, title: str, kind_column: bool = True) -> dict[str, list[str]]:
    """Rows of one Markdown table: first cell -> the dataset cells (after the kind column, if any)."""
    section = md.split(f"### {title}")[1].split("\n#")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")][1:]
    return {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2 + kind_column : -1]] for ln in lines}


def test_entries_show_interval_standard_error_best_and_ties():
    md = markdown(_rows(), META)
    cells = _md_cells(md, "Test log-likelihood")
    # x: a = -1.1 ± 12.706 * 0.1414 / sqrt 2 = ± 1.27, se sqrt(.03² + .04²) / 2 = 0.025; best
    assert cells["a"][0] == "**-1.10 ± 1.3 (se 0.025)**"
    # b: [-4.37, -1.83] overlaps a's [-2.37, 0.17]: tied; c: [-11.37, -8.83] does not
    assert cells["b"][0] == "-3.10 ± 1.3 (se 0.025)†" and cells["c"][0] == "-10.1 ± 1.3 (se 0.025)"
    # y: b best with a zero-width interval; c's [-2.07, 0.47] covers -0.5: tied; a's point -1.0 does not
    assert cells["b"][1].startswith("**-0.500 ± 0") and cells["c"][1].endswith("†") and "†" not in cells["a"][1]
    assert cells["c"][2] == "failed [1]"
    # MMD² with significant figures, not 0.0000 / -0.0000: b is best (lowest), and the intervals of a
    # (2e-5 ± 12.706 * 1.414e-5 / sqrt 2 = ± 1.27e-4) and c (4.5e-4 ± 6.35e-4) both reach it
    mmd = _md_cells(md, "MMD²", kind_column=False)
    assert mmd["b"][0] == "**-1.00e-5 ± 0**" and mmd["a"][0] == "2.00e-5 ± 1.3e-4†"
    assert mmd["c"][0] == "4.50e-4 ± 6.4e-4†" and "0.0000" not in md
    assert "95% Student-t interval" in md


def test_ranks_friedman_and_excluded_cells_by_hand():
    data = build(_rows(), META)
    r = next(t for t in data.tables if t.spec.key == "test_loglik").ranking
    # z is left out (c failed there); x ranks a b c, y ranks b c a
    assert r.datasets == ["x", "y"] and r.excluded_datasets == {"z": ["c"]}
    assert r.average == pytest.approx({"a": 2.0, "b": 1.5, "c": 2.5})
    # rank sums 4, 3, 5: 12 / (2 * 3 * 4) * 50 - 24 = 1; Iman-Davenport F = 1 / (4 - 1) on (2, 2) df, p = 1 / (1 + F)
    assert r.friedman.chi2 == pytest.approx(1.0) and r.friedman.p_f == pytest.approx(0.75)
    md = markdown(_rows(), META)
    assert "Test log-lik.: dataset z (c failed)" in md
    assert "MMD²: no values on y, z" in md  # a metric measured on x only: stated, not dropped silently
    assert (
        "Test log-lik.: best average rank b (1.50 over 2 dataset(s)); no method is significantly worse by "
        "Nemenyi's test (CD 2.34; Friedman p = 0.75)"
    ) in md


def test_verdict_then_summary_first_configuration_last():
    md = markdown(_rows(), META)
    heads = [h for h in re.findall(r"^## (.+)$", md, re.M)]
    assert heads[:2] == ["Verdict", "Summary"] and heads[-1] == "Configuration and environment"
    assert md.index("### Best per dataset") < md.index("## Tables") < md.index("Profile `quick`")
    best = _md_cells(md, "Best per dataset", kind_column=False)
    assert best["Test log-lik."] == ["a († b)", "b († c)", "a"]
    page = render_html(build(_rows(), META), [])
    assert page.index('id="verdict"') < page.index('id="summary"') < page.index('id="tables"')
    assert page.index('id="tables"') < page.index('id="configuration"')
    assert page.count('class="tie"') >= 3


def test_one_seed_says_no_entry_is_significantly_better():
    md = markdown(_rows(seeds=(0,)), META)
    assert "One seed per cell" in md and "no entry is significantly better" in md
    cells = _md_cells(md, "Test log-likelihood")
    assert cells["a"][0] == "**-1.00 (se 0.030)**" and not any("†" in c for row in cells.values() for c in row)


def test_latex_marks_ties():
    tex = latex(_rows(), META)
    assert r"-3.10 \pm 1.3\ (\mathrm{se}\ 0.025){}^{\dagger}" in tex
    assert r"-1.00\times10^{-5}" in tex and r"Student-t interval" in tex


def test_conclusion_names_the_significantly_worse():
    # a > b > c on ten datasets: average ranks 1, 2, 3; CD(k=3, N=10) = 2.343 * sqrt(12 / 60) = 1.048
    rows = [
        _row(m, f"d{i}", 0, {"test_loglik": -k, "test_loglik_se": 0.01}) for i in range(10) for k, m in enumerate("abc")
    ]
    md = markdown(rows, {"config": {"methods": ["a", "b", "c"]}})
    assert "Test log-lik.: best average rank a (1.00 over 10 dataset(s)); significantly worse: c (CD 1.05;" in md
    assert "One seed per cell" in md


def test_a_metric_on_which_all_tie_is_stated_not_ranked_and_one_method_metrics_list_no_exclusions():
    # every method draws no outlying sample; only "a" has a teacher (one method: nothing to rank)
    rows = _rows()
    for row in rows:
        if row["status"] == "ok":
            row["metrics"]["outlier_fraction"] = 0.0
            if row["method"] == "a":
                row["metrics"]["teacher_fidelity_energy"] = 0.01 * (1 + row["seed"])
    data = build(rows, META)
    md = markdown(rows, META)
    assert "Outlier fraction: every method ties (equal values on every dataset), so it is not ranked." in md
    header = next(line for line in md.splitlines() if line.startswith("| method") and "Test log-lik." in line)
    assert "Outlier fraction" not in header and "G vs teacher" not in header
    assert "G vs teacher:" not in md  # no "left out of the ranks" line for the methods without a teacher
    assert next(t for t in data.tables if t.spec.key == "outlier_fraction").ranking is not None
