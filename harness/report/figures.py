"""The figures of a run (``draw_all``), drawn from the one ``ReportData``: the
figures of samples and densities (``figures_samples``), speed against quality,
critical-difference diagrams and training curves. Every figure keys on the
report's method labels, so two profiles of a method are two methods here too.
Matplotlib's object API with the Agg canvas: no pyplot, no global backend switch.

Example::

    draw_all(build(rows, meta, run_dir), out_dir=run_dir / "figures")
"""

from __future__ import annotations

import math
import re
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from harness.report.curves import METRICS, all_curves, reference
from harness.report.data import ReportData
from harness.report.figures_samples import DPI, fig_density_2d, fig_samples_2d, fig_tabular, new_figure
from harness.report.figures_tuning import fig_tuning
from harness.report.summary import p_text, ranked_tables

#: Sample metrics for the lower speed/quality panels, first available wins: (key, label).
QUALITY_METRICS = (
    ("mmd2", "MMD² to test (lower is better)"),
    ("c2st_accuracy", "C2ST accuracy (0.5 is best)"),
    ("energy_distance", "energy distance (lower is better)"),
    ("sliced_wasserstein", "sliced W2 (lower is better)"),
)


def slug(name: str) -> str:
    """``name`` safe as part of a file name, one per name (a changed name gets a hash of it)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"
    return safe if safe == name else f"{safe}-{zlib.crc32(name.encode('utf-8', 'surrogateescape')):08x}"


# ------------------------------------------------------------------ speed versus quality


def _stats(df: pd.DataFrame, method: str, dataset: str, column: str) -> tuple[float, float] | None:
    """(mean, std) of ``column`` over the ok seeds of a cell, or None."""
    if column not in df.columns:
        return None
    sub = df[(df.method == method) & (df.dataset == dataset) & (df.status == "ok")]
    vals = pd.to_numeric(sub[column], errors="coerce").dropna().to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return None
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0


def _quality_metric(df: pd.DataFrame) -> tuple[str, str] | None:
    for key, label in QUALITY_METRICS:
        if f"metrics.{key}" in df.columns and df[f"metrics.{key}"].notna().any():
            return key, label
    return None


def _speed_panel(ax, df: pd.DataFrame, ds: str, methods: list[str], styles: dict, column: str) -> int:
    """One point per method with ± std bars over seeds; returns how many were drawn."""
    bars_x, bars_y, colours = [], [], []
    for m in methods:
        x, y = _stats(df, m, ds, "timings.samples_per_s"), _stats(df, m, ds, column)
        if x is None or y is None or x[0] <= 0:
            continue
        colour, marker = styles[m]
        ax.plot(
            [x[0]],
            [y[0]],
            marker=marker,
            color=colour,
            ms=6,
            linestyle="",
            markeredgecolor="black",
            markeredgewidth=0.4,
            zorder=3,
        )
        low = max(x[0] - x[1], 0.1 * x[0])  # keep the bar positive on the log axis
        bars_x.append(((low, y[0]), (x[0] + x[1], y[0])))
        bars_y.append(((x[0], y[0] - y[1]), (x[0], y[0] + y[1])))
        colours.append(colour)
    if colours:
        from matplotlib.collections import LineCollection

        ax.add_collection(LineCollection(bars_x + bars_y, colors=colours * 2, linewidths=0.9, zorder=2), autolim=False)
        xs = np.array([p for seg in bars_x for p, _ in seg])
        ys = np.array([q for seg in bars_y for _, q in seg])
        ax.set_xlim(xs.min() / 2, xs.max() * 2)
        pad = 0.08 * (ys.max() - ys.min()) or 0.05 * abs(ys.max()) or 0.05
        ax.set_ylim(ys.min() - pad, ys.max() + pad)
    return len(colours)


def fig_speed_quality(data: ReportData, path: Path) -> Path | None:
    """Draw ``speed_quality_figure`` into ``path``; None when it has no point."""
    fig = speed_quality_figure(data)
    if fig is None:
        return None
    fig.savefig(path, dpi=DPI)
    return path


def speed_quality_figure(data: ReportData) -> Figure | None:
    """Sampling throughput against test log-likelihood (top) and a sample metric (bottom), per dataset:
    one point per report method (a profile of a method is its own point). None without any point."""
    rows_df, dsets, methods, styles = data.df, data.datasets, data.methods, data.styles
    quality = _quality_metric(rows_df)
    if "timings.samples_per_s" not in rows_df.columns:
        return None
    ncols = min(4, len(dsets))
    blocks = math.ceil(len(dsets) / ncols)
    width, height = 3.5 * ncols, 5.2 * blocks + 0.9
    fig = new_figure(width, height)
    outer = fig.add_gridspec(
        blocks,
        ncols,
        left=0.7 / width,
        right=0.99,
        bottom=0.45 / height,
        top=1 - 0.85 / height,
        wspace=0.38,
        hspace=0.32,
    )
    total = 0
    for k, ds in enumerate(dsets):
        inner = outer[k // ncols, k % ncols].subgridspec(2, 1, hspace=0.08)
        top = fig.add_subplot(inner[0])
        bottom = fig.add_subplot(inner[1], sharex=top)
        for ax, column, label in (
            (top, "metrics.test_loglik", "test log-likelihood (nats)"),
            (bottom, f"metrics.{quality[0]}" if quality else "", quality[1] if quality else ""),
        ):
            n = _speed_panel(ax, rows_df, ds, methods, styles, column) if column else 0
            total += n
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", color="0.9", linewidth=0.6)
            ax.set_ylabel(label, fontsize=8)
            if not n:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.5")
        top.tick_params(labelbottom=False)
        top.set_title(ds, fontsize=10, fontweight="bold")
        bottom.set_xlabel("samples / s (log scale)", fontsize=8)
    if not total:
        return None
    handles = [
        Line2D(
            [],
            [],
            marker=styles[m][1],
            color=styles[m][0],
            linestyle="",
            markersize=7,
            markeredgecolor="black",
            markeredgewidth=0.4,
            label=m,
        )
        for m in methods
    ]
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(len(methods), 6),
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.02 / height),
    )
    return fig


# ------------------------------------------------------------------ critical-difference diagrams


#: Layout of a critical-difference panel, in data units of the y axis (one unit is CD_UNIT_IN inches).
CD_UNIT_IN, CD_ROW, CD_CLIQUE = 0.2, 0.8, 0.35


def _cd_extent(ranking: Any) -> tuple[float, float]:
    """(bottom y, y of the first label row) of a critical-difference panel."""
    first = -0.6 - CD_CLIQUE * len(ranking.cliques())
    return first - CD_ROW * (math.ceil(len(ranking.methods) / 2) - 1) - 0.5, first


def _cd_panel(ax, label: str, ranking: Any, styles: dict) -> None:
    """One critical-difference diagram: rank axis on top, the CD bar above it, clique bars below it,
    and each method's name joined to its average rank (better half on the left)."""
    avg = ranking.average
    order = sorted(ranking.methods, key=lambda m: (avg[m], m))
    k = len(order)
    lo_x, hi_x = 0.3, 0.7

    def at(rank: float) -> float:
        return lo_x + (hi_x - lo_x) * (rank - 1) / max(k - 1, 1)

    bottom, first = _cd_extent(ranking)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom, 1.35)
    ax.axis("off")
    ax.plot([at(1), at(k)], [0, 0], color="black", lw=1.2)
    for r in range(1, k + 1):
        ax.plot([at(r)] * 2, [0, 0.2], color="black", lw=1)
        ax.text(at(r), 0.28, str(r), ha="center", va="bottom", fontsize=7)
    if math.isfinite(ranking.cd):
        span = min(ranking.cd, k - 1)
        ax.plot([at(1), at(1 + span)], [1.05, 1.05], color="black", lw=1.5)
        for x in (at(1), at(1 + span)):
            ax.plot([x, x], [0.95, 1.15], color="black", lw=1)
        ax.text(at(1 + span) + 0.01, 1.05, f"CD = {ranking.cd:.2f}", va="center", fontsize=7)
    for j, group in enumerate(ranking.cliques()):
        y = -0.3 - CD_CLIQUE * j
        ax.plot(
            [at(avg[group[0]]) - 0.006, at(avg[group[-1]]) + 0.006],
            [y, y],
            color="black",
            lw=3.5,
            solid_capstyle="butt",
        )
    half = math.ceil(k / 2)
    for i, m in enumerate(order):
        left = i < half
        y = first - CD_ROW * (i if left else k - 1 - i)
        x_end = lo_x - 0.02 if left else hi_x + 0.02
        colour = styles.get(m, ("#555", "o"))[0]
        ax.plot([at(avg[m]), at(avg[m]), x_end], [0, y, y], color=colour, lw=1.1)
        ax.text(
            x_end + (-0.01 if left else 0.01),
            y,
            f"{m} ({avg[m]:.2f})" if left else f"({avg[m]:.2f}) {m}",
            ha="right" if left else "left",
            va="center",
            fontsize=8,
        )
    p = ranking.friedman.p_f if ranking.friedman is not None else math.nan
    ax.set_title(f"{label}: {len(ranking.datasets)} datasets, Friedman p {p_text(p)}", fontsize=9)


def fig_critical_difference(panels: list[tuple[str, Any]], styles: dict, path: Path) -> Path | None:
    """Critical-difference diagrams of ``panels`` [(metric label, comparison.Ranking)], two columns;
    only rankings of two or more methods on two or more datasets. None when there is none."""
    panels = [(label, r) for label, r in panels if r is not None and r.usable]
    if not panels:
        return None
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    spans = [max(1.35 - _cd_extent(r)[0] for _, r in panels[i * ncols : (i + 1) * ncols]) for i in range(nrows)]
    title_in = 0.45
    height = sum(spans) * CD_UNIT_IN + nrows * title_in
    fig = new_figure(7.0 * ncols, height)
    grid = fig.add_gridspec(
        nrows,
        ncols,
        height_ratios=spans,
        left=0.01,
        right=0.99,
        bottom=0.1 / height,
        top=1 - title_in * 0.8 / height,
        hspace=title_in * nrows / (sum(spans) * CD_UNIT_IN),
        wspace=0.05,
    )
    for i, (label, ranking) in enumerate(panels):
        _cd_panel(fig.add_subplot(grid[i // ncols, i % ncols]), label, ranking, styles)
    fig.savefig(path, dpi=DPI)
    return path


# ------------------------------------------------------------------ quality against training time


def fig_training_curves(
    rows: list[dict[str, Any]], dsets: list[str], methods: list[str], styles: dict, path: Path
) -> Path | None:
    """Validation quality at each checkpoint against training time (log x), per dataset; None without curves."""
    curves = all_curves(rows)
    metrics = [m for m in METRICS if any(c.metric == m for c in curves)]
    dsets = [ds for ds in dsets if any(c.dataset == ds for c in curves)]
    if not metrics or not dsets:
        return None
    width, height = 3.4 * len(dsets) + 0.8, 2.8 * len(metrics) + 1.0
    fig = new_figure(width, height)
    grid = fig.add_gridspec(
        len(metrics),
        len(dsets),
        left=0.75 / width,
        right=0.99,
        bottom=0.5 / height,
        top=1 - 0.75 / height,
        wspace=0.3,
        hspace=0.12,
    )
    shown = set()
    for j, ds in enumerate(dsets):
        seed = min(c.seed for c in curves if c.dataset == ds)
        for i, metric in enumerate(metrics):
            ax = fig.add_subplot(grid[i, j])
            group = [c for c in curves if c.dataset == ds and c.seed == seed and c.metric == metric]
            for c in sorted(group, key=lambda c: methods.index(c.method) if c.method in methods else len(methods)):
                colour, marker = styles.get(c.method, ("0.5", "o"))
                ax.plot(c.times, c.values, color=colour, marker=marker, ms=3.5, lw=1.2)
                shown.add(c.method)
            ref = reference(rows, ds, seed, metric)
            if ref is not None:
                ax.axhline(ref, color="0.55", lw=0.9, ls="--", zorder=0)
            _curve_axes(ax, group, ref, metric, METRICS[metric][1])
            if not group:
                ax.text(0.5, 0.5, "no curve", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.5")
            if i == 0:
                ax.set_title(ds, fontsize=10, fontweight="bold")
            if j == 0:
                ax.set_ylabel(METRICS[metric][0].replace(" (", "\n("), fontsize=8)
            if i == len(metrics) - 1:
                ax.set_xlabel("training seconds (log scale)", fontsize=8)
    handles = [
        Line2D([], [], marker=styles[m][1], color=styles[m][0], lw=1.2, markersize=5, label=m)
        for m in methods
        if m in shown
    ]
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(len(handles), 6),
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, 1 - 0.02 / height),
    )
    fig.savefig(path, dpi=DPI)
    return path


def _curve_axes(ax, group: list, ref: float | None, metric: str, better: str) -> None:
    """Log time axis; log-likelihood limits from the reference to the best value (early checkpoints far
    below the reference are clipped); symmetric-log scale for the energy statistic."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", color="0.9", linewidth=0.6)
    values = [v for c in group for v in c.values]
    if not values:
        return
    if better == "lower":
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(min(0.0, min(values)), 1.5 * max(values + ([ref] if ref is not None else [])))
        return
    top = max(values + ([ref] if ref is not None else []))
    finals = [c.values[-1] for c in group]
    low = min(values) if ref is None else min(max(min(values), ref - (top - ref)), min(finals), ref)
    pad = 0.08 * (top - low) or 0.1
    ax.set_ylim(low - pad, top + pad)


# ------------------------------------------------------------------ all figures


def draw_all(data: ReportData, out_dir: Path | str) -> list[Path]:
    """Draw every figure of the report data into ``out_dir``; returns the paths written, in a fixed order.

    Stale ``fig_*.png`` files of earlier reports are removed. A figure that
    fails to draw is reported on stderr and skipped.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run, methods, dsets, styles = data.artefacts, data.methods, data.datasets, data.styles
    dims = {ds: run.dim(ds) for ds in dsets}
    flat = [ds for ds in dsets if dims[ds] == 2]
    tabular = [ds for ds in dsets if dims[ds] is not None and dims[ds] > 2]
    jobs: list[tuple[str, Callable[[Path], Path | None]]] = []
    if flat:
        jobs.append(("fig_samples_2d", lambda p: fig_samples_2d(run, flat, methods, styles, p)))
        jobs.append(("fig_density_2d", lambda p: fig_density_2d(run, flat, methods, styles, p)))
    for ds in tabular:
        jobs.append((f"fig_tabular_{slug(ds)}", lambda p, ds=ds: fig_tabular(run, ds, methods, styles, p)))
    jobs.append(("fig_speed_quality", lambda p: fig_speed_quality(data, p)))
    jobs.append(
        (
            "fig_critical_difference",
            lambda p: fig_critical_difference([(t.spec.label, t.ranking) for t in ranked_tables(data)], styles, p),
        )
    )
    jobs.append(("fig_training_curves", lambda p: fig_training_curves(data.rows, dsets, methods, styles, p)))
    jobs.append(("fig_tuning", lambda p: fig_tuning(data.studies, styles, p)))
    written = []
    for stem, draw in jobs:
        try:
            path = draw(out_dir / f"{stem}.png")
        except Exception as e:  # one broken figure must not cost the others
            print(f"warning: figure {stem} not drawn: {type(e).__name__}: {e}", file=sys.stderr)
            path = None
        if path is not None:
            written.append(path)
    keep = {p.name for p in written}
    for old in out_dir.glob("fig_*.png"):
        if old.name not in keep:
            old.unlink()
    return written
