"""Dataset registry: ``names()``, ``get(name)``, ``register``.

``get("file:/path/data.csv")`` returns a loader for a user's own table (CSV,
whitespace text or .npy); ``in_group("2d")`` lists a group's datasets. Every
module in this package is imported on first use.
"""

from __future__ import annotations

from datasets.base import Dataset, DataUnavailable, Published, Splits, default_data_root, resolve_root
from harness.registry import Registry

_registry: Registry[type[Dataset]] = Registry("dataset", __name__)
register = _registry.register
unregister = _registry.unregister
names = _registry.names
unavailable = _registry.unavailable

#: Marker the harness checks to make sure ``import datasets`` is ours, not Hugging Face's.
DENSITYBENCH = True

FILE_PREFIX = "file:"


def get(name: str) -> Dataset:
    """An instance of dataset ``name``; ``file:PATH`` gives a user file loader."""
    if name.startswith(FILE_PREFIX):
        from datasets.tabular import FileDataset

        return FileDataset(name[len(FILE_PREFIX) :])
    return _registry.get(name)()


def get_class(name: str) -> type[Dataset]:
    """The registered class of dataset ``name``."""
    return _registry.get(name)


def groups() -> list[str]:
    """The names of the dataset groups (``Dataset.group``), in registration order."""
    return list(dict.fromkeys(cls.group for cls in _registry.classes().values() if cls.group))


def in_group(group: str) -> list[str]:
    """The datasets of ``group``, in registration order (the order their modules define them)."""
    return [name for name, cls in _registry.classes().items() if cls.group == group]


__all__ = [
    "Dataset",
    "Splits",
    "DataUnavailable",
    "Published",
    "register",
    "unregister",
    "names",
    "get",
    "get_class",
    "groups",
    "in_group",
    "unavailable",
    "default_data_root",
    "resolve_root",
    "DENSITYBENCH",
]
