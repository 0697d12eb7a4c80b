"""``report.html``: one self-contained page (inline CSS, figures embedded as
base64 PNG, no scripts, no network): the verdict first, then the summary (ranks across datasets,
the critical-difference diagram, the best per dataset), then every table of
``report.md``, every figure, the failed cells, and the run's configuration and
environment last.

Example::

    page = render_html(build(rows, meta, run_dir), figure_paths)
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from harness.report.blocks import Block, Heading, Table, Text
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
from harness.report.tables import TIED, Entry, MetricTable
from harness.report.verdict import Markup, line_text, verdict_legend

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #222;
       margin: 0 auto; padding: 1.5em 2em 4em; max-width: 1500px; line-height: 1.45; }
@media (max-width: 600px) { body { padding: 1em .8em 3em; } nav a { white-space: normal; } }
h1 { margin-bottom: .2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin: 1.6em 0 .5em; font-size: 1.05em; }
nav { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 6px; padding: .6em 1em; margin: 1em 0;
      display: flex; flex-wrap: wrap; gap: .3em 1.3em; }
nav a { white-space: nowrap; color: #0366d6; text-decoration: none; }
.run { display: flex; flex-wrap: wrap; gap: 0 2.5em; align-items: flex-start; }
.run section { min-width: 0; max-width: 100%; }
nav a:hover { text-decoration: underline; }
.summary { font-size: .95em; color: #444; }
ul.conclusions li { margin: .2em 0; }
ul.verdict { padding-left: 1.2em; font-size: 1.02em; }
ul.verdict li { margin: .35em 0; overflow-wrap: anywhere; }
ul.verdict code { white-space: normal; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .86em; margin: .3em 0 1em; }
th, td { border: 1px solid #dfe2e5; padding: .3em .65em; text-align: right; white-space: nowrap; }
th { background: #f1f3f5; text-align: center; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.best { font-weight: 700; background: #e6f4ea; }
td.tied { background: #f3faf5; }
td.best-cell { text-align: left; white-space: normal; min-width: 7em; }
.tie { color: #1a7f37; font-weight: 700; margin-left: .1em; }
td.failed { color: #b31d28; background: #fff5f5; }
td.na, td.missing { color: #999; text-align: center; }
td.kind { color: #555; text-align: center; }
td.text { text-align: left; }
table.kv td { text-align: left; white-space: normal; max-width: 40em; word-break: break-word;
             font-family: ui-monospace, Menlo, Consolas, monospace; }
table.kv td:first-child { font-family: inherit; font-weight: 600; background: #f6f8fa; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 50%; margin-right: .35em;
          vertical-align: -0.05em; border: 1px solid rgba(0,0,0,.3); }
figure { margin: 1.2em 0 2.2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
figcaption { color: #555; font-size: .9em; margin-top: .4em; max-width: 1100px; }
.note { color: #555; font-size: .9em; }
ol.errors li { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em; margin: .2em 0; }
footer { margin-top: 3em; color: #888; font-size: .85em; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _anchor(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def _kv_table(items: dict[str, Any]) -> str:
    """A two-column key/value table; nested values as compact JSON."""
    rows = []
    for key, value in items.items():
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        rows.append(f"<tr><td>{_esc(key)}</td><td>{_esc(shown)}</td></tr>")
    return f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>'


def _cell(entry: Entry, footnotes_by_number: dict[int, str]) -> str:
    if entry.state == "value":
        cls = ' class="best"' if entry.best else ' class="tied"' if entry.tied else ""
        tie = f'<span class="tie" title="tied with the best">{TIED}</span>' if entry.tied else ""
        return f"<td{cls}>{_esc(entry.text())}{tie}</td>"
    if entry.state == "failed":
        why = footnotes_by_number.get(entry.note or 0, "failed")
        return f'<td class="failed" title="{_esc(why)}">failed <a href="#failed-{entry.note}">[{entry.note}]</a></td>'
    return {"na": '<td class="na">n/a</td>', "missing": '<td class="missing">–</td>'}[entry.state]


def _method_label(method: str, styles: dict[str, tuple[str, str]]) -> str:
    colour = styles.get(method, ("#999", "o"))[0]
    return f'<span class="swatch" style="background:{colour}"></span>{_esc(method)}'


def metric_table_html(table: MetricTable, footnotes_by_number: dict[int, str], styles: dict) -> str:
    """One metric as an HTML section (heading and table)."""
    head = ["method"] + (["kind"] if table.has_kind_column else []) + table.datasets
    out = [
        f'<h3 id="t-{_anchor(table.spec.key)}">{_esc(table.spec.title)}</h3>',
        '<div class="scroll"><table>',
        "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>",
    ]
    for m in table.methods:
        cells = [f"<td>{_method_label(m, styles)}</td>"]
        if table.has_kind_column:
            cells.append(f'<td class="kind">{_esc(table.kinds.get(m) or "n/a")}</td>')
        cells += [_cell(table.entries[(m, ds)], footnotes_by_number) for ds in table.datasets]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _phases_html(data: ReportData, styles: dict) -> str:
    ph = data.phases
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["method", *ph.columns])
    body = []
    for method, values in ph.iterrows():
        cells = "".join(f"<td>{v:.2f}</td>" if v == v else '<td class="missing">–</td>' for v in values)
        body.append(f"<tr><td>{_method_label(str(method), styles)}</td>{cells}</tr>")
    return (
        '<h3 id="t-fit-phases">Fit phases (s, mean over seeds and datasets)</h3><div class="scroll"><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _published_html(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = table.fmt.format(value) if value is not None else "–"
        if measured.state == "value":
            return shown, measured.text()
        return shown, {"failed": "failed", "na": "n/a", "missing": "–"}[measured.state]

    header, lines = published_cells(table, cell)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    out = [
        f'<h2 id="published">{_esc(PUBLISHED_TITLE)}</h2>',
        f'<p class="note">{_esc(PUBLISHED_INTRO)}</p>',
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>',
    ]
    for line in lines:
        out.append(
            "<tr>"
            + "".join(f'<td class="text">{_esc(c)}</td>' for c in line[:3])
            + "".join(f"<td>{_esc(c)}</td>" for c in line[3:])
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    out += [f'<p class="note">Note on {_esc(ds)}: {_esc(note)}.</p>' for ds, note in table.notes.items()]
    return "\n".join(out)


def _figure_html(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    stem = Path(path).stem
    return (
        f'<figure id="{_anchor(stem)}"><img alt="{_esc(stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{_esc(stem)}</b>: {_esc(caption(stem))}</figcaption></figure>"
    )


def _failed_html(data: ReportData) -> str:
    notes = sorted(data.footnotes.items(), key=lambda kv: kv[1])
    out = ['<h2 id="failed">Failed cells</h2>', '<ol class="errors">']
    out += [f'<li id="failed-{n}" value="{n}">{_esc(err)}</li>' for err, n in notes]
    out += [
        "</ol>",
        '<div class="scroll"><table><thead><tr><th>method</th><th>dataset</th><th>seed</th><th>error</th>'
        "</tr></thead><tbody>",
    ]
    out += [
        f"<tr><td>{_esc(r['method'])}</td><td>{_esc(r['dataset'])}</td><td>{_esc(r['seed'])}</td>"
        f'<td style="text-align:left;white-space:normal">{_esc(r["error"])}</td></tr>'
        for r in data.failed
    ]
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _table_html(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A scrolling table; ``rows`` hold ready <td> cells."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _rank_cell(text: str, mark: str) -> str:
    if mark == "best":
        return f'<td class="best">{_esc(text)}</td>'
    if mark == "tied":
        return (
            f'<td class="tied">{_esc(text)}<span class="tie" title="within the critical difference">{TIED}</span></td>'
        )
    return f"<td>{_esc(text)}</td>"


def verdict_html(data: ReportData) -> list[str]:
    """The page's first section: one answer per quantity (a list that wraps at any width)."""
    markup = Markup(name=lambda m: f"<code>{_esc(m)}</code>", strong=lambda q: f"<b>{_esc(q)}</b>", plain=_esc)
    items = [line_text(v, markup) for v in data.verdict]
    return [
        '<h2 id="verdict">Verdict</h2>',
        '<ul class="verdict">' + "".join(f"<li>{_marked_html(item)}</li>" for item in items) + "</ul>",
        f'<p class="note">{_marked(verdict_legend(data.verdict))}</p>',
    ]


def _marked_html(markup: str) -> str:
    """Already-escaped ``markup`` with the tie marks coloured."""
    return markup.replace(TIED, f'<span class="tie">{TIED}</span>')


def summary_html(data: ReportData, figures: list[Path], styles: dict) -> list[str]:
    """The opening section: how to read the report, ranks across datasets with the critical-difference
    diagram, and the best method per dataset and metric."""
    parts = ['<h2 id="summary">Summary</h2>', f'<p class="summary">{_marked(headline(data))}</p>']
    note = outlier_note(data, code=lambda s: f"<code>{_esc(s)}</code>")
    parts += [f'<p class="summary"><b>Warning.</b> {note}</p>'] if note else []
    note = error_bar_note(data)
    parts += [f'<p class="summary"><b>Warning.</b> {_esc(note)}</p>'] if note else []
    if ranked_tables(data):
        parts += [
            '<h3 id="ranks">Ranks across datasets</h3>',
            '<ul class="conclusions">' + "".join(f"<li>{_esc(c)}</li>" for c in rank_conclusions(data)) + "</ul>",
        ]
        header, rows = ranks_overview(data)
        parts.append(
            _table_html(
                header,
                [
                    [
                        f"<td>{_method_label(label, styles) if label in data.methods else _esc(label)}</td>",
                        *(_rank_cell(*c) for c in cells),
                    ]
                    for label, cells in rows
                ],
            )
        )
        notes = exclusion_notes(data)
        if notes:
            parts += [
                '<p class="note">Left out of the ranks:</p><ul class="note">'
                + "".join(f"<li>{_esc(n)}</li>" for n in notes)
                + "</ul>"
            ]
        parts.append(f'<p class="note">{_marked(ranks_legend(data))}</p>')
        parts += [_figure_html(f) for f in figures if Path(f).stem == CD_FIGURE]
    header, rows = best_overview(data)
    tied_note = f" and, after {TIED}, the entries tied with it" if most_seeds(data) > 1 else ""
    parts += [
        '<h3 id="best">Best per dataset</h3>',
        f'<p class="note">The best entry of each metric table{_esc(tied_note)}.</p>',
        _table_html(
            header,
            [
                [f"<td>{_esc(label)}</td>", *(f'<td class="best-cell">{_esc(best_text(*c))}</td>' for c in cells)]
                for label, cells in rows
            ],
        ),
    ]
    return parts


def _marked(text: str) -> str:
    """``text`` escaped, with the tie marks coloured."""
    return _esc(text).replace(TIED, f'<span class="tie">{TIED}</span>')


def _run_html(data: ReportData) -> list[str]:
    """The closing section: what was run, the configuration and the environment."""
    line = summary_line(data, code=lambda s: f"<code>{_esc(s)}</code>", count=lambda n: f"<b>{n}</b>")
    return [
        '<h2 id="run">Configuration and environment</h2>',
        f'<p class="summary">{line}</p>',
        '<div class="run"><section><h3 id="configuration">Configuration</h3>',
        _kv_table(data.meta.get("config") or {}),
        '</section><section><h3 id="environment">Environment</h3>',
        _kv_table(data.meta.get("environment") or {}),
        "</section></div>",
    ]


def render_html(data: ReportData | None, figures: list[Path] | None = None) -> str:
    """The whole page; ``figures`` are PNG files to embed."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>densitybench report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>densitybench report</h1>",
    ]
    if data is None:
        parts += ["<p>No results yet.</p>", "</body></html>"]
        return "\n".join(parts)
    styles = data.styles
    figures = list(figures or [])
    others = [f for f in figures if Path(f).stem != CD_FIGURE]
    nav = [("verdict", "Verdict"), ("summary", "Summary"), ("tables", "Tables")]
    nav += [("published", "Published numbers")] if data.published is not None else []
    nav += [("figures", "Figures")] if others else []
    nav += [("failed", f"Failed cells ({data.n_failed})")] if data.failed else []
    nav += [("run", "Configuration and environment")]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in nav) + "</nav>")
    parts += verdict_html(data)
    parts += summary_html(data, figures, styles)
    by_number = {n: err for err, n in data.footnotes.items()}
    parts += [
        '<h2 id="tables">Tables</h2>',
        f'<p class="summary">{_marked(reading_text(data, best="bold on green"))}</p>',
    ]
    parts.append(
        "<nav>"
        + "".join(f'<a href="#t-{_anchor(t.spec.key)}">{_esc(t.spec.label)}</a>' for t in data.tables)
        + "</nav>"
    )
    parts += [metric_table_html(t, by_number, styles) for t in data.tables]
    if data.phases is not None:
        parts.append(_phases_html(data, styles))
    parts += ["\n".join(html_blocks(blocks)) for blocks in data.sections]
    if data.published is not None:
        parts.append(_published_html(data.published))
    if others:
        parts.append('<h2 id="figures">Figures</h2>')
        parts += [_figure_html(f) for f in others]
    if data.failed:
        parts.append(_failed_html(data))
    parts += _run_html(data)
    parts += [
        "<footer>Generated by densitybench from results.sqlite; regenerate with "
        "<code>python -m harness report RUN_DIR --format html</code>.</footer>",
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def html_blocks(blocks: list[Block]) -> list[str]:
    """A section's blocks as HTML elements (tables in scrolling boxes)."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f'<h{block.level} id="{_esc(block.anchor)}">{_esc(block.text)}</h{block.level}>')
        elif isinstance(block, Text):
            out.append(f'<p class="note">{_esc(block.text)}</p>' if block.note else f"<p>{_esc(block.text)}</p>")
        elif isinstance(block, Table):
            cells = [[f"<td>{_esc(c)}</td>" for c in row] for row in block.rows]
            out.append(_table_html(block.header, cells))
    return out
