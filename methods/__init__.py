"""Method registry.

``names()``, ``get(name)``, ``create(name, profile=..., device=..., seed=..., **overrides)``
and the ``register`` decorator. Every module in this package is imported on
first use; adding a method is one new file here.
"""

from __future__ import annotations

from typing import Any

from harness.errors import UserError, suggest
from harness.registry import Registry
from methods.base import DivergenceError, Method, NotFittedError, NotSupported

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
        raise UserError(f"unknown profile '{profile}'{suggest(profile, cls.profiles)} for method '{name}'; valid: {', '.join(cls.profiles)}")
    return dict(cls.profiles[profile])


def create(name: str, profile: str = "quick", *, device: str = "auto", seed: int = 0, **overrides: Any) -> Method:
    """Instantiate method ``name`` with its ``profile`` parameters updated by ``overrides``.

    Override keys must be parameters that the method's profiles define.
    """
    cls = get(name)
    params = profile_params(name, profile)
    known = set().union(*(p.keys() for p in cls.profiles.values()))
    for key in overrides:
        if key not in known:
            raise UserError(f"unknown parameter '{key}' for method '{name}'{suggest(key, known)}; valid: {', '.join(sorted(known))}")
    params.update(overrides)
    return cls(device=device, seed=seed, **params)


__all__ = [
    "Method", "NotSupported", "NotFittedError", "DivergenceError", "PROFILES",
    "register", "unregister", "names", "get", "create", "profile_params", "unavailable", "available",
]
