"""A name -> class registry shared by ``methods`` and ``datasets``.

Every module of a plugin package is imported on first use; a module whose
import fails (a missing optional dependency) is recorded as unavailable with
the reason instead of crashing the harness.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

from harness.errors import unknown

T = TypeVar("T", bound=type)

#: Extra plugin modules (comma-separated import paths) imported after the package's own,
#: e.g. ``DENSITYBENCH_PLUGINS=my_project.my_methods`` to add methods from outside the tree.
PLUGINS_ENV = "DENSITYBENCH_PLUGINS"


class Registry(Generic[T]):
    """Decorator-based registry of plugin classes keyed by their ``name``."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._classes: dict[str, T] = {}
        self._broken: dict[str, str] = {}  # module name -> import error
        self._loaded = False

    def register(self, cls: T) -> T:
        """Class decorator: register ``cls`` under ``cls.name``; duplicates are rejected."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} needs a non-empty string class attribute 'name'")
        if name in self._classes and self._classes[name] is not cls:
            other = self._classes[name]
            raise ValueError(
                f"duplicate {self.kind} name '{name}': {cls.__module__}.{cls.__qualname__} "
                f"and {other.__module__}.{other.__qualname__}"
            )
        self._classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a registration (used by tests that register throw-away plugins)."""
        self._classes.pop(name, None)

    def load(self) -> None:
        """Import every module of the package once."""
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if info.name.startswith("_") or info.name == "base":
                continue
            modname = f"{self.package}.{info.name}"
            try:
                importlib.import_module(modname)
            except ImportError as e:  # optional dependency missing
                self._broken[info.name] = f"{type(e).__name__}: {e}"
            except Exception as e:  # a broken plugin must not kill the harness
                last = traceback.format_exception_only(type(e), e)[-1].strip()
                self._broken[info.name] = last
        for modname in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
            try:
                importlib.import_module(modname)
            except Exception as e:
                self._broken[modname] = f"{type(e).__name__}: {e}"

    def classes(self) -> dict[str, T]:
        """Registered name -> class, in registration order."""
        self.load()
        return dict(self._classes)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.load()
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered as ``name``; a clear error suggests the closest name."""
        self.load()
        if name not in self._classes:
            if name in self._broken:
                raise unknown(f"{self.kind} (module failed to import: {self._broken[name]})", name, self._classes)
            raise unknown(self.kind, name, self._classes)
        return self._classes[name]

    def unavailable(self) -> dict[str, str]:
        """name -> reason for plugins that cannot run here (import errors, ``skip()``)."""
        self.load()
        out = dict(self._broken)
        for name, cls in self._classes.items():
            skip: Callable[[], tuple[bool, str]] | None = getattr(cls, "skip", None)
            if skip is not None:
                skipped, reason = skip()
                if skipped:
                    out[name] = reason
        return out

    def available(self) -> list[str]:
        """Registered names that can run here."""
        bad = self.unavailable()
        return [n for n in self.names() if n not in bad]
