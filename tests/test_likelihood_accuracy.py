"""Every likelihood is as accurate as it claims (generated from the registry where it can be).

* A row's log-density never depends on its batch: the same rows scored alone, in small shuffled
  batches and among far-away rows agree within 1e-4 nats, for every method with a likelihood (and the
  Hutchinson variants, whose probes are keyed by the rows).
* The error bars (``harness.evaluate.ERROR_FIELDS``) exist, are finite and add up to
  ``loglik_error_bar`` for every method that has them; closed-form likelihoods have a zero bar.
* ``ode.accuracy`` against the converged float64 solve (``ode.reference_log_prob``) catches a planted
  solver with too few steps at the 0.01-nat threshold the profiles are chosen by, and passes the
  solve whose steps the convergence check chose for that threshold.
* The figure grid's cheaper solve stays within the changes the step check measured.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import methods
from harness.evaluate import ERROR_FIELDS, likelihood_error_bars
from harness.toolkit import ode
from test_methods import CASES, N_TEST, N_TRAIN, box_data, fitted_case

#: Agreement of a row's log-density across batches (nats): float32 rounding only, far below any solver error.
SAME_ROW = 1e-4
#: Method variants whose likelihood is a Monte-Carlo estimate (row-keyed probes): d = 2.
ESTIMATE_VARIANTS = ["score_diffusion[trace=hutchinson]", "flow_matching[trace=hutchinson]"]
LIKELIHOOD_CASES = [
    (case, d) for case, d in CASES if d == 2 and methods.get(case.split("[")[0]).log_prob_kind is not None
] + [(v, 2) for v in ESTIMATE_VARIANTS]
#: The per-row accuracy the quick and paper profiles are chosen to meet (docs/likelihoods.md).
ROW_ACCURACY = 0.01


def case_id(case: tuple[str, int]) -> str:
    return f"{case[0]}-d{case[1]}"


@pytest.mark.parametrize("case", LIKELIHOOD_CASES, ids=case_id)
def test_a_rows_log_density_does_not_depend_on_its_batch(case):
    fitted = fitted_case(*case)
    model, rows = fitted.model, fitted.test
    alone = model.log_prob(rows)
    order = np.random.default_rng(0).permutation(len(rows))
    in_small_batches = np.empty(len(rows))
    for chunk in np.array_split(order, 7):  # seven batches of about 14, shuffled
        in_small_batches[chunk] = model.log_prob(rows[chunk])
    far = 6.0 * box_data(3 * N_TEST, 2, seed=9)  # three times as many rows, far in the tails
    mixed = np.concatenate([far[:150], rows[::-1], far[150:]])
    among_far_rows = model.log_prob(mixed)[150 : 150 + len(rows)][::-1]
    np.testing.assert_allclose(in_small_batches, alone, atol=SAME_ROW, rtol=0)
    np.testing.assert_allclose(among_far_rows, alone, atol=SAME_ROW, rtol=0)


@pytest.mark.parametrize("case", LIKELIHOOD_CASES, ids=case_id)
def test_error_bars_exist_are_finite_and_add_up(case):
    fitted = fitted_case(*case)
    model = fitted.model
    bars = likelihood_error_bars(model, fitted.test)
    assert set(bars) <= {*ERROR_FIELDS, "loglik_error_bar"}
    assert all(np.isfinite(v) for v in bars.values()), bars
    assert bars["loglik_error_bar"] == pytest.approx(sum(abs(bars.get(k, 0.0)) for k in ERROR_FIELDS))
    assert bars["loglik_error_bar"] >= 0  # a width, whatever the sign of a noisy bound gap
    solved = hasattr(model, "flow_ode")
    assert ("solver_err" in bars) == solved
    assert ("estimator_se" in bars) == (model.log_prob_kind == "estimate")
    assert ("bound_gap" in bars) == (model.log_prob_kind == "bound")
    if solved:
        assert bars["solver_err"] >= 0
    if not (solved or model.log_prob_kind == "bound"):
        assert bars["loglik_error_bar"] == 0.0  # closed-form exact


@pytest.fixture(scope="module", params=["score_diffusion", "flow_matching"])
def ode_model(request):
    return fitted_case(request.param, 2).model


@pytest.fixture(scope="module")
def reference(ode_model):
    """40 standardised rows and their converged float64 log-densities."""
    y = ode_model.standardised(box_data(40, 2, seed=3))
    lp, _ = ode.reference_log_prob(ode_model.flow_ode(torch.float64), y)
    return y, lp


def test_accuracy_check_catches_a_planted_coarse_solver_and_passes_a_checked_one(ode_model, reference):
    y, lp = reference
    planted = ode.accuracy(ode_model.flow_ode(method="euler", steps=2), lp, y)
    assert not planted.within(ROW_ACCURACY), planted
    # the smoke profile trades accuracy for speed: the check at the quick profile's threshold decides here
    check_rows = ode_model.standardised(ode_model.step_check_rows(box_data(N_TRAIN, 2, seed=0)))
    flow = ode_model.flow_ode()
    choice = ode.choose_steps(lambda n: flow.with_steps(n).log_prob(check_rows)[0], start=4, cap=512, target=5e-3)
    checked = ode.accuracy(flow.with_steps(choice.steps), lp, y)
    assert not choice.capped and checked.within(ROW_ACCURACY), (choice, checked)
    assert checked.nfe > planted.nfe  # the checked solve paid for its accuracy


def test_solver_error_shrinks_with_the_steps(ode_model):
    """``solver_err`` is a measured error: a coarser solve reports a larger one."""
    y = ode_model.standardised(box_data(40, 2, seed=4))
    coarse = ode_model.flow_ode(steps=2).errors(y, len(y))["solver_err"]
    fine = ode_model.flow_ode(steps=64).errors(y, len(y))["solver_err"]
    assert 0 <= fine < coarse


def test_error_bars_reuse_the_rows_log_prob_just_scored_without_changing_them(ode_model):
    rows = box_data(60, 2, seed=5)
    ode_model.log_prob(box_data(30, 2, seed=6))  # other rows: nothing to reuse
    fresh = ode_model.likelihood_error(rows)
    ode_model.log_prob(rows)  # as evaluate does before asking for the error bars
    assert ode_model.likelihood_error(rows) == pytest.approx(fresh, rel=1e-6, abs=1e-9)


def test_figure_solve_stays_within_the_changes_the_check_measured(ode_model):
    """On the check rows |lp(figure_steps) - lp(loglik_steps)| is at most the sum of the changes measured
    between them (triangle inequality over the doublings)."""
    rows = ode_model.step_check_rows(box_data(N_TRAIN, 2, seed=0))  # the fixture's training rows
    figure, full = ode_model.figure_log_prob(rows), ode_model.log_prob(rows)
    choice, steps = ode_model.loglik_choice_, ode_model.info_["figure_steps"]
    assert steps <= choice.steps == ode_model.info_["loglik_steps"]
    budget = sum(change for n, change in choice.changes.items() if steps <= n < choice.steps)
    assert np.abs(figure - full).max() <= budget + 1e-5, (steps, choice, budget)
