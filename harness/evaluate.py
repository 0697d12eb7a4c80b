"""Run one cell: fit a method on a dataset's splits and measure it.

Metrics (the README lists them): test log-likelihood (mean nats, standard error,
kind) with its error bars (``ERROR_FIELDS``, ``loglik_error_bar``), KL(p || q) when the true density is known, sample quality against the test
split, memorisation and outlying samples against the training split, fit time with
phases, sampling and log_prob throughput, peak memory.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from datasets.base import Dataset, Splits
from harness.memorisation import memorisation_metrics

#: Points per side of the log-density grid saved for 2-D figures.
GRID_POINTS = 100
#: Samples saved per cell for figures.
SAVED_SAMPLES = 2000
#: Error bars of a test log-likelihood beyond its standard error (nats), from ``Method.likelihood_error``:
#: an ODE solve against a tighter one, Hutchinson's estimator, a bound's slack from K to 4K proposals.
ERROR_FIELDS = ("solver_err", "estimator_se", "bound_gap")


class CellFailure(RuntimeError):
    """A cell produced an unusable result (non-finite metric, ...)."""


def _sync(device: str) -> None:
    try:
        import torch

        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
    except ImportError:  # pragma: no cover
        pass


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (ddof 1)."""
    v = np.asarray(values, dtype=np.float64)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se


def timed(fn, device: str) -> tuple[Any, float]:
    """(result, seconds) with the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def likelihood_metrics(model, dataset: Dataset, test: np.ndarray, device: str) -> tuple[dict, dict]:
    """Test log-likelihood (and KL when the density is known) with log_prob throughput."""
    model.log_prob(test[: min(64, len(test))])  # warm-up
    lp, secs = timed(lambda: model.log_prob(test), device)
    bad = int((~np.isfinite(lp)).sum())
    if bad:
        raise CellFailure(f"log_prob is not finite on {bad} of {len(test)} test points")
    metrics: dict[str, Any] = {"kind": model.log_prob_kind, "n_test": len(test)}
    metrics["test_loglik"], metrics["test_loglik_se"] = mean_and_stderr(lp)
    if dataset.has_density:
        metrics["kl"], metrics["kl_se"] = mean_and_stderr(dataset.log_prob(test) - lp)
    errors, error_s = timed(lambda: likelihood_error_bars(model, test), device)
    metrics.update(errors)
    return metrics, {"log_prob_s": secs, "log_prob_per_s": len(test) / secs, "likelihood_error_s": error_s}


def likelihood_error_bars(model, test: np.ndarray) -> dict[str, float]:
    """The method's error bars (``ERROR_FIELDS`` it provides) and ``loglik_error_bar``, the sum of their
    magnitudes (0.0 for a closed-form exact likelihood; a bound gap on 500 rows can be slightly negative),
    all in nats; CellFailure when one is not finite."""
    errors = {key: float(value) for key, value in model.likelihood_error(test).items()}
    unknown = sorted(set(errors) - set(ERROR_FIELDS))
    if unknown:
        raise CellFailure(f"likelihood_error returned unknown fields {unknown}; known: {list(ERROR_FIELDS)}")
    errors["loglik_error_bar"] = sum(abs(value) for value in errors.values())
    bad = {key: value for key, value in errors.items() if not math.isfinite(value)}
    if bad:
        raise CellFailure(f"likelihood error bars are not finite: {bad}")
    return errors


def sampling_metrics(model, n: int, seed: int, device: str) -> tuple[np.ndarray, dict]:
    """n samples and the sampling throughput after a small warm-up draw."""
    model.sample(min(16, n), seed=seed + 1)  # warm-up (allocations, kernels, lazy init)
    samples, secs = timed(lambda: model.sample(n, seed=seed), device)
    bad = int((~np.isfinite(samples)).any(axis=1).sum())
    if bad:
        raise CellFailure(f"{bad} of {n} samples are not finite")
    return samples, {"sample_s": secs, "samples_per_s": n / secs, "n_samples": n}


def sample_quality(dataset: Dataset, test: np.ndarray, samples: np.ndarray, seed: int, max_samples: int) -> dict:
    """Sample-quality metrics against the test split (and histogram TV for known 2-D densities)."""
    try:
        from harness import sample_metrics
    except ImportError:  # metrics module not installed in this build
        return {}
    out = dict(sample_metrics.compute_sample_metrics(test, samples, seed=seed, max_samples=max_samples))
    if dataset.has_density and test.shape[1] == 2 and hasattr(sample_metrics, "histogram_tv"):
        lo, hi = plot_bounds(test)
        out["histogram_tv"] = sample_metrics.histogram_tv(
            samples, dataset.log_prob, ((lo[0], hi[0]), (lo[1], hi[1])), seed=seed
        )
    return out


def plot_bounds(x: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A box holding the data: per-dimension 0.1/99.9 percentiles widened by ``margin``."""
    lo, hi = np.percentile(x, 0.1, axis=0), np.percentile(x, 99.9, axis=0)
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def grid_log_density(model, test: np.ndarray, points: int = GRID_POINTS) -> dict[str, np.ndarray]:
    """log q on a points x points grid over the data's box (2-D only), by ``figure_log_prob`` (a cheaper
    solve for ODE likelihoods: a figure does not need the test log-likelihood's accuracy)."""
    lo, hi = plot_bounds(test)
    xs, ys = np.linspace(lo[0], hi[0], points), np.linspace(lo[1], hi[1], points)
    gx, gy = np.meshgrid(xs, ys)
    lp = model.figure_log_prob(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(points, points)
    return {"grid_x": xs, "grid_y": ys, "grid_log_prob": lp}


def peak_memory(device: str) -> dict[str, float]:
    """Host peak RSS (MiB) of this process and peak CUDA memory when on GPU."""
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        import torch

        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_cuda_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out


def evaluate_cell(
    model, dataset: Dataset, splits: Splits, *, seed: int, sample_size: int, artifact_path: Path | None = None
) -> dict[str, Any]:
    """Fit ``model`` and measure it; returns {"metrics", "timings", "info"}.

    Raises on any failure (the caller records a failed row).
    """
    device = str(getattr(model, "device_", model.device))
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    _, fit_wall_s = timed(lambda: model.fit(splits.train, splits.val), device)
    device = str(getattr(model, "device_", device))
    checkpoint_s = float(getattr(model, "checkpoint_s_", 0.0))
    # fit_s is training time: the checkpoints' validation evaluations are excluded (checkpoint_s)
    timings: dict[str, Any] = {
        "fit_s": fit_wall_s - checkpoint_s,
        "fit_wall_s": fit_wall_s,
        "checkpoint_s": checkpoint_s,
        "fit_phases": dict(model.fit_phases_),
    }
    metrics: dict[str, Any] = {"kind": model.log_prob_kind}
    if model.log_prob_kind is not None:
        lik, lik_t = likelihood_metrics(model, dataset, splits.test, device)
        metrics.update(lik)
        timings.update(lik_t)
    n = min(sample_size, len(splits.test))
    samples, samp_t = sampling_metrics(model, n, seed, device)
    timings.update(samp_t)
    quality = sample_quality(dataset, splits.test, samples, seed, sample_size)
    metrics.update(quality)
    metrics.update(memorisation_metrics(splits.train, splits.test, samples, seed=seed))
    for key, value in metrics.items():
        if isinstance(value, float) and math.isnan(value) and key not in ("test_loglik_se", "kl_se"):
            raise CellFailure(f"metric '{key}' is NaN")
    timings.update(peak_memory(device))
    if artifact_path is not None:
        save_artifacts(artifact_path, model, splits.test, samples)
    info = dict(model.info_)
    info["checkpoints"] = list(getattr(model, "checkpoints_", []))
    return {"metrics": metrics, "timings": timings, "info": info}


def save_artifacts(path: Path, model, test: np.ndarray, samples: np.ndarray) -> None:
    """Samples (and a 2-D log-density grid) for the report's figures."""
    arrays: dict[str, np.ndarray] = {"samples": samples[:SAVED_SAMPLES].astype(np.float32)}
    if test.shape[1] == 2 and model.log_prob_kind is not None:
        arrays.update(grid_log_density(model, test))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
