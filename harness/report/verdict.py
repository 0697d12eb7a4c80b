"""The verdict at the top of every report: one answer per quantity the harness
exists to measure (density, sample quality, fit time, sampling rate).

For each quantity the best method is the one with the best average rank over
the datasets where the compared methods have values (``comparison.rank_methods``;
likelihood values within the sum of their error bars share a rank). Tied with it
(†): with two or more ranked datasets, the methods within the Nemenyi critical
difference of its average rank; with one, the methods whose 95% interval over
seeds (or error bar) overlaps its own on that dataset. Where the best differs
between dataset groups (``Dataset.group``: 2d, maf, uci, ...), each group's best
follows. A method without a likelihood is named as such, never ranked last.

Example::

    for line in verdict_lines(data.verdict):
        print(line)   # "Density (test log-likelihood; KL(p ‖ q) where the density is known): kde † maf ..."
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
from harness.comparison import Ranking, oriented, rank_methods
from harness.errors import UserError
from harness.report.tables import TIED, MetricTable

#: Sample-quality metrics the verdict can rank on (``--quality-metric``); the first is the default.
QUALITY_METRICS = ("energy_distance", "mmd2", "sliced_wasserstein", "c2st_accuracy", "marginal_kl", "histogram_tv")
DEFAULT_QUALITY = QUALITY_METRICS[0]
#: How a density line names the one table it ranked on.
METRIC_NAMES = {"test_loglik": "test log-likelihood", "kl": "KL(p ‖ q)"}


@dataclass(frozen=True)
class Quantity:
    """One line of the verdict: a name and the tables it reads, by preference on each dataset (the
    first with a value there wins: KL where the density is known, else the test log-likelihood)."""

    name: str
    keys: tuple[str, ...]
    metric: str  # what the line ranks on, as the reader sees it


@dataclass
class Answer:
    """The best method(s) over some datasets and the methods tied with them."""

    best: list[str]
    tied: list[str]
    average: dict[str, float]  # average rank of every ranked method
    datasets: list[str]  # the datasets ranked
    test: str  # "nemenyi" (two or more datasets), "intervals" (one dataset)
    cd: float = float("nan")


@dataclass
class VerdictLine:
    """The answer for one quantity: overall, per dataset group where it differs, and who is not ranked."""

    quantity: Quantity
    answer: Answer | None  # None: no method has a value
    no_likelihood: list[str] = field(default_factory=list)
    not_ranked: dict[str, str] = field(default_factory=dict)  # method -> why (e.g. values on 1 of 3 datasets)
    groups: dict[str, Answer] = field(default_factory=dict)  # group -> answer, only where it differs


def quantities(quality_metric: str = DEFAULT_QUALITY) -> tuple[Quantity, ...]:
    """The four quantities, ranking sample quality on ``quality_metric`` (one of ``QUALITY_METRICS``)."""
    if quality_metric not in QUALITY_METRICS:
        raise UserError(f"unknown sample-quality metric '{quality_metric}'; valid: {', '.join(QUALITY_METRICS)}")
    label = quality_metric.replace("_", " ")
    return (
        Quantity("Density", ("kl", "test_loglik"), "test log-likelihood; KL(p ‖ q) where the density is known"),
        Quantity("Sample quality", (quality_metric,), label),
        Quantity("Fit time", ("fit_s",), "fit wall time"),
        Quantity("Sampling rate", ("samples_per_s",), "samples/s"),
    )


def verdict(
    tables: list[MetricTable], methods: list[str], kinds: dict[str, str | None], quality_metric: str = DEFAULT_QUALITY
) -> list[VerdictLine]:
    """One ``VerdictLine`` per quantity from the report's metric tables."""
    by_key = {t.spec.key: t for t in tables}
    return [_line(q, by_key, methods, kinds) for q in quantities(quality_metric)]


def _line(q: Quantity, by_key: dict[str, MetricTable], methods: list[str], kinds: dict[str, str | None]) -> VerdictLine:
    present = [by_key[k] for k in q.keys if k in by_key]
    if not present:
        return VerdictLine(q, None)
    needs_likelihood = present[0].spec.needs_likelihood
    no_likelihood = [m for m in methods if needs_likelihood and kinds.get(m) is None]
    compared = [m for m in methods if m not in no_likelihood]
    scores, bars, tables_by_dataset = _scores(present, compared)
    dsets = list(tables_by_dataset)
    if not dsets:
        return VerdictLine(q, None, no_likelihood)
    ranking = rank_methods(scores, compared, dsets, "higher", error_bars=bars)
    used = {t.spec.key for t in tables_by_dataset.values()}
    if len(q.keys) > 1 and len(used) == 1:  # e.g. no dataset with a known density: say what was ranked
        q = Quantity(q.name, q.keys, METRIC_NAMES.get(used.pop(), q.metric))
    line = VerdictLine(q, _answer(ranking, tables_by_dataset), no_likelihood, dict(ranking.excluded_methods))
    overall = set(line.answer.best) if line.answer else set()
    for group, members in _groups(dsets).items():
        if len(members) == len(dsets):
            break  # one group: the overall answer is the group's
        sub = rank_methods(scores, ranking.methods, members, "higher", error_bars=bars)
        answer = _answer(sub, {ds: tables_by_dataset[ds] for ds in members})
        if answer is not None and set(answer.best) != overall:
            line.groups[group] = answer
    return line


def _scores(
    tables: list[MetricTable], methods: list[str]
) -> tuple[dict[tuple[str, str], float | None], dict[tuple[str, str], float], dict[str, MetricTable]]:
    """Per (method, dataset): the cell mean as a score where higher is better, its error bar, and per
    dataset the table it came from (the first of ``tables`` with a value there)."""
    scores: dict[tuple[str, str], float | None] = {}
    bars: dict[tuple[str, str], float] = {}
    chosen: dict[str, MetricTable] = {}
    for ds in tables[0].datasets:
        table = next((t for t in tables if any(t.entries[(m, ds)].state == "value" for m in methods)), None)
        if table is None:
            continue
        chosen[ds] = table
        for m in methods:
            e = table.entries[(m, ds)]
            value = e.mean if e.state == "value" else None
            scores[(m, ds)] = (
                None if value is None else float(oriented([value], table.spec.better, table.spec.target)[0])
            )
            if e.has_error_bar:
                bars[(m, ds)] = e.error_bar
    return scores, bars, chosen


def _answer(ranking: Ranking, tables_by_dataset: dict[str, MetricTable]) -> Answer | None:
    """The best and the tied of a ranking: Nemenyi with two or more datasets, else the dataset's
    interval (and error-bar) ties."""
    best = ranking.best()
    if not best:
        return None
    if ranking.usable:
        tied, test = ranking.not_different_from_best(), "nemenyi"
    else:
        ds = ranking.datasets[0]
        entries = tables_by_dataset[ds].entries
        tied = [m for m in ranking.methods if m not in best and entries[(m, ds)].tied]
        test = "intervals"
    return Answer(best, tied, ranking.average, list(ranking.datasets), test, ranking.cd)


def _groups(dsets: list[str]) -> dict[str, list[str]]:
    """The datasets by group (``Dataset.group``), in the datasets' order; ungrouped ones under "other"."""
    group_of = {name: g for g in datasets.groups() for name in datasets.in_group(g)}
    out: dict[str, list[str]] = {}
    for ds in dsets:
        out.setdefault(group_of.get(ds, "other"), []).append(ds)
    return out


# ------------------------------------------------------------------ as text


@dataclass(frozen=True)
class Markup:
    """How verdict text is marked up: method names, the quantity's name, and every other piece of
    text taken from the run (dataset, group and metric names: ``plain`` escapes them)."""

    name: Callable[[str], str] = str
    strong: Callable[[str], str] = str
    plain: Callable[[str], str] = str


PLAIN = Markup()
MARKDOWN = Markup(name=lambda m: f"`{m}`", strong=lambda q: f"**{q}**")


def answer_text(answer: Answer, markup: Markup = PLAIN, runners_up: int = 2) -> str:
    """``kde (average rank 1.00 over 4 datasets; next: maf 2.25, nsf_c 2.75); † maf``: the best, the
    next ``runners_up`` by average rank, then the methods tied with the best after the mark."""
    avg, name = answer.average, markup.name
    text = ", ".join(name(m) for m in answer.best)
    n = len(answer.datasets)
    where = (
        f"average rank {avg[answer.best[0]]:.2f} over {n} datasets"
        if n > 1
        else f"best on {markup.plain(answer.datasets[0])}"
    )
    others = sorted((m for m in avg if m not in answer.best), key=lambda m: (avg[m], m))
    if others[:runners_up]:
        where += "; next: " + ", ".join(f"{name(m)} {avg[m]:.2f}" for m in others[:runners_up])
    text += f" ({where})"
    if answer.tied and len(answer.tied) == len(others) > 1:
        cd = f" (Nemenyi CD {answer.cd:.2f})" if answer.test == "nemenyi" else ""
        text += f"; {TIED} all {len(others)} others{cd}"
    elif answer.tied:
        text += f"; {TIED} " + ", ".join(name(m) for m in answer.tied)
    return text


def line_text(line: VerdictLine, markup: Markup = PLAIN) -> str:
    """One verdict line as text, marked up by ``markup`` (plain text by default)."""
    name, plain = markup.name, markup.plain
    head = f"{markup.strong(line.quantity.name)} ({plain(line.quantity.metric)}): "
    if line.answer is None:
        return head + "no values in this run."
    text = head + answer_text(line.answer, markup)
    if line.groups:
        text += ". By group: " + "; ".join(f"{plain(g)}: {answer_text(a, markup)}" for g, a in line.groups.items())
    if line.no_likelihood:
        text += f". No likelihood (not ranked): {', '.join(name(m) for m in line.no_likelihood)}"
    if line.not_ranked:
        text += ". Not ranked: " + ", ".join(f"{name(m)} ({plain(why)})" for m, why in line.not_ranked.items())
    return text + "."


def verdict_legend(lines: list[VerdictLine]) -> str:
    """How the verdict is decided, with the tests its lines used."""
    tests = {line.answer.test for line in lines if line.answer} | {
        a.test for line in lines for a in line.groups.values()
    }
    parts = []
    if "nemenyi" in tests:
        parts.append("within the Nemenyi critical difference of the best average rank (Demšar 2006)")
    if "intervals" in tests:
        parts.append("on a single dataset, its 95% interval over seeds overlaps the best's")
    tie = f" {TIED}: not significantly worse than the best: " + "; or ".join(parts) + "." if parts else ""
    return (
        "Best by average rank over the datasets where the compared methods have values (1 = best)." + tie + " "
        "Log-likelihoods within the sum of their error bars count as tied. Details: Summary and Tables below."
    )
