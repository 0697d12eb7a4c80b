"""``report.tex``: a compilable LaTeX document (article, booktabs) with one
table per metric, the published numbers and the failed cells.

Example::

    text = render_latex(build(rows, meta))
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from harness.comparison import LEVEL, significant
from harness.report.build import build
from harness.report.data import ReportData
from harness.report.published import PUBLISHED_INTRO, PUBLISHED_TITLE, PublishedTable, published_cells
from harness.report.summary import ERROR_BAR_LEGEND, has_error_bars, most_seeds
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
    "‘": "`",
    "“": "``",
    "”": "''",
    "−": "-",
    "×": r"$\times$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
    "→": r"$\to$",
    "…": r"\ldots{}",
    "†": r"$^\dagger$",
    "α": r"$\alpha$",
    "√": r"$\surd$",
}
#: Plain LaTeX reads Latin-1 letters from UTF-8; any other character (an error message may hold one)
#: would stop the compilation, so it prints as this.
_UNKNOWN = "?"

#: Dataset columns per tabular: a metric table with more datasets is split into stacked tabulars.
MAX_DATASET_COLUMNS = 5
#: Datasets per tabular of the published table (two columns each, after three label columns).
MAX_PUBLISHED_DATASETS = 2

PREAMBLE = (
    r"\documentclass{article}",
    r"\usepackage{booktabs}",
    r"\usepackage{graphicx}",
    r"\usepackage[margin=2cm]{geometry}",
    r"\newsavebox{\reporttable}",
    r"% a tabular wider than the text block is scaled down to it",
    r"\newcommand{\fitwidth}{\ifdim\wd\reporttable>\linewidth\resizebox{\linewidth}{!}{\usebox{\reporttable}}"
    r"\else\usebox{\reporttable}\fi}",
)


def latex_escape(text: str) -> str:
    """``text`` safe for LaTeX text mode: specials, the Unicode signs the report uses, Latin-1 as it
    is, anything else as ``?``."""
    return "".join(_LATEX_SPECIAL.get(ch, ch if ord(ch) < 256 else _UNKNOWN) for ch in str(text))


def _latex_number(text: str) -> str:
    """A formatted number for math mode: ``1.2e+04`` or ``1.2e4`` -> ``1.2\\times10^{4}``."""
    m = re.fullmatch(r"(-?[\d.]+)e([+-]?)0*(\d+)", text)
    if not m:
        return text
    exp = ("-" if m.group(2) == "-" else "") + m.group(3)
    return rf"{m.group(1)}\times10^{{{exp}}}"


def _latex_cell(entry: Entry, marks: bool = True) -> str:
    """A table entry in LaTeX: ``mean \\pm half-width``, the standard error and error bar, bold for
    the best and a dagger for ties (``marks``; after an empty group, so that it follows a power of
    ten without a double superscript)."""
    if entry.state == "value":
        body = _latex_number(significant(entry.mean, entry.digits))
        if entry.n > 1 and math.isfinite(entry.half_width):
            body += rf" \pm {_latex_number(significant(entry.half_width, 2))}"
        notes = [rf"\mathrm{{se}}\ {_latex_number(significant(entry.se, 2))}"] if math.isfinite(entry.se) else []
        if entry.has_error_bar:
            notes.append(rf"\mathrm{{eb}}\ {_latex_number(significant(entry.error_bar, 2))}")
        if notes:
            body += r"\ (" + r",\ ".join(notes) + ")"
        if marks and entry.tied:
            body += r"{}^{\dagger}"
        return (rf"\textbf{{\boldmath${body}$}}" if marks and entry.best else f"${body}$") + entry.seeds_note()
    if entry.state == "failed":
        return rf"failed\textsuperscript{{{entry.note}}}"
    return {"na": "n/a", "missing": "--"}[entry.state]


def _tabular(header: list[str], lines: list[list[str]], align: str) -> list[str]:
    """A booktabs tabular (header and cells already LaTeX), scaled down to the text block when wider
    (``\\fitwidth``)."""
    body = [r"\begin{lrbox}{\reporttable}", rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    body += [" & ".join(header) + r" \\", r"\midrule"] + [" & ".join(line) + r" \\" for line in lines]
    return body + [r"\bottomrule", r"\end{tabular}", r"\end{lrbox}", r"\fitwidth"]


def _latex_float(caption: str, label: str, tabulars: list[list[str]]) -> str:
    """A table float holding ``tabulars`` one below the other."""
    parts = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}"]
    for i, tabular in enumerate(tabulars):
        parts += ([r"\par\medskip"] if i else []) + tabular
    return "\n".join(parts + [r"\end{table}"])


def _chunks(items: list[str], most: int) -> list[list[str]]:
    """``items`` in consecutive groups of at most ``most``, as equal in size as possible."""
    count = max(1, math.ceil(len(items) / most))
    size = math.ceil(len(items) / count)
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


def latex_table(table: MetricTable) -> str:
    """One metric as a LaTeX table: methods as rows, datasets as columns (at most ``MAX_DATASET_COLUMNS``
    per tabular), best in bold."""
    names = []
    for m in table.methods:
        kind = table.kinds.get(m)
        flagged = table.has_kind_column and kind not in (None, "exact")  # bounds and estimates say so
        names.append(latex_escape(m) + (f" ({latex_escape(kind)})" if flagged else ""))
    tabulars = []
    for dsets in _chunks(table.datasets, MAX_DATASET_COLUMNS):
        header = ["Method"] + [latex_escape(ds) for ds in dsets]
        lines = [
            [name] + [_latex_cell(table.entries[(m, ds)]) for ds in dsets]
            for m, name in zip(table.methods, names, strict=True)
        ]
        tabulars.append(_tabular(header, lines, "l" + "c" * len(dsets)))
    return _latex_float(latex_escape(table.spec.title), f"tab:{table.spec.key.replace('_', '-')}", tabulars)


def _latex_published(table: PublishedTable) -> str:
    def cell(value: float | None, measured: Entry) -> tuple[str, str]:
        shown = f"${table.fmt.format(value)}$" if value is not None else "--"
        return shown, _latex_cell(measured, marks=False)

    tabulars = []
    for dsets in _chunks(table.datasets, MAX_PUBLISHED_DATASETS):
        header, lines = published_cells(replace(table, datasets=dsets), cell)
        header = [latex_escape(h) for h in header]
        lines = [[latex_escape(c) for c in line[:3]] + line[3:] for line in lines]
        tabulars.append(_tabular(header, lines, "lll" + "c" * (len(header) - 3)))
    caption = latex_escape(f"{PUBLISHED_TITLE}. {PUBLISHED_INTRO}")
    caption += "".join(latex_escape(f" Note on {ds}: {note}.") for ds, note in table.notes.items())
    return _latex_float(caption, "tab:published", tabulars)


def _latex_reading(data: ReportData) -> str:
    """How to read the LaTeX tables (the Markdown legend without its Unicode signs)."""
    eb = f" {ERROR_BAR_LEGEND}" if has_error_bars(data) else ""
    if most_seeds(data) < 2:
        return (
            "One seed per cell: no intervals, so no entry is significantly better than another; bold marks "
            f"the best value per dataset; se: standard error over test points.{eb}"
        )
    return (
        rf"Entries are means over seeds $\pm$ the half-width of a {LEVEL:.0%} Student-t interval; bold: the "
        r"best entry per dataset; $^\dagger$: tied with it (the intervals overlap); se: standard error over "
        f"test points.{eb}"
    ).replace("%", r"\%")


def render_latex(data: ReportData) -> str:
    """A compilable LaTeX document (article, booktabs, graphicx) with one table per metric."""
    env = data.meta.get("environment", {})
    parts = [
        r"% densitybench report: generated from results.sqlite; regenerate with",
        r"% python -m harness report RUN_DIR --format latex",
        *PREAMBLE,
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
