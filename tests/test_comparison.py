"""harness.comparison: intervals, ties, ranks, Friedman and Nemenyi against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import friedmanchisquare

from harness.comparison import (
    Ranking,
    best_and_ties,
    column_digits,
    critical_difference,
    friedman_test,
    nemenyi_q,
    pooled_stderr,
    rank_methods,
    rank_rows,
    significant,
    t_interval,
    within_error_bars,
)


def test_t_interval_by_hand():
    iv = t_interval([1.0, 2.0, 3.0])
    # mean 2, s = 1, t_{2, 0.975} = 4.303 (any t table): half width 4.303 / sqrt(3) = 2.484
    assert iv.mean == 2.0 and iv.n == 3 and iv.std == pytest.approx(1.0)
    assert iv.half_width == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    assert (iv.lo, iv.hi) == pytest.approx((2 - 2.48420, 2 + 2.48420), abs=1e-4)
    one = t_interval([5.0])
    assert one.mean == 5.0 and not one.has_interval and math.isnan(one.lo)


def test_pooled_stderr_by_hand():
    assert pooled_stderr([0.3]) == pytest.approx(0.3)
    assert pooled_stderr([0.3, 0.4]) == pytest.approx(0.25)  # sqrt(0.09 + 0.16) / 2
    assert math.isnan(pooled_stderr([0.3, float("nan")]))


def test_best_and_ties_lower_is_better():
    # two seeds: t_{1, 0.975} = 12.706, s = 0.1414, half width 1.2706 for each cell
    cells = {"a": [1.0, 1.2], "b": [3.0, 3.2], "c": [10.0, 10.2], "d": [0.5]}
    best, tied = best_and_ties(cells, "lower")
    # d has the lowest mean but one value: it is best; no interval, so nothing can be tied with it
    assert (best, tied) == ("d", set())
    del cells["d"]
    # a: [-0.17, 2.37], b: [1.83, 4.37] overlaps a; c: [8.83, 11.37] does not
    assert best_and_ties(cells, "lower") == ("a", {"b"})
    assert best_and_ties({k: [-v for v in vals] for k, vals in cells.items()}, "higher") == ("a", {"b"})


def test_best_and_ties_closest_to_half():
    cells = {
        "x": [0.51, 0.52, 0.53],  # |v - .5| 0.01..0.03, mean 0.02 ± 4.303 * 0.01 / sqrt 3 = [-0.005, 0.045]
        "y": [0.40, 0.41, 0.42],  # distances mean 0.09: [0.065, 0.115], apart from x
        "z": [0.46, 0.47, 0.48],  # distances mean 0.03: [0.005, 0.055], overlaps x
        "w": [0.45],  # one value: never tied
        "v": [float("nan")],  # no finite value: ignored
    }
    assert best_and_ties(cells, "half") == ("x", {"z"})
    assert best_and_ties({}, "lower") == (None, set())
    # closest to a target: distances to 1.0 of 0.02 (x'), 0.09 (y'), 0.03 (z'); "none" has no best
    shifted = {k: [v + 0.5 for v in vals] for k, vals in cells.items()}
    assert best_and_ties(shifted, "target", target=1.0) == ("x", {"z"})
    assert best_and_ties(cells, "none") == (None, set())


#: A small results table (cell means, lower is better) with ties and missing cells.
TABLE = {
    "d1": {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0, "E": 0.5},
    "d2": {"A": 2.0, "B": 1.0, "C": 2.0, "D": 5.0},
    "d3": {"A": 1.0, "B": 3.0, "C": 2.0, "D": None},  # D failed here
    "d4": {"A": 1.0, "B": 1.0, "C": 1.0, "D": 2.0},
    "d5": {"D": 1.0},  # only D ran here
    "d6": {},  # no values at all (e.g. KL without a density)
}
METHODS = ["A", "B", "C", "D", "E", "F"]


def _values() -> dict[tuple[str, str], float | None]:
    return {(m, ds): row.get(m) for ds, row in TABLE.items() for m in METHODS}


def test_ranks_with_ties_and_missing_cells_by_hand():
    r = rank_methods(_values(), METHODS, list(TABLE), "lower")
    # E has a value on 1 of the 5 datasets with values, F on none: both out of the comparison, and said so
    assert r.excluded_methods == {"E": "values on 1 of 5 datasets", "F": "no values"}
    # d3 lacks D and d5 lacks A, B, C: left out, with the cells that are missing
    assert r.excluded_datasets == {"d3": ["D"], "d5": ["A", "B", "C"]} and r.empty_datasets == ["d6"]
    assert r.methods == ["A", "B", "C", "D"] and r.datasets == ["d1", "d2", "d4"]
    # d1: 1 2 3 4; d2: 2.5 1 2.5 4; d4: 2 2 2 4
    np.testing.assert_array_equal(r.ranks, [[1, 2, 3, 4], [2.5, 1, 2.5, 4], [2, 2, 2, 4]])
    assert r.average == pytest.approx({"A": 5.5 / 3, "B": 5 / 3, "C": 7.5 / 3, "D": 4.0})
    assert r.best() == ["B"]
    # rank sums 5.5, 5, 7.5, 12: 12 / (3 * 4 * 5) * 255.5 - 45 = 6.1; ties (2 and 3 equal) give
    # 1 - (6 + 24) / (4 * 15 * 3) = 5/6, so chi2 = 7.32 on 3 degrees of freedom
    assert r.friedman.chi2 == pytest.approx(7.32) and r.friedman.df == 3
    # Nemenyi, k = 4, N = 3: q = 2.569 (Demšar 2006, Table 5a); CD = 2.569 * sqrt(20 / 18) = 2.708
    assert r.q_alpha == pytest.approx(2.569, abs=5e-4) and r.cd == pytest.approx(2.708, abs=1e-3)
    assert r.not_different_from_best() == ["A", "C", "D"]  # D: 4 - 1.667 = 2.33 < CD
    higher = rank_methods(_values(), METHODS, list(TABLE), "higher")
    assert higher.average["D"] == pytest.approx(1.0)
    # closest to 2: d1 ranks B (0 away) 1, A and C (1 away) 2.5, D 4
    near_two = rank_methods(_values(), METHODS, list(TABLE), "target", target=2.0)
    assert near_two.ranks[0].tolist() == [2.5, 1, 2.5, 4]


def test_friedman_matches_scipy_with_and_without_ties():
    rng = np.random.default_rng(0)
    for n, k, levels in [(3, 4, None), (8, 5, None), (6, 3, 3), (12, 7, 4)]:
        x = rng.standard_normal((n, k)) if levels is None else rng.integers(0, levels, (n, k)).astype(float)
        values = {(f"m{j}", f"d{i}"): x[i, j] for i in range(n) for j in range(k)}
        r = rank_methods(values, [f"m{j}" for j in range(k)], [f"d{i}" for i in range(n)], "lower")
        ref = friedmanchisquare(*x.T)
        assert r.friedman.chi2 == pytest.approx(ref.statistic, rel=1e-12)
        assert r.friedman.p == pytest.approx(ref.pvalue, rel=1e-9)
        chi2 = ref.statistic  # Iman-Davenport, Demšar 2006 eq. after (3)
        assert r.friedman.f == pytest.approx((n - 1) * chi2 / (n * (k - 1) - chi2))


def test_friedman_of_identical_orderings():
    ranks = np.tile([1.0, 2.0, 3.0], (4, 1))
    f = friedman_test(ranks)
    assert f.chi2 == pytest.approx(8.0) and math.isinf(f.f) and f.p_f == 0.0  # chi2 = N (k - 1)
    flat = friedman_test(np.full((3, 4), 2.5))  # every method tied on every dataset
    assert (flat.chi2, flat.p, flat.p_f) == (0.0, 1.0, 1.0)


def test_nemenyi_critical_values_match_demsar_table():
    # Demšar 2006, Table 5(a), q_0.05 for k = 2..10 (printed to three decimals, last digit not always rounded)
    table = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    assert [nemenyi_q(k) for k in range(2, 11)] == pytest.approx(table, abs=1e-3)
    assert critical_difference(5, 10) == pytest.approx(2.728 * math.sqrt(5 * 6 / 60), abs=1e-3)


def test_cliques_are_the_maximal_groups_within_the_cd():
    r = Ranking(["a", "b", "c", "d", "e"], ["x", "y"], np.tile([1.0, 1.5, 3.0, 3.2, 5.0], (2, 1)), cd=1.0)
    assert r.cliques() == [["a", "b"], ["c", "d"]]
    r.cd = 1.6  # b-c: 1.5 < 1.6 but b-d: 1.7 is not
    assert r.cliques() == [["a", "b"], ["b", "c"], ["c", "d"]]
    assert r.not_different_from_best() == ["b"]


def test_ranking_needs_two_datasets_and_two_methods():
    one = rank_methods({("a", "x"): 1.0, ("b", "x"): 2.0}, ["a", "b"], ["x"], "lower")
    assert not one.usable and one.friedman is None and math.isnan(one.cd) and one.average == {"a": 1.0, "b": 2.0}
    none = rank_methods({}, ["a"], ["x"], "lower")
    assert none.datasets == [] and none.average == {} and none.excluded_methods == {"a": "no values"}


@pytest.mark.parametrize(
    "value, digits, text",
    [
        (-2.8412, 3, "-2.84"),
        (0.0123, 3, "0.0123"),
        (0.5, 3, "0.500"),
        (123.45, 3, "123"),
        (1234.5, 3, "1234"),
        (-1.234e-5, 3, "-1.23e-5"),
        (0.0009996, 3, "1.00e-3"),
        (9.9996, 3, "10.0"),
        (2.5e6, 3, "2.50e6"),
        (0.0, 3, "0"),
        (-2.8412, 5, "-2.8412"),
        (float("nan"), 3, "nan"),
    ],
)
def test_significant_figures(value, digits, text):
    assert significant(value, digits) == text


def test_column_digits_show_every_difference():
    assert column_digits([0.51234, 0.51243, 0.6]) == 4
    assert column_digits([1e-5, -2e-5, 0.003]) == 3
    assert column_digits([1.0, 1.0, float("nan")]) == 3
    assert column_digits([1.0000001, 1.0000002]) == 6  # capped


def test_column_digits_treat_float_noise_as_equal_and_stop_at_the_interval():
    # 0.0226 / 3 summed in two orders differs in the last bit; it is one value, not two
    a = (0.0068 + 0.0078 + 0.008) / 3
    b = (0.008 + 0.0068 + 0.0078) / 3
    assert column_digits([a, b, 0.0072]) == 3
    # means 2e-6 apart with intervals of +-0.0023: the figure at 1e-4 is already finer than
    # a tenth of the interval, so the column stops there instead of printing six figures
    assert column_digits([-3.095406, -3.095408, -4.25], noise=0.0023) == 4
    assert column_digits([-3.095406, -3.095408, -4.25]) == 6


def test_values_within_their_error_bars_are_tied_and_beyond_them_are_not():
    # one seed each: no intervals, so only the error bars can tie
    cells = {"a": [-1.00], "b": [-1.02], "c": [-1.10]}
    assert best_and_ties(cells, "higher") == ("a", set())
    # |a - b| = 0.02 <= 0.01 + 0.02; |a - c| = 0.10 > 0.01 + 0.05
    best, tied = best_and_ties(cells, "higher", error_bars={"a": 0.01, "b": 0.02, "c": 0.05})
    assert best == "a" and tied == {"b"}
    assert within_error_bars(1.0, 1.0, math.nan, 0.0) is False  # equal values without bars: not a tie here
    assert within_error_bars(1.0, 1.2, 0.1, 0.1) and not within_error_bars(1.0, 1.2001, 0.1, 0.1)


def test_ranks_share_the_average_rank_within_error_bars():
    scores = np.array([[3.0, 2.95, 1.0, 0.96]])
    assert rank_rows(scores).tolist() == [[1.0, 2.0, 3.0, 4.0]]
    # 3.0 and 2.95 within 0.03 + 0.03 share ranks 1 and 2; 1.0 and 0.96 are 0.04 apart, bars 0.01 each: not tied
    bars = np.array([[0.03, 0.03, 0.01, 0.01]])
    assert rank_rows(scores, bars).tolist() == [[1.5, 1.5, 3.0, 4.0]]
    # a chain: a-b and b-c within their bars, so all three share (1 + 2 + 3) / 3
    assert rank_rows(np.array([[3.0, 2.9, 2.8]]), np.array([[0.06, 0.06, 0.06]])).tolist() == [[2.0, 2.0, 2.0]]
    values = {("a", "x"): 3.0, ("b", "x"): 2.95, ("a", "y"): 1.0, ("b", "y"): 2.0}
    r = rank_methods(values, ["a", "b"], ["x", "y"], "higher", error_bars={("a", "x"): 0.03, ("b", "x"): 0.03})
    assert r.average == pytest.approx({"a": 1.75, "b": 1.25})
