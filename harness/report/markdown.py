"""``report.md``: the verdict first (one answer per quantity), then the summary
(ranks across datasets, best per dataset), one GitHub table per metric, time to quality, published numbers, figures,
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

from harness.report.blocks import Block, Heading, Table, Text
from harness.report.build import build
from harness.report.data import ReportData
from harness.report.errorbars import error_bar_note
from harness.report.published import PUBLISHED_INTRO, PUBLISHED_TITLE, PublishedTable, published_cells
from harness.report.styles import CD_FIGURE, caption
from harness.report.summary import (
    best_overview,
    best_text,
    exclusion_notes,
    headline,
    most_seeds,
    outlier_note,
    rank_conclusions,
    ranked_tables,
    ranks_legend,
    ranks_overview,
    reading_text,
    summary_line,
)
from harness.report.tables import TIED, Entry, MetricTable, TableSpec, metric_entries
from harness.report.verdict import MARKDOWN, line_text, verdict_legend


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


def markdown_verdict(data: ReportData) -> list[str]:
    """The report's first section: one answer per quantity, and how it was decided."""
    lines = ["## Verdict", ""]
    lines += [f"- {line_text(v, MARKDOWN)}" for v in data.verdict]
    return lines + ["", verdict_legend(data.verdict), ""]


def markdown_summary(data: ReportData, figures: list[str]) -> list[str]:
    """The report's opening: the ranks across datasets (conclusions, table, diagram), then the best
    method per dataset and metric."""
    lines = ["## Summary", "", headline(data), ""]
    lines += [f"**Warning.** {note}", ""] if (note := outlier_note(data)) else []
    lines += [f"**Warning.** {note}", ""] if (note := error_bar_note(data)) else []
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
    lines = ["# densitybench report", ""] + markdown_verdict(data) + markdown_summary(data, figures)
    lines += ["## Tables", "", reading_text(data), ""]
    for table in data.tables:
        lines += [markdown_table(table), ""]
    if data.phases is not None:
        lines += ["### Fit phases (s, mean over seeds and datasets)", ""]
        phase_rows = [[_dash_nan(v) for v in r] for r in data.phases.reset_index().values.tolist()]
        lines += [tabulate(phase_rows, headers=["method", *data.phases.columns], tablefmt="github", floatfmt=".2f"), ""]
    for blocks in data.sections:
        lines += markdown_blocks(blocks)
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


def markdown_blocks(blocks: list[Block]) -> list[str]:
    """A section's blocks as Markdown lines, each followed by a blank line."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Text):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines += [tabulate(block.rows, headers=block.header, tablefmt="github", disable_numparse=True), ""]
    return lines
