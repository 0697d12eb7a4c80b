"""The report's prose, written once for every renderer: what was run
(``summary_line``, ``headline``), how to read the entries (``reading_text``),
the ranks across datasets (``rank_conclusions``, ``ranks_overview``,
``exclusion_notes``), the best per dataset (``best_overview``) and warnings
(``outlier_note``). Names and counts are formatted by the caller's ``code`` and
``count`` (Markdown by default).

Example::

    for sentence in rank_conclusions(data):
        print(sentence)   # "Test log-lik.: best average rank kde (1.00 over 2 dataset(s)); ..."
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from harness.comparison import LEVEL, significant
from harness.report.data import ReportData
from harness.report.tables import TIED, MetricTable


def device_note(env: dict[str, Any]) -> str:
    """`` (GPU; float32 matmul precision P; sample metrics on the CPU)`` from the run's environment."""
    parts = [env["gpu"]] if env.get("gpu") else []
    if env.get("float32_matmul_precision"):
        parts.append(f"float32 matmul precision {env['float32_matmul_precision']}")
    if env.get("sample_metrics_device"):
        parts.append(f"sample metrics on the {env['sample_metrics_device'].upper()}")
    return f" ({'; '.join(parts)})" if parts else ""


def summary_line(
    data: ReportData, code: Callable[[str], str] = lambda s: f"`{s}`", count: Callable[[int], str] = str
) -> str:
    """What was run: profile, seeds, device, code, cell counts, likelihood kinds.

    ``code`` and ``count`` format names and cell counts (Markdown by default)."""
    env = data.meta.get("environment", {})
    return (
        f"Profile {code(', '.join(sorted(data.df.profile.unique())))}, {len(data.seeds)} seed(s) "
        f"({', '.join(map(str, data.seeds))}), device {code(env.get('device', '?'))}{device_note(env)}, code "
        f"{code(env.get('code_version', '?'))}. {count(data.n_ok)} cell(s) ok, {count(data.n_failed)} failed"
        f"{f', {count(data.n_skipped)} skipped (method unavailable here)' if data.n_skipped else ''}. "
        "Likelihood kinds: exact, bound (a lower bound), estimate; n/a where a method has no likelihood."
    )


def most_seeds(data: ReportData) -> int:
    """The largest number of seeds behind any table entry."""
    return max((e.n for t in data.tables for e in t.entries.values() if e.state == "value"), default=0)


def headline(data: ReportData) -> str:
    """The summary's first sentence: what the run holds and how sure its comparisons are."""
    skipped = f", {data.n_skipped} skipped" if data.n_skipped else ""
    counts = f"{data.n_ok} cell(s) ok, {data.n_failed} failed{skipped}, {len(data.seeds)} seed(s)."
    if most_seeds(data) < 2:
        return (
            f"{counts} One seed per cell: no entry is significantly better than another (there are no "
            "intervals over seeds); rerun with --seeds 3 or more for intervals and ties."
        )
    return (
        f"{counts} {TIED} marks ties: entries whose {LEVEL:.0%} t-interval over seeds overlaps the best "
        "entry's, and methods within the Nemenyi critical difference of the best average rank."
    )


#: What ``eb`` means in an entry (ASCII, for every renderer).
ERROR_BAR_LEGEND = (
    "eb: the likelihood's error bar beyond sampling (ODE solver error, Hutchinson estimator se or "
    "importance-weighted bound gap, in nats); entries within the sum of their error bars are tied."
)


def has_error_bars(data: ReportData) -> bool:
    """Some entry of the report carries a positive error bar."""
    return any(e.has_error_bar for t in data.tables for e in t.entries.values())


def reading_text(data: ReportData, best: str = "bold") -> str:
    """How to read the entries: the interval, the best and the tie marks, or why there are none."""
    level = f"{LEVEL:.0%}"
    se = " (se x) is the standard error over test points."
    if has_error_bars(data):
        se += f" {ERROR_BAR_LEGEND}"
    if most_seeds(data) < 2:
        return (
            f"One seed per cell: there are no intervals over seeds, so no entry is significantly better than "
            f"another; {best} only marks the best value per dataset.{se} Rerun with --seeds 3 (or more) for "
            f"{level} intervals and ties."
        )
    return (
        "Entries are means over seeds ± the half-width of a "
        f"{level} Student-t interval (mean ± t·s/√n over the n seeds of the cell); "
        f"{best} marks the best entry per dataset and {TIED} every entry whose interval overlaps the best's "
        "(tied: not significantly better or worse; for C2ST the intervals of |accuracy − 0.5|). Overlapping "
        f"{level} intervals is a conservative test: it rarely calls noise a difference.{se}"
    )


def p_text(p: float) -> str:
    """A p-value as ``= 0.012`` or ``< 0.001`` (``= nan`` when undefined)."""
    return "< 0.001" if p < 1e-3 else f"= {significant(p, 2)}"


def _compared_tables(data: ReportData) -> list[MetricTable]:
    """Tables whose ranking compares at least two methods on at least one dataset."""
    return [t for t in data.tables if t.ranking is not None and len(t.ranking.methods) >= 2 and t.ranking.datasets]


def _all_tied(table: MetricTable) -> bool:
    """Every compared method has the same average rank (equal values on every ranked dataset)."""
    return len(set(table.ranking.average.values())) == 1


def ranked_tables(data: ReportData) -> list[MetricTable]:
    """Compared tables in which the methods differ (a metric on which all tie ranks nothing)."""
    return [t for t in _compared_tables(data) if not _all_tied(t)]


def ranks_overview(data: ReportData) -> tuple[list[str], list[tuple[str, list[tuple[str, str]]]]]:
    """The average-rank table: header (method, metric labels) and rows of (label, [(text, mark)]), mark
    "best", "tied" (within the critical difference of the best) or ""; then the datasets, Friedman
    p-value (Iman-Davenport F) and critical-difference rows."""
    tables = ranked_tables(data)
    header = ["method"] + [t.spec.label for t in tables]
    rows = []
    for m in data.methods:
        cells = []
        for t in tables:
            r = t.ranking
            avg = r.average.get(m)
            mark = "best" if m in r.best() else "tied" if m in r.not_different_from_best() else ""
            cells.append((f"{avg:.2f}" if avg is not None else "–", mark))
        rows.append((m, cells))
    rows.append(("datasets ranked", [(str(len(t.ranking.datasets)), "") for t in tables]))
    rows.append(
        (
            "Friedman p",
            [(p_text(t.ranking.friedman.p_f).removeprefix("= ") if t.ranking.friedman else "–", "") for t in tables],
        )
    )
    rows.append(
        (
            f"critical difference (α = {1 - LEVEL:.2f})",
            [(f"{t.ranking.cd:.2f}" if math.isfinite(t.ranking.cd) else "–", "") for t in tables],
        )
    )
    return header, rows


def ranks_legend(data: ReportData) -> str:
    """How the ranks are computed and read."""
    return (
        "Average rank of each method over the datasets (1 = best; equal values share the average rank), from "
        "each cell's mean over seeds. Bold: the best average rank; "
        f"{TIED}: within the Nemenyi critical difference of the best (not significantly worse at α = "
        f"{1 - LEVEL:.2f}; Demšar 2006). Friedman p: Iman and Davenport's F test of equal average ranks. Ranks "
        "use the datasets where every compared method has a value; what is left out is listed above. With "
        "few datasets the CD is wide: a small Friedman p then says that the methods differ, without "
        "Nemenyi's test being able to say which."
    )


def rank_conclusions(data: ReportData) -> list[str]:
    """One sentence per ranked metric: the best average rank, and the methods significantly worse
    than it (Nemenyi), or that none is, with the Friedman p-value."""
    out = []
    for t in ranked_tables(data):
        r = t.ranking
        avg, best = r.average, r.best()
        line = (
            f"{t.spec.label}: best average rank {', '.join(best)} ({avg[best[0]]:.2f} over "
            f"{len(r.datasets)} dataset(s))"
        )
        if r.usable and r.friedman is not None:
            close = r.not_different_from_best()
            worse = [m for m in r.methods if m not in best and m not in close]
            if worse:
                line += f"; significantly worse: {', '.join(worse)}"
            elif close:
                line += "; no method is significantly worse by Nemenyi's test"
            line += f" (CD {r.cd:.2f}; Friedman p {p_text(r.friedman.p_f)})"
        else:
            line += "; no test with fewer than two datasets"
        out.append(line + ".")
    for t in _compared_tables(data):
        if _all_tied(t):
            out.append(f"{t.spec.label}: every method ties (equal values on every dataset), so it is not ranked.")
    return out


def exclusion_notes(data: ReportData) -> list[str]:
    """What the rankings left out and why (methods with too few values, datasets with missing cells),
    one line per distinct exclusion with the metrics it applies to."""
    by_text: dict[str, list[str]] = {}
    for t in ranked_tables(data):
        r = t.ranking
        parts = [f"{m} ({why})" for m, why in r.excluded_methods.items()]
        for ds, lacking in r.excluded_datasets.items():
            states = ", ".join(f"{m} {t.entries[(m, ds)].state}" for m in lacking)
            parts.append(f"dataset {ds} ({states})")
        if r.empty_datasets:
            parts.append(f"no values on {', '.join(r.empty_datasets)}")
        if parts:
            by_text.setdefault("; ".join(parts), []).append(t.spec.label)
    return [f"{', '.join(labels)}: {text}." for text, labels in by_text.items()]


def best_overview(data: ReportData) -> tuple[list[str], list[tuple[str, list[tuple[str | None, list[str]]]]]]:
    """The best method per dataset and metric with the methods tied with it: header (metric, datasets)
    and rows of (metric label, [(best, tied) per dataset])."""
    header = ["metric"] + data.datasets
    rows = [(t.spec.label, [t.best(ds) for ds in data.datasets]) for t in data.tables]
    return header, rows


def best_text(best: str | None, tied: list[str]) -> str:
    """``best`` and its ties as plain text: ``kde (tied: maf, nsf_c)``; a dash when none."""
    if best is None:
        return "–"
    return best + (f" ({TIED} {', '.join(tied)})" if tied else "")


def outlier_note(data: ReportData, code: Callable[[str], str] = lambda s: f"`{s}`") -> str | None:
    """A warning sentence naming every (method, dataset) with outlying samples (``outlier_fraction`` > 0), or None."""
    col = "metrics.outlier_fraction"
    if col not in data.df.columns:
        return None
    ok = data.df[(data.df.status == "ok") & (pd.to_numeric(data.df[col], errors="coerce") > 0)]
    if ok.empty:
        return None
    worst = ok.groupby(["method", "dataset"]).agg(share=(col, "max"), z=("metrics.max_abs_z", "max"))
    cells = [
        f"{code(m)} on {code(ds)} ({r.share:.2%} of samples, up to {r.z:.3g} SDs)" for (m, ds), r in worst.iterrows()
    ]
    return (
        "Outlying samples (a coordinate more than 10 training SDs from the training mean; sample metrics "
        "barely register a few): " + "; ".join(cells) + "."
    )
