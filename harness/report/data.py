"""The report's data: every table, ranking, summary sentence and figure caption
of a run, computed once from the results store's rows and meta (``build``).
Renderers (``markdown``, ``latex``, ``html``, ``figures``) only format it.

Example::

    data = build(store.rows(), store.meta())   # ReportData, or None without rows
    data.tables[0].entries[("maf", "8gaussians")].text()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

import datasets
import methods
from harness.comparison import (
    LEVEL,
    Ranking,
    best_and_ties,
    column_digits,
    pooled_stderr,
    rank_methods,
    significant,
    t_interval,
)
from harness.errors import UserError
from harness.evaluate import GRID_POINTS, plot_bounds
from harness.report.curves import (  # noqa: F401 - some are here for the renderers
    DEFINITION,
    FRACTIONS,
    METRICS,
    QualityTable,
    all_curves,
    budget_entry,
    budget_progress,
    methods_without_checkpoints,
    reference,
    time_to_quality,
)
from harness.store import ARTIFACT_DIR
from harness.variants import base_of, expand_all


@dataclass(frozen=True)
class TableSpec:
    """One report table: where the value lives in a row, which way is better, and its standard
    error over test points (``se_key``, a per-cell metric) when it has one."""

    key: str
    title: str
    better: str  # "higher" | "lower" | "half" (closest to 0.5) | "target" (closest to ``target``) | "none"
    source: str = "metrics"  # "metrics" | "timings" | "info"
    needs_likelihood: bool = False
    target: float = 0.0
    se_key: str | None = None
    short: str = ""  # label in the summary; default: the title up to its first parenthesis

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
    ),
    TableSpec(
        "kl",
        "KL(p ‖ q) on test points (nats, lower is better; known densities only)",
        "lower",
        needs_likelihood=True,
        se_key="kl_se",
        short="KL(p ‖ q)",
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
    standard error over test points where the metric has one, whether it is the best of its
    dataset or tied with the best, and the significant figures its column prints with."""

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

    def text(self, sep: str = " ± ") -> str:
        """Plain text of a value entry: ``mean ± half-width`` (just ``mean`` for one seed), then
        ``(se x)`` where there is a standard error over test points, then ``(k/n seeds ok)`` when
        some seeds of the cell failed."""
        out = significant(self.mean, self.digits)
        if self.n > 1 and math.isfinite(self.half_width):
            out += f"{sep}{significant(self.half_width, 2)}"
        if math.isfinite(self.se):
            out += f" (se {significant(self.se, 2)})"
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


class PublishedModel(NamedTuple):
    """A row of the published table: our closest method, the paper's model, the source."""

    method: str
    model: str
    source: str


@dataclass
class PublishedTable:
    """Published numbers beside measured ones: rows of (model, {dataset: (published, measured Entry)})."""

    datasets: list[str]
    rows: list[tuple[PublishedModel, dict[str, tuple[float | None, Entry]]]]
    notes: dict[str, str]  # dataset -> caveat (e.g. numbers of a larger version of the set)
    fmt: str = "{:.2f}"


@dataclass
class ReportData:
    """Everything the renderers need, computed once from the store's rows and meta."""

    df: pd.DataFrame
    meta: dict[str, Any]
    methods: list[str]
    datasets: list[str]
    kinds: dict[str, str | None]
    seeds: list[int]
    n_ok: int
    n_failed: int
    tables: list[MetricTable]
    footnotes: dict[str, int]  # error text -> footnote number
    phases: pd.DataFrame | None
    published: PublishedTable | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)
    n_skipped: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # the store's rows (checkpoints live in info)
    time_tables: list[QualityTable] = field(default_factory=list)  # time to quality, one per checkpoint metric
    no_checkpoints: list[str] = field(default_factory=list)  # methods whose ok rows reported no checkpoint
    budget: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (method, dataset) -> progress


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One flat record per row: identity columns, metrics.*, timings.*, info.* (scalars only)."""
    flat = []
    for r in rows:
        rec = {
            k: r[k]
            for k in (
                "method",
                "dataset",
                "seed",
                "profile",
                "device",
                "status",
                "error",
                "code_version",
                "config_hash",
                "cell_key",
            )
        }
        for src in ("metrics", "timings", "info"):
            for k, v in (r.get(src) or {}).items():
                if isinstance(v, (dict, list)):
                    continue
                rec[f"{src}.{k}"] = _number(v)
        for phase, secs in ((r.get("timings") or {}).get("fit_phases") or {}).items():
            rec[f"timings.phase.{phase}"] = secs
        flat.append(rec)
    return pd.DataFrame(flat)


def separate_profiles(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of one method under different profiles are different rows of the report: such a method
    is labelled ``method (profile)``, so that no entry averages over profiles."""
    counts = df.groupby("method").profile.nunique()
    mixed = df.method.isin(counts[counts > 1].index)
    if mixed.any():
        df = df.copy()
        df.loc[mixed, "method"] = df.method[mixed] + " (" + df.profile[mixed] + ")"
    return df


def _number(v: Any) -> Any:
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return v


def _order(values: list[str], preferred: list[str]) -> list[str]:
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def method_order(df: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Methods (and method variants, expanded) in the config's order, then the rest sorted."""
    preferred = cfg.get("methods") if isinstance(cfg.get("methods"), list) else []
    try:
        preferred = [v.name for v in expand_all(preferred)]
    except UserError:  # a config from before variants, or hand-edited: keep its names as they are
        pass
    return _order(sorted(df.method.unique()), list(preferred))


def dataset_order(df: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Datasets in the config's order, then the rest sorted."""
    return _order(sorted(df.dataset.unique()), _dataset_order(cfg))


def _dataset_order(cfg: dict[str, Any]) -> list[str]:
    """The config's datasets; a group name (``"2d"``) stands for its members, and a config without
    datasets for the members of every group (registration order)."""
    d = cfg.get("datasets")
    if d is None:
        return [name for group in datasets.groups() for name in datasets.in_group(group)]
    if isinstance(d, str):
        return datasets.in_group(d) if d in datasets.groups() else []
    return list(d) if isinstance(d, list) else []


def likelihood_kinds(df: pd.DataFrame, methods: list[str]) -> dict[str, str | None]:
    """Each method's likelihood kind from its ok rows, else from the registry, else None."""
    kinds: dict[str, str | None] = {}
    for m in methods:
        col = df[(df.method == m) & (df.status == "ok")].get("metrics.kind")
        kinds[m] = next((v for v in (col if col is not None else []) if isinstance(v, str)), None)
        if kinds[m] is None and not (df[(df.method == m)].status == "ok").any():
            kinds[m] = _registered_kind(m.split(" (")[0])
    return kinds


def _registered_kind(method: str) -> str | None:
    try:
        return methods.get(base_of(method)).log_prob_kind
    except Exception:  # noqa: BLE001 - unknown or unavailable method: no likelihood known
        return None


def _applies(spec: TableSpec, method: str, kinds: dict[str, str | None]) -> bool:
    """False when the metric needs a likelihood the method does not have (the entry is n/a)."""
    return not (spec.needs_likelihood and kinds.get(method) is None)


def _cell_values(df: pd.DataFrame, col: str, se_col: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Finite values of ``col`` over the ok rows of ``df`` (n,), and their standard errors (n,)."""
    ok = df[df.status == "ok"]
    vals = pd.to_numeric(ok[col], errors="coerce") if col in ok else pd.Series(dtype=float)
    keep = np.isfinite(vals.to_numpy(dtype=float))
    se = (
        pd.to_numeric(ok[se_col], errors="coerce").to_numpy(dtype=float)[keep]
        if se_col and se_col in ok
        else np.full(int(keep.sum()), math.nan)
    )
    return vals.to_numpy(dtype=float)[keep], se


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
    se_col = f"{spec.source}.{spec.se_key}" if spec.se_key else None
    per_dataset = {}
    for ds in dsets:
        values, ses, failed, seeds = {}, {}, {}, {}
        for m in methods:
            sub = df[(df.method == m) & (df.dataset == ds)]
            vals, se = _cell_values(sub, col, se_col)
            if len(vals):
                values[m], ses[m] = vals, se
            bad = sub[sub.status == "failed"]
            seeds[m] = (int((sub.status == "ok").sum()), int((sub.status == "ok").sum()) + len(bad))
            if len(bad):
                failed[m] = bad.error.iloc[0] or "failed"
        best, tied = best_and_ties(
            {m: v for m, v in values.items() if _applies(spec, m, kinds)}, spec.better, target=spec.target
        )
        widths = [t_interval(v).half_width for v in values.values() if len(v) > 1]
        noise = min((w for w in widths if w > 0), default=None)
        digits = column_digits([float(v.mean()) for v in values.values()], noise=noise)
        per_dataset[ds] = (values, ses, failed, seeds, best, tied, digits)
    entries: dict[tuple[str, str], Entry] = {}
    for m in methods:
        for ds in dsets:
            values, ses, failed, seeds, best, tied, digits = per_dataset[ds]
            if not _applies(spec, m, kinds):
                entries[(m, ds)] = Entry("na")
            elif m in values:
                iv = t_interval(values[m])
                entries[(m, ds)] = Entry(
                    "value",
                    iv.mean,
                    iv.std,
                    iv.n,
                    best=(m == best),
                    half_width=iv.half_width,
                    se=pooled_stderr(ses[m]) if se_col else math.nan,
                    tied=m in tied,
                    digits=digits,
                    seeds_ok=seeds[m][0],
                    seeds_run=seeds[m][1],
                )
            elif m in failed:
                entries[(m, ds)] = Entry("failed", note=footnotes.setdefault(failed[m], len(footnotes) + 1))
            else:
                entries[(m, ds)] = Entry("missing")
    table = MetricTable(spec, methods, dsets, kinds, entries)
    table.ranking = table_ranking(table)
    return table


def table_ranking(table: MetricTable) -> Ranking | None:
    """Ranks of the methods the metric applies to, over the table's datasets (cell means), with
    the Friedman test and the Nemenyi critical difference; None when no method applies or the metric
    has no direction ("none")."""
    applicable = [m for m in table.methods if _applies(table.spec, m, table.kinds)]
    if not applicable or table.spec.better == "none":
        return None
    values = {
        (m, ds): (e.mean if e.state == "value" else None) for (m, ds), e in table.entries.items() if m in applicable
    }
    return rank_methods(values, applicable, table.datasets, table.spec.better, target=table.spec.target)


def build(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> ReportData | None:
    """The report's data for ``rows`` (None when there are none)."""
    meta = meta or {}
    if not rows:
        return None
    df = separate_profiles(rows_frame(rows))
    cfg = meta.get("config", {})
    methods, dsets = method_order(df, cfg), dataset_order(df, cfg)
    kinds = likelihood_kinds(df, methods)
    footnotes: dict[str, int] = {}
    tables = [t for spec in TABLES if (t := metric_entries(df, spec, methods, dsets, kinds, footnotes)) is not None]
    phases = None
    phase_cols = [c for c in df.columns if c.startswith("timings.phase.")]
    if phase_cols:
        phases = df[df.status == "ok"].groupby("method")[phase_cols].mean()
        phases.columns = [c.removeprefix("timings.phase.") for c in phases.columns]
        phases = phases.reindex([m for m in methods if m in phases.index])
    failed = df[df.status == "failed"][["method", "dataset", "seed", "error"]].to_dict("records")
    data = ReportData(
        df,
        meta,
        methods,
        dsets,
        kinds,
        sorted(int(s) for s in df.seed.unique()),
        int((df.status == "ok").sum()),
        int((df.status == "failed").sum()),
        tables,
        footnotes,
        phases,
        failed=failed,
        n_skipped=int((df.status == "skipped").sum()),
        rows=rows,
        time_tables=[t for m in METRICS if (t := time_to_quality(rows, m, methods, dsets)) is not None],
        no_checkpoints=methods_without_checkpoints(rows),
        budget=budget_progress(rows),
    )
    data.published = published_table(data)
    return data


def published_table(data: ReportData) -> PublishedTable | None:
    """Published test log-likelihoods beside this run's, for the run's datasets that declare them
    (``Dataset.published``), in the order the datasets list them."""
    declared = {ds: _published(ds) for ds in data.datasets}
    dsets = [ds for ds in data.datasets if declared[ds][0]]
    if not dsets:
        return None
    loglik = next((t for t in data.tables if t.spec.key == "test_loglik"), None)
    values = {(PublishedModel(p.method, p.model, p.source), ds): p.value for ds in dsets for p in declared[ds][0]}
    rows = []
    for model in dict.fromkeys(model for model, _ in values):
        cells = {}
        for ds in dsets:
            measured = loglik.entries.get((model.method, ds), Entry("missing")) if loglik else Entry("missing")
            cells[ds] = (values.get((model, ds)), measured)
        rows.append((model, cells))
    notes = {ds: declared[ds][1] for ds in dsets if declared[ds][1]}
    return PublishedTable(dsets, rows, notes)


def _published(dataset: str) -> tuple[tuple[Any, ...], str]:
    """The published numbers a registered dataset declares, and their caveat (none for others)."""
    try:
        cls = datasets.get_class(dataset)
    except Exception:  # noqa: BLE001 - a user file or a dataset no longer registered
        return (), ""
    return tuple(getattr(cls, "published", ())), getattr(cls, "published_note", "")


def published_cells(
    table: PublishedTable, cell: Callable[[float | None, Entry], tuple[str, str]]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the published table; ``cell`` renders (published, measured)."""
    header = ["our method", "published model", "source"]
    for ds in table.datasets:
        header += [f"{ds} published", f"{ds} measured"]
    lines = []
    for entry, cells in table.rows:
        line = [entry.method, entry.model, entry.source]
        for ds in table.datasets:
            line += list(cell(*cells[ds]))
        lines.append(line)
    return header, lines


PUBLISHED_TITLE = "Published test log-likelihoods (reference numbers from papers, not measured in this run)"


PUBLISHED_INTRO = (
    'Nats per example, higher is better; "measured" is this run\'s mean over seeds (± the 95% '
    "interval, se: over test points) for our method of the same family (its settings may differ "
    "from the paper's)."
)


def device_note(env: dict[str, Any]) -> str:
    """`` (GPU; float32 matmul precision P; sample metrics on the CPU)`` from the run's environment."""
    parts = [env["gpu"]] if env.get("gpu") else []
    if env.get("float32_matmul_precision"):
        parts.append(f"float32 matmul precision {env['float32_matmul_precision']}")
    if env.get("sample_metrics_device"):
        parts.append(f"sample metrics on the {env['sample_metrics_device'].upper()}")
    return f" ({'; '.join(parts)})" if parts else ""


def summary_line(
    data: ReportData, code: Callable[[str], str] = lambda s: f"`{s}`", count: Callable[[int], str] = str
) -> str:
    """What was run: profile, seeds, device, code, cell counts, likelihood kinds.

    ``code`` and ``count`` format names and cell counts (Markdown by default)."""
    env = data.meta.get("environment", {})
    return (
        f"Profile {code(', '.join(sorted(data.df.profile.unique())))}, {len(data.seeds)} seed(s) "
        f"({', '.join(map(str, data.seeds))}), device {code(env.get('device', '?'))}{device_note(env)}, code "
        f"{code(env.get('code_version', '?'))}. {count(data.n_ok)} cell(s) ok, {count(data.n_failed)} failed"
        f"{f', {count(data.n_skipped)} skipped (method unavailable here)' if data.n_skipped else ''}. "
        "Likelihood kinds: exact, bound (a lower bound), estimate; n/a where a method has no likelihood."
    )


def most_seeds(data: ReportData) -> int:
    """The largest number of seeds behind any table entry."""
    return max((e.n for t in data.tables for e in t.entries.values() if e.state == "value"), default=0)


def headline(data: ReportData) -> str:
    """The summary's first sentence: what the run holds and how sure its comparisons are."""
    skipped = f", {data.n_skipped} skipped" if data.n_skipped else ""
    counts = f"{data.n_ok} cell(s) ok, {data.n_failed} failed{skipped}, {len(data.seeds)} seed(s)."
    if most_seeds(data) < 2:
        return (
            f"{counts} One seed per cell: no entry is significantly better than another (there are no "
            "intervals over seeds); rerun with --seeds 3 or more for intervals and ties."
        )
    return (
        f"{counts} {TIED} marks ties: entries whose {LEVEL:.0%} t-interval over seeds overlaps the best "
        "entry's, and methods within the Nemenyi critical difference of the best average rank."
    )


def reading_text(data: ReportData, best: str = "bold") -> str:
    """How to read the entries: the interval, the best and the tie marks, or why there are none."""
    level = f"{LEVEL:.0%}"
    se = " (se x) is the standard error over test points."
    if most_seeds(data) < 2:
        return (
            f"One seed per cell: there are no intervals over seeds, so no entry is significantly better than "
            f"another; {best} only marks the best value per dataset.{se} Rerun with --seeds 3 (or more) for "
            f"{level} intervals and ties."
        )
    return (
        "Entries are means over seeds ± the half-width of a "
        f"{level} Student-t interval (mean ± t·s/√n over the n seeds of the cell); "
        f"{best} marks the best entry per dataset and {TIED} every entry whose interval overlaps the best's "
        "(tied: not significantly better or worse; for C2ST the intervals of |accuracy − 0.5|). Overlapping "
        f"{level} intervals is a conservative test: it rarely calls noise a difference.{se}"
    )


def p_text(p: float) -> str:
    """A p-value as ``= 0.012`` or ``< 0.001`` (``= nan`` when undefined)."""
    return "< 0.001" if p < 1e-3 else f"= {significant(p, 2)}"


def _compared_tables(data: ReportData) -> list[MetricTable]:
    """Tables whose ranking compares at least two methods on at least one dataset."""
    return [t for t in data.tables if t.ranking is not None and len(t.ranking.methods) >= 2 and t.ranking.datasets]


def _all_tied(table: MetricTable) -> bool:
    """Every compared method has the same average rank (equal values on every ranked dataset)."""
    return len(set(table.ranking.average.values())) == 1


def ranked_tables(data: ReportData) -> list[MetricTable]:
    """Compared tables in which the methods differ (a metric on which all tie ranks nothing)."""
    return [t for t in _compared_tables(data) if not _all_tied(t)]


def ranks_overview(data: ReportData) -> tuple[list[str], list[tuple[str, list[tuple[str, str]]]]]:
    """The average-rank table: header (method, metric labels) and rows of (label, [(text, mark)]), mark
    "best", "tied" (within the critical difference of the best) or ""; then the datasets, Friedman
    p-value (Iman-Davenport F) and critical-difference rows."""
    tables = ranked_tables(data)
    header = ["method"] + [t.spec.label for t in tables]
    rows = []
    for m in data.methods:
        cells = []
        for t in tables:
            r = t.ranking
            avg = r.average.get(m)
            mark = "best" if m in r.best() else "tied" if m in r.not_different_from_best() else ""
            cells.append((f"{avg:.2f}" if avg is not None else "–", mark))
        rows.append((m, cells))
    rows.append(("datasets ranked", [(str(len(t.ranking.datasets)), "") for t in tables]))
    rows.append(
        (
            "Friedman p",
            [(p_text(t.ranking.friedman.p_f).removeprefix("= ") if t.ranking.friedman else "–", "") for t in tables],
        )
    )
    rows.append(
        (
            f"critical difference (α = {1 - LEVEL:.2f})",
            [(f"{t.ranking.cd:.2f}" if math.isfinite(t.ranking.cd) else "–", "") for t in tables],
        )
    )
    return header, rows


def ranks_legend(data: ReportData) -> str:
    """How the ranks are computed and read."""
    return (
        "Average rank of each method over the datasets (1 = best; equal values share the average rank), from "
        "each cell's mean over seeds. Bold: the best average rank; "
        f"{TIED}: within the Nemenyi critical difference of the best (not significantly worse at α = "
        f"{1 - LEVEL:.2f}; Demšar 2006). Friedman p: Iman and Davenport's F test of equal average ranks. Ranks "
        "use the datasets where every compared method has a value; what is left out is listed above. With "
        "few datasets the CD is wide: a small Friedman p then says that the methods differ, without "
        "Nemenyi's test being able to say which."
    )


def rank_conclusions(data: ReportData) -> list[str]:
    """One sentence per ranked metric: the best average rank, and the methods significantly worse
    than it (Nemenyi), or that none is, with the Friedman p-value."""
    out = []
    for t in ranked_tables(data):
        r = t.ranking
        avg, best = r.average, r.best()
        line = (
            f"{t.spec.label}: best average rank {', '.join(best)} ({avg[best[0]]:.2f} over "
            f"{len(r.datasets)} dataset(s))"
        )
        if r.usable and r.friedman is not None:
            close = r.not_different_from_best()
            worse = [m for m in r.methods if m not in best and m not in close]
            if worse:
                line += f"; significantly worse: {', '.join(worse)}"
            elif close:
                line += "; no method is significantly worse by Nemenyi's test"
            line += f" (CD {r.cd:.2f}; Friedman p {p_text(r.friedman.p_f)})"
        else:
            line += "; no test with fewer than two datasets"
        out.append(line + ".")
    for t in _compared_tables(data):
        if _all_tied(t):
            out.append(f"{t.spec.label}: every method ties (equal values on every dataset), so it is not ranked.")
    return out


def exclusion_notes(data: ReportData) -> list[str]:
    """What the rankings left out and why (methods with too few values, datasets with missing cells),
    one line per distinct exclusion with the metrics it applies to."""
    by_text: dict[str, list[str]] = {}
    for t in ranked_tables(data):
        r = t.ranking
        parts = [f"{m} ({why})" for m, why in r.excluded_methods.items()]
        for ds, lacking in r.excluded_datasets.items():
            states = ", ".join(f"{m} {t.entries[(m, ds)].state}" for m in lacking)
            parts.append(f"dataset {ds} ({states})")
        if r.empty_datasets:
            parts.append(f"no values on {', '.join(r.empty_datasets)}")
        if parts:
            by_text.setdefault("; ".join(parts), []).append(t.spec.label)
    return [f"{', '.join(labels)}: {text}." for text, labels in by_text.items()]


def best_overview(data: ReportData) -> tuple[list[str], list[tuple[str, list[tuple[str | None, list[str]]]]]]:
    """The best method per dataset and metric with the methods tied with it: header (metric, datasets)
    and rows of (metric label, [(best, tied) per dataset])."""
    header = ["metric"] + data.datasets
    rows = [(t.spec.label, [t.best(ds) for ds in data.datasets]) for t in data.tables]
    return header, rows


def best_text(best: str | None, tied: list[str]) -> str:
    """``best`` and its ties as plain text: ``kde (tied: maf, nsf_c)``; a dash when none."""
    if best is None:
        return "–"
    return best + (f" ({TIED} {', '.join(tied)})" if tied else "")


def outlier_note(data: ReportData, code: Callable[[str], str] = lambda s: f"`{s}`") -> str | None:
    """A warning sentence naming every (method, dataset) with outlying samples (``outlier_fraction`` > 0), or None."""
    col = "metrics.outlier_fraction"
    if col not in data.df.columns:
        return None
    ok = data.df[(data.df.status == "ok") & (pd.to_numeric(data.df[col], errors="coerce") > 0)]
    if ok.empty:
        return None
    worst = ok.groupby(["method", "dataset"]).agg(share=(col, "max"), z=("metrics.max_abs_z", "max"))
    cells = [
        f"{code(m)} on {code(ds)} ({r.share:.2%} of samples, up to {r.z:.3g} SDs)" for (m, ds), r in worst.iterrows()
    ]
    return (
        "Outlying samples (a coordinate more than 10 training SDs from the training mean; sample metrics "
        "barely register a few): " + "; ".join(cells) + "."
    )


# ------------------------------------------------------------------ the run's artefacts and data (figures)


class RunData:
    """Rows, artefacts and dataset splits of a run, loaded lazily and cached."""

    def __init__(self, run_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.rows = rows
        self.data_root = (meta.get("config") or {}).get("data_root")
        self._splits: dict[tuple[str, int], Any] = {}
        self._datasets: dict[str, Any] = {}
        self._true_grid: dict[str, Any] = {}

    def ok_rows(self, method: str | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
        """Ok rows (optionally of one method / dataset), lowest seed first."""
        out = [
            r
            for r in self.rows
            if r["status"] == "ok" and method in (None, r["method"]) and dataset in (None, r["dataset"])
        ]
        return sorted(out, key=lambda r: r["seed"])

    def status(self, method: str, dataset: str) -> str:
        """'ok', 'failed' or 'missing' for a (method, dataset) over its seeds."""
        states = {r["status"] for r in self.rows if r["method"] == method and r["dataset"] == dataset}
        return "ok" if "ok" in states else "failed" if "failed" in states else "missing"

    def seed(self, dataset: str) -> int:
        """The seed figures use for ``dataset``: the lowest with an ok row (else the lowest)."""
        rows = self.ok_rows(dataset=dataset) or [r for r in self.rows if r["dataset"] == dataset]
        return min(r["seed"] for r in rows)

    def artifact(self, method: str, dataset: str) -> dict[str, np.ndarray] | None:
        """The artefact arrays of the dataset's figure seed, else of the method's lowest ok seed."""
        rows = self.ok_rows(method, dataset)
        preferred = self.seed(dataset)
        for r in sorted(rows, key=lambda r: (r["seed"] != preferred, r["seed"])):
            path = self.run_dir / ARTIFACT_DIR / f"{r['cell_key']}.npz"
            try:
                with np.load(path) as z:
                    return {k: z[k] for k in z.files}
            except (OSError, ValueError):
                continue
        return None

    def dataset(self, name: str) -> Any | None:
        if name not in self._datasets:
            try:
                self._datasets[name] = datasets.get(name)
            except Exception:  # noqa: BLE001 - unknown / removed dataset: panels that need it stay blank
                self._datasets[name] = None
        return self._datasets[name]

    def splits(self, name: str) -> Any | None:
        """The dataset's splits at its figure seed, or None when they cannot be loaded."""
        key = (name, self.seed(name))
        if key not in self._splits:
            ds = self.dataset(name)
            try:
                self._splits[key] = ds.load(seed=key[1], root=self.data_root) if ds is not None else None
            except Exception:  # noqa: BLE001 - data gone since the run: skip data panels
                self._splits[key] = None
        return self._splits[key]

    def dim(self, name: str) -> int | None:
        """The dataset's dimension, from its data or else from any artefact."""
        splits = self.splits(name)
        if splits is not None:
            return int(splits.test.shape[1])
        for r in self.ok_rows(dataset=name):
            art = self.artifact(r["method"], name)
            if art is not None and art["samples"].ndim == 2:
                return int(art["samples"].shape[1])
        return None

    def box(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The 2-D plotting box (lo, hi): the artefact grids' box, from the test split as in evaluate."""
        splits = self.splits(name)
        if splits is not None:
            return plot_bounds(splits.test)
        for r in self.ok_rows(dataset=name):
            art = self.artifact(r["method"], name)
            if art is not None and "grid_x" in art:
                return np.array([art["grid_x"][0], art["grid_y"][0]]), np.array([art["grid_x"][-1], art["grid_y"][-1]])
            if art is not None:
                s = art["samples"]
                return plot_bounds(s[np.isfinite(s).all(axis=1)])
        return None

    def true_log_density(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(xs, ys, log p) on the artefact grid for 2-D sets with a known density (rows index y)."""
        if name not in self._true_grid:
            self._true_grid[name] = None
            ds, box = self.dataset(name), self.box(name)
            if ds is not None and getattr(ds, "has_density", False) and box is not None:
                xs, ys = (np.linspace(box[0][i], box[1][i], GRID_POINTS) for i in (0, 1))
                gx, gy = np.meshgrid(xs, ys)
                try:
                    lp = np.asarray(ds.log_prob(np.stack([gx.ravel(), gy.ravel()], axis=1)), dtype=float)
                    self._true_grid[name] = (xs, ys, lp.reshape(GRID_POINTS, GRID_POINTS))
                except Exception:  # noqa: BLE001 - a density that fails stays blank
                    pass
        return self._true_grid[name]


# ------------------------------------------------------------------ figures: names, captions, styles

CD_FIGURE = "fig_critical_difference"


#: Width of the colour scale of log-density maps, in nats below the row's maximum.
DENSITY_RANGE_NATS = 10.0
#: What each figure file (``<stem>.png``) shows: its caption in the reports.
CAPTIONS = {
    "fig_samples_2d": (
        "Rows are the 2-D datasets. Columns: 2,000 training points, the true density where it is "
        "known (blank otherwise), then 2,000 samples of each method (lowest seed). Panels in a row "
        "share the dataset's axes."
    ),
    "fig_density_2d": (
        "Log-density maps on a 100 × 100 grid over each dataset's box: the true log density first "
        "(where known), then every method with a likelihood (lowest seed). Each row's colour scale "
        f"spans the {DENSITY_RANGE_NATS:g} nats below its maximum (the true density's when known); "
        "lower values are clipped to the darkest colour."
    ),
    "fig_speed_quality": (
        "One panel pair per dataset: sampling throughput (samples/s, log scale) against test "
        "log-likelihood (top; methods with a likelihood) and against a sample-quality metric "
        "(bottom; every method). One point per method; error bars are ± one standard deviation "
        "over seeds."
    ),
    "fig_critical_difference": (
        "Critical-difference diagrams (Demšar 2006), one per metric: each method's "
        "average rank across the ranked datasets (1 = best, on the left). A thick bar joins "
        "methods whose average ranks differ by less than the Nemenyi critical difference "
        "(CD, drawn above the axis; α = 0.05): the test cannot tell them apart. The title "
        "gives the number of datasets and the Friedman (Iman-Davenport) p-value."
    ),
    "fig_training_curves": (
        "Quality against training time: one column per dataset, one curve per method (lowest "
        "seed), one point per checkpoint; training seconds on a log scale, checkpoint "
        "evaluations excluded. Top: validation log-likelihood (nats, higher is better); bottom: "
        "energy statistic of samples against validation rows (lower is better, symmetric-log "
        "scale) for checkpoints without a likelihood (sample-only methods; the supervised "
        "generator's G before its student). Dashed grey: the Gaussian reference; "
        "log-likelihoods far below it are cut off. "
        "Methods without checkpoints have no curve."
    ),
    "fig_tabular": (
        "Rows are methods. Left: marginal histograms of up to four dimensions (filled grey: test "
        "data, colour: samples). Right: 2-D KDE contours of the test data's two most correlated "
        "dimension pairs (dashed black: test data, colour: samples; same levels). Dimensions are "
        "0-based column indices; samples from the lowest seed."
    ),
}


def caption(stem: str) -> str:
    """The caption of figure file ``stem`` (e.g. ``fig_tabular_miniboone-small``)."""
    if stem.startswith("fig_tabular_"):
        return f"Dataset {stem.removeprefix('fig_tabular_')}. " + CAPTIONS["fig_tabular"]
    return CAPTIONS.get(stem, "")


#: Styles of methods that declare none (``Method.plot_style``), handed out in sorted order.
EXTRA_COLOURS = (
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
)
EXTRA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "*", "p")


def method_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per method, the same in every figure and table: a registered method's own
    ``plot_style``; the others (variants, methods that declare none) the extras in sorted order."""
    styles = {m: style for m in names if (style := _declared_style(m)) is not None}
    others = sorted(m for m in names if m not in styles)
    for i, m in enumerate(others):
        styles[m] = (EXTRA_COLOURS[i % len(EXTRA_COLOURS)], EXTRA_MARKERS[i % len(EXTRA_MARKERS)])
    return styles


def _declared_style(name: str) -> tuple[str, str] | None:
    """The ``plot_style`` (colour, marker) of the method registered as exactly ``name``, or None."""
    try:
        style = getattr(methods.get(name), "plot_style", None)
    except Exception:  # noqa: BLE001 - a variant, a profile label or an unavailable method
        return None
    return tuple(style) if style else None
