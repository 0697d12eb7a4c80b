"""Report writer: tables of every metric (methods x datasets, mean ± std over
seeds), figures, and published reference numbers, built from the results store
and the per-cell artefacts alone.

``write_report(run_dir, formats)`` writes, by format:

* ``md``: ``report.md`` (tables, figure links, failed cells);
* ``html``: ``report.html``, one self-contained page (figures embedded);
* ``latex``: ``report.tex``, one booktabs tabular per metric;
* ``csv``: ``results.csv``, one flat record per cell.

``md`` and ``html`` also draw the figures into ``<run_dir>/figures/``
(``harness.figures``). Tables are a pure function of the store: regenerating
gives identical ``report.md`` and ``report.tex``.

Example::

    write_report("reports/default", formats=("md", "html", "latex"))
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness import published as pub
from harness.comparison import (LEVEL, Ranking, best_and_ties, column_digits, pooled_stderr, rank_methods,
                                significant, t_interval)
from harness.errors import UserError
from harness.store import ResultsStore

FORMATS = ("md", "html", "latex", "csv")
DEFAULT_FORMATS = ("md", "csv", "html")
FIGURE_DIR = "figures"


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
    TableSpec("test_loglik", "Test log-likelihood (nats per example, higher is better)", "higher",
              needs_likelihood=True, se_key="test_loglik_se", short="Test log-lik."),
    TableSpec("kl", "KL(p ‖ q) on test points (nats, lower is better; known densities only)", "lower",
              needs_likelihood=True, se_key="kl_se", short="KL(p ‖ q)"),
    TableSpec("mmd2", "MMD² against test data (lower is better)", "lower", short="MMD²"),
    TableSpec("energy_distance", "Energy distance against test data (lower is better)", "lower", short="Energy dist."),
    TableSpec("sliced_wasserstein", "Sliced Wasserstein-2 against test data (lower is better)", "lower",
              short="Sliced W2"),
    TableSpec("c2st_accuracy", "Classifier two-sample test accuracy (0.5 is best)", "half", short="C2ST"),
    TableSpec("marginal_kl", "Mean per-dimension marginal KL, the paper's metric (lower is better)", "lower",
              short="Marginal KL"),
    TableSpec("histogram_tv", "Histogram total variation vs the true density (lower is better)", "lower",
              short="Hist. TV"),
    TableSpec("nn_distance_ratio", "Memorisation: median distance of samples to their nearest training row over that of "
              "test rows (1 is fresh data; below 1, samples sit closer to training rows)", "target", target=1.0,
              short="NN distance ratio"),
    TableSpec("nn_close_fraction", "Memorisation: fraction of samples closer to a training row than the closest 1% of "
              "test rows (0.01 is fresh data)", "target", target=0.01, short="Close fraction"),
    TableSpec("data_copying_ct", "Memorisation: data-copying statistic C_T (Meehan et al. 2020; about 0 ± 0.3 for "
              "fresh data, strongly negative means copying)", "target", short="C_T"),
    TableSpec("outlier_fraction", "Outlying samples: fraction with a coordinate over 10 training SDs from the training "
              "mean (lower is better)", "lower", short="Outlier fraction"),
    TableSpec("max_abs_z", "Outlying samples: largest deviation from the training mean (training SDs)", "none",
              short="Largest deviation"),
    TableSpec("teacher_fidelity_energy", "Teacher fidelity: energy distance between G(z) and the teacher's labels on "
              "held-out z (supervised generator only; lower is better)", "lower", source="info", short="G vs teacher"),
    TableSpec("fit_s", "Fit time (s, lower is better)", "lower", source="timings", short="Fit time"),
    TableSpec("samples_per_s", "Sampling throughput (samples/s, higher is better)", "higher", source="timings",
              short="Sampling rate"),
    TableSpec("log_prob_per_s", "log_prob throughput (points/s, higher is better)", "higher", source="timings",
              needs_likelihood=True, short="log_prob rate"),
)
#: The marker of an entry tied with the best (its interval overlaps the best's) or, in the ranks, of
#: a method within the critical difference of the best average rank.
TIED = "†"


# ------------------------------------------------------------------ the data behind every format


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


@dataclass
class PublishedTable:
    """Published numbers beside measured ones: rows of (entry, {dataset: (published, measured Entry)})."""

    datasets: list[str]
    rows: list[tuple[pub.PublishedResult, dict[str, tuple[float | None, Entry]]]]
    notes: dict[str, str]  # dataset -> caveat (stand-ins)
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


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One flat record per row: identity columns, metrics.*, timings.*, info.* (scalars only)."""
    flat = []
    for r in rows:
        rec = {k: r[k] for k in ("method", "dataset", "seed", "profile", "device", "status", "error", "code_version", "config_hash", "cell_key")}
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
    from harness.variants import expand_all

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
    from harness.config import TOY_2D

    d = cfg.get("datasets")
    return TOY_2D if d in ("2d", None) else list(d) if isinstance(d, list) else []


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
        import methods
        from harness.variants import base_of

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
    se = (pd.to_numeric(ok[se_col], errors="coerce").to_numpy(dtype=float)[keep]
          if se_col and se_col in ok else np.full(int(keep.sum()), math.nan))
    return vals.to_numpy(dtype=float)[keep], se


def metric_entries(df: pd.DataFrame, spec: TableSpec, methods: list[str], dsets: list[str],
                   kinds: dict[str, str | None], footnotes: dict[str, int]) -> MetricTable | None:
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
        best, tied = best_and_ties({m: v for m, v in values.items() if _applies(spec, m, kinds)}, spec.better,
                                   target=spec.target)
        digits = column_digits([float(v.mean()) for v in values.values()])
        per_dataset[ds] = (values, ses, failed, seeds, best, tied, digits)
    entries: dict[tuple[str, str], Entry] = {}
    for m in methods:
        for ds in dsets:
            values, ses, failed, seeds, best, tied, digits = per_dataset[ds]
            if not _applies(spec, m, kinds):
                entries[(m, ds)] = Entry("na")
            elif m in values:
                iv = t_interval(values[m])
                entries[(m, ds)] = Entry("value", iv.mean, iv.std, iv.n, best=(m == best), half_width=iv.half_width,
                                         se=pooled_stderr(ses[m]) if se_col else math.nan, tied=m in tied,
                                         digits=digits, seeds_ok=seeds[m][0], seeds_run=seeds[m][1])
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
    values = {(m, ds): (e.mean if e.state == "value" else None)
              for (m, ds), e in table.entries.items() if m in applicable}
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
    data = ReportData(df, meta, methods, dsets, kinds, sorted(int(s) for s in df.seed.unique()),
                      int((df.status == "ok").sum()), int((df.status == "failed").sum()), tables, footnotes,
                      phases, failed=failed, n_skipped=int((df.status == "skipped").sum()), rows=rows)
    data.published = published_table(data)
    return data


def published_table(data: ReportData) -> PublishedTable | None:
    """Published test log-likelihoods beside this run's, for the run's MAF-suite datasets."""
    dsets = pub.comparable_datasets(data.datasets)
    if not dsets:
        return None
    loglik = next((t for t in data.tables if t.spec.key == "test_loglik"), None)
    rows = []
    for entry in pub.PUBLISHED:
        cells = {}
        for ds in dsets:
            measured = loglik.entries.get((entry.method, ds), Entry("missing")) if loglik else Entry("missing")
            cells[ds] = (pub.published_value(entry, ds), measured)
        if any(v is not None for v, _ in cells.values()):
            rows.append((entry, cells))
    notes = {ds: pub.STAND_INS[ds][1] for ds in dsets if ds in pub.STAND_INS}
    return PublishedTable(dsets, rows, notes) if rows else None


# ------------------------------------------------------------------ Markdown


def _md_cell(entry: Entry) -> str:
    if entry.state == "value":
        text = entry.text() + (TIED if entry.tied else "")
        return f"**{text}**" if entry.best else text
    return {"failed": f"failed [{entry.note}]", "na": "n/a", "missing": "–"}[entry.state]


def markdown_table(table: MetricTable) -> str:
    """One metric as a Markdown section: a heading and a GitHub table."""
    header = ["method"] + (["kind"] if table.has_kind_column else []) + table.datasets
    lines = []
    for m in table.methods:
        kind = [table.kinds.get(m) or "n/a"] if table.has_kind_column else []
        lines.append([m] + kind + [_md_cell(table.entries[(m, ds)]) for ds in table.datasets])
    return f"### {table.spec.title}\n\n" + tabulate(lines, headers=header, tablefmt="github", disable_numparse=True)


def metric_table(df: pd.DataFrame, spec: TableSpec, methods: list[str], dsets: list[str],
                 kinds: dict[str, str | None], footnotes: dict[str, int]) -> str | None:
    """Markdown table of one metric, or None when no row has it."""
    table = metric_entries(df, spec, methods, dsets, kinds, footnotes)
    return markdown_table(table) if table is not None else None


def _published_cells(table: PublishedTable, cell: Callable[[float | None, Entry], tuple[str, str]]
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
PUBLISHED_INTRO = ("Nats per example, higher is better; \"measured\" is this run's mean over seeds (± the 95% "
                   "interval, se: over test points) for our method of the same family (its settings may differ "
                   "from the paper's).")


def _md_published(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = table.fmt.format(value) if value is not None else "–"
        return shown, (measured.text() if measured.state == "value" else _md_cell(measured))

    header, lines = _published_cells(table, cell)
    out = [f"### {PUBLISHED_TITLE}", "", PUBLISHED_INTRO, "",
           tabulate(lines, headers=header, tablefmt="github", disable_numparse=True)]
    out += [""] + [f"Note on {ds}: {note}." for ds, note in table.notes.items()] if table.notes else []
    return "\n".join(out)


def device_note(env: dict[str, Any]) -> str:
    """`` (GPU; float32 matmul precision P; sample metrics on the CPU)`` from the run's environment."""
    parts = [env["gpu"]] if env.get("gpu") else []
    if env.get("float32_matmul_precision"):
        parts.append(f"float32 matmul precision {env['float32_matmul_precision']}")
    if env.get("sample_metrics_device"):
        parts.append(f"sample metrics on the {env['sample_metrics_device'].upper()}")
    return f" ({'; '.join(parts)})" if parts else ""


def summary_line(data: ReportData, code: Callable[[str], str] = lambda s: f"`{s}`",
                 count: Callable[[int], str] = str) -> str:
    """What was run: profile, seeds, device, code, cell counts, likelihood kinds.

    ``code`` and ``count`` format names and cell counts (Markdown by default)."""
    env = data.meta.get("environment", {})
    return (f"Profile {code(', '.join(sorted(data.df.profile.unique())))}, {len(data.seeds)} seed(s) "
            f"({', '.join(map(str, data.seeds))}), device {code(env.get('device', '?'))}{device_note(env)}, code "
            f"{code(env.get('code_version', '?'))}. {count(data.n_ok)} cell(s) ok, {count(data.n_failed)} failed"
            f"{f', {count(data.n_skipped)} skipped (method unavailable here)' if data.n_skipped else ''}. "
            "Likelihood kinds: exact, bound (a lower bound), estimate; n/a where a method has no likelihood.")


# ------------------------------------------------------------------ the summary (format-neutral text)


def most_seeds(data: ReportData) -> int:
    """The largest number of seeds behind any table entry."""
    return max((e.n for t in data.tables for e in t.entries.values() if e.state == "value"), default=0)


def headline(data: ReportData) -> str:
    """The summary's first sentence: what the run holds and how sure its comparisons are."""
    skipped = f", {data.n_skipped} skipped" if data.n_skipped else ""
    counts = f"{data.n_ok} cell(s) ok, {data.n_failed} failed{skipped}, {len(data.seeds)} seed(s)."
    if most_seeds(data) < 2:
        return (f"{counts} One seed per cell: no entry is significantly better than another (there are no "
                "intervals over seeds); rerun with --seeds 3 or more for intervals and ties.")
    return (f"{counts} {TIED} marks ties: entries whose {LEVEL:.0%} t-interval over seeds overlaps the best "
            "entry's, and methods within the Nemenyi critical difference of the best average rank.")


def reading_text(data: ReportData, best: str = "bold") -> str:
    """How to read the entries: the interval, the best and the tie marks, or why there are none."""
    level = f"{LEVEL:.0%}"
    se = " (se x) is the standard error over test points."
    if most_seeds(data) < 2:
        return (f"One seed per cell: there are no intervals over seeds, so no entry is significantly better than "
                f"another; {best} only marks the best value per dataset.{se} Rerun with --seeds 3 (or more) for "
                f"{level} intervals and ties.")
    return ("Entries are means over seeds ± the half-width of a "
            f"{level} Student-t interval (mean ± t·s/√n over the n seeds of the cell); "
            f"{best} marks the best entry per dataset and {TIED} every entry whose interval overlaps the best's "
            "(tied: not significantly better or worse; for C2ST the intervals of |accuracy − 0.5|). Overlapping "
            f"{level} intervals is a conservative test: it rarely calls noise a difference.{se}")


def p_text(p: float) -> str:
    """A p-value as ``= 0.012`` or ``< 0.001`` (``= nan`` when undefined)."""
    return "< 0.001" if p < 1e-3 else f"= {significant(p, 2)}"


def ranked_tables(data: ReportData) -> list[MetricTable]:
    """Tables whose ranking compares at least two methods on at least one dataset."""
    return [t for t in data.tables if t.ranking is not None and len(t.ranking.methods) >= 2 and t.ranking.datasets]


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
    rows.append(("Friedman p", [(p_text(t.ranking.friedman.p_f).removeprefix("= ") if t.ranking.friedman else "–",
                                 "") for t in tables]))
    rows.append((f"critical difference (α = {1 - LEVEL:.2f})",
                 [(f"{t.ranking.cd:.2f}" if math.isfinite(t.ranking.cd) else "–", "") for t in tables]))
    return header, rows


def ranks_legend(data: ReportData) -> str:
    """How the ranks are computed and read."""
    return ("Average rank of each method over the datasets (1 = best; equal values share the average rank), from "
            "each cell's mean over seeds. Bold: the best average rank; "
            f"{TIED}: within the Nemenyi critical difference of the best (not significantly worse at α = "
            f"{1 - LEVEL:.2f}; Demšar 2006). Friedman p: Iman and Davenport's F test of equal average ranks. Ranks "
            "use the datasets where every compared method has a value; what is left out is listed above. With "
            "few datasets the CD is wide: a small Friedman p then says that the methods differ, without "
            "Nemenyi's test being able to say which.")


def rank_conclusions(data: ReportData) -> list[str]:
    """One sentence per ranked metric: the best average rank, and the methods significantly worse
    than it (Nemenyi), or that none is, with the Friedman p-value."""
    out = []
    for t in ranked_tables(data):
        r = t.ranking
        avg, best = r.average, r.best()
        line = (f"{t.spec.label}: best average rank {', '.join(best)} ({avg[best[0]]:.2f} over "
                f"{len(r.datasets)} dataset(s))")
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
    return out


def exclusion_notes(data: ReportData) -> list[str]:
    """What the rankings left out and why (methods with too few values, datasets with missing cells),
    one line per distinct exclusion with the metrics it applies to."""
    by_text: dict[str, list[str]] = {}
    for t in data.tables:
        r = t.ranking
        if r is None:
            continue
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
    cells = [f"{code(m)} on {code(ds)} ({r.share:.2%} of samples, up to {r.z:.3g} SDs)" for (m, ds), r in worst.iterrows()]
    return ("Outlying samples (a coordinate more than 10 training SDs from the training mean; sample metrics "
            "barely register a few): " + "; ".join(cells) + ".")


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None, figures: list[str] | None = None) -> str:
    """The whole Markdown report for ``rows``; ``figures`` are paths relative to the report."""
    data = build(rows, meta)
    if data is None:
        return "# densitybench report\n\nNo results yet.\n"
    return render_markdown(data, figures)


def _dash_nan(value: Any) -> Any:
    """A dash for NaN, two decimals for other floats (tabulate's floatfmt skips mixed columns)."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.2f}"
    return value


CD_FIGURE = "fig_critical_difference"


def _md_rank_cell(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else text + TIED if mark == "tied" else text


def markdown_summary(data: ReportData, figures: list[str]) -> list[str]:
    """The report's opening: the ranks across datasets (conclusions, table, diagram), then the best
    method per dataset and metric."""
    from harness.figures import caption

    lines = ["## Summary", "", headline(data), ""]
    lines += [f"**Warning.** {note}", ""] if (note := outlier_note(data)) else []
    if ranked_tables(data):
        lines += ["### Ranks across datasets", ""]
        lines += [f"- {c}" for c in rank_conclusions(data)] + [""]
        header, rows = ranks_overview(data)
        lines += [tabulate([[label, *(_md_rank_cell(*c) for c in cells)] for label, cells in rows],
                           headers=header, tablefmt="github", disable_numparse=True), ""]
        notes = exclusion_notes(data)
        lines += (["Left out of the ranks:", ""] + [f"- {n}" for n in notes] + [""]) if notes else []
        lines += [ranks_legend(data), ""]
        for f in figures:
            if Path(f).stem == CD_FIGURE:
                lines += [f"![{CD_FIGURE}]({f})", "", f"**{CD_FIGURE}**: {caption(CD_FIGURE)}", ""]
    header, rows = best_overview(data)
    ties = f" and, after {TIED}, the entries tied with it" if most_seeds(data) > 1 else ""
    lines += ["### Best per dataset", "", f"The best entry of each metric table{ties}.", "",
              tabulate([[label, *(best_text(*c) for c in cells)] for label, cells in rows], headers=header,
                       tablefmt="github", disable_numparse=True), ""]
    return lines


def markdown_run(data: ReportData) -> list[str]:
    """The closing section: what was run, the configuration and the environment."""
    def kv(items: dict[str, Any]) -> str:
        shown = [[k, v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)] for k, v in items.items()]
        return tabulate(shown, headers=["key", "value"], tablefmt="github", disable_numparse=True)

    lines = ["## Configuration and environment", "", summary_line(data), ""]
    for title, key in (("Configuration", "config"), ("Environment", "environment")):
        if data.meta.get(key):
            lines += [f"### {title}", "", kv(data.meta[key]), ""]
    return lines


def render_markdown(data: ReportData, figures: list[str] | None = None) -> str:
    """Markdown of prepared report data: the summary first, then every table, the figures, the
    failed cells, and the configuration and environment last."""
    figures = list(figures or [])
    lines = ["# densitybench report", ""] + markdown_summary(data, figures) + ["## Tables", "", reading_text(data), ""]
    for table in data.tables:
        lines += [markdown_table(table), ""]
    if data.phases is not None:
        lines += ["### Fit phases (s, mean over seeds and datasets)", ""]
        phase_rows = [[_dash_nan(v) for v in r] for r in data.phases.reset_index().values.tolist()]
        lines += [tabulate(phase_rows,
                           headers=["method", *data.phases.columns], tablefmt="github", floatfmt=".2f"), ""]
    from harness.curves import markdown_section

    lines += markdown_section(data.rows, data.methods, data.datasets)
    if data.published is not None:
        lines += [_md_published(data.published), ""]
    others = [f for f in figures if Path(f).stem != CD_FIGURE]
    if others:
        from harness.figures import caption

        lines += ["## Figures", ""]
        for f in others:
            lines += [f"**{Path(f).stem}**: {caption(Path(f).stem)}", "", f"![{Path(f).stem}]({f})", ""]
    if data.footnotes:
        lines += ["## Failed cells", ""]
        lines += [f"[{n}] {err}" for err, n in sorted(data.footnotes.items(), key=lambda kv: kv[1])] + [""]
        lines += [tabulate([[r["method"], r["dataset"], r["seed"], r["error"]] for r in data.failed],
                           headers=["method", "dataset", "seed", "error"], tablefmt="github"), ""]
    lines += markdown_run(data)
    return "\n".join(lines)


# ------------------------------------------------------------------ LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "‖": r"$\|$", "²": r"$^2$", "±": r"$\pm$",
    "–": "--", "—": "---", "’": "'",
}


def latex_escape(text: str) -> str:
    """``text`` safe for LaTeX text mode (specials, and the few Unicode signs the titles use)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_number(text: str) -> str:
    """A formatted number for math mode: ``1.2e+04`` or ``1.2e4`` -> ``1.2\\times10^{4}``."""
    m = re.fullmatch(r"(-?[\d.]+)e([+-]?)0*(\d+)", text)
    if not m:
        return text
    exp = ("-" if m.group(2) == "-" else "") + m.group(3)
    return rf"{m.group(1)}\times10^{{{exp}}}"


def _latex_cell(entry: Entry, marks: bool = True) -> str:
    """A table entry in LaTeX: ``mean \\pm half-width``, the standard error, bold for the best and a
    dagger for ties (``marks``)."""
    if entry.state == "value":
        body = _latex_number(significant(entry.mean, entry.digits))
        if entry.n > 1 and math.isfinite(entry.half_width):
            body += rf" \pm {_latex_number(significant(entry.half_width, 2))}"
        if math.isfinite(entry.se):
            body += rf"\ (\mathrm{{se}}\ {_latex_number(significant(entry.se, 2))})"
        if marks and entry.tied:
            body += r"^{\dagger}"
        return (rf"\textbf{{\boldmath${body}$}}" if marks and entry.best else f"${body}$") + entry.seeds_note()
    if entry.state == "failed":
        return rf"failed\textsuperscript{{{entry.note}}}"
    return {"na": "n/a", "missing": "--"}[entry.state]


def _latex_tabular(header: list[str], lines: list[list[str]], align: str, caption: str, label: str) -> str:
    """A booktabs table (header and cells already LaTeX), shrunk to the line width when wide."""
    body = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    body += [" & ".join(line) + r" \\" for line in lines]
    body += [r"\bottomrule", r"\end{tabular}"]
    if len(header) > 6:
        body = [r"\resizebox{\linewidth}{!}{%"] + body + ["}"]
    return "\n".join([r"\begin{table}[htbp]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
                      *body, r"\end{table}"])


def latex_table(table: MetricTable) -> str:
    """One metric as a LaTeX table: methods as rows, datasets as columns, best in bold."""
    header = ["Method"] + [latex_escape(ds) for ds in table.datasets]
    lines = []
    for m in table.methods:
        kind = table.kinds.get(m)
        flagged = table.has_kind_column and kind not in (None, "exact")  # bounds and estimates say so
        name = latex_escape(m) + (f" ({latex_escape(kind)})" if flagged else "")
        lines.append([name] + [_latex_cell(table.entries[(m, ds)]) for ds in table.datasets])
    return _latex_tabular(header, lines, "l" + "c" * len(table.datasets), latex_escape(table.spec.title),
                          f"tab:{table.spec.key.replace('_', '-')}")


def _latex_published(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = f"${table.fmt.format(value)}$" if value is not None else "--"
        return shown, _latex_cell(measured, marks=False)

    header, lines = _published_cells(table, cell)
    header = [latex_escape(h) for h in header]
    lines = [[latex_escape(c) for c in line[:3]] + line[3:] for line in lines]
    caption = latex_escape(f"{PUBLISHED_TITLE}. {PUBLISHED_INTRO}")
    caption += "".join(latex_escape(f" Note on {ds}: {note}.") for ds, note in table.notes.items())
    return _latex_tabular(header, lines, "lll" + "c" * (len(header) - 3), caption, "tab:published")


def _latex_reading(data: ReportData) -> str:
    """How to read the LaTeX tables (the Markdown legend without its Unicode signs)."""
    if most_seeds(data) < 2:
        return ("One seed per cell: no intervals, so no entry is significantly better than another; bold marks "
                "the best value per dataset; se: standard error over test points.")
    return (rf"Entries are means over seeds $\pm$ the half-width of a {LEVEL:.0%} Student-t interval; bold: the "
            r"best entry per dataset; $^\dagger$: tied with it (the intervals overlap); se: standard error over "
            "test points.").replace("%", r"\%")


def render_latex(data: ReportData) -> str:
    """A compilable LaTeX document (article, booktabs, graphicx) with one table per metric."""
    env = data.meta.get("environment", {})
    parts = [r"% densitybench report: generated from results.sqlite; regenerate with",
             r"% python -m harness report RUN_DIR --format latex",
             r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}",
             r"\usepackage{graphicx}", r"\usepackage[margin=2cm]{geometry}", r"\begin{document}",
             r"\section*{densitybench report}",
             latex_escape(f"Profile {', '.join(sorted(data.df.profile.unique()))}; {len(data.seeds)} seed(s) "
                          f"({', '.join(map(str, data.seeds))}); device {env.get('device', '?')}; code "
                          f"{env.get('code_version', '?')}; {data.n_ok} cell(s) ok, {data.n_failed} failed. ")
             + _latex_reading(data), ""]
    for table in data.tables:
        parts += [latex_table(table), ""]
    if data.published is not None:
        parts += [_latex_published(data.published), ""]
    if data.footnotes:
        parts += [r"\paragraph{Failed cells.}", r"\begin{enumerate}"]
        parts += [rf"\item {latex_escape(err)}" for err, _ in sorted(data.footnotes.items(), key=lambda kv: kv[1])]
        parts += [r"\end{enumerate}", ""]
    parts += [r"\end{document}", ""]
    return "\n".join(parts)


def latex(rows: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """The LaTeX report for ``rows``."""
    data = build(rows, meta)
    if data is None:
        return "\n".join([r"\documentclass{article}", r"\begin{document}", "No results yet.", r"\end{document}", ""])
    return render_latex(data)


# ------------------------------------------------------------------ writing


def _check_formats(formats: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = tuple(f.strip() for f in formats.split(",") if f.strip())
    for f in formats:
        if f not in FORMATS:
            raise UserError(f"unknown report format '{f}'; valid: {', '.join(FORMATS)}")
    return tuple(formats)


def draw_figures_safely(run_dir: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[Path]:
    """Draw the figures; a drawing error is reported on stderr and never costs the tables."""
    try:
        from harness.figures import draw_all

        return draw_all(run_dir, rows, meta, out_dir=run_dir / FIGURE_DIR)
    except Exception as e:  # noqa: BLE001 - figures are a bonus; the tables must still be written
        print(f"warning: figures not drawn: {type(e).__name__}: {e}", file=sys.stderr)
        return []


def write_report(run_dir: Path | str, formats: tuple[str, ...] = DEFAULT_FORMATS) -> list[Path]:
    """Regenerate the report files of ``run_dir`` from its store and artefacts; returns the paths.

    ``formats`` is any of ``md``, ``html``, ``latex``, ``csv``; ``md`` and
    ``html`` also draw the figures. ``report.html`` (or ``report.md``) comes last.
    """
    formats = _check_formats(formats)
    run_dir = Path(run_dir)
    store = ResultsStore(run_dir, create=False)
    try:
        rows, meta = store.rows(), store.meta()
    finally:
        store.close()
    data = build(rows, meta)
    written: list[Path] = []
    figures: list[Path] = []
    if data is not None and {"md", "html"} & set(formats):
        figures = draw_figures_safely(run_dir, rows, meta)
        written += figures
    if "csv" in formats:
        path = run_dir / "results.csv"
        rows_frame(rows).to_csv(path, index=False)
        written.append(path)
    if "latex" in formats:
        path = run_dir / "report.tex"
        path.write_text(render_latex(data) if data is not None else latex(rows, meta))
        written.append(path)
    if "md" in formats:
        path = run_dir / "report.md"
        rel = [f.relative_to(run_dir).as_posix() for f in figures]
        path.write_text(render_markdown(data, rel) if data is not None else markdown(rows, meta))
        written.append(path)
    if "html" in formats:
        from harness.html_report import render_html

        path = run_dir / "report.html"
        path.write_text(render_html(data, meta, figures), encoding="utf-8")
        written.append(path)
    return written


__all__ = ["TABLES", "TableSpec", "FORMATS", "DEFAULT_FORMATS", "rows_frame", "markdown", "latex", "build",
           "write_report", "metric_table", "latex_escape"]
