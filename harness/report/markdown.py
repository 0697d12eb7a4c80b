"""``report.md``: the summary first (ranks across datasets, best per dataset),
then one GitHub table per metric, time to quality, published numbers, figures,
failed cells, and the configuration and environment last.

Example::

    text = render_markdown(build(rows, meta), ["figures/fig_samples_2d.png"])
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.report.data import (
    CD_FIGURE,
    DEFINITION,
    FRACTIONS,
    METRICS,
    PUBLISHED_INTRO,
    PUBLISHED_TITLE,
    TIED,
    Entry,
    MetricTable,
    PublishedTable,
    ReportData,
    TableSpec,
    best_overview,
    best_text,
    budget_entry,
    build,
    caption,
    exclusion_notes,
    headline,
    metric_entries,
    most_seeds,
    outlier_note,
    published_cells,
    rank_conclusions,
    ranked_tables,
    ranks_legend,
    ranks_overview,
    reading_text,
    summary_line,
)


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


def metric_table(
    df: pd.DataFrame,
    spec: TableSpec,
    methods: list[str],
    dsets: list[str],
    kinds: dict[str, str | None],
    footnotes: dict[str, int],
) -> str | None:
    """Markdown table of one metric, or None when no row has it."""
    table = metric_entries(df, spec, methods, dsets, kinds, footnotes)
    return markdown_table(table) if table is not None else None


def _md_published(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = table.fmt.format(value) if value is not None else "–"
        return shown, (measured.text() if measured.state == "value" else _md_cell(measured))

    header, lines = published_cells(table, cell)
    out = [
        f"### {PUBLISHED_TITLE}",
        "",
        PUBLISHED_INTRO,
        "",
        tabulate(lines, headers=header, tablefmt="github", disable_numparse=True),
    ]
    out += [""] + [f"Note on {ds}: {note}." for ds, note in table.notes.items()] if table.notes else []
    return "\n".join(out)


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


def _md_rank_cell(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else text + TIED if mark == "tied" else text


def markdown_summary(data: ReportData, figures: list[str]) -> list[str]:
    """The report's opening: the ranks across datasets (conclusions, table, diagram), then the best
    method per dataset and metric."""
    lines = ["## Summary", "", headline(data), ""]
    lines += [f"**Warning.** {note}", ""] if (note := outlier_note(data)) else []
    if ranked_tables(data):
        lines += ["### Ranks across datasets", ""]
        lines += [f"- {c}" for c in rank_conclusions(data)] + [""]
        header, rows = ranks_overview(data)
        lines += [
            tabulate(
                [[label, *(_md_rank_cell(*c) for c in cells)] for label, cells in rows],
                headers=header,
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
        ]
        notes = exclusion_notes(data)
        lines += (["Left out of the ranks:", ""] + [f"- {n}" for n in notes] + [""]) if notes else []
        lines += [ranks_legend(data), ""]
        for f in figures:
            if Path(f).stem == CD_FIGURE:
                lines += [f"![{CD_FIGURE}]({f})", "", f"**{CD_FIGURE}**: {caption(CD_FIGURE)}", ""]
    header, rows = best_overview(data)
    ties = f" and, after {TIED}, the entries tied with it" if most_seeds(data) > 1 else ""
    lines += [
        "### Best per dataset",
        "",
        f"The best entry of each metric table{ties}.",
        "",
        tabulate(
            [[label, *(best_text(*c) for c in cells)] for label, cells in rows],
            headers=header,
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
    ]
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
        lines += [tabulate(phase_rows, headers=["method", *data.phases.columns], tablefmt="github", floatfmt=".2f"), ""]
    lines += time_section(data)
    if data.published is not None:
        lines += [_md_published(data.published), ""]
    others = [f for f in figures if Path(f).stem != CD_FIGURE]
    if others:
        lines += ["## Figures", ""]
        for f in others:
            lines += [f"**{Path(f).stem}**: {caption(Path(f).stem)}", "", f"![{Path(f).stem}]({f})", ""]
    if data.footnotes:
        lines += ["## Failed cells", ""]
        lines += [f"[{n}] {err}" for err, n in sorted(data.footnotes.items(), key=lambda kv: kv[1])] + [""]
        lines += [
            tabulate(
                [[r["method"], r["dataset"], r["seed"], r["error"]] for r in data.failed],
                headers=["method", "dataset", "seed", "error"],
                tablefmt="github",
            ),
            "",
        ]
    lines += markdown_run(data)
    return "\n".join(lines)


def time_section(data: ReportData) -> list[str]:
    """The quality-against-time section (time to quality, training under a budget); empty when no row
    has checkpoints."""
    lines: list[str] = []
    if data.time_tables:
        lines += [
            "### Time to quality (training seconds to 50% / 90% of the best final value)",
            "",
            DEFINITION.format(fractions=" / ".join(f"{round(100 * f)}%" for f in FRACTIONS)),
            "",
        ]
    for t in data.time_tables:
        lines += [f"{METRICS[t.metric][0].capitalize()}:", ""]
        lines += [
            tabulate(
                [[m] + [t.entry(m, ds) for ds in t.datasets] for m in t.methods],
                headers=["method"] + t.datasets,
                tablefmt="github",
                disable_numparse=True,
            ),
            "",
        ]
        if t.undefined:
            lines += [f"Undefined on {', '.join(t.undefined)}: no method ended better than the Gaussian reference.", ""]
    if data.no_checkpoints:
        lines += [
            f"Reported no checkpoints (no curve; their rows are in every other table): "
            f"{', '.join(data.no_checkpoints)}.",
            "",
        ]
    return lines + _budget_section(data)


def _budget_section(data: ReportData) -> list[str]:
    progress = data.budget
    if not progress:
        return []
    budgets = sorted({p["budget_s"] for ps in progress.values() for p in ps})
    lines = [
        f"### Training under a budget of {', '.join(f'{b:g}' for b in budgets)} s",
        "",
        "Share of the planned training steps reached (every loop stops at its first checkpoint past the "
        "budget, so where it stops depends on this machine's speed; checkpoints are fixed in steps).",
        "",
    ]
    table = [
        [m] + [budget_entry(progress[(m, ds)]) if (m, ds) in progress else "–" for ds in data.datasets]
        for m in data.methods
        if any((m, ds) in progress for ds in data.datasets)
    ]
    lines += [tabulate(table, headers=["method"] + data.datasets, tablefmt="github", disable_numparse=True), ""]
    return lines
