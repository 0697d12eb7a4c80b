"""The parameter vocabulary (methods.base specs) and the one check, ``Method.checked_params``, on every path."""

from __future__ import annotations

import math

import numpy as np
import pytest

import methods
from harness.errors import UserError
from methods.base import AnyOf, Bool, Choice, Float, Int, ParameterError, Seq, Str, spec_from_values


@pytest.mark.parametrize(
    "spec, good, bad",
    [
        (Int(min=1), [1, 7, np.int64(3)], [0, -1, 2.0, True, "3", None]),
        (Int(min=0, max=3), [0, 3], [-1, 4]),
        (Float(gt=0, lt=1), [0.5, 1e-9], [0, 1, 0.0, 1.0, math.nan, math.inf, "0.5", False]),
        (Float(min=0), [0, 0.0, 2, 1e300], [-1e-12, math.nan, math.inf]),
        (Choice("relu", "silu"), ["relu", "silu"], ["tanh", "RELU", None, 1]),
        (Choice(None) | Int(min=1), [None, 1], [0, "None"]),
        (Choice(1), [1], [True, 1.0]),
        (Bool(), [True, False, np.bool_(True)], [0, 1, "true"]),
        (Seq(Float(min=0, lt=1), length=2), [(0.5, 0.9), [0, 0.1]], [(0.5,), (0.5, 1.0), [], "ab", 0.5]),
    ],
)
def test_spec_accepts_exactly_its_values(spec, good, bad):
    for v in good:
        assert spec.accepts(v), (spec, v)
    for v in bad:
        assert not spec.accepts(v), (spec, v)


@pytest.mark.parametrize(
    "spec",
    [
        Int(min=1),
        Int(min=0, max=3),
        Int(),
        Float(gt=0, lt=1),
        Float(min=0, max=1),
        Float(),
        Choice("relu", "silu"),
        Choice(None),
        Choice(1),
        Choice("auto") | Int(min=1),
        Bool(),
        Str(),
        Seq(Float(min=0, lt=1), length=2),
        Seq(Int(min=1)),
    ],
    ids=repr,
)
def test_rejected_examples_are_rejected(spec):
    examples = spec.rejected_examples()
    assert examples and not any(spec.accepts(v) for v in examples)


def test_rejected_examples_reach_past_each_bound():
    assert {0, 4} <= set(Int(min=1, max=3).rejected_examples())
    assert {0, 1} <= set(Float(gt=0, lt=1).rejected_examples())
    assert {-1, 2} <= set(Float(min=0, max=1).rejected_examples())
    assert "relu_x" in Choice("relu", "silu").rejected_examples()
    either = AnyOf(Choice("auto"), Int(min=1))
    assert 0 in either.rejected_examples() and "auto_x" in either.rejected_examples()


def test_fallback_spec_follows_profile_types():
    assert isinstance(spec_from_values([3, 5]), Int)
    assert spec_from_values([3, 0.5]).accepts(2.5)  # an int and a float in the profiles: any number
    assert not spec_from_values([True, False]).accepts(1)
    both = spec_from_values(["auto", 4])
    assert both.accepts("auto") and both.accepts(9) and not both.accepts(1.5)
    assert isinstance(spec_from_values(["x"]), Str)
    assert spec_from_values([(1.0, 2.0)]).accepts([0.3]) and not spec_from_values([(1.0, 2.0)]).accepts(["a"])


def test_undeclared_parameter_checked_by_profile_type():
    cls = type(
        "Typed",
        (methods.get("gaussian"),),
        {
            "name": "_typed_test",
            "param_specs": {},
            "profiles": {p: {"width": 8, "act": "relu"} for p in methods.PROFILES},
        },
    )
    methods.register(cls)
    try:
        assert methods.resolve_params("_typed_test", "smoke", {"width": 3}) == {"width": 3, "act": "relu"}
        with pytest.raises(UserError, match=r"method '_typed_test': parameter width = 'wide' .*an integer"):
            methods.resolve_params("_typed_test", "smoke", {"width": "wide"})
        with pytest.raises(UserError, match="act = 3"):
            methods.resolve_params("_typed_test", "smoke", {"act": 3})
    finally:
        methods.unregister("_typed_test")


@pytest.mark.parametrize(
    "name, overrides, match",
    [
        ("gan", {"activation": "tanhh"}, r"method 'gan': parameter activation = 'tanhh' .*one of 'relu', 'silu'"),
        ("supervised_diffusion", {"hidden": 0}, r"hidden = 0 .*'auto' or an integer >= 1"),
        ("score_diffusion", {"sampler": "odee"}, r"did you mean 'ode'"),
        ("maf", {"patience": 0}, r"None or an integer >= 1"),
        ("vae", {"lr": math.nan}, r"lr = nan .*finite number > 0"),
        ("gan", {"actvation": "relu"}, r"unknown parameter 'actvation' .*did you mean 'activation'"),
    ],
)
def test_create_rejects_bad_values_with_the_valid_range(name, overrides, match):
    with pytest.raises(UserError, match=match):
        methods.create(name, "smoke", **overrides)


def test_check_params_sees_the_data_dimension_at_fit():
    """A joint rule on a parameter and the data's dimension: passed at construction (dim None), refused
    at ``fit`` with a ParameterError naming the method."""

    def check_params(cls, params, dim):
        if dim is not None and params["width"] < dim:
            raise ValueError(f"width = {params['width']} must be at least the data's dimension {dim}")

    cls = type(
        "Wide",
        (methods.get("gaussian"),),
        {
            "name": "_wide_test",
            "param_specs": {"width": Int(min=1)},
            "profiles": {p: {"width": 2, "ridge": 0.0} for p in methods.PROFILES},
            "check_params": classmethod(check_params),
        },
    )
    model = cls(device="cpu")
    model.fit(np.random.default_rng(0).standard_normal((50, 2)))
    with pytest.raises(ParameterError, match="method '_wide_test': width = 2 must be at least the data's dimension 3"):
        model.fit(np.random.default_rng(0).standard_normal((50, 3)))
