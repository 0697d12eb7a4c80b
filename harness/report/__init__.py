"""The report of a run, built from its results store and per-cell artefacts alone.

``data.build`` computes every table, ranking, section and figure input once
(``ReportData``) from its parts (``frame``, ``tables``, ``published``,
``summary``, ``artefacts``, ``styles``, ``curves``, ``time_section``); the
renderers ``markdown``, ``latex``, ``html`` and ``figures`` only format it;
``writer`` runs them (``write_report``).

Example::

    write_report("reports/default", formats=("md", "html", "latex", "csv"))
"""

from __future__ import annotations

from harness.report.build import build
from harness.report.data import ReportData
from harness.report.frame import method_order, rows_frame
from harness.report.latex import latex, latex_escape
from harness.report.markdown import markdown, metric_table
from harness.report.tables import TABLES, TableSpec
from harness.report.verdict import DEFAULT_QUALITY, QUALITY_METRICS
from harness.report.writer import DEFAULT_FORMATS, FORMATS, print_verdict, verdict_text, write_report

__all__ = [
    "TABLES",
    "TableSpec",
    "ReportData",
    "FORMATS",
    "DEFAULT_FORMATS",
    "rows_frame",
    "markdown",
    "latex",
    "build",
    "write_report",
    "verdict_text",
    "print_verdict",
    "QUALITY_METRICS",
    "DEFAULT_QUALITY",
    "metric_table",
    "latex_escape",
    "method_order",
]
