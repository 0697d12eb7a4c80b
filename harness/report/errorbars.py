"""The likelihoods' error bars beyond sampling, as the report shows them: per
cell the recorded parts (``solver_err`` of an ODE solve, ``estimator_se`` of a
Hutchinson trace, ``bound_gap`` of an importance-weighted bound) and their sum
``loglik_error_bar`` (nats; all metrics of a cell), a section listing them, and
a warning where a method's error bar is wider than the gap to the nearest method
in the same column of the log-likelihood table (their order is not resolved).
Stores from before error bars have none of these fields: nothing is shown.

Example::

    for w in error_bar_warnings(data.table("test_loglik")):
        print(w)    # "score_diffusion on 8gaussians: error bar 0.05 > gap 0.02 to flow_matching"
"""

from __future__ import annotations

import math

import pandas as pd

from harness.comparison import significant
from harness.report.blocks import Block, Heading, Table, Text
from harness.report.data import ReportData
from harness.report.tables import LOGLIK_ERROR_BAR, MetricTable

#: The parts of a likelihood's error bar, as (metric, column label).
PARTS = (
    ("solver_err", "solver error"),
    ("estimator_se", "estimator se"),
    ("bound_gap", "bound gap"),
)
TITLE = "Likelihood error bars (nats)"
INTRO = (
    "What each test log-likelihood may be off by beyond its standard error over test points, mean over "
    "seeds: solver error, the mean |difference| between the profile's ODE solve and one with twice the "
    "steps (16 times more accurate for RK4); "
    "estimator se, the standard error a Hutchinson trace estimate adds; bound gap, how much an "
    "importance-weighted bound rises from K to 4K proposals (a bound's slack, not a worse model; measured "
    "on 500 rows, so Monte-Carlo noise can make it slightly negative). The error bar (eb in the tables) is "
    "the sum of their magnitudes; closed-form likelihoods have 0. Values within the sum of "
    "their error bars are tied in the tables, the ranks and the verdict."
)


def error_bar_warnings(table: MetricTable | None) -> list[str]:
    """One line per (method, dataset) of ``table`` whose error bar is wider than the gap between its
    mean and the nearest other method's mean on that dataset: ``"m on ds: error bar x > gap y to o"``."""
    if table is None:
        return []
    out = []
    for ds in table.datasets:
        means = {m: e.mean for m in table.methods if (e := table.entries[(m, ds)]).state == "value"}
        for m, mean in means.items():
            bar = table.entries[(m, ds)].error_bar
            others = {o: abs(mean - v) for o, v in means.items() if o != m}
            if not others or not table.entries[(m, ds)].has_error_bar:
                continue
            nearest = min(others, key=others.get)
            if bar > others[nearest]:
                out.append(
                    f"{m} on {ds}: error bar {significant(bar, 2)} > gap {significant(others[nearest], 2)} to {nearest}"
                )
    return out


def error_bar_note(data: ReportData) -> str | None:
    """The summary's warning sentence about unresolved log-likelihood orders, or None."""
    lines = error_bar_warnings(data.table("test_loglik"))
    if not lines:
        return None
    return (
        "Log-likelihood error bars wider than the gap to the nearest method (these orders are not resolved; "
        "such pairs count as tied): " + "; ".join(lines) + "."
    )


def section(data: ReportData) -> list[Block]:
    """The error-bar parts of every (method, dataset) that recorded any; [] for a store without them."""
    columns = [f"metrics.{key}" for key, _ in PARTS] + [f"metrics.{LOGLIK_ERROR_BAR}"]
    df = data.df[data.df.status == "ok"]
    if not any(c in df.columns and df[c].notna().any() for c in columns):
        return []
    rows = []
    for m in data.methods:
        for ds in data.datasets:
            cell = df[(df.method == m) & (df.dataset == ds)]
            means = [_mean(cell, c) for c in columns]
            if any(math.isfinite(v) for v in means):
                rows.append([m, ds, data.kinds.get(m) or "n/a"] + [_text(v) for v in means])
    header = ["method", "dataset", "kind"] + [label for _, label in PARTS] + ["error bar"]
    return [Heading(TITLE, "t-error-bars"), Text(INTRO), Table(header, rows)]


def _mean(cell: pd.DataFrame, column: str) -> float:
    if column not in cell:
        return math.nan
    values = pd.to_numeric(cell[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def _text(value: float) -> str:
    return significant(value, 2) if math.isfinite(value) else "–"
