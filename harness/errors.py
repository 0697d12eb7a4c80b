"""Errors that reach the user as one line and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest valid name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """A UserError for an unknown name, suggesting the closest valid one."""
    valid = sorted(valid)
    return UserError(f"unknown {kind} '{name}'{suggest(name, valid)}; valid: {', '.join(valid)}")


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss."""
