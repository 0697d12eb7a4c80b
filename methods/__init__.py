"""Method registry.

``names()``, ``get(name)``, ``create(name, profile=..., device=..., seed=..., **overrides)``,
``resolve_params`` (the one parameter check, used by ``create`` and by grid planning) and the
``register`` decorator. Every module in this package is imported on
first use; adding a method is one new file here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import UserError, suggest
from harness.registry import Registry
from methods.base import (
    AnyOf,
    Bool,
    Choice,
    DivergenceError,
    Float,
    Int,
    Method,
    NotFittedError,
    NotSupported,
    Seq,
    Spec,
    Str,
    spec_from_values,
)

PROFILES = ("smoke", "quick", "paper")

_registry: Registry[type[Method]] = Registry("method", __name__)
register = _registry.register
unregister = _registry.unregister
names = _registry.names
get = _registry.get
unavailable = _registry.unavailable
available = _registry.available


def profile_params(name: str, profile: str = "quick") -> dict[str, Any]:
    """The parameter set of ``profile`` for method ``name`` (a copy)."""
    cls = get(name)
    if profile not in cls.profiles:
        raise UserError(
            f"unknown profile '{profile}'{suggest(profile, cls.profiles)} for method '{name}'; valid: {', '.join(cls.profiles)}"
        )
    return dict(cls.profiles[profile])


def param_specs(name: str) -> dict[str, Spec]:
    """Every parameter of method ``name`` with the spec its values are checked against: the class's
    ``param_specs``, else one built from the types of the parameter's values in the profiles."""
    cls = get(name)
    keys = dict.fromkeys([k for p in cls.profiles.values() for k in p] + list(cls.param_specs))
    return {k: cls.param_specs.get(k) or spec_from_values(p[k] for p in cls.profiles.values() if k in p) for k in keys}


def resolve_params(name: str, profile: str = "quick", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters of method ``name`` under ``profile`` updated by ``overrides``, checked.

    Raises a UserError (one line: the method, the parameter, the value and what is valid) for an
    unknown parameter name (suggesting the closest) or a value its spec rejects.
    """
    specs = param_specs(name)
    params = profile_params(name, profile)
    for key, value in (overrides or {}).items():
        if key not in specs:
            raise UserError(
                f"unknown parameter '{key}' for method '{name}'{suggest(key, specs)}; valid: {', '.join(sorted(specs))}"
            )
        params[key] = value
    for key, value in params.items():
        spec = specs[key]
        if not spec.accepts(value):
            hint = suggest(value, _string_choices(spec)) if isinstance(value, str) else ""
            raise UserError(
                f"method '{name}': parameter {key} = {value!r} is not valid{hint}; valid: {spec.describe()}"
            )
    return params


def _string_choices(spec: Spec) -> list[str]:
    specs = spec.specs if isinstance(spec, AnyOf) else (spec,)
    return [v for s in specs if isinstance(s, Choice) for v in s.values if isinstance(v, str)]


def create(name: str, profile: str = "quick", *, device: str = "auto", seed: int = 0, **overrides: Any) -> Method:
    """Instantiate method ``name`` with its ``profile`` parameters updated by ``overrides``.

    Override keys must be parameters of the method, and every value must satisfy its spec
    (see ``resolve_params``).
    """
    return get(name)(device=device, seed=seed, **resolve_params(name, profile, overrides))


__all__ = [
    "Method",
    "NotSupported",
    "NotFittedError",
    "DivergenceError",
    "PROFILES",
    "register",
    "unregister",
    "names",
    "get",
    "create",
    "profile_params",
    "param_specs",
    "resolve_params",
    "unavailable",
    "available",
    "Spec",
    "Choice",
    "Int",
    "Float",
    "Bool",
    "Str",
    "Seq",
    "AnyOf",
]
