"""``build``: the one ``ReportData`` of a run, from the results store's rows and
meta. Its parts live beside it: ``frame`` (rows as a frame, profile labels,
order), ``tables`` (metric tables and ranks), ``published``, ``curves`` (quality
against time), ``styles``; the extra sections are ``SECTIONS``.

A new report section is one module with ``section(data: ReportData) ->
list[Block]`` (``blocks``: headings, paragraphs, plain tables) and one entry in
``SECTIONS``: the Markdown and HTML renderers draw every section, in order, after
the metric tables.

Example::

    data = build(store.rows(), store.meta(), run_dir)   # ReportData, or None without rows
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.blocks import Block
from harness.report.curves import METRICS, budget_progress, methods_without_checkpoints, time_to_quality
from harness.report.data import ReportData
from harness.report.errorbars import section as error_bars
from harness.report.frame import dataset_order, label_profiles, likelihood_kinds, method_order, rows_frame
from harness.report.published import published_table
from harness.report.styles import method_styles
from harness.report.tables import TABLES, metric_entries
from harness.report.time_section import section as time_section
from harness.report.tuning_section import section as tuning_section
from harness.report.tuning_section import study_records
from harness.report.verdict import DEFAULT_QUALITY, quantities, verdict

#: The report's extra sections, in order: ``section(data) -> list[Block]`` each (``blocks``).
SECTIONS: tuple[Callable[[ReportData], list[Block]], ...] = (error_bars, time_section, tuning_section)


def build(
    rows: list[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    run_dir: Path | str | None = None,
    quality_metric: str = DEFAULT_QUALITY,
) -> ReportData | None:
    """The report's data for ``rows`` (None when there are none); ``run_dir`` holds the artefacts;
    ``quality_metric`` is the sample-quality metric of the verdict (``verdict.QUALITY_METRICS``)."""
    meta = meta or {}
    quantities(quality_metric)  # an unknown metric is a user error before any work
    if not rows:
        return None
    rows = label_profiles(rows)
    df = rows_frame(rows)
    cfg = meta.get("config", {})
    methods, dsets = method_order(df, cfg), dataset_order(df, cfg)
    kinds = likelihood_kinds(df, methods)
    footnotes: dict[str, int] = {}
    tables = [t for spec in TABLES if (t := metric_entries(df, spec, methods, dsets, kinds, footnotes)) is not None]
    data = ReportData(
        rows=rows,
        meta=meta,
        df=df,
        methods=methods,
        datasets=dsets,
        kinds=kinds,
        seeds=sorted(int(s) for s in df.seed.unique()),
        n_ok=int((df.status == "ok").sum()),
        n_failed=int((df.status == "failed").sum()),
        n_skipped=int((df.status == "skipped").sum()),
        tables=tables,
        footnotes=footnotes,
        failed=df[df.status == "failed"][["method", "dataset", "seed", "error"]].to_dict("records"),
        phases=fit_phases(df, methods),
        time_tables=[t for m in METRICS if (t := time_to_quality(rows, m, methods, dsets)) is not None],
        no_checkpoints=methods_without_checkpoints(rows),
        budget=budget_progress(rows),
        styles=method_styles(methods),
        run_dir=Path(run_dir) if run_dir is not None else None,
    )
    loglik = data.table("test_loglik")
    data.published = published_table(dsets, loglik)
    data.studies = study_records(data.run_dir, meta)
    data.sections = [blocks for section in SECTIONS if (blocks := section(data))]
    data.verdict = verdict(tables, methods, kinds, quality_metric)
    return data


def fit_phases(df: pd.DataFrame, methods: list[str]) -> pd.DataFrame | None:
    """Mean seconds of each fit phase per method (rows in ``methods`` order), or None without phases."""
    phase_cols = [c for c in df.columns if c.startswith("timings.phase.")]
    if not phase_cols:
        return None
    phases = df[df.status == "ok"].groupby("method")[phase_cols].mean()
    phases.columns = [c.removeprefix("timings.phase.") for c in phases.columns]
    return phases.reindex([m for m in methods if m in phases.index])
