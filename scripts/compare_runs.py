#!/usr/bin/env python3
"""Compare the cells of two run directories, leaving out everything that depends on time.

Usage: ``.venv/bin/python scripts/compare_runs.py RUN_A RUN_B [--rtol R]``

A cell is matched by (method, dataset, seed, profile). Compared: its status, error, device,
params, metrics and info, every nested field. Left out: the ``timings`` column, the bookkeeping
columns (code version, config hash, time of writing) and, inside metrics and info, every field
that measures time: ``t`` and names ending in ``_s`` (seconds: a checkpoint's ``t`` and
``eval_s``, ``training_progress.train_s``...). Numbers match when
``|a - b| <= rtol * max(|a|, |b|)`` (default rtol 0: exactly).

Prints "identical: N cells" and exits 0, or one line per differing cell and field with both
values and exits 1. A missing run directory exits 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from typing import Any

from harness.errors import UserError
from harness.store import ResultsStore

#: Row columns compared (the rest are timings or bookkeeping).
COMPARED = ("status", "error", "device", "params", "metrics", "info")


def is_time_field(key: str) -> bool:
    """A field that measures wall-clock time: ``t`` or a name ending in ``_s`` (seconds)."""
    return key == "t" or key.endswith("_s")


def flatten(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, leaf value) of every leaf of nested dicts and lists, time fields left out."""
    if isinstance(value, dict):
        for key in sorted(value):
            if not is_time_field(str(key)):
                yield from flatten(value[key], f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from flatten(item, f"{path}[{i}]")
    else:
        yield path, value


def same(a: Any, b: Any, rtol: float) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        if a == b:
            return True
        if math.isnan(a) and math.isnan(b):
            return True
        return abs(a - b) <= rtol * max(abs(a), abs(b))
    return type(a) is type(b) and a == b


def cells(run_dir: str) -> dict[tuple, dict[str, Any]]:
    """(method, dataset, seed, profile) -> the compared fields of that cell, flattened."""
    store = ResultsStore(run_dir, create=False)
    try:
        rows = store.rows()
    finally:
        store.close()
    return {
        (r["method"], r["dataset"], r["seed"], r["profile"]): dict(
            leaf for column in COMPARED for leaf in flatten(r[column], column)
        )
        for r in rows
    }


def differences(a: dict[tuple, dict], b: dict[tuple, dict], rtol: float) -> list[str]:
    """One line per cell present in only one run and per differing field of a shared cell."""
    lines = []
    for key in sorted(a.keys() | b.keys(), key=str):
        name = "/".join(map(str, key))
        if key not in b or key not in a:
            lines.append(f"{name}: only in {'A' if key in a else 'B'}")
            continue
        for field in sorted(a[key].keys() | b[key].keys()):
            missing = "<absent>"
            va, vb = a[key].get(field, missing), b[key].get(field, missing)
            if not same(va, vb, rtol):
                lines.append(f"{name}: {field}: A={va!r} B={vb!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", help="first run directory")
    parser.add_argument("run_b", help="second run directory")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance on numbers (default 0: exact)")
    args = parser.parse_args(argv)
    try:
        a, b = cells(args.run_a), cells(args.run_b)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lines = differences(a, b, args.rtol)
    if not lines:
        print(f"identical: {len(a)} cells (every field but times; rtol {args.rtol:g})")
        return 0
    print(f"different: {len(lines)} field(s) differ")
    print("\n".join(lines))
    return 1


if __name__ == "__main__":
    sys.exit(main())
