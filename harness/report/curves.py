"""Quality against training time, from the checkpoints stored with each row.

Each ok row's ``info["checkpoints"]`` (``Method.checkpoint``) holds training time
``t`` (s, checkpoint evaluations excluded), the loop's ``phase`` and ``step``, and
one validation metric: ``val_loglik`` (nats, higher is better) or ``val_energy``
(energy statistic against validation rows, lower is better). ``info
["checkpoint_reference"]`` holds both for the full-covariance Gaussian fitted to
the training split, on the same rows.

Time to X% (``time_to_quality``): on one dataset, seed and metric, let ``best`` be
the best *final* value (last checkpoint) over the methods and ``ref`` the
Gaussian reference; the target is ``ref + X (best - ref)``, the point X of the way
from the Gaussian to the best final value (the same target for every method, in
the metric's own units, so it works for log-likelihoods of any sign). A method's
time to X% is the training time of its first checkpoint at or beyond the target.
Undefined when no method ends better than the Gaussian.

Example::

    table = time_to_quality(rows, "val_loglik")
    table.entries[("maf", "8gaussians")]   # "0.9 / 3.1" (s to 50% / 90%)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

FRACTIONS = (0.5, 0.9)


#: metric -> (label, which way is better)
METRICS = {
    "val_loglik": ("validation log-likelihood (nats, higher is better)", "higher"),
    "val_energy": ("validation energy statistic (lower is better)", "lower"),
}


DEFINITION = (
    "Training time (s, checkpoint evaluations excluded) to reach {fractions} of the way from the reference, the "
    "full-covariance Gaussian fitted to the training split, to the best final value of any method on the same "
    "dataset and seed (last checkpoint; target = ref + X·(best − ref), the same target for every method). "
    "Checkpoints: every tenth of each training loop's planned steps (flows: every validation), on the first "
    "1,024 validation rows. Mean over seeds; '(k/n)' when reached in k of n seeds; 'not reached' when never."
)


@dataclass(frozen=True)
class Curve:
    """One row's checkpoints of one metric: times (s) and values, with the phase of each."""

    method: str
    dataset: str
    seed: int
    metric: str
    times: list[float]
    values: list[float]
    phases: list[str]


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def row_curves(row: dict[str, Any]) -> list[Curve]:
    """The curves of one ok row (one per metric it reports; none without checkpoints)."""
    points = (row.get("info") or {}).get("checkpoints") or []
    out = []
    for metric in METRICS:
        pts = [
            (p["t"], _finite(p.get(metric)), p.get("phase", "")) for p in points if _finite(p.get(metric)) is not None
        ]
        if pts:
            out.append(
                Curve(
                    row["method"],
                    row["dataset"],
                    int(row["seed"]),
                    metric,
                    [float(t) for t, _, _ in pts],
                    [v for _, v, _ in pts],
                    [ph for _, _, ph in pts],
                )
            )
    return out


def all_curves(rows: list[dict[str, Any]]) -> list[Curve]:
    return [c for r in rows if r.get("status") == "ok" for c in row_curves(r)]


def reference(rows: list[dict[str, Any]], dataset: str, seed: int, metric: str) -> float | None:
    """The Gaussian reference value of ``metric`` stored with the rows of (dataset, seed)."""
    for r in rows:
        if r.get("dataset") == dataset and int(r.get("seed", -1)) == seed:
            value = _finite(((r.get("info") or {}).get("checkpoint_reference") or {}).get(metric))
            if value is not None:
                return value
    return None


def methods_without_checkpoints(rows: list[dict[str, Any]]) -> list[str]:
    """Methods with ok rows none of which reported a scored checkpoint."""
    ok = {r["method"] for r in rows if r.get("status") == "ok"}
    with_curves = {c.method for c in all_curves(rows)}
    return sorted(ok - with_curves)


def first_time_at(curve: Curve, target: float, better: str) -> float | None:
    """Training time of the first checkpoint at or beyond ``target`` (None: never)."""
    for t, v in zip(curve.times, curve.values, strict=False):
        if (v >= target) if better == "higher" else (v <= target):
            return t
    return None


@dataclass
class QualityTable:
    """Time to each fraction for one metric: ``times[(method, dataset)][fraction]`` is a list over seeds
    (None where not reached); ``undefined`` lists datasets where no method beat the reference."""

    metric: str
    methods: list[str]
    datasets: list[str]
    times: dict[tuple[str, str], dict[float, list[float | None]]] = field(default_factory=dict)
    undefined: list[str] = field(default_factory=list)
    fractions: tuple[float, ...] = FRACTIONS

    def entry(self, method: str, dataset: str) -> str:
        """``"t50 / t90"`` in seconds (mean over seeds that reached it), '–' without a curve."""
        per = self.times.get((method, dataset))
        if per is None:
            return "–"
        return " / ".join(_summarise(per[f]) for f in self.fractions)

    @property
    def header(self) -> str:
        return " / ".join(f"{round(100 * f)}%" for f in self.fractions)


def _summarise(values: list[float | None]) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return "not reached"
    text = format_seconds(sum(reached) / len(reached))
    return text if len(reached) == len(values) else f"{text} ({len(reached)}/{len(values)})"


def format_seconds(s: float) -> str:
    return f"{s:.2g}" if s < 1 else f"{s:.1f}" if s < 100 else f"{s:.0f}"


def time_to_quality(
    rows: list[dict[str, Any]],
    metric: str,
    methods: list[str] | None = None,
    datasets: list[str] | None = None,
    fractions: tuple[float, ...] = FRACTIONS,
) -> QualityTable | None:
    """Time to each fraction of the way from the Gaussian reference to the best final value (module
    docstring), per method and dataset; None when no row reports ``metric``."""
    better = METRICS[metric][1]
    curves = [c for c in all_curves(rows) if c.metric == metric]
    if not curves:
        return None
    methods = [m for m in (methods or sorted({c.method for c in curves})) if any(c.method == m for c in curves)]
    datasets = [d for d in (datasets or sorted({c.dataset for c in curves})) if any(c.dataset == d for c in curves)]
    table = QualityTable(metric, methods, datasets, fractions=fractions)
    for ds in datasets:
        for seed in sorted({c.seed for c in curves if c.dataset == ds}):
            group = [c for c in curves if c.dataset == ds and c.seed == seed]
            finals = [c.values[-1] for c in group]
            best = max(finals) if better == "higher" else min(finals)
            ref = reference(rows, ds, seed, metric)
            gain = None if ref is None else (best - ref) * (1 if better == "higher" else -1)
            if gain is None or gain <= 0:
                table.undefined.append(ds) if ds not in table.undefined else None
                continue
            for c in group:
                per = table.times.setdefault((c.method, ds), {f: [] for f in fractions})
                for f in fractions:
                    per[f].append(first_time_at(c, ref + f * (best - ref), better))
    return table


def budget_progress(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(method, dataset) -> the ``training_progress`` of each ok row run under a budget."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        prog = (r.get("info") or {}).get("training_progress") or {}
        if r.get("status") == "ok" and _finite(prog.get("budget_s")) is not None:
            out.setdefault((r["method"], r["dataset"]), []).append(prog)
    return out


def budget_entry(progress: list[dict[str, Any]]) -> str:
    """``"42% (1,680/4,000 steps)"``: mean fraction of the planned steps reached, over seeds."""
    frac = sum(p["fraction"] for p in progress) / len(progress)
    steps = sum(p["steps"] for p in progress) / len(progress)
    planned = sum(p["planned_steps"] for p in progress) / len(progress)
    return f"{100 * frac:.0f}% ({steps:,.0f}/{planned:,.0f} steps)"
