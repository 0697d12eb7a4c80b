"""Published test log-likelihoods beside this run's: the numbers a dataset declares
(``Dataset.published``, e.g. the MAF and NSF papers' UCI tables) with the measured
entry of our method of the same family.

Example::

    table = published_table(["power", "gas"], loglik_table)   # PublishedTable, or None
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import datasets
from harness.report.tables import Entry, MetricTable


class PublishedModel(NamedTuple):
    """A row of the published table: our closest method, the paper's model, the source."""

    method: str
    model: str
    source: str


@dataclass
class PublishedTable:
    """Published numbers beside measured ones: rows of (model, {dataset: (published, measured Entry)})."""

    datasets: list[str]
    rows: list[tuple[PublishedModel, dict[str, tuple[float | None, Entry]]]]
    notes: dict[str, str]  # dataset -> caveat (e.g. numbers of a larger version of the set)
    fmt: str = "{:.2f}"


def published_table(run_datasets: list[str], loglik: MetricTable | None) -> PublishedTable | None:
    """Published test log-likelihoods beside this run's (``loglik``, the run's log-likelihood table),
    for the run's datasets that declare them (``Dataset.published``), in the order they list them."""
    declared = {ds: _published(ds) for ds in run_datasets}
    dsets = [ds for ds in run_datasets if declared[ds][0]]
    if not dsets:
        return None
    values = {(PublishedModel(p.method, p.model, p.source), ds): p.value for ds in dsets for p in declared[ds][0]}
    rows = []
    for model in dict.fromkeys(model for model, _ in values):
        cells = {}
        for ds in dsets:
            measured = loglik.entries.get((model.method, ds), Entry("missing")) if loglik else Entry("missing")
            cells[ds] = (values.get((model, ds)), measured)
        rows.append((model, cells))
    notes = {ds: declared[ds][1] for ds in dsets if declared[ds][1]}
    return PublishedTable(dsets, rows, notes)


def _published(dataset: str) -> tuple[tuple[Any, ...], str]:
    """The published numbers a registered dataset declares, and their caveat (none for others)."""
    try:
        cls = datasets.get_class(dataset)
    except Exception:  # a user file or a dataset no longer registered
        return (), ""
    return tuple(getattr(cls, "published", ())), getattr(cls, "published_note", "")


def published_cells(
    table: PublishedTable, cell: Callable[[float | None, Entry], tuple[str, str]]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the published table; ``cell`` renders (published, measured)."""
    header = ["our method", "published model", "source"]
    for ds in table.datasets:
        header += [f"{ds} published", f"{ds} measured"]
    lines = []
    for entry, cells in table.rows:
        line = [entry.method, entry.model, entry.source]
        for ds in table.datasets:
            line += list(cell(*cells[ds]))
        lines.append(line)
    return header, lines


PUBLISHED_TITLE = "Published test log-likelihoods (reference numbers from papers, not measured in this run)"


PUBLISHED_INTRO = (
    'Nats per example, higher is better; "measured" is this run\'s mean over seeds (± the 95% '
    "interval, se: over test points) for our method of the same family (its settings may differ "
    "from the paper's)."
)
