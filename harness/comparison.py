"""Statistics behind the report's comparisons, as pure functions of numbers:
confidence intervals over seeds, the best entry and the entries tied with it,
ranks across datasets, the Friedman test and the Nemenyi critical difference
(Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets",
JMLR 7, 2006). The report (``harness.report.tables``) computes its tables with
them; the renderers only format the result.

Example::

    iv = t_interval([0.51, 0.53, 0.52])            # mean 0.52, 95% t-interval
    best, tied = best_and_ties({"a": [1.0, 1.1], "b": [1.05, 1.2]}, "lower")
    result = rank_methods({("a", "x"): 1.0, ("b", "x"): 2.0, ...}, ["a", "b"], ["x", ...], "lower")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

#: Confidence level of the intervals over seeds, and 1 - alpha of the Nemenyi test.
LEVEL = 0.95
#: Directions: higher, lower, closest to 0.5 ("half"), closest to a target ("target"), or none (no best, no ranks).
BETTER = ("higher", "lower", "half", "target", "none")


# ------------------------------------------------------------------ one cell over seeds


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its two-sided t-interval ``[lo, hi]`` (NaN bounds when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int
    std: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def has_interval(self) -> bool:
        return self.n >= 2 and math.isfinite(self.lo) and math.isfinite(self.hi)

    def overlaps(self, other: Interval) -> bool:
        """True when both intervals exist and share a point."""
        return self.has_interval and other.has_interval and self.lo <= other.hi and other.lo <= self.hi


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` (n,) and its Student-t interval ``mean ± t_{n-1, (1+level)/2} s / sqrt(n)``.

    ``s`` is the sample standard deviation (ddof=1). Exact for normal values; with the 2-10 seeds of
    a benchmark a bootstrap interval would under-cover badly (with two seeds its percentile interval
    is the range of the two values), so the t-interval is the honest choice. NaN bounds when n < 2.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, 0.0)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std)


def pooled_stderr(stderrs: Sequence[float]) -> float:
    """Standard error of the mean over seeds of per-seed means with standard errors ``stderrs`` (n,).

    Each seed evaluates its own test points, so the seeds' errors are independent:
    ``sqrt(sum se_i^2) / n``. One seed: its own standard error. NaN when any is NaN or none given.
    """
    se = np.asarray(stderrs, dtype=float)
    if len(se) == 0 or not np.isfinite(se).all():
        return math.nan
    return float(np.sqrt((se**2).sum()) / len(se))


def oriented(values: Sequence[float] | np.ndarray, better: str, target: float = 0.0) -> np.ndarray:
    """``values`` turned into scores where higher is better: v, -v, -|v - 0.5| ("half") or
    -|v - target| ("target")."""
    if better not in BETTER or better == "none":
        raise ValueError(f"better must be one of {BETTER[:-1]}, got {better!r}")
    x = np.asarray(values, dtype=float)
    return {"higher": x, "lower": -x, "half": -np.abs(x - 0.5), "target": -np.abs(x - target)}[better]


def best_and_ties(
    cells: Mapping[str, Sequence[float]],
    better: str,
    level: float = LEVEL,
    target: float = 0.0,
    error_bars: Mapping[str, float] | None = None,
) -> tuple[str | None, set[str]]:
    """The best cell (by mean score) and the cells tied with it.

    ``cells`` maps a name to its values over seeds (NaN values are ignored). A cell is tied when the
    t-interval of its scores (``oriented``) overlaps the best cell's; for "half" (closest to 0.5)
    and "target" the intervals are those of the per-seed distances ``|v - 0.5|``, ``|v - target|``;
    "none" has no best. Overlap of two 95% intervals
    is a conservative test (it misses some real differences, it rarely calls noise a difference).
    Cells with one value, or a best with one value, are never tied by intervals. A cell is also tied
    when its mean differs from the best's by no more than the sum of their ``error_bars`` (a value's
    accuracy beyond its sampling error, e.g. an ODE solver's; ``within_error_bars``). Equal best
    means: the first wins.
    """
    if better == "none":
        return None, set()
    scored = {}
    for name, vals in cells.items():
        x = np.asarray(vals, dtype=float)
        x = x[np.isfinite(x)]
        if len(x):
            scored[name] = t_interval(oriented(x, better, target), level)
    if not scored:
        return None, set()
    best = max(scored, key=lambda name: scored[name].mean)
    bars = error_bars or {}
    tied = {
        name
        for name, iv in scored.items()
        if name != best
        and (
            iv.overlaps(scored[best])
            or within_error_bars(iv.mean, scored[best].mean, bars.get(name, 0.0), bars.get(best, 0.0))
        )
    }
    return best, tied


def within_error_bars(a: float, b: float, bar_a: float, bar_b: float) -> bool:
    """True when ``|a - b|`` is at most the sum of the two error bars (NaN bars count as 0); two values
    without error bars are within them only when equal."""
    total = sum(bar for bar in (bar_a, bar_b) if bar is not None and math.isfinite(bar) and bar > 0)
    return total > 0 and abs(a - b) <= total


# ------------------------------------------------------------------ ranks across datasets


@dataclass(frozen=True)
class Friedman:
    """Friedman's test of equal average ranks over N datasets and k methods (Demšar 2006, sec. 3.2.2).

    ``chi2`` is corrected for ties (as ``scipy.stats.friedmanchisquare``); ``f`` is Iman and
    Davenport's F = (N-1) chi2 / (N(k-1) - chi2) with (k-1, (k-1)(N-1)) degrees of freedom, the
    less conservative form Demšar recommends; ``p_f`` its p-value (NaN when undefined)."""

    chi2: float
    df: int
    p: float
    f: float
    p_f: float


@dataclass
class Ranking:
    """Average ranks of the compared methods over the datasets where every one of them has a value."""

    methods: list[str]  # compared, in the given order
    datasets: list[str]  # the blocks ranked
    ranks: np.ndarray  # (len(datasets), len(methods)); 1 = best, ties share average ranks
    excluded_methods: dict[str, str] = field(default_factory=dict)  # method -> why
    excluded_datasets: dict[str, list[str]] = field(default_factory=dict)  # dataset -> methods without a value
    empty_datasets: list[str] = field(default_factory=list)  # no method has a value there
    friedman: Friedman | None = None
    q_alpha: float = math.nan  # Nemenyi critical value (studentized range / sqrt 2)
    cd: float = math.nan  # Nemenyi critical difference of average ranks

    @property
    def average(self) -> dict[str, float]:
        """Average rank per compared method (empty when no dataset was ranked)."""
        if not len(self.datasets):
            return {}
        return {m: float(r) for m, r in zip(self.methods, self.ranks.mean(axis=0), strict=False)}

    @property
    def usable(self) -> bool:
        """At least two methods on at least two datasets: the test and the diagram are defined."""
        return len(self.methods) >= 2 and len(self.datasets) >= 2

    def best(self) -> list[str]:
        """Methods with the lowest average rank (several when equal)."""
        avg = self.average
        if not avg:
            return []
        low = min(avg.values())
        return [m for m in self.methods if math.isclose(avg[m], low, rel_tol=0, abs_tol=1e-12)]

    def not_different_from_best(self) -> list[str]:
        """Methods whose average rank is within the critical difference of the best (best excluded)."""
        avg, best = self.average, self.best()
        if not best or not math.isfinite(self.cd):
            return []
        low = avg[best[0]]
        return [m for m in self.methods if m not in best and avg[m] - low < self.cd]

    def cliques(self) -> list[list[str]]:
        """Maximal groups of methods (sorted by average rank) whose ranks lie within less than the CD,
        i.e. not significantly different by Nemenyi; only groups of two or more, each not contained
        in another: the bars of a critical-difference diagram."""
        if not self.usable or not math.isfinite(self.cd):
            return []
        avg = self.average
        order = sorted(self.methods, key=lambda m: avg[m])
        groups: list[list[str]] = []
        for i, m in enumerate(order):
            group = [o for o in order[i:] if avg[o] - avg[m] < self.cd]
            if len(group) >= 2 and not any(set(group) <= set(g) for g in groups):
                groups.append(group)
        return groups


def rank_rows(scores: np.ndarray, tolerances: np.ndarray | None = None) -> np.ndarray:
    """Ranks within each row of ``scores`` (N, k), higher score = better = rank 1; ties get average ranks.

    With ``tolerances`` (N, k; error bars of the scores), neighbours in a row's order whose scores
    differ by no more than the sum of their tolerances are tied too (chained: a group shares its
    average rank), so that no rank separates two values within their error bars."""
    scores = np.asarray(scores, dtype=float)
    if tolerances is None or not np.any(np.nan_to_num(np.asarray(tolerances, dtype=float)) > 0):
        return stats.rankdata(-scores, method="average", axis=1)
    tol = np.clip(np.nan_to_num(np.asarray(tolerances, dtype=float)), 0, None)
    return np.array([_ranks_within(row, bars) for row, bars in zip(scores, tol, strict=True)]).reshape(scores.shape)


def _ranks_within(scores: np.ndarray, bars: np.ndarray) -> np.ndarray:
    """One row's ranks (k,): sorted best first, a neighbour within the summed bars joins the group."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores))
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or scores[order[i - 1]] - scores[order[i]] > bars[order[i - 1]] + bars[order[i]]:
            ranks[order[start:i]] = (start + 1 + i) / 2  # the average of positions start + 1 .. i
            start = i
    return ranks


def friedman_test(ranks: np.ndarray) -> Friedman:
    """Friedman's statistic from within-dataset ranks (N, k), with scipy's tie correction."""
    ranks = np.asarray(ranks, dtype=float)
    n, k = ranks.shape
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts**3 - counts).sum())
    correction = 1 - ties / (k * (k * k - 1) * n)
    if correction <= 0:  # every dataset ties every method: the ranks cannot differ
        return Friedman(0.0, k - 1, 1.0, 0.0, 1.0)
    sums = ranks.sum(axis=0)
    chi2 = (12.0 / (n * k * (k + 1)) * float((sums**2).sum()) - 3 * n * (k + 1)) / correction
    p = float(stats.chi2.sf(chi2, k - 1))
    denom = n * (k - 1) - chi2
    if n >= 2 and denom > 0:
        f = (n - 1) * chi2 / denom
        p_f = float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))
    else:  # every dataset ranks the methods identically: F is infinite
        f, p_f = math.inf, 0.0 if n >= 2 else math.nan
    return Friedman(float(chi2), k - 1, p, float(f), p_f)


def nemenyi_q(k: int, alpha: float = 1 - LEVEL) -> float:
    """Nemenyi critical value q_alpha for k methods: the studentized range quantile (infinite degrees
    of freedom) over sqrt(2); Demšar's Table 5(a) gives 1.960, 2.343, 2.569, 2.728 for k = 2..5."""
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = 1 - LEVEL) -> float:
    """Nemenyi critical difference of average ranks, q_alpha sqrt(k (k + 1) / (6 N))."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def rank_methods(
    values: Mapping[tuple[str, str], float | None],
    methods: Sequence[str],
    datasets: Sequence[str],
    better: str,
    alpha: float = 1 - LEVEL,
    min_share: float = 0.5,
    target: float = 0.0,
    error_bars: Mapping[tuple[str, str], float] | None = None,
) -> Ranking:
    """Ranks of ``methods`` on ``datasets`` from ``values[(method, dataset)]`` (a cell's mean over
    seeds; None or NaN when the cell has no value). ``error_bars[(method, dataset)]``: values within
    the sum of their error bars share a rank (``rank_rows``).

    Missing cells: a method with values on fewer than ``min_share`` of the datasets that have any
    value is left out of the comparison (``excluded_methods``); then a dataset where any remaining
    method has no value is left out (``excluded_datasets``, with those methods), so that every
    remaining dataset ranks the same methods (Friedman needs complete blocks). Datasets where no
    method has a value (e.g. KL where the density is unknown) are listed in ``empty_datasets``.
    """

    def has(m: str, ds: str) -> bool:
        v = values.get((m, ds))
        return v is not None and math.isfinite(v)

    live = [ds for ds in datasets if any(has(m, ds) for m in methods)]
    kept, excluded_methods = [], {}
    for m in methods:
        count = sum(has(m, ds) for ds in live)
        if count == 0:
            excluded_methods[m] = "no values"
        elif count < min_share * len(live):
            excluded_methods[m] = f"values on {count} of {len(live)} datasets"
        else:
            kept.append(m)
    ranked, excluded_datasets = [], {}
    for ds in live if kept else []:
        lacking = [m for m in kept if not has(m, ds)]
        if lacking:
            excluded_datasets[ds] = lacking
        else:
            ranked.append(ds)
    scores = np.array([[oriented([values[(m, ds)]], better, target)[0] for m in kept] for ds in ranked])
    scores = scores.reshape(len(ranked), len(kept))
    bars = None
    if error_bars:
        bars = np.array([[error_bars.get((m, ds), 0.0) for m in kept] for ds in ranked]).reshape(scores.shape)
    result = Ranking(
        list(kept),
        ranked,
        rank_rows(scores, bars) if scores.size else scores,
        excluded_methods,
        excluded_datasets,
        [ds for ds in datasets if ds not in live],
    )
    if result.usable:
        result.friedman = friedman_test(result.ranks)
        result.q_alpha = nemenyi_q(len(kept), alpha)
        result.cd = critical_difference(len(kept), len(ranked), alpha)
    return result


# ------------------------------------------------------------------ numbers as text


def significant(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant figures: fixed notation for 1e-3 <= |value| < 1e5
    (and 0), else scientific with a short exponent (``1.23e-5``)."""
    if not math.isfinite(value):
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if -3 <= magnitude < 5:
        decimals = max(digits - 1 - magnitude, 0)
        text = f"{value:.{decimals}f}"
        # rounding can carry into a new digit (9.995 -> 10.00): redo at the new magnitude
        if len(text.lstrip("-").replace(".", "").lstrip("0")) > digits and decimals > 0:
            text = f"{value:.{decimals - 1}f}"
        return text
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def column_digits(values: Sequence[float], start: int = 3, most: int = 6, noise: float | None = None) -> int:
    """Fewest significant figures (at least ``start``, at most ``most``) at which the distinct
    finite ``values`` of one table column all print differently.

    Values equal to 12 significant figures count as one (means of the same counts summed in
    another order). With ``noise`` (the column's smallest interval half-width), no figure is added
    whose place, on the largest value, is finer than ``noise / 10``: such digits print noise."""
    finite = sorted({float(f"{v:.12g}") for v in values if v is not None and math.isfinite(v)})
    top = max((abs(v) for v in finite if v != 0), default=0.0)
    for digits in range(start, most + 1):
        if len({significant(v, digits) for v in finite}) == len(finite):
            return digits
        if noise and top and 10 ** (math.floor(math.log10(top)) - digits) < noise / 10:
            return digits
    return most


__all__ = [
    "LEVEL",
    "Interval",
    "t_interval",
    "pooled_stderr",
    "oriented",
    "best_and_ties",
    "within_error_bars",
    "Friedman",
    "Ranking",
    "rank_rows",
    "friedman_test",
    "nemenyi_q",
    "critical_difference",
    "rank_methods",
    "significant",
    "column_digits",
]
