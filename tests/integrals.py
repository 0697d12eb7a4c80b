"""Numerical integrals of densities given as log-density functions, for the contract tests.

``grid_integral`` (d = 1, 2): midpoint rule on a box, with the spread of its 2^d interleaved
coarser sub-grids as an error gauge for smooth densities; ``refined_grid_integral`` halves the
spacing until two successive grids agree (densities with jumps too). ``importance_integral``
(any d): Monte-Carlo with a widened Gaussian proposal fitted to samples of the density, with
its standard error.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LogDensity = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class GridIntegral:
    """A midpoint-rule integral over a box.

    value: the integral of integrand(log_prob) on the full grid (spacing h per axis).
    spread: max - min of the 2^d integrals on the interleaved sub-grids of spacing 2h. For a
        smooth density that vanishes at the box's edge each sub-grid is itself a valid rule, so
        the spread bounds the discretisation error at 2h, and the full grid's is smaller.
    edge: the part of the integral in the outermost ring of cells: near 0 when the box holds the density.
    """

    value: float
    spread: float
    edge: float


def density(log_p: np.ndarray) -> np.ndarray:
    """The default integrand: p = exp(log p)."""
    return np.exp(log_p)


def p_log_p(log_p: np.ndarray) -> np.ndarray:
    """p log p, with 0 where p = 0: its integral is minus the entropy."""
    finite = np.isfinite(log_p)
    return np.where(finite, np.exp(log_p) * np.where(finite, log_p, 0.0), 0.0)


def grid_integral(
    log_prob: LogDensity,
    low: np.ndarray,
    high: np.ndarray,
    cells: int,
    integrand: Callable[[np.ndarray], np.ndarray] = density,
) -> GridIntegral:
    """Integrate ``integrand(log_prob(x))`` over the box [low, high] (each of length d, d in {1, 2}).

    ``cells`` (even) cells per axis; ``log_prob`` maps points (m, d) to (m,) log densities.
    """
    low, high = np.atleast_1d(np.asarray(low, float)), np.atleast_1d(np.asarray(high, float))
    d = len(low)
    if d not in (1, 2) or cells % 2:
        raise ValueError(f"grid_integral needs d in (1, 2) and an even cell count, got d={d}, cells={cells}")
    h = (high - low) / cells
    axes = [low[i] + h[i] * (np.arange(cells) + 0.5) for i in range(d)]
    points = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    values = integrand(log_prob(points)).reshape((cells,) * d)
    volume = float(np.prod(h))
    subs = [
        values[tuple(slice(o, None, 2) for o in offset)].sum() * volume * 2**d
        for offset in itertools.product((0, 1), repeat=d)
    ]
    inner = values[(slice(1, -1),) * d].sum() if cells > 2 else 0.0
    return GridIntegral(
        value=float(values.sum() * volume),
        spread=float(max(subs) - min(subs)),
        edge=float((values.sum() - inner) * volume),
    )


def refined_grid_integral(
    log_prob: LogDensity,
    low: np.ndarray,
    high: np.ndarray,
    *,
    cells: int = 200,
    max_cells: int = 1600,
    agree: float = 5e-3,
    integrands: Sequence[Callable[[np.ndarray], np.ndarray]] = (density,),
) -> list[tuple[float, float]]:
    """(integral, change at the last halving of the spacing) per integrand of log p, doubling ``cells``
    until two successive grids agree within ``agree`` for every integrand or ``max_cells`` is reached
    (log_prob is evaluated once per grid). The midpoint rule converges at least linearly in h when the
    density has jumps (and much faster when smooth), so the finer value's error is at most about the
    last change."""

    def integrals(cells: int) -> np.ndarray:
        cache: list[np.ndarray] = []

        def once(points: np.ndarray) -> np.ndarray:
            if not cache:
                cache.append(log_prob(points))
            return cache[0]

        return np.array([grid_integral(once, low, high, cells, f).value for f in integrands])

    previous = integrals(cells)
    while True:
        cells *= 2
        values = integrals(cells)
        change = np.abs(values - previous)
        if (change < agree).all() or cells >= max_cells:
            return [(float(v), float(c)) for v, c in zip(values, change, strict=True)]
        previous = values


def importance_integral(
    log_prob: LogDensity, rows: np.ndarray, n: int, seed: int, widen: float = 2.0
) -> tuple[float, float]:
    """Monte-Carlo estimate of the integral of exp(log_prob) over R^d, and its standard error.

    Proposal q = N(mean, widen^2 cov) of ``rows`` (m, d), samples of the density: wider than the
    density's bulk, so the weights p/q stay bounded there. Returns (mean of p/q, its standard error).
    """
    rows = np.asarray(rows, dtype=np.float64)
    d = rows.shape[1]
    mean = rows.mean(axis=0)
    cov = np.atleast_2d(np.cov(rows, rowvar=False)) * widen**2 + 1e-12 * np.eye(d)
    chol = np.linalg.cholesky(cov)
    z = np.random.default_rng(seed).standard_normal((n, d))
    x = mean + z @ chol.T
    log_q = -0.5 * (z**2).sum(axis=1) - np.log(np.diag(chol)).sum() - 0.5 * d * math.log(2 * math.pi)
    w = np.exp(log_prob(x) - log_q)
    return float(w.mean()), float(w.std(ddof=1) / math.sqrt(n))
