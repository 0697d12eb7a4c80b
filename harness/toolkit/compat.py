"""Quirks of third-party libraries on current torch, handled in one place."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["nflows_warnings_silenced"]


@contextmanager
def nflows_warnings_silenced() -> Iterator[None]:
    """Silence nflows 0.14's known warnings on current torch, inside the block only.

    ``LULinear.inverse`` calls the deprecated ``torch.triangular_solve`` (the result is correct).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.triangular_solve is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"nflows\.")
        yield
