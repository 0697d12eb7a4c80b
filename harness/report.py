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

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tabulate import tabulate

from harness import published as pub
from harness.errors import UserError
from harness.store import ResultsStore

FORMATS = ("md", "html", "latex", "csv")
DEFAULT_FORMATS = ("md", "csv", "html")
FIGURE_DIR = "figures"


@dataclass(frozen=True)
class TableSpec:
    """One report table: where the value lives in a row and which way is better."""

    key: str
    title: str
    better: str  # "higher" | "lower" | "half" (closest to 0.5)
    source: str = "metrics"  # "metrics" | "timings"
    fmt: str = "{:.3f}"
    needs_likelihood: bool = False


TABLES: tuple[TableSpec, ...] = (
    TableSpec("test_loglik", "Test log-likelihood (nats per example, higher is better)", "higher", needs_likelihood=True),
    TableSpec("kl", "KL(p ‖ q) on test points (nats, lower is better; known densities only)", "lower", needs_likelihood=True),
    TableSpec("mmd2", "MMD² against test data (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("energy_distance", "Energy distance against test data (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("sliced_wasserstein", "Sliced Wasserstein-2 against test data (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("c2st_accuracy", "Classifier two-sample test accuracy (0.5 is best)", "half"),
    TableSpec("marginal_kl", "Mean per-dimension marginal KL, the paper's metric (lower is better)", "lower", fmt="{:.4f}"),
    TableSpec("histogram_tv", "Histogram total variation vs the true density (lower is better)", "lower"),
    TableSpec("fit_s", "Fit time (s, lower is better)", "lower", source="timings", fmt="{:.1f}"),
    TableSpec("samples_per_s", "Sampling throughput (samples/s, higher is better)", "higher", source="timings", fmt="{:.3g}"),
    TableSpec("log_prob_per_s", "log_prob throughput (points/s, higher is better)", "higher", source="timings", fmt="{:.3g}", needs_likelihood=True),
)


# ------------------------------------------------------------------ the data behind every format


@dataclass(frozen=True)
class Entry:
    """One table cell: a value over seeds, a failure (with footnote number), missing, or n/a."""

    state: str  # "value" | "failed" | "missing" | "na"
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    best: bool = False
    note: int | None = None
    seeds_ok: int = 0  # cells of this entry that ran ok, of ``seeds_run`` that ran (ok or failed)
    seeds_run: int = 0

    def text(self, fmt: str, sep: str = " ± ") -> str:
        """Plain text of a value entry: ``mean ± std`` (just ``mean`` for one seed), then
        ``(k/n seeds ok)`` when some seeds of the cell failed."""
        value = f"{fmt.format(self.mean)}{sep}{fmt.format(self.std)}" if self.n > 1 else fmt.format(self.mean)
        return value + self.seeds_note()

    def seeds_note(self) -> str:
        return f" ({self.seeds_ok}/{self.seeds_run} seeds ok)" if self.seeds_ok < self.seeds_run else ""


@dataclass
class MetricTable:
    """One metric for every (method, dataset); ``entries[(method, dataset)]``."""

    spec: TableSpec
    methods: list[str]
    datasets: list[str]
    kinds: dict[str, str | None]
    entries: dict[tuple[str, str], Entry]

    @property
    def has_kind_column(self) -> bool:
        return self.spec.needs_likelihood


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
    """One flat record per row: identity columns, metrics.*, timings.*."""
    flat = []
    for r in rows:
        rec = {k: r[k] for k in ("method", "dataset", "seed", "profile", "device", "status", "error", "code_version", "config_hash", "cell_key")}
        for src in ("metrics", "timings"):
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


def _best(stats: dict[str, tuple[float, float, int]], better: str) -> str | None:
    finite = {m: s[0] for m, s in stats.items() if math.isfinite(s[0])}
    if not finite:
        return None
    key: Callable[[str], float] = {
        "higher": lambda m: -finite[m], "lower": lambda m: finite[m], "half": lambda m: abs(finite[m] - 0.5)
    }[better]
    return min(finite, key=key)


def method_order(df: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Methods in the config's order, then the rest sorted."""
    preferred = cfg.get("methods") if isinstance(cfg.get("methods"), list) else []
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

        return methods.get(method).log_prob_kind
    except Exception:  # noqa: BLE001 - unknown or unavailable method: no likelihood known
        return None


def metric_entries(df: pd.DataFrame, spec: TableSpec, methods: list[str], dsets: list[str],
                   kinds: dict[str, str | None], footnotes: dict[str, int]) -> MetricTable | None:
    """The entries of one metric, or None when no row has it; numbers new failure footnotes."""
    col = f"{spec.source}.{spec.key}"
    if col not in df.columns or df[col].notna().sum() == 0:
        return None
    per_dataset = {}
    for ds in dsets:
        stats, failed, seeds = {}, {}, {}
        for m in methods:
            sub = df[(df.method == m) & (df.dataset == ds)]
            ok = sub[sub.status == "ok"]
            vals = pd.to_numeric(ok[col], errors="coerce").dropna().to_numpy(dtype=float)
            if len(vals):
                stats[m] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, len(vals))
            bad = sub[sub.status == "failed"]
            seeds[m] = (len(ok), len(ok) + len(bad))
            if len(bad):
                failed[m] = bad.error.iloc[0] or "failed"
        per_dataset[ds] = (stats, failed, seeds, _best(stats, spec.better))
    entries: dict[tuple[str, str], Entry] = {}
    for m in methods:
        for ds in dsets:
            stats, failed, seeds, best = per_dataset[ds]
            if spec.needs_likelihood and kinds.get(m) is None:
                entries[(m, ds)] = Entry("na")
            elif m in stats:
                mean, std, n = stats[m]
                entries[(m, ds)] = Entry("value", mean, std, n, best=(m == best), seeds_ok=seeds[m][0],
                                         seeds_run=seeds[m][1])
            elif m in failed:
                entries[(m, ds)] = Entry("failed", note=footnotes.setdefault(failed[m], len(footnotes) + 1))
            else:
                entries[(m, ds)] = Entry("missing")
    return MetricTable(spec, methods, dsets, kinds, entries)


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


def _md_cell(entry: Entry, fmt: str) -> str:
    if entry.state == "value":
        text = entry.text(fmt)
        return f"**{text}**" if entry.best else text
    return {"failed": f"failed [{entry.note}]", "na": "n/a", "missing": "–"}[entry.state]


def markdown_table(table: MetricTable) -> str:
    """One metric as a Markdown section: a heading and a GitHub table."""
    header = ["method"] + (["kind"] if table.has_kind_column else []) + table.datasets
    lines = []
    for m in table.methods:
        kind = [table.kinds.get(m) or "n/a"] if table.has_kind_column else []
        lines.append([m] + kind + [_md_cell(table.entries[(m, ds)], table.spec.fmt) for ds in table.datasets])
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
PUBLISHED_INTRO = ("Nats per example, higher is better; \"measured\" is this run's mean ± std over seeds for our "
                   "method of the same family (its settings may differ from the paper's).")


def _md_published(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = table.fmt.format(value) if value is not None else "–"
        return shown, (measured.text(table.fmt) if measured.state == "value" else _md_cell(measured, table.fmt))

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
                 count: Callable[[int], str] = str, best: str = "in bold") -> str:
    """The report's opening paragraph: profile, seeds, device, code, counts, how to read it.

    ``code`` and ``count`` format names and cell counts (Markdown by default), ``best`` says how
    the best entry is marked."""
    env = data.meta.get("environment", {})
    return (f"Profile {code(', '.join(sorted(data.df.profile.unique())))}, {len(data.seeds)} seed(s) "
            f"({', '.join(map(str, data.seeds))}), device {code(env.get('device', '?'))}{device_note(env)}, code "
            f"{code(env.get('code_version', '?'))}. {count(data.n_ok)} cell(s) ok, {count(data.n_failed)} failed"
            f"{f', {count(data.n_skipped)} skipped (method unavailable here)' if data.n_skipped else ''}. "
            f"Entries are mean ± std over seeds; the best entry per dataset is {best}. Likelihood kinds: exact, "
            "bound (a lower bound), estimate; n/a where a method has no likelihood.")


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


def render_markdown(data: ReportData, figures: list[str] | None = None) -> str:
    """Markdown of prepared report data."""
    lines = ["# densitybench report", "", summary_line(data), ""]
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
    if figures:
        from harness.figures import caption

        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"**{Path(f).stem}**: {caption(Path(f).stem)}", "", f"![{Path(f).stem}]({f})", ""]
    if data.footnotes:
        lines += ["## Failed cells", ""]
        lines += [f"[{n}] {err}" for err, n in sorted(data.footnotes.items(), key=lambda kv: kv[1])] + [""]
        lines += [tabulate([[r["method"], r["dataset"], r["seed"], r["error"]] for r in data.failed],
                           headers=["method", "dataset", "seed", "error"], tablefmt="github"), ""]
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
    """A formatted number for math mode: ``1.2e+04`` -> ``1.2\\times10^{4}``."""
    m = re.fullmatch(r"(-?[\d.]+)e([+-])0*(\d+)", text)
    if not m:
        return text
    exp = ("-" if m.group(2) == "-" else "") + m.group(3)
    return rf"{m.group(1)}\times10^{{{exp}}}"


def _latex_cell(entry: Entry, fmt: str) -> str:
    if entry.state == "value":
        body = _latex_number(fmt.format(entry.mean))
        if entry.n > 1:
            body += rf" \pm {_latex_number(fmt.format(entry.std))}"
        return (rf"\textbf{{\boldmath${body}$}}" if entry.best else f"${body}$") + entry.seeds_note()
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
        lines.append([name] + [_latex_cell(table.entries[(m, ds)], table.spec.fmt) for ds in table.datasets])
    return _latex_tabular(header, lines, "l" + "c" * len(table.datasets), latex_escape(table.spec.title),
                          f"tab:{table.spec.key.replace('_', '-')}")


def _latex_published(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = f"${table.fmt.format(value)}$" if value is not None else "--"
        if measured.state == "value":
            return shown, _latex_cell(Entry("value", measured.mean, measured.std, measured.n), table.fmt)
        return shown, _latex_cell(measured, table.fmt)

    header, lines = _published_cells(table, cell)
    header = [latex_escape(h) for h in header]
    lines = [[latex_escape(c) for c in line[:3]] + line[3:] for line in lines]
    caption = latex_escape(f"{PUBLISHED_TITLE}. {PUBLISHED_INTRO}")
    caption += "".join(latex_escape(f" Note on {ds}: {note}.") for ds, note in table.notes.items())
    return _latex_tabular(header, lines, "lll" + "c" * (len(header) - 3), caption, "tab:published")


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
                          f"{env.get('code_version', '?')}; {data.n_ok} cell(s) ok, {data.n_failed} failed. "
                          "Entries are mean ± std over seeds; the best per dataset is in bold."), ""]
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
