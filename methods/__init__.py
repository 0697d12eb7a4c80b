"""Method registry.

``names()``, ``get(name)``, ``create(name, profile=..., device=..., seed=..., **overrides)``,
``resolve_params`` (a method's parameters under a profile, checked by ``Method.checked_params``,
the one parameter check) and the ``register`` decorator. Every module in this package not
starting with ``_`` is imported on first use; adding a method is one new file here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.registry import Registry
from methods.base import (
    DEFAULT_PROFILE,
    PROFILES,
    AnyOf,
    Bool,
    Choice,
    DivergenceError,
    Float,
    Int,
    Method,
    NotFittedError,
    NotSupported,
    ParameterError,
    Seq,
    Spec,
    Str,
)

_registry: Registry[type[Method]] = Registry("method", __name__)
register = _registry.register
unregister = _registry.unregister
names = _registry.names
get = _registry.get
unavailable = _registry.unavailable
available = _registry.available


def profile_params(name: str, profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """The parameter set of ``profile`` for method ``name`` (a copy)."""
    return get(name).profile_params(profile)


def param_specs(name: str) -> dict[str, Spec]:
    """Every parameter of method ``name`` with the spec its values are checked against (``Method.specs``)."""
    return get(name).specs()


def resolve_params(
    name: str, profile: str = DEFAULT_PROFILE, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The parameters of method ``name`` under ``profile`` updated by ``overrides``, checked
    (``Method.checked_params``): a ParameterError, a UserError of one line, names what is wrong."""
    return get(name).checked_params(overrides, profile)


def create(
    name: str, profile: str = DEFAULT_PROFILE, *, device: str = "auto", seed: int = 0, **overrides: Any
) -> Method:
    """Instantiate method ``name`` with its ``profile`` parameters updated by ``overrides`` (see ``resolve_params``)."""
    return get(name)(device=device, seed=seed, **resolve_params(name, profile, overrides))


__all__ = [
    "Method",
    "NotSupported",
    "NotFittedError",
    "DivergenceError",
    "ParameterError",
    "PROFILES",
    "DEFAULT_PROFILE",
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
