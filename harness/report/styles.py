"""How the report names and draws things: figure captions (``caption``) and one
colour and marker per method, the same in every figure and table
(``method_styles``).

Example::

    colour, marker = method_styles(["maf", "kde"])["maf"]
"""

from __future__ import annotations

import methods

CD_FIGURE = "fig_critical_difference"


#: Width of the colour scale of log-density maps, in nats below the row's maximum.
DENSITY_RANGE_NATS = 10.0
#: What each figure file (``<stem>.png``) shows: its caption in the reports.
CAPTIONS = {
    "fig_samples_2d": (
        "Rows are the 2-D datasets. Columns: 2,000 training points, the true density where it is "
        "known (blank otherwise), then 2,000 samples of each method (lowest seed). Panels in a row "
        "share the dataset's axes."
    ),
    "fig_density_2d": (
        "Log-density maps on a 100 × 100 grid over each dataset's box: the true log density first "
        "(where known), then every method with a likelihood (lowest seed). Each row's colour scale "
        f"spans the {DENSITY_RANGE_NATS:g} nats below its maximum (the true density's when known); "
        "lower values are clipped to the darkest colour."
    ),
    "fig_speed_quality": (
        "One panel pair per dataset: sampling throughput (samples/s, log scale) against test "
        "log-likelihood (top; methods with a likelihood) and against a sample-quality metric "
        "(bottom; every method). One point per method; error bars are ± one standard deviation "
        "over seeds."
    ),
    "fig_critical_difference": (
        "Critical-difference diagrams (Demšar 2006), one per metric: each method's "
        "average rank across the ranked datasets (1 = best, on the left). A thick bar joins "
        "methods whose average ranks differ by less than the Nemenyi critical difference "
        "(CD, drawn above the axis; α = 0.05): the test cannot tell them apart. The title "
        "gives the number of datasets and the Friedman (Iman-Davenport) p-value."
    ),
    "fig_tuning": (
        "Tuning: the best validation score so far of each study against its trials (top of each pair) "
        "and against the CPU seconds its trials used (bottom, log scale), one line per method (one per "
        "seed where a dataset is tuned per seed); methods without a likelihood are scored by the "
        "validation energy distance, in panels of their own."
    ),
    "fig_training_curves": (
        "Quality against training time: one column per dataset, one curve per method (lowest "
        "seed), one point per checkpoint; training seconds on a log scale, checkpoint "
        "evaluations excluded. Top: validation log-likelihood (nats, higher is better); bottom: "
        "energy statistic of samples against validation rows (lower is better, symmetric-log "
        "scale) for checkpoints without a likelihood (sample-only methods; the supervised "
        "generator's G before its student). Dashed grey: the Gaussian reference; "
        "log-likelihoods far below it are cut off. "
        "Methods without checkpoints have no curve."
    ),
    "fig_tabular": (
        "Rows are methods. Left: marginal histograms of up to four dimensions (filled grey: test "
        "data, colour: samples). Right: 2-D KDE contours of the test data's two most correlated "
        "dimension pairs (dashed black: test data, colour: samples; same levels). Dimensions are "
        "0-based column indices; samples from the lowest seed."
    ),
}


def caption(stem: str) -> str:
    """The caption of figure file ``stem`` (e.g. ``fig_tabular_miniboone-small``)."""
    if stem.startswith("fig_tabular_"):
        return f"Dataset {stem.removeprefix('fig_tabular_')}. " + CAPTIONS["fig_tabular"]
    return CAPTIONS.get(stem, "")


#: Styles of methods that declare none (``Method.plot_style``), handed out in sorted order.
EXTRA_COLOURS = (
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
)
EXTRA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "*", "p")


def method_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per method, the same in every figure and table: a registered method's own
    ``plot_style``; the others (variants, methods that declare none) the extras in sorted order."""
    styles = {m: style for m in names if (style := _declared_style(m)) is not None}
    others = sorted(m for m in names if m not in styles)
    for i, m in enumerate(others):
        styles[m] = (EXTRA_COLOURS[i % len(EXTRA_COLOURS)], EXTRA_MARKERS[i % len(EXTRA_MARKERS)])
    return styles


def _declared_style(name: str) -> tuple[str, str] | None:
    """The ``plot_style`` (colour, marker) of the method registered as exactly ``name``, or None."""
    try:
        style = getattr(methods.get(name), "plot_style", None)
    except Exception:  # a variant, a profile label or an unavailable method
        return None
    return tuple(style) if style else None
