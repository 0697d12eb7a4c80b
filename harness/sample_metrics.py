"""Sample-quality metrics: how far model samples are from held-out data.

Every two-sample metric is a pure function ``metric(reference, model, *, seed)
-> float`` on float arrays ``reference`` (n, d) (held-out test rows) and
``model`` (m, d) (model samples). They run on CPU (torch or numpy), chunk
pairwise work so memory stays bounded (about 4M matrix entries at a time), and
are deterministic for a given seed.

=====================  ====================================================
``mmd2``               unbiased MMD^2, Gaussian kernel, median heuristic
``energy_distance``    2E|X-Y| - E|X-X'| - E|Y-Y'| (unbiased)
``sliced_wasserstein`` sliced Wasserstein-2 distance (POT), 200 projections
``c2st_accuracy``      classifier two-sample test accuracy (0.5 is ideal)
``marginal_kl``        mean per-dimension KL(data || model) of 1-D KDEs
``histogram_tv``       2-D only: TV between a histogram and a known density
=====================  ====================================================

``compute_sample_metrics`` runs the table ``SAMPLE_METRICS`` on one pair of
samples and isolates failures; ``DENSITY_METRICS`` describes ``histogram_tv``.

Torch work runs single-threaded (``harness.toolkit.distances.TORCH_THREADS``). Cost and
design measurements: docs/sample-metrics.md.

Example::

    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + 1.0
    >>> energy_distance(x, y, seed=0) > 0.3
    True

References: Gretton et al., "A kernel two-sample test", JMLR 2012 (MMD);
Szekely & Rizzo, "Energy statistics", J. Stat. Plan. Inference 2013;
Bonneel et al., J. Math. Imaging Vis. 2015 (sliced Wasserstein);
Lopez-Paz & Oquab, "Revisiting classifier two-sample tests", ICLR 2017;
Liu et al., arXiv 2310.14458 (per-dimension marginal KL with
``gaussian_kde(bw_method=0.2)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from harness.toolkit.distances import (
    TORCH_THREADS,
    centred_float32,
    check_pair,
    check_samples,
    cross_sum,
    energy_distance,
    torch_threads,
    within_sum,
)
from harness.toolkit.standardise import Standardiser

MEDIAN_SUBSAMPLE = 2000  # pooled points used for the median heuristic
KDE_BANDWIDTH = 0.2  # scipy gaussian_kde bw_method of the paper
KDE_GRID = 1000
KL_FLOOR = 1e-10  # added to normalised gridded densities before the log


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of ``x`` drawn without replacement (order kept)."""
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def median_bandwidth(reference: np.ndarray, model: np.ndarray, *, seed: int = 0) -> float:
    """Median heuristic h: median pairwise Euclidean distance of the pooled sample.

    Computed on a seeded subsample of at most 2,000 pooled points; falls back to
    the mean positive distance (then to 1.0) when the median is 0.
    """
    from scipy.spatial.distance import pdist

    ref, mod = check_pair(reference, model, min_rows=1)
    pooled = _subsample(np.concatenate([ref, mod]), MEDIAN_SUBSAMPLE, np.random.default_rng(seed))
    dists = pdist(pooled)
    h = float(np.median(dists)) if dists.size else 0.0
    if h > 0:
        return h
    positive = dists[dists > 0]
    return float(positive.mean()) if positive.size else 1.0


# ------------------------------------------------------------------ metrics


def mmd2(reference: np.ndarray, model: np.ndarray, *, seed: int = 0, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy (Gretton et al. 2012, eq. 3).

    k(x, y) = exp(-|x - y|^2 / (2 h^2)) with h from ``median_bandwidth``
    (unless ``bandwidth`` is given). Returns
    mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j);
    it can be slightly negative when the laws agree. Pairwise terms are computed
    in float32 (centred data) and summed in float64.

    reference (n, d), model (m, d) -> float. Lower is better; 0 is ideal.
    """
    ref, mod = check_pair(reference, model)
    h = median_bandwidth(ref, mod, seed=seed) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {h}")
    x, y = centred_float32(ref, mod)
    scale = -1.0 / (2.0 * h * h)
    kernel = lambda sq: sq.mul_(scale).exp_()  # noqa: E731 - in-place on a scratch block
    n, m = len(x), len(y)
    with torch_threads(TORCH_THREADS):
        kxx = within_sum(x, kernel) / (n * (n - 1))
        kyy = within_sum(y, kernel) / (m * (m - 1))
        kxy = cross_sum(x, y, kernel) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def sliced_wasserstein(reference: np.ndarray, model: np.ndarray, *, seed: int = 0, n_projections: int = 200) -> float:
    """Sliced Wasserstein-2 *distance* via POT (Bonneel et al. 2015).

    ``ot.sliced_wasserstein_distance(..., p=2)`` returns
    (mean over projections theta of W_2^2(theta.X, theta.Y))^(1/2), i.e. the
    distance, not its square; directions are uniform on the sphere, seeded.
    For N(m1, s^2 I) vs N(m2, s^2 I) in d dimensions it equals |m1 - m2| / sqrt(d)
    (up to projection noise).

    reference (n, d), model (m, d) -> float. Lower is better; 0 is ideal.
    """
    import ot

    ref, mod = check_pair(reference, model, min_rows=1)
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    return float(ot.sliced_wasserstein_distance(ref, mod, n_projections=int(n_projections), seed=int(seed), p=2))


# ------------------------------------------------------------------- C2ST


@dataclass(frozen=True)
class C2STConfig:
    """The classifier of ``c2st_accuracy``.

    An MLP in -> hidden -> hidden -> 1 (ReLU), one per fold, all folds trained
    at once as a batched ensemble: Adam at ``lr`` with cosine decay to 0 over
    ``steps`` minibatch steps of ``batch`` rows. When d <= ``fourier_max_dim``
    the z-scored input z is extended by random Fourier features
    [z, sin(zB), cos(zB)], B (d, fourier_features) ~ N(0, fourier_scale^2 / d).

    Why the Fourier features only in low d: docs/sample-metrics.md.
    """

    folds: int = 5
    hidden: int = 64
    steps: int = 400
    batch: int = 256
    lr: float = 1e-2
    fourier_features: int = 32
    fourier_scale: float = 3.0
    fourier_max_dim: int = 4


def _fold_indices(n_per_class: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(folds, 2 * n_per_class // folds) rows into the stacked [class 0; class 1] array.

    Each fold holds the same number of rows of each class; a remainder of at
    most folds - 1 rows per class is dropped.
    """
    per_fold = n_per_class // folds
    parts = [
        rng.permutation(n_per_class)[: per_fold * folds].reshape(folds, per_fold) + offset
        for offset in (0, n_per_class)
    ]
    return np.concatenate(parts, axis=1)


def _init_ensemble(k: int, sizes: list[int], gen: torch.Generator) -> list[torch.Tensor]:
    """Weights and biases of ``k`` MLPs, uniform(+-1/sqrt(fan_in)) as torch.nn.Linear."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        bound = 1.0 / math.sqrt(fan_in)
        for shape in ((k, fan_in, fan_out), (k, 1, fan_out)):
            params.append(((torch.rand(shape, generator=gen) * 2 - 1) * bound).requires_grad_())
    return params


def _ensemble_logits(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x (k, b, d) -> logits (k, b) of the k MLPs."""
    h = x
    for i in range(0, len(params), 2):
        h = torch.baddbmm(params[i + 1], h, params[i])
        if i + 2 < len(params):
            h = torch.relu(h)
    return h.squeeze(-1)


def _classifier_inputs(z: torch.Tensor, config: C2STConfig, gen: torch.Generator) -> torch.Tensor:
    """z (N, d) itself, or with random Fourier features appended when d is small."""
    d = z.shape[1]
    if d > config.fourier_max_dim or config.fourier_features < 1:
        return z
    freqs = torch.randn(d, config.fourier_features, generator=gen) * (config.fourier_scale / math.sqrt(d))
    phase = z @ freqs
    return torch.cat([z, torch.sin(phase), torch.cos(phase)], dim=1)


def c2st_accuracy(
    reference: np.ndarray, model: np.ndarray, *, seed: int = 0, config: C2STConfig = C2STConfig()
) -> float:
    """Classifier two-sample test: mean held-out accuracy of k-fold cross-validation.

    Both samples are z-scored with the reference's mean and std, the larger is
    subsampled to the size of the smaller (balanced classes, labels 0 / 1), and
    a small MLP (``C2STConfig``: 2 hidden layers of 64, 400 Adam steps of 256
    rows, Fourier input features when d <= 4) is trained per fold (5 folds).
    0.5 means indistinguishable (ideal); 1.0 perfectly separable. Deterministic
    for a given seed (single-threaded torch).

    reference (n, d), model (m, d) -> float in [0, 1].
    """
    ref, mod = check_pair(reference, model)
    if config.folds < 2:
        raise ValueError(f"c2st needs at least 2 folds, got {config.folds}")
    rng = np.random.default_rng(seed)
    n_per_class = min(len(ref), len(mod))
    if n_per_class < config.folds:
        raise ValueError(f"c2st needs at least {config.folds} rows per sample, got {n_per_class}")
    scale = Standardiser(ref)  # the reference's units, as the classifier sees them
    data = np.concatenate([_subsample(ref, n_per_class, rng), _subsample(mod, n_per_class, rng)])
    y = torch.cat([torch.zeros(n_per_class), torch.ones(n_per_class)])
    folds = torch.from_numpy(_fold_indices(n_per_class, config.folds, rng))
    train = torch.stack([torch.cat([folds[j] for j in range(config.folds) if j != f]) for f in range(config.folds)])
    gen = torch.Generator().manual_seed(int(seed) % (2**63))
    with torch_threads(TORCH_THREADS):
        x = _classifier_inputs(torch.from_numpy(scale(data).astype(np.float32)), config, gen)
        params = _train_ensemble(x, y, train, config, gen)
        with torch.no_grad():
            logits = _ensemble_logits(params, x[folds])
            accuracy = ((logits > 0).float() == y[folds]).float().mean(dim=1)
    return float(accuracy.mean())


def _train_ensemble(
    x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, config: C2STConfig, gen: torch.Generator
) -> list[torch.Tensor]:
    """Fit one MLP per row of ``train`` (k, n_train) indices into x, y by BCE."""
    k, n_train = train.shape
    params = _init_ensemble(k, [x.shape[1], config.hidden, config.hidden, 1], gen)
    opt = torch.optim.Adam(params, lr=config.lr, foreach=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    batch = min(config.batch, n_train)
    for _ in range(config.steps):
        rows = torch.gather(train, 1, torch.randint(n_train, (k, batch), generator=gen))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(_ensemble_logits(params, x[rows]), y[rows])
        opt.zero_grad(set_to_none=True)
        (loss * k).backward()  # the sum of the k mean losses: each net sees its own gradient
        opt.step()
        schedule.step()
    return params


# ------------------------------------------------------------- marginal KL


def _kde_on_grid(samples: np.ndarray, lo: float, hi: float, points: int) -> np.ndarray:
    """scipy ``gaussian_kde(samples, bw_method=0.2)`` evaluated at linspace(lo, hi, points).

    Same bandwidth as scipy (h = 0.2 * std with ddof=1, floored at one grid
    step for a constant sample), evaluated by linear binning onto a grid 1/100
    of h fine and an FFT convolution with the sampled Gaussian (relative error
    about (1/100)^2 / 8 ~ 1e-5 against direct summation; O(n + G log G)).
    Unnormalised (the caller normalises on the grid).
    """
    from scipy.signal import fftconvolve

    step = (hi - lo) / (points - 1)
    h = max(KDE_BANDWIDTH * float(np.std(samples, ddof=1)), step)
    refine = int(min(max(1, math.ceil(100.0 * step / h)), 2**22 // points))
    fine_points = (points - 1) * refine + 1
    fine_step = step / refine
    pos = np.clip((samples - lo) / fine_step, 0.0, fine_points - 1)
    left = np.minimum(np.floor(pos).astype(np.int64), fine_points - 2)
    frac = pos - left
    counts = np.bincount(left, 1.0 - frac, fine_points) + np.bincount(left + 1, frac, fine_points)
    half = min(fine_points - 1, int(math.ceil(40.0 * h / fine_step)))
    offsets = np.arange(-half, half + 1) * (fine_step / h)
    density = fftconvolve(counts, np.exp(-0.5 * offsets * offsets), mode="same")
    return np.clip(density[::refine], 0.0, None)


def marginal_kl_per_dim(reference: np.ndarray, model: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Per-dimension KL(data || model) of 1-D KDEs, the metric of Liu et al. (2024).

    For each dimension j: scipy-convention ``gaussian_kde(bw_method=0.2)``
    estimates p (reference) and q (model), each with its own bandwidth, on a
    1,000-point grid from the smallest to the largest value of both samples;
    p and q are normalised to sum 1 over the grid, a floor of 1e-10 is added
    to every grid value and both are renormalised; KL_j = sum p log(p / q).
    Uses all rows (the binned evaluation is O(n)); deterministic, ``seed``
    is accepted for the common signature only.

    reference (n, d), model (m, d) -> (d,) float64, each >= 0.
    """
    ref, mod = check_pair(reference, model)
    out = np.empty(ref.shape[1])
    for j in range(ref.shape[1]):
        lo = min(ref[:, j].min(), mod[:, j].min())
        hi = max(ref[:, j].max(), mod[:, j].max())
        if hi <= lo:  # both samples constant and equal in this dimension
            out[j] = 0.0
            continue
        p, q = (_normalised_with_floor(_kde_on_grid(s[:, j], lo, hi, KDE_GRID)) for s in (ref, mod))
        out[j] = float(np.sum(p * np.log(p / q)))
    return out


def _normalised_with_floor(density: np.ndarray) -> np.ndarray:
    """Normalise to sum 1, add KL_FLOOR everywhere, renormalise."""
    p = density / density.sum() + KL_FLOOR
    return p / p.sum()


def marginal_kl(reference: np.ndarray, model: np.ndarray, *, seed: int = 0) -> float:
    """Mean over dimensions of ``marginal_kl_per_dim``. Lower is better; 0 is ideal."""
    return float(marginal_kl_per_dim(reference, model, seed=seed).mean())


# ---------------------------------------------------------- histogram TV


def histogram_tv(
    model: np.ndarray,
    log_density: Callable[[np.ndarray], np.ndarray],
    bounds: tuple[tuple[float, float], tuple[float, float]],
    bins: int = 50,
    *,
    seed: int = 0,
    subcells: int = 4,
) -> float:
    """Total variation between a 2-D histogram of model samples and a known density.

    ``bounds`` ((xmin, xmax), (ymin, ymax)) is cut into bins x bins cells. The
    true mass of each cell is the sub-cell midpoint rule: exp(log_density) at
    the centres of a subcells x subcells grid inside the cell, times the
    sub-cell area. Outside the bounds is one more cell: its model mass is the
    fraction of samples outside, its true mass 1 - (total inside), floored at 0.
    TV = 0.5 * sum over all cells |model - true|, in [0, 1].
    With m samples even a perfect model scores about 0.5 * sqrt(2 K / (pi m))
    (K = cells carrying mass), so compare methods at equal m and bins.
    Deterministic; ``seed`` is accepted for the common signature only.

    model (m, 2); log_density: (k, 2) -> (k,) natural log density.
    """
    samples = check_samples(model, "model", min_rows=1)
    if samples.shape[1] != 2:
        raise ValueError(f"histogram_tv needs 2-D samples, got d={samples.shape[1]}")
    (x0, x1), (y0, y1) = (tuple(map(float, b)) for b in bounds)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"bounds must be ((xmin, xmax), (ymin, ymax)) with min < max, got {bounds}")
    if bins < 1 or subcells < 1:
        raise ValueError(f"bins and subcells must be >= 1, got {bins} and {subcells}")
    counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=bins, range=[[x0, x1], [y0, y1]])
    model_mass = counts / len(samples)
    true_mass = _cell_masses(log_density, (x0, x1), (y0, y1), bins, subcells)
    outside = abs((1.0 - model_mass.sum()) - max(0.0, 1.0 - true_mass.sum()))
    return float(0.5 * (np.abs(model_mass - true_mass).sum() + outside))


def _cell_masses(
    log_density: Callable[[np.ndarray], np.ndarray],
    xs: tuple[float, float],
    ys: tuple[float, float],
    bins: int,
    subcells: int,
    chunk: int = 65536,
) -> np.ndarray:
    """(bins, bins) integrals of exp(log_density) by the sub-cell midpoint rule."""
    k = bins * subcells
    dx, dy = (xs[1] - xs[0]) / k, (ys[1] - ys[0]) / k
    gx = xs[0] + (np.arange(k) + 0.5) * dx
    gy = ys[0] + (np.arange(k) + 0.5) * dy
    points = np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1).reshape(-1, 2)
    logp = np.concatenate(
        [
            np.asarray(log_density(points[i : i + chunk]), dtype=np.float64).reshape(-1)
            for i in range(0, len(points), chunk)
        ]
    )
    if logp.shape != (len(points),):
        raise ValueError(f"log_density must return one value per row, got {logp.shape[0]} for {len(points)} rows")
    density = np.exp(np.nan_to_num(logp, nan=-np.inf, posinf=np.inf)) * (dx * dy)
    return density.reshape(bins, subcells, bins, subcells).sum(axis=(1, 3))


# ------------------------------------------------------------------- table


@dataclass(frozen=True)
class MetricSpec:
    """How the runner and report use one metric.

    ``better`` is "lower", "higher" or "closer to 0.5"; ``heading`` is the
    report column title; ``per_dim`` (optional) gives per-dimension values
    whose mean is the metric, stored as ``<name>_per_dim``.
    """

    function: Callable[..., float]
    better: str
    heading: str
    per_dim: Callable[..., np.ndarray] | None = None

    def badness(self, value: float) -> float:
        """A score where lower is better, for ranking: the value, its negation, or |value - 0.5|."""
        if self.better == "lower":
            return value
        if self.better == "higher":
            return -value
        return abs(value - 0.5)


SAMPLE_METRICS: dict[str, MetricSpec] = {
    "mmd2": MetricSpec(mmd2, "lower", "MMD² (lower is better)"),
    "energy_distance": MetricSpec(energy_distance, "lower", "Energy distance (lower is better)"),
    "sliced_wasserstein": MetricSpec(sliced_wasserstein, "lower", "Sliced W₂ (lower is better)"),
    "c2st_accuracy": MetricSpec(c2st_accuracy, "closer to 0.5", "C2ST accuracy (0.5 is best)"),
    "marginal_kl": MetricSpec(marginal_kl, "lower", "Marginal KL (lower is better)", per_dim=marginal_kl_per_dim),
}
"""The two-sample metrics ``compute_sample_metrics`` runs, in report order."""

DENSITY_METRICS: dict[str, MetricSpec] = {
    "histogram_tv": MetricSpec(histogram_tv, "lower", "Histogram TV (lower is better)"),
}
"""Metrics against a known 2-D density (signature of ``histogram_tv``)."""


def min_sample_size() -> int:
    """Fewest rows per sample every metric of ``SAMPLE_METRICS`` works with: the unbiased MMD² and the
    energy distance need 2, the C2ST one row per class in each of its folds."""
    return max(2, C2STConfig().folds)


def compute_sample_metrics(
    reference: np.ndarray, model: np.ndarray, *, seed: int = 0, max_samples: int = 5000
) -> dict[str, object]:
    """Run every metric of ``SAMPLE_METRICS`` on at most ``max_samples`` rows of each sample.

    Both samples are subsampled without replacement (seeded) first. A metric
    that raises gives NaN and an entry in ``"errors"`` ({name: message});
    the others still run. Returns {name: float for each metric,
    "marginal_kl_per_dim": list (empty if it failed), "n_reference": rows used,
    "n_model": rows used, "errors": dict (empty when all ran)}.

    reference (n, d), model (m, d): 2-D arrays with the same d (else ValueError).
    """
    reference, model = np.asarray(reference, dtype=np.float64), np.asarray(model, dtype=np.float64)
    if reference.ndim != 2 or model.ndim != 2 or reference.shape[1] != model.shape[1]:
        raise ValueError(f"need 2-D samples with the same d, got {reference.shape} and {model.shape}")
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2, got {max_samples}")
    rng = np.random.default_rng(seed)
    ref, mod = _subsample(reference, max_samples, rng), _subsample(model, max_samples, rng)
    out: dict[str, object] = {}
    errors: dict[str, str] = {}
    for name, spec in SAMPLE_METRICS.items():
        if spec.per_dim is not None:
            out[f"{name}_per_dim"] = []
        try:
            if spec.per_dim is None:
                out[name] = float(spec.function(ref, mod, seed=seed))
            else:
                values = np.asarray(spec.per_dim(ref, mod, seed=seed), dtype=np.float64)
                out[f"{name}_per_dim"] = values.tolist()
                out[name] = float(values.mean())
        except Exception as exc:  # one failing metric must not sink the others
            out[name] = float("nan")
            errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    out.update(n_reference=len(ref), n_model=len(mod), errors=errors)
    return out
