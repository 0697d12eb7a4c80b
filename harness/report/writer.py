"""``write_report``: regenerate a run directory's report files from its store
and artefacts, running each renderer on the one ``ReportData``.

Example::

    write_report("reports/default", formats=("md", "html", "latex", "csv"))
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from harness.errors import UserError
from harness.report.build import build
from harness.report.data import ReportData
from harness.report.errorbars import error_bar_note
from harness.report.frame import rows_frame
from harness.report.html import render_html
from harness.report.latex import latex, render_latex
from harness.report.markdown import markdown, render_markdown
from harness.report.tables import TIED
from harness.report.verdict import DEFAULT_QUALITY, line_text, quantities
from harness.store import ResultsStore

FORMATS = ("md", "html", "latex", "csv")
DEFAULT_FORMATS = ("md", "csv", "html")
FIGURE_DIR = "figures"


def check_formats(formats: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = tuple(f.strip() for f in formats.split(",") if f.strip())
    for f in formats:
        if f not in FORMATS:
            raise UserError(f"unknown report format '{f}'; valid: {', '.join(FORMATS)}")
    return tuple(formats)


def draw_figures_safely(data: ReportData, out_dir: Path) -> list[Path]:
    """Draw the figures; a drawing error is reported on stderr and never costs the tables."""
    try:
        from harness.report.figures import draw_all  # matplotlib: imported only when figures are drawn

        return draw_all(data, out_dir)
    except Exception as e:  # figures are a bonus; the tables must still be written
        print(f"warning: figures not drawn: {type(e).__name__}: {e}", file=sys.stderr)
        return []


def _read(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    store = ResultsStore(run_dir, create=False)
    try:
        return store.rows(), store.meta()
    finally:
        store.close()


def write_report(
    run_dir: Path | str, formats: tuple[str, ...] = DEFAULT_FORMATS, quality_metric: str = DEFAULT_QUALITY
) -> list[Path]:
    """Regenerate the report files of ``run_dir`` from its store and artefacts; returns the paths.

    ``formats`` is any of ``md``, ``html``, ``latex``, ``csv``; ``md`` and
    ``html`` also draw the figures. ``report.html`` (or ``report.md``) comes last.
    ``quality_metric`` is the verdict's sample-quality metric (``verdict.QUALITY_METRICS``).
    """
    formats = check_formats(formats)
    quantities(quality_metric)
    run_dir = Path(run_dir)
    rows, meta = _read(run_dir)
    data = build(rows, meta, run_dir, quality_metric=quality_metric)
    written: list[Path] = []
    figures: list[Path] = []
    if data is not None and {"md", "html"} & set(formats):
        figures = draw_figures_safely(data, run_dir / FIGURE_DIR)
        written += figures
    if "csv" in formats:
        path = run_dir / "results.csv"
        rows_frame(rows).to_csv(path, index=False, encoding="utf-8")
        written.append(path)
    if "latex" in formats:
        path = run_dir / "report.tex"
        path.write_text(render_latex(data) if data is not None else latex(rows, meta), encoding="utf-8")
        written.append(path)
    if "md" in formats:
        path = run_dir / "report.md"
        rel = [f.relative_to(run_dir).as_posix() for f in figures]
        path.write_text(render_markdown(data, rel) if data is not None else markdown(rows, meta), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        path = run_dir / "report.html"
        path.write_text(render_html(data, figures), encoding="utf-8")
        written.append(path)
    return written


def verdict_text(run_dir: Path | str, quality_metric: str = DEFAULT_QUALITY) -> str:
    """The verdict of ``run_dir``'s results as plain lines for a terminal (what `run` prints last),
    with the log-likelihood error-bar warnings; '' when the store has no rows."""
    data = build(*_read(Path(run_dir)), quality_metric=quality_metric)
    if data is None:
        return ""
    lines = [f"Verdict (best by average rank over datasets; {TIED} not significantly worse than the best):"]
    lines += [f"  {line_text(v)}" for v in data.verdict]
    lines += [f"warning: {note}" for note in (error_bar_note(data),) if note]
    return "\n".join(lines)


def print_verdict(run_dir: Path | str, quality_metric: str = DEFAULT_QUALITY, file: TextIO | None = None) -> None:
    """Print ``verdict_text`` to ``file`` (stdout), its signs replaced where the stream's encoding lacks
    them (a job's log in an ASCII locale must not end the run with an encoding error)."""
    stream = file or sys.stdout
    text = verdict_text(run_dir, quality_metric)
    if text:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        print(text.encode(encoding, errors="replace").decode(encoding), file=stream)
