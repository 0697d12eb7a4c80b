"""``report.tex``: a compilable LaTeX document (article, booktabs) with one
table per metric, the published numbers and the failed cells.

Example::

    text = render_latex(build(rows, meta))
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.comparison import LEVEL, significant
from harness.report.build import build
from harness.report.data import ReportData
from harness.report.published import PUBLISHED_INTRO, PUBLISHED_TITLE, PublishedTable, published_cells
from harness.report.summary import most_seeds
from harness.report.tables import Entry, MetricTable

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "‖": r"$\|$",
    "²": r"$^2$",
    "±": r"$\pm$",
    "–": "--",
    "—": "---",
    "’": "'",
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
    return "\n".join(
        [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}", *body, r"\end{table}"]
    )


def latex_table(table: MetricTable) -> str:
    """One metric as a LaTeX table: methods as rows, datasets as columns, best in bold."""
    header = ["Method"] + [latex_escape(ds) for ds in table.datasets]
    lines = []
    for m in table.methods:
        kind = table.kinds.get(m)
        flagged = table.has_kind_column and kind not in (None, "exact")  # bounds and estimates say so
        name = latex_escape(m) + (f" ({latex_escape(kind)})" if flagged else "")
        lines.append([name] + [_latex_cell(table.entries[(m, ds)]) for ds in table.datasets])
    return _latex_tabular(
        header,
        lines,
        "l" + "c" * len(table.datasets),
        latex_escape(table.spec.title),
        f"tab:{table.spec.key.replace('_', '-')}",
    )


def _latex_published(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = f"${table.fmt.format(value)}$" if value is not None else "--"
        return shown, _latex_cell(measured, marks=False)

    header, lines = published_cells(table, cell)
    header = [latex_escape(h) for h in header]
    lines = [[latex_escape(c) for c in line[:3]] + line[3:] for line in lines]
    caption = latex_escape(f"{PUBLISHED_TITLE}. {PUBLISHED_INTRO}")
    caption += "".join(latex_escape(f" Note on {ds}: {note}.") for ds, note in table.notes.items())
    return _latex_tabular(header, lines, "lll" + "c" * (len(header) - 3), caption, "tab:published")


def _latex_reading(data: ReportData) -> str:
    """How to read the LaTeX tables (the Markdown legend without its Unicode signs)."""
    if most_seeds(data) < 2:
        return (
            "One seed per cell: no intervals, so no entry is significantly better than another; bold marks "
            "the best value per dataset; se: standard error over test points."
        )
    return (
        rf"Entries are means over seeds $\pm$ the half-width of a {LEVEL:.0%} Student-t interval; bold: the "
        r"best entry per dataset; $^\dagger$: tied with it (the intervals overlap); se: standard error over "
        "test points."
    ).replace("%", r"\%")


def render_latex(data: ReportData) -> str:
    """A compilable LaTeX document (article, booktabs, graphicx) with one table per metric."""
    env = data.meta.get("environment", {})
    parts = [
        r"% densitybench report: generated from results.sqlite; regenerate with",
        r"% python -m harness report RUN_DIR --format latex",
        r"\documentclass{article}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage[margin=2cm]{geometry}",
        r"\begin{document}",
        r"\section*{densitybench report}",
        latex_escape(
            f"Profile {', '.join(sorted(data.df.profile.unique()))}; {len(data.seeds)} seed(s) "
            f"({', '.join(map(str, data.seeds))}); device {env.get('device', '?')}; code "
            f"{env.get('code_version', '?')}; {data.n_ok} cell(s) ok, {data.n_failed} failed. "
        )
        + _latex_reading(data),
        "",
    ]
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
