"""The tuning figure: the best validation score so far against trials and against CPU-seconds, one
line per method (per seed where a dataset is tuned per seed), one column per dataset.

Example::

    fig_tuning(data.studies, data.styles, run_dir / "figures" / "fig_tuning.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from harness.cells import TUNED_SUFFIX
from harness.report.figures_samples import DPI, new_figure

#: Row label of each objective's panels.
OBJECTIVE_LABELS = {
    "val_loglik": "best validation log-lik.\n(nats, higher is better)",
    "val_energy": "best validation energy dist.\n(lower is better)",
}


def _style(row: str, styles: dict[str, tuple[str, str]]) -> tuple[str, str]:
    return styles.get(f"{row} {TUNED_SUFFIX}") or styles.get(row) or ("0.4", "o")


def fig_tuning(studies: list[dict[str, Any]], styles: dict[str, tuple[str, str]], path: Path) -> Path | None:
    """Best-so-far validation objective per study against trial number (top) and cumulative CPU-seconds
    (bottom, log scale), a pair of rows per objective; a study without a finished trial has nothing to
    draw and gets no panel; None without any."""
    studies = [s for s in studies if any(h.get("best") is not None for h in s["history"])]
    if not studies:
        return None
    dsets = list(dict.fromkeys(s["dataset"] for s in studies))
    objectives = [o for o in OBJECTIVE_LABELS if any(s["objective"] == o for s in studies)]
    rows = [(o, x) for o in objectives for x in ("trial", "cpu")]
    width, height = 3.4 * len(dsets) + 0.9, 2.4 * len(rows) + 1.0
    fig = new_figure(width, height)
    grid = fig.add_gridspec(
        len(rows), len(dsets), left=0.85 / width, right=0.99, bottom=0.5 / height, top=1 - 0.75 / height, hspace=0.45
    )
    shown: dict[str, tuple[str, str]] = {}
    for j, ds in enumerate(dsets):
        for i, (objective, x_kind) in enumerate(rows):
            ax = fig.add_subplot(grid[i, j])
            for s in (s for s in studies if s["dataset"] == ds and s["objective"] == objective):
                xs, ys = _best_so_far(s["history"], x_kind)
                if len(xs):
                    colour, marker = _style(s["row"], styles)
                    ax.step(xs, ys, where="post", color=colour, lw=1.2, marker=marker, ms=3)
                    shown[s["row"]] = (colour, marker)
            if x_kind == "cpu":
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, lw=0.5)
            if i == 0:
                ax.set_title(ds, fontsize=10, fontweight="bold")
            if j == 0:
                ax.set_ylabel(OBJECTIVE_LABELS[objective], fontsize=8)
            ax.set_xlabel("trial" if x_kind == "trial" else "cumulative CPU seconds (log scale)", fontsize=8)
    handles = [Line2D([], [], color=c, marker=m, lw=1.2, markersize=5, label=row) for row, (c, m) in shown.items()]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
    fig.savefig(path, dpi=DPI)
    return path


def _best_so_far(history: list[dict[str, Any]], x_kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, best value so far) at every trial after the first completed one; x is the trial number or the
    CPU-seconds spent up to and including the trial."""
    xs, ys, spent = [], [], 0.0
    for h in history:
        spent += h.get("cpu_s") or 0.0
        if h.get("best") is not None:
            xs.append(h["number"] if x_kind == "trial" else max(spent, 1e-3))
            ys.append(h["best"])
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
