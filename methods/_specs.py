"""The parameter vocabulary of ``Method.param_specs`` (re-exported by ``methods.base`` and ``methods``).

A spec says which values a parameter accepts (``accepts``), describes them for one-line errors
(``describe``) and names values it must refuse (``rejected_examples``, fed to every method by the
contract tests). ``a | b`` accepts what either accepts.

Example::

    param_specs = {"width": Int(min=1), "act": Choice("relu", "tanh"), "chunk": Choice("auto") | Int(min=1)}
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["Spec", "AnyOf", "Choice", "Int", "Float", "Bool", "Str", "Seq", "spec_from_values", "string_choices"]


class Spec:
    """The values a method parameter accepts: ``accepts(value)``, ``describe()`` (for error messages) and
    ``rejected_examples()`` (values it must refuse, which the contract tests give every method).

    ``a | b`` accepts what either accepts, e.g. ``Choice("auto") | Int(min=1)``.
    """

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def rejected_examples(self) -> list[Any]:
        """Values outside the spec: just past each bound, of another type, a near miss of a choice."""
        raise NotImplementedError

    def __or__(self, other: Spec) -> Spec:
        return AnyOf(self, other)

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(float(value))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


class AnyOf(Spec):
    """Accepts a value that any of ``specs`` accepts."""

    def __init__(self, *specs: Spec) -> None:
        self.specs = tuple(x for s in specs for x in (s.specs if isinstance(s, AnyOf) else (s,)))

    def accepts(self, value: Any) -> bool:
        return any(s.accepts(value) for s in self.specs)

    def describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs)

    def rejected_examples(self) -> list[Any]:
        found = {(type(v), repr(v)): v for s in self.specs for v in s.rejected_examples() if not self.accepts(v)}
        return list(found.values())


class Choice(Spec):
    """One of ``values`` (compared by value and type, so ``True`` is not ``1``); ``Choice(None)`` allows None."""

    def __init__(self, *values: Any) -> None:
        self.values = values

    def accepts(self, value: Any) -> bool:
        return any(value == v and (type(value) is type(v) or _is_int(value) and _is_int(v)) for v in self.values)

    def describe(self) -> str:
        shown = ", ".join(_show(v) for v in self.values)
        return shown if len(self.values) == 1 else f"one of {shown}"

    def rejected_examples(self) -> list[Any]:
        return [v for v in (f"{self.values[0]}_x", 1.5, True, None) if not self.accepts(v)]


class Int(Spec):
    """An integer (not a bool) in [min, max]; None leaves that side open. ``log``: searched on a log
    scale when the spec is an entry of a ``search_space``."""

    def __init__(self, min: int | None = None, max: int | None = None, *, log: bool = False) -> None:
        self.min, self.max, self.log = min, max, log

    def accepts(self, value: Any) -> bool:
        return _is_int(value) and (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        return "an integer" + _range_text(self.min, self.max, False, False)

    def rejected_examples(self) -> list[Any]:
        inside = self.min if self.min is not None else 0
        past = [self.min - 1] if self.min is not None else []
        past += [self.max + 1] if self.max is not None else []
        return [*past, inside + 0.5, float(inside), True, str(inside), None]


class Float(Spec):
    """A finite real number (ints allowed) within [min, max]; ``gt``/``lt`` give open bounds instead.
    ``log``: searched on a log scale when the spec is an entry of a ``search_space``."""

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        *,
        gt: float | None = None,
        lt: float | None = None,
        log: bool = False,
    ) -> None:
        self.low, self.low_open = (gt, True) if gt is not None else (min, False)
        self.high, self.high_open = (lt, True) if lt is not None else (max, False)
        self.log = log

    def accepts(self, value: Any) -> bool:
        if not _is_real(value):
            return False
        x = float(value)
        low_ok = self.low is None or (x > self.low if self.low_open else x >= self.low)
        high_ok = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return low_ok and high_ok

    def describe(self) -> str:
        return "a finite number" + _range_text(self.low, self.high, self.low_open, self.high_open)

    def rejected_examples(self) -> list[Any]:
        past = [] if self.low is None else [self.low if self.low_open else self.low - 1]
        past += [] if self.high is None else [self.high if self.high_open else self.high + 1]
        return [*past, math.nan, math.inf, -math.inf, True, "0.5", None]


def _range_text(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


class Bool(Spec):
    """true or false."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def describe(self) -> str:
        return "true or false"

    def rejected_examples(self) -> list[Any]:
        return [1, "true", None]


class Str(Spec):
    """Any string (the fallback for string-valued profile entries without an explicit spec)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)

    def describe(self) -> str:
        return "a string"

    def rejected_examples(self) -> list[Any]:
        return [1, None]


class Seq(Spec):
    """A list or tuple whose items ``item`` accepts, of exactly ``length`` items (None: any non-empty)."""

    def __init__(self, item: Spec, length: int | None = None) -> None:
        self.item, self.length = item, length

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple)) or not value:
            return False
        return (self.length is None or len(value) == self.length) and all(self.item.accepts(v) for v in value)

    def describe(self) -> str:
        count = f"{self.length} items" if self.length is not None else "items"
        return f"a list of {count}, each {self.item.describe()}"

    def rejected_examples(self) -> list[Any]:
        bad_items = [[v] * (self.length or 1) for v in self.item.rejected_examples()[:2]]
        return [[], "ab", 0.5, *bad_items]


def spec_from_values(values: Iterable[Any]) -> Spec:
    """The loosest spec that fits the types of ``values`` (a parameter's entries in a method's profiles):
    the fallback check for a parameter without an explicit ``param_specs`` entry."""
    specs: list[Spec] = []
    values = list(values)
    kinds = {_kind(v) for v in values}
    if "bool" in kinds:
        specs.append(Bool())
    if "float" in kinds:
        specs.append(Float())
    elif "int" in kinds:
        specs.append(Int())
    if "str" in kinds:
        specs.append(Str())
    if "none" in kinds:
        specs.append(Choice(None))
    if "seq" in kinds:
        items = [x for v in values if isinstance(v, (list, tuple)) for x in v]
        specs.append(Seq(spec_from_values(items) if items else _Anything()))
    if "other" in kinds or not specs:
        specs.append(_Anything())
    return specs[0] if len(specs) == 1 else AnyOf(*specs)


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if _is_int(value):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "seq"
    return "other"


def string_choices(spec: Spec) -> list[str]:
    """The string values of the choices in ``spec`` (for "did you mean" hints)."""
    specs = spec.specs if isinstance(spec, AnyOf) else (spec,)
    return [v for s in specs if isinstance(s, Choice) for v in s.values if isinstance(v, str)]


class _Anything(Spec):
    def accepts(self, value: Any) -> bool:
        return True

    def describe(self) -> str:
        return "any value"

    def rejected_examples(self) -> list[Any]:
        return []
