"""The report's data (``ReportData``): every table, ranking, section and figure
input of a run, computed once by ``build.build`` from the results store's rows
and meta. Renderers (``markdown``, ``latex``, ``html``, ``figures``) take the one
``ReportData`` and only format it; prose that several renderers print lives in
``summary``.

Example::

    data = build(store.rows(), store.meta(), run_dir)
    data.table("test_loglik").entries[("maf", "8gaussians")].text()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.artefacts import RunData
from harness.report.blocks import Block
from harness.report.curves import QualityTable
from harness.report.published import PublishedTable
from harness.report.tables import MetricTable
from harness.report.verdict import VerdictLine


@dataclass(kw_only=True)
class ReportData:
    """Everything the renderers need, computed once from the store's rows and meta.

    ``rows`` are the store's rows with profile labels (``frame.label_profiles``): every part of the
    report keys on those labels, so no table, curve, figure or verdict mixes profiles."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    df: pd.DataFrame
    methods: list[str]
    datasets: list[str]
    kinds: dict[str, str | None]
    seeds: list[int]
    n_ok: int
    n_failed: int
    n_skipped: int = 0
    tables: list[MetricTable]
    footnotes: dict[str, int]  # error text -> footnote number
    failed: list[dict[str, Any]] = field(default_factory=list)
    phases: pd.DataFrame | None = None
    published: PublishedTable | None = None
    time_tables: list[QualityTable] = field(default_factory=list)  # time to quality, one per checkpoint metric
    no_checkpoints: list[str] = field(default_factory=list)  # methods whose ok rows reported no checkpoint
    budget: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (method, dataset) -> progress
    styles: dict[str, tuple[str, str]] = field(default_factory=dict)  # method -> (colour, marker)
    sections: list[list[Block]] = field(default_factory=list)
    verdict: list[VerdictLine] = field(default_factory=list)  # one answer per quantity, first in every report
    studies: list[dict[str, Any]] = field(default_factory=list)  # tuning studies (harness.studies.summaries_as_dicts)
    run_dir: Path | None = None

    def table(self, key: str) -> MetricTable | None:
        """The table of metric ``key`` (e.g. ``"test_loglik"``), or None when no row has it."""
        return next((t for t in self.tables if t.spec.key == key), None)

    @cached_property
    def artefacts(self) -> RunData:
        """The run's artefacts and dataset splits (for the figures), loaded lazily."""
        return RunData(self.run_dir, self.rows, self.meta)
