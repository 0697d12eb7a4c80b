"""Every likelihood is as accurate as it claims (generated from the registry where it can be).

* A row's log-density never depends on its batch: the same rows scored alone, in small shuffled
  batches and among far-away rows agree within 1e-4 nats, for every method with a likelihood (and the
  Hutchinson variants, whose probes are keyed by the rows).
* The error bars (``harness.evaluate.ERROR_FIELDS``) exist, are finite and add up to
  ``loglik_error_bar`` for every method that has them; closed-form likelihoods have a zero bar.
* ``ode.accuracy`` against a float64 solve at 1e-7 catches a planted solver with a looser tolerance
  at the 0.01-nat threshold the profiles are chosen by, and passes a tight one.
"""

from __future__ import annotations

import numpy as np
import pytest

import methods
from harness.evaluate import ERROR_FIELDS, likelihood_error_bars
from harness.toolkit import ode
from test_methods import CASES, N_TEST, box_data, fitted_case

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
    assert bars["loglik_error_bar"] == pytest.approx(sum(bars.get(k, 0.0) for k in ERROR_FIELDS))
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


def test_accuracy_check_catches_a_planted_loose_solver_and_passes_a_tight_one(ode_model):
    y = ode_model.standardised(box_data(40, 2, seed=3))
    reference = ode_model.flow_ode(**ode.REFERENCE)
    planted = ode.accuracy(ode_model.flow_ode(method="dopri5", rtol=0.3, atol=0.3), reference, y)
    tight = ode.accuracy(ode_model.flow_ode(method="dopri5", rtol=1e-6, atol=1e-6), reference, y)
    assert not planted.within(ROW_ACCURACY), planted
    assert tight.within(ROW_ACCURACY), tight
    assert tight.nfe_mean > planted.nfe_mean  # the tight solve paid for its accuracy


def test_solver_error_shrinks_with_the_tolerance(ode_model):
    """``solver_err`` is a measured error: a looser solve reports a larger one."""
    y = ode_model.standardised(box_data(40, 2, seed=4))
    loose = ode_model.flow_ode(method="dopri5", rtol=0.1, atol=0.1).errors(y, len(y))["solver_err"]
    tight = ode_model.flow_ode(method="dopri5", rtol=1e-5, atol=1e-5).errors(y, len(y))["solver_err"]
    assert 0 <= tight < loose
