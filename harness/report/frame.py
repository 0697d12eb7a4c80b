"""The results store's rows as the report reads them: one label per (method,
profile) so that nothing averages over profiles (``label_profiles``), a flat
frame of scalars (``rows_frame``), the order of methods and datasets, and each
method's likelihood kind.

Example::

    rows = label_profiles(store.rows())        # "gaussian (smoke)" when two profiles ran
    df = rows_frame(rows)                      # metrics.*, timings.*, info.* columns
"""

from __future__ import annotations

from typing import Any

import pandas as pd

import datasets
import methods
from harness.errors import UserError
from harness.variants import base_of, expand_all

#: The identity columns of a row, first in ``rows_frame`` and in results.csv.
IDENTITY = (
    "method",
    "dataset",
    "seed",
    "profile",
    "device",
    "status",
    "error",
    "code_version",
    "config_hash",
    "cell_key",
)


def label_profiles(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the method of every row whose method ran under several profiles relabelled
    ``method (profile)``: the report's tables, curves, figures and verdict key on that label, so that
    no entry, curve or point mixes profiles. Rows of one-profile methods are returned as they are."""
    profiles: dict[str, set[str]] = {}
    for r in rows:
        profiles.setdefault(r["method"], set()).add(r.get("profile"))
    mixed = {m for m, p in profiles.items() if len(p) > 1}
    return [{**r, "method": f"{r['method']} ({r['profile']})"} if r["method"] in mixed else r for r in rows]


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One flat record per row: identity columns, metrics.*, timings.*, info.* (scalars only)."""
    flat = []
    for r in rows:
        rec = {k: r[k] for k in IDENTITY}
        for src in ("metrics", "timings", "info"):
            for k, v in (r.get(src) or {}).items():
                if isinstance(v, (dict, list)):
                    continue
                rec[f"{src}.{k}"] = _number(v)
        for phase, secs in ((r.get("timings") or {}).get("fit_phases") or {}).items():
            rec[f"timings.phase.{phase}"] = secs
        flat.append(rec)
    return pd.DataFrame(flat)


def _number(v: Any) -> Any:
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return v


def _order(values: list[str], preferred: list[str]) -> list[str]:
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def method_order(df: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Methods (and method variants, expanded) in the config's order, then the rest sorted."""
    preferred = cfg.get("methods") if isinstance(cfg.get("methods"), list) else []
    try:
        preferred = [v.name for v in expand_all(preferred)]
    except UserError:  # a config from before variants, or hand-edited: keep its names as they are
        pass
    return _order(sorted(df.method.unique()), list(preferred))


def dataset_order(df: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Datasets in the config's order, then the rest sorted."""
    return _order(sorted(df.dataset.unique()), _dataset_order(cfg))


def _dataset_order(cfg: dict[str, Any]) -> list[str]:
    """The config's datasets; a group name (``"2d"``) stands for its members, and a config without
    datasets for the members of every group (registration order)."""
    d = cfg.get("datasets")
    if d is None:
        return [name for group in datasets.groups() for name in datasets.in_group(group)]
    if isinstance(d, str):
        return datasets.in_group(d) if d in datasets.groups() else []
    return list(d) if isinstance(d, list) else []


def likelihood_kinds(df: pd.DataFrame, methods: list[str]) -> dict[str, str | None]:
    """Each method's likelihood kind from its ok rows, else from the registry, else None."""
    kinds: dict[str, str | None] = {}
    for m in methods:
        col = df[(df.method == m) & (df.status == "ok")].get("metrics.kind")
        kinds[m] = next((v for v in (col if col is not None else []) if isinstance(v, str)), None)
        if kinds[m] is None and not (df[(df.method == m)].status == "ok").any():
            kinds[m] = _registered_kind(m.split(" (")[0])
    return kinds


def _registered_kind(method: str) -> str | None:
    try:
        return methods.get(base_of(method)).log_prob_kind
    except Exception:  # an unknown or unavailable method: no likelihood known
        return None
