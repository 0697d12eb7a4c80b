"""Figures of samples and densities: 2-D samples beside the training data and
the true density (``fig_samples_2d``), log-density maps (``fig_density_2d``),
and for tabular sets marginal histograms and KDE contours of the most
correlated dimension pairs (``fig_tabular``). They read the run's artefacts
(``ReportData.artefacts``); Matplotlib's object API with the Agg canvas.

Example::

    fig_samples_2d(data.artefacts, ["8gaussians"], data.methods, data.styles, Path("fig.png"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.report.artefacts import RunData
from harness.report.styles import DENSITY_RANGE_NATS

DPI = 80
#: Points per scatter panel (the artefacts hold at most 2,000 samples).
SCATTER_POINTS = 2000
#: Points per KDE (contours) and grid points per side.
KDE_POINTS, KDE_GRID = 1000, 48
MARGINAL_DIMS, CONTOUR_PAIRS, HIST_BINS = 4, 2, 40
#: Sample metrics for the lower speed/quality panels, first available wins: (key, label).
TEST_FILL, TRAIN_COLOUR = "0.84", "0.15"


# ------------------------------------------------------------------ helpers


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _blank(ax, text: str = "") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.85")
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.5")


def _frame(ax, box: tuple[np.ndarray, np.ndarray] | None) -> None:
    _blank(ax)
    if box is not None:
        ax.set_xlim(box[0][0], box[1][0])
        ax.set_ylim(box[0][1], box[1][1])


def _scatter(ax, points: np.ndarray, colour: str) -> None:
    pts = points[:SCATTER_POINTS]
    ax.scatter(pts[:, 0], pts[:, 1], s=1.2, c=colour, alpha=0.5, linewidths=0, rasterized=True)


def _column_titles(axes, titles: list[str], colours: list[str]) -> None:
    for ax, title, colour in zip(axes, titles, colours, strict=False):
        ax.set_title(title, fontsize=9, color=colour, fontweight="bold")


def _row_label(ax, text: str, colour: str = "black") -> None:
    ax.set_ylabel(text, fontsize=9, color=colour, fontweight="bold")


# ------------------------------------------------------------------ 2-D figures


def fig_samples_2d(run: RunData, dsets: list[str], methods: list[str], styles: dict, path: Path) -> Path:
    """Training data, true density and each method's samples; rows are datasets."""
    titles = ["training data", "true density"] + methods
    nrows, ncols = len(dsets), len(titles)
    fig = new_figure(1.55 * ncols + 0.3, 1.55 * nrows + 0.45)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(
        left=0.3 / (1.55 * ncols + 0.3),
        right=0.995,
        bottom=0.005,
        top=1 - 0.4 / (1.55 * nrows + 0.45),
        wspace=0.05,
        hspace=0.05,
    )
    for i, ds in enumerate(dsets):
        box, splits = run.box(ds), run.splits(ds)
        for ax in axes[i]:
            _frame(ax, box)
        if splits is not None:
            _scatter(axes[i, 0], splits.train, TRAIN_COLOUR)
        else:
            _blank(axes[i, 0], "data unavailable")
        truth = run.true_log_density(ds)
        if truth is not None:
            xs, ys, lp = truth
            axes[i, 1].imshow(
                np.exp(lp - np.nanmax(lp)),
                origin="lower",
                extent=(xs[0], xs[-1], ys[0], ys[-1]),
                aspect="auto",
                cmap="Greys",
                interpolation="nearest",
            )
        else:
            _blank(axes[i, 1], "unknown")
        for j, m in enumerate(methods, start=2):
            art = run.artifact(m, ds)
            if art is not None and art["samples"].ndim == 2 and art["samples"].shape[1] == 2:
                _scatter(axes[i, j], art["samples"], styles[m][0])
            else:
                _blank(axes[i, j], _missing_text(run.status(m, ds), "no samples"))
        _row_label(axes[i, 0], ds)
    _column_titles(axes[0], titles, ["black", "black"] + [styles[m][0] for m in methods])
    fig.savefig(path, dpi=DPI)
    return path


Grid = tuple[np.ndarray, np.ndarray, np.ndarray]  # (xs, ys, log density (len(ys), len(xs)))


def _row_scale_top(truth: Grid | None, grids: list[Grid]) -> float:
    """Top of a row's colour scale: the true log density's maximum, else the median of the methods' maxima."""
    if truth is not None:
        return float(np.nanmax(truth[2]))
    maxima = [float(np.max(lp[np.isfinite(lp)])) for _, _, lp in grids if np.isfinite(lp).any()]
    return float(np.median(maxima)) if maxima else 0.0


def _log_density_image(ax, grid: Grid, top: float, cmap):
    """Draw log q clipped to [top - DENSITY_RANGE_NATS, top]; -inf shows as the bottom colour, NaN white."""
    xs, ys, lp = grid
    shown = np.ma.masked_invalid(np.where(np.isneginf(lp), top - 2 * DENSITY_RANGE_NATS, lp))
    return ax.imshow(
        shown,
        origin="lower",
        extent=(xs[0], xs[-1], ys[0], ys[-1]),
        aspect="auto",
        cmap=cmap,
        vmin=top - DENSITY_RANGE_NATS,
        vmax=top,
        interpolation="nearest",
    )


def fig_density_2d(run: RunData, dsets: list[str], methods: list[str], styles: dict, path: Path) -> Path | None:
    """True log density and every likelihood method's log q on the artefact grid; rows are datasets."""
    grids: dict[tuple[str, str], Grid] = {}
    for m in methods:
        for ds in dsets:
            art = run.artifact(m, ds)
            if art is not None and "grid_log_prob" in art:
                grids[(m, ds)] = (art["grid_x"], art["grid_y"], art["grid_log_prob"])
    lik_methods = [m for m in methods if any((m, ds) in grids for ds in dsets)]
    if not lik_methods:
        return None
    titles = ["true log density"] + lik_methods
    nrows, ncols = len(dsets), len(titles)
    width, height = 1.55 * ncols + 0.9, 1.55 * nrows + 0.45
    fig = new_figure(width, height)
    gs = fig.add_gridspec(
        nrows,
        ncols + 1,
        width_ratios=[1] * ncols + [0.06],
        left=0.3 / width,
        right=1 - 0.45 / width,
        bottom=0.005,
        top=1 - 0.4 / height,
        wspace=0.05,
        hspace=0.05,
    )
    cmap = _cmap("viridis")
    for i, ds in enumerate(dsets):
        axes = [fig.add_subplot(gs[i, j]) for j in range(ncols)]
        box, truth = run.box(ds), run.true_log_density(ds)
        row = [truth] + [grids.get((m, ds)) for m in lik_methods]
        top = _row_scale_top(truth, [g for g in row[1:] if g is not None])
        image = None
        for j, (ax, grid) in enumerate(zip(axes, row, strict=False)):
            _frame(ax, box)
            if grid is not None:
                image = _log_density_image(ax, grid, top, cmap)
            else:
                _blank(ax, "unknown" if j == 0 else _missing_text(run.status(lik_methods[j - 1], ds), "no grid"))
        _row_label(axes[0], ds)
        if i == 0:
            _column_titles(axes, titles, ["black"] + [styles[m][0] for m in lik_methods])
        cax = fig.add_subplot(gs[i, ncols])
        if image is not None:
            bar = fig.colorbar(image, cax=cax)
            bar.ax.tick_params(labelsize=7)
            bar.set_label("log density", fontsize=7)
        else:
            cax.set_axis_off()
    fig.savefig(path, dpi=DPI)
    return path


def _missing_text(status: str, when_ok: str) -> str:
    """What a panel without a result says: 'failed', ``when_ok`` (ok but no artefact) or 'not run'."""
    return {"failed": "failed", "ok": when_ok}.get(status, "not run")


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="white")


# ------------------------------------------------------------------ tabular figures


def correlated_pairs(x: np.ndarray, k: int = CONTOUR_PAIRS) -> list[tuple[int, int]]:
    """The ``k`` dimension pairs (i < j) of ``x`` (n, d) with the largest |correlation|, ties by index."""
    d = x.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(x, rowvar=False), nan=0.0)
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
    pairs.sort(key=lambda p: (-abs(corr[p]), p))
    return pairs[:k]


def chosen_dims(x: np.ndarray, k: int = MARGINAL_DIMS) -> list[int]:
    """Up to ``k`` dimensions: those of the most correlated pairs, in order, then the lowest indices."""
    order: list[int] = []
    for pair in correlated_pairs(x, k=x.shape[1] * (x.shape[1] - 1) // 2):
        order += [i for i in pair if i not in order]
        if len(order) >= k:
            break
    order += [i for i in range(x.shape[1]) if i not in order]
    return order[:k]


def _subsample(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.random.default_rng(0).choice(len(x), n, replace=False)]


def _kde_grid(points: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray | None:
    from scipy.stats import gaussian_kde

    pts = points[np.isfinite(points).all(axis=1)]
    try:
        kde = gaussian_kde(_subsample(pts, KDE_POINTS).T)
        return kde(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    except (np.linalg.LinAlgError, ValueError):  # singular or too few points
        return None


def fig_tabular(run: RunData, ds: str, methods: list[str], styles: dict, path: Path) -> Path | None:
    """Marginal histograms and pairwise KDE contours against the test data; rows are methods."""
    splits = run.splits(ds)
    if splits is None:
        return None
    test = splits.test
    dims, pairs = chosen_dims(test), correlated_pairs(test)
    ncols, nrows = len(dims) + len(pairs), len(methods)
    width, height = 1.9 * ncols + 0.4, 1.75 * nrows + 0.5
    fig = new_figure(width, height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=0.4 / width, right=0.995, bottom=0.01, top=1 - 0.45 / height, wspace=0.08, hspace=0.08)
    bins = {d: _bins(test[:, d]) for d in dims}
    test_hist = {d: np.histogram(test[:, d], bins=bins[d], density=True)[0] for d in dims}
    contour_grids = {}
    for a, b in pairs:
        lo, hi = _contour_box(test[:, [a, b]])
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], KDE_GRID), np.linspace(lo[1], hi[1], KDE_GRID))
        z = _kde_grid(test[:, [a, b]], gx, gy)
        levels = np.nanmax(z) * np.array([0.1, 0.3, 0.5, 0.7, 0.9]) if z is not None and np.nanmax(z) > 0 else None
        contour_grids[(a, b)] = (gx, gy, z, levels)
    for i, m in enumerate(methods):
        colour = styles[m][0]
        art = run.artifact(m, ds)
        samples = art["samples"] if art is not None else None
        usable = samples is not None and samples.ndim == 2 and samples.shape[1] == test.shape[1]
        for j, d in enumerate(dims):
            ax = axes[i, j]
            _blank(ax)
            ax.stairs(test_hist[d], bins[d], fill=True, color=TEST_FILL)
            if usable:
                h = np.histogram(samples[:, d], bins=bins[d], density=True)[0]
                ax.stairs(h, bins[d], color=colour, linewidth=1.3)
            ax.set_xlim(bins[d][0], bins[d][-1])
            ax.set_ylim(0, 1.4 * max(test_hist[d].max(), 1e-12))
        for j, (a, b) in enumerate(pairs, start=len(dims)):
            ax = axes[i, j]
            gx, gy, z, levels = contour_grids[(a, b)]
            _blank(ax)
            ax.set_xlim(gx[0, 0], gx[0, -1])
            ax.set_ylim(gy[0, 0], gy[-1, 0])
            if z is not None and levels is not None:
                ax.contour(gx, gy, z, levels=levels, colors="black", linewidths=0.7, linestyles="--", zorder=3)
                zs = _kde_grid(samples[:, [a, b]], gx, gy) if usable else None
                if zs is not None and np.nanmax(zs) > levels[0]:
                    ax.contour(gx, gy, zs, levels=levels, colors=colour, linewidths=1.1)
        if not usable:
            for ax in axes[i]:
                ax.text(
                    0.5,
                    0.5,
                    _missing_text(run.status(m, ds), "no samples"),
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=8,
                    color="0.3",
                    bbox={"facecolor": "white", "edgecolor": "0.7", "boxstyle": "round"},
                )
        _row_label(axes[i, 0], m, colour)
    _column_titles(axes[0], [f"dim {d}" for d in dims] + [f"dim {a} vs dim {b}" for a, b in pairs], ["black"] * ncols)
    fig.suptitle(
        f"{ds}: test data in grey (histograms) and dashed black (contours); samples in colour",
        fontsize=10,
        y=1 - 0.08 / height,
        va="top",
    )
    fig.savefig(path, dpi=DPI)
    return path


def _contour_box(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of a contour panel: the 1st-99th percentile box widened by 15% (tails are long in UCI data)."""
    lo, hi = np.percentile(x, 1, axis=0), np.percentile(x, 99, axis=0)
    pad = 0.15 * np.where(hi > lo, hi - lo, 1.0)
    return lo - pad, hi + pad


def _bins(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [0.5, 99.5])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, HIST_BINS + 1)
