"""The parameter vocabulary (methods.base specs) and the one check, methods.resolve_params."""

from __future__ import annotations

import math

import numpy as np
import pytest

import methods
from harness.errors import UserError
from methods.base import Bool, Choice, Float, Int, Seq, Str, spec_from_values


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
            "profiles": {p: {"width": 8, "act": "relu"} for p in ("smoke", "quick", "paper")},
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
