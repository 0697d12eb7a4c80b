"""The report's quality-against-time section, written once for every renderer:
time to 50% / 90% of the best final value per checkpoint metric, the methods
without checkpoints, and how far each loop got under ``--budget``
(``harness.report.curves`` computes the numbers).

Example::

    blocks = section(data)    # [Heading(...), Text(...), Table(...), ...]; [] without checkpoints
"""

from __future__ import annotations

from typing import Any

from harness.report.blocks import Block, Heading, Table, Text
from harness.report.curves import DEFINITION, FRACTIONS, METRICS, QualityTable, budget_entry
from harness.report.data import ReportData

TIME_TITLE = "Time to quality (training seconds to 50% / 90% of the best final value)"
BUDGET_INTRO = (
    "Share of the planned training steps reached (every loop stops at its first checkpoint past the "
    "budget, so where it stops depends on this machine's speed; checkpoints are fixed in steps)."
)


def section(data: ReportData) -> list[Block]:
    """Time to quality, the methods without checkpoints and training under a budget; [] when no row
    has checkpoints or a budget."""
    blocks: list[Block] = []
    if data.time_tables:
        fractions = " / ".join(f"{round(100 * f)}%" for f in FRACTIONS)
        blocks += [Heading(TIME_TITLE, "t-time-to-quality"), Text(DEFINITION.format(fractions=fractions))]
    for t in data.time_tables:
        blocks += _time_table(t)
    if data.no_checkpoints:
        blocks.append(
            Text(
                "Reported no checkpoints (no curve; their rows are in every other table): "
                f"{', '.join(data.no_checkpoints)}."
            )
        )
    return blocks + _budget_blocks(data.budget, data.methods, data.datasets)


def _time_table(t: QualityTable) -> list[Block]:
    blocks: list[Block] = [
        Text(f"{METRICS[t.metric][0].capitalize()}:", note=False),
        Table(["method"] + t.datasets, [[m] + [t.entry(m, ds) for ds in t.datasets] for m in t.methods]),
    ]
    if t.undefined:
        blocks.append(
            Text(f"Undefined on {', '.join(t.undefined)}: no method ended better than the Gaussian reference.")
        )
    return blocks


def _budget_blocks(
    progress: dict[tuple[str, str], list[dict[str, Any]]], methods: list[str], dsets: list[str]
) -> list[Block]:
    """How far each (method, dataset) got under the run's budget; [] for a run without one."""
    if not progress:
        return []
    budgets = sorted({p["budget_s"] for ps in progress.values() for p in ps})
    rows = [
        [m] + [budget_entry(progress[(m, ds)]) if (m, ds) in progress else "–" for ds in dsets]
        for m in methods
        if any((m, ds) in progress for ds in dsets)
    ]
    return [
        Heading(f"Training under a budget of {', '.join(f'{b:g}' for b in budgets)} s", "t-budget"),
        Text(BUDGET_INTRO),
        Table(["method"] + dsets, rows),
    ]
