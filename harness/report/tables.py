"""The report's metric tables: what each table shows (``TableSpec``, ``TABLES``),
one entry per (method, dataset) over seeds (``Entry``), and a whole table with
its best entries, ties and ranks across datasets (``metric_entries``).

Example::

    table = metric_entries(df, TABLES[0], methods, dsets, kinds, footnotes)
    table.entries[("maf", "8gaussians")].text()      # "-2.63 ± 0.05 (se 0.02)"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.comparison import (
    Ranking,
    best_and_ties,
    column_digits,
    pooled_stderr,
    rank_methods,
    significant,
    t_interval,
)

#: The metric holding the error bar of ``test_loglik`` beyond its sampling error (nats): solver_err +
#: estimator_se + bound_gap over those present; 0 for closed-form likelihoods. KL(p ‖ q) = E log p - E log q
#: on the same points carries the same error.
LOGLIK_ERROR_BAR = "loglik_error_bar"


@dataclass(frozen=True)
class TableSpec:
    """One report table: where the value lives in a row, which way is better, its standard error over
    test points (``se_key``, a per-cell metric) when it has one, and the metric holding its error bar
    beyond sampling (``error_bar_key``: the likelihood's solver error, estimator se or bound gap)."""

    key: str
    title: str
    better: str  # "higher" | "lower" | "half" (closest to 0.5) | "target" (closest to ``target``) | "none"
    source: str = "metrics"  # "metrics" | "timings" | "info"
    needs_likelihood: bool = False
    target: float = 0.0
    se_key: str | None = None
    short: str = ""  # label in the summary; default: the title up to its first parenthesis
    error_bar_key: str | None = None

    @property
    def label(self) -> str:
        return self.short or self.title.split(" (")[0]


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "test_loglik",
        "Test log-likelihood (nats per example, higher is better)",
        "higher",
        needs_likelihood=True,
        se_key="test_loglik_se",
        short="Test log-lik.",
        error_bar_key=LOGLIK_ERROR_BAR,
    ),
    TableSpec(
        "kl",
        "KL(p ‖ q) on test points (nats, lower is better; known densities only)",
        "lower",
        needs_likelihood=True,
        se_key="kl_se",
        short="KL(p ‖ q)",
        error_bar_key=LOGLIK_ERROR_BAR,
    ),
    TableSpec("mmd2", "MMD² against test data (lower is better)", "lower", short="MMD²"),
    TableSpec("energy_distance", "Energy distance against test data (lower is better)", "lower", short="Energy dist."),
    TableSpec(
        "sliced_wasserstein", "Sliced Wasserstein-2 against test data (lower is better)", "lower", short="Sliced W2"
    ),
    TableSpec("c2st_accuracy", "Classifier two-sample test accuracy (0.5 is best)", "half", short="C2ST"),
    TableSpec(
        "marginal_kl",
        "Mean per-dimension marginal KL, the paper's metric (lower is better)",
        "lower",
        short="Marginal KL",
    ),
    TableSpec(
        "histogram_tv", "Histogram total variation vs the true density (lower is better)", "lower", short="Hist. TV"
    ),
    TableSpec(
        "nn_distance_ratio",
        "Memorisation: median distance of samples to their nearest training row over that of "
        "test rows (1 is fresh data; below 1, samples sit closer to training rows)",
        "target",
        target=1.0,
        short="NN distance ratio",
    ),
    TableSpec(
        "nn_close_fraction",
        "Memorisation: fraction of samples closer to a training row than the closest 1% of "
        "test rows (0.01 is fresh data)",
        "target",
        target=0.01,
        short="Close fraction",
    ),
    TableSpec(
        "data_copying_ct",
        "Memorisation: data-copying statistic C_T (Meehan et al. 2020; about 0 ± 0.3 for "
        "fresh data, strongly negative means copying)",
        "target",
        short="C_T",
    ),
    TableSpec(
        "outlier_fraction",
        "Outlying samples: fraction with a coordinate over 10 training SDs from the training mean (lower is better)",
        "lower",
        short="Outlier fraction",
    ),
    TableSpec(
        "max_abs_z",
        "Outlying samples: largest deviation from the training mean (training SDs)",
        "none",
        short="Largest deviation",
    ),
    TableSpec(
        "teacher_fidelity_energy",
        "Teacher fidelity: energy distance between G(z) and the teacher's labels on "
        "held-out z (supervised generator only; lower is better)",
        "lower",
        source="info",
        short="G vs teacher",
    ),
    TableSpec("fit_s", "Fit time (s, lower is better)", "lower", source="timings", short="Fit time"),
    TableSpec(
        "samples_per_s",
        "Sampling throughput (samples/s, higher is better)",
        "higher",
        source="timings",
        short="Sampling rate",
    ),
    TableSpec(
        "log_prob_per_s",
        "log_prob throughput (points/s, higher is better)",
        "higher",
        source="timings",
        needs_likelihood=True,
        short="log_prob rate",
    ),
)


#: The marker of an entry tied with the best (its interval overlaps the best's) or, in the ranks, of
#: a method within the critical difference of the best average rank.
TIED = "†"


@dataclass(frozen=True)
class Entry:
    """One table cell: a value over seeds, a failure (with footnote number), missing, or n/a.

    A value is the mean of ``n`` seeds with the half-width of its 95% t-interval (n >= 2), its
    standard error over test points where the metric has one, its error bar beyond sampling (mean
    over seeds; NaN when not recorded), whether it is the best of its dataset or tied with the best,
    and the significant figures its column prints with."""

    state: str  # "value" | "failed" | "missing" | "na"
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    best: bool = False
    note: int | None = None
    half_width: float = math.nan
    se: float = math.nan
    tied: bool = False
    digits: int = 3
    seeds_ok: int = 0  # cells of this entry that ran ok, of ``seeds_run`` that ran (ok or failed)
    seeds_run: int = 0
    error_bar: float = math.nan

    @property
    def has_error_bar(self) -> bool:
        """A positive error bar was recorded (0 is a closed-form likelihood: nothing to show)."""
        return math.isfinite(self.error_bar) and self.error_bar > 0

    def text(self, sep: str = " ± ") -> str:
        """Plain text of a value entry: ``mean ± half-width`` (just ``mean`` for one seed), then
        ``(se x)`` where there is a standard error over test points and ``eb y`` where there is an
        error bar, then ``(k/n seeds ok)`` when some seeds of the cell failed."""
        out = significant(self.mean, self.digits)
        if self.n > 1 and math.isfinite(self.half_width):
            out += f"{sep}{significant(self.half_width, 2)}"
        notes = [f"se {significant(self.se, 2)}"] if math.isfinite(self.se) else []
        notes += [f"eb {significant(self.error_bar, 2)}"] if self.has_error_bar else []
        if notes:
            out += f" ({', '.join(notes)})"
        return out + self.seeds_note()

    def seeds_note(self) -> str:
        return f" ({self.seeds_ok}/{self.seeds_run} seeds ok)" if self.seeds_ok < self.seeds_run else ""


@dataclass
class MetricTable:
    """One metric for every (method, dataset); ``entries[(method, dataset)]``; the ranks of the
    methods across datasets (``ranking``, None when no method has a value)."""

    spec: TableSpec
    methods: list[str]
    datasets: list[str]
    kinds: dict[str, str | None]
    entries: dict[tuple[str, str], Entry]
    ranking: Ranking | None = None

    @property
    def has_kind_column(self) -> bool:
        return self.spec.needs_likelihood

    def best(self, dataset: str) -> tuple[str | None, list[str]]:
        """The best method on ``dataset`` and the methods tied with it (table order)."""
        cells = [(m, self.entries[(m, dataset)]) for m in self.methods]
        best = next((m for m, e in cells if e.best), None)
        return best, [m for m, e in cells if e.tied]


def _applies(spec: TableSpec, method: str, kinds: dict[str, str | None]) -> bool:
    """False when the metric needs a likelihood the method does not have (the entry is n/a)."""
    return not (spec.needs_likelihood and kinds.get(method) is None)


def _cell_values(df: pd.DataFrame, col: str, *companions: str | None) -> tuple[np.ndarray, ...]:
    """Finite values of ``col`` over the ok rows of ``df`` (n,), then each companion column's values on
    the same rows (n,; NaN where a row or the frame lacks it), e.g. standard errors and error bars."""
    ok = df[df.status == "ok"]
    vals = pd.to_numeric(ok[col], errors="coerce") if col in ok else pd.Series(dtype=float)
    keep = np.isfinite(vals.to_numpy(dtype=float))
    out = [vals.to_numpy(dtype=float)[keep]]
    for name in companions:
        if name and name in ok:
            out.append(pd.to_numeric(ok[name], errors="coerce").to_numpy(dtype=float)[keep])
        else:
            out.append(np.full(int(keep.sum()), math.nan))
    return tuple(out)


@dataclass
class _Column:
    """One dataset's column of a metric table, before it becomes entries: each method's finite values
    over seeds with their standard errors and error bars, first failure message, (ok, run) seed
    counts; the best, the tied and the significant figures of the column."""

    values: dict[str, np.ndarray]
    ses: dict[str, np.ndarray]
    error_bars: dict[str, float]
    failed: dict[str, str]
    seeds: dict[str, tuple[int, int]]
    best: str | None
    tied: set[str]
    digits: int


def _column(df: pd.DataFrame, spec: TableSpec, methods: list[str], ds: str, kinds: dict[str, str | None]) -> _Column:
    col = f"{spec.source}.{spec.key}"
    se_col = f"{spec.source}.{spec.se_key}" if spec.se_key else None
    bar_col = f"metrics.{spec.error_bar_key}" if spec.error_bar_key else None
    values, ses, bars, failed, seeds = {}, {}, {}, {}, {}
    for m in methods:
        sub = df[(df.method == m) & (df.dataset == ds)]
        vals, se, bar = _cell_values(sub, col, se_col, bar_col)
        if len(vals):
            values[m], ses[m], bars[m] = vals, se, _mean_error_bar(bar)
        bad = sub[sub.status == "failed"]
        seeds[m] = (int((sub.status == "ok").sum()), int((sub.status == "ok").sum()) + len(bad))
        if len(bad):
            failed[m] = bad.error.iloc[0] or "failed"
    best, tied = best_and_ties(
        {m: v for m, v in values.items() if _applies(spec, m, kinds)}, spec.better, target=spec.target, error_bars=bars
    )
    widths = [t_interval(v).half_width for v in values.values() if len(v) > 1]
    noise = min((w for w in widths if w > 0), default=None)
    digits = column_digits([float(v.mean()) for v in values.values()], noise=noise)
    return _Column(values, ses, bars, failed, seeds, best, tied, digits)


def _mean_error_bar(bars: np.ndarray) -> float:
    """A cell's error bar: the mean of its seeds' error bars (a solver's bias does not average out over
    seeds); NaN when no seed recorded one (a store from before error bars)."""
    finite = bars[np.isfinite(bars)]
    return float(finite.mean()) if len(finite) else math.nan


def _value_entry(column: _Column, m: str, with_se: bool) -> Entry:
    iv = t_interval(column.values[m])
    return Entry(
        "value",
        iv.mean,
        iv.std,
        iv.n,
        best=(m == column.best),
        half_width=iv.half_width,
        se=pooled_stderr(column.ses[m]) if with_se else math.nan,
        tied=m in column.tied,
        digits=column.digits,
        seeds_ok=column.seeds[m][0],
        seeds_run=column.seeds[m][1],
        error_bar=column.error_bars[m],
    )


def metric_entries(
    df: pd.DataFrame,
    spec: TableSpec,
    methods: list[str],
    dsets: list[str],
    kinds: dict[str, str | None],
    footnotes: dict[str, int],
) -> MetricTable | None:
    """The entries of one metric, or None when no row has it; numbers new failure footnotes.

    Per dataset: each method's mean and 95% t-interval over seeds, the best and the entries tied
    with it (``comparison.best_and_ties``), and the significant figures that show every difference
    between the column's means (``comparison.column_digits``); then the ranks across datasets."""
    col = f"{spec.source}.{spec.key}"
    if col not in df.columns or df[col].notna().sum() == 0:
        return None
    columns = {ds: _column(df, spec, methods, ds, kinds) for ds in dsets}
    entries: dict[tuple[str, str], Entry] = {}
    for m in methods:
        for ds in dsets:
            column = columns[ds]
            if not _applies(spec, m, kinds):
                entries[(m, ds)] = Entry("na")
            elif m in column.values:
                entries[(m, ds)] = _value_entry(column, m, with_se=spec.se_key is not None)
            elif m in column.failed:
                entries[(m, ds)] = Entry("failed", note=footnotes.setdefault(column.failed[m], len(footnotes) + 1))
            else:
                entries[(m, ds)] = Entry("missing")
    table = MetricTable(spec, methods, dsets, kinds, entries)
    table.ranking = table_ranking(table)
    return table


def table_ranking(table: MetricTable) -> Ranking | None:
    """Ranks of the methods the metric applies to, over the table's datasets (cell means), with
    the Friedman test and the Nemenyi critical difference (means within the sum of their error bars
    share a rank); None when no method applies or the metric has no direction ("none")."""
    applicable = [m for m in table.methods if _applies(table.spec, m, table.kinds)]
    if not applicable or table.spec.better == "none":
        return None
    values = {
        (m, ds): (e.mean if e.state == "value" else None) for (m, ds), e in table.entries.items() if m in applicable
    }
    bars = {key: e.error_bar for key, e in table.entries.items() if e.has_error_bar}
    return rank_methods(
        values, applicable, table.datasets, table.spec.better, target=table.spec.target, error_bars=bars
    )
