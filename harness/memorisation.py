"""Memorisation and outlying samples: does a method copy its training rows, or throw points far away?

All functions take float arrays ``train`` (N, d), ``test`` (n, d) (held-out rows) and
``samples`` (m, d) (the method's draws) and work in units of the training data
standardised by its own mean and standard deviation.

========================  ==========================================================
``nn_distance_ratio``     median nearest-training-row distance of samples over that
                          of test rows (1: as far as fresh data; < 1: closer)
``nn_close_fraction``     fraction of samples closer to a training row than the 1st
                          percentile of test-to-train distances (fresh data: 0.01)
``data_copying_ct``       C_T of Meehan, Chaudhuri & Dasgupta (AISTATS 2020): z-scores
                          of per-cell Mann-Whitney tests (about N(0, 1/k) for a model
                          that does not copy; strongly negative = copying)
``outlier_fraction``      fraction of samples with a coordinate more than 10 training
                          standard deviations from the training mean
``max_abs_z``             the largest |coordinate - mean| / sd over all samples
========================  ==========================================================

Nearest neighbours go through ``scipy.spatial.cKDTree`` up to d = 16 and chunked float32
matrix products above (cost: docs/sample-metrics.md).

Example::

    >>> rng = np.random.default_rng(0)
    >>> train, test = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    >>> m = memorisation_metrics(train, test, train[:1000], seed=0)
    >>> m["nn_distance_ratio"] < 0.01 and m["data_copying_ct"] < -5
    True

Reference: C. Meehan, K. Chaudhuri, S. Dasgupta, "A non-parametric test to detect
data-copying in generative models", AISTATS 2020.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.cluster.vq import kmeans2, vq
from scipy.spatial import cKDTree

from harness.toolkit.standardise import Standardiser

OUTLIER_SDS = 10.0  #: a coordinate this many training SDs from the training mean is an outlier
CLOSE_QUANTILE = 0.01  #: test-to-train distance quantile that defines "too close"
CT_CELLS = 20  #: k-means cells of the data-copying test (fewer when there are few test rows)
CT_MIN_SAMPLES = 20  #: cells with fewer samples are left out of C_T (the paper's tau = 20 / m)
CT_MAX_TRAIN_FIT = 5_000  #: training rows used to fit the k-means cells (a partition; cheap)
KDTREE_MAX_DIM = 16
CHUNK_ENTRIES = 4_000_000  #: distance-matrix entries held at once by the matrix-product path


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``queries`` (m, d) to its nearest row of ``reference`` (N, d): (m,)."""
    if queries.shape[1] <= KDTREE_MAX_DIM:
        return cKDTree(reference).query(queries, k=1)[0].astype(np.float64)
    shift = reference.mean(axis=0)  # centring keeps |a|^2 + |b|^2 - 2ab accurate in float32
    ref = torch.from_numpy((reference - shift).astype(np.float32))
    ref_sq = (ref * ref).sum(1)
    rows = max(1, CHUNK_ENTRIES // len(ref))
    out = []
    for start in range(0, len(queries), rows):
        q = torch.from_numpy((queries[start : start + rows] - shift).astype(np.float32))
        sq = torch.addmm(ref_sq[None, :], q, ref.T, alpha=-2.0).add_((q * q).sum(1)[:, None])
        out.append(sq.min(dim=1).values.clamp_min_(0.0).sqrt_())
    return torch.cat(out).double().numpy()


def mann_whitney_z(x: np.ndarray, y: np.ndarray) -> float:
    """z-score of the Mann-Whitney U of ``x`` against ``y``: U = #{(i, j): x_i > y_j} (ties count 1/2),
    z = (U - m n / 2) / sqrt(m n (m + n + 1) / 12). Negative when x tends to be smaller than y."""
    m, n = len(x), len(y)
    y = np.sort(y)
    u = float((np.searchsorted(y, x, "left") + np.searchsorted(y, x, "right")).sum()) / 2.0
    return float((u - m * n / 2.0) / math.sqrt(m * n * (m + n + 1) / 12.0))


def data_copying_ct(
    train: np.ndarray,
    test: np.ndarray,
    samples: np.ndarray,
    *,
    seed: int = 0,
    cells: int | None = None,
    min_samples: int = CT_MIN_SAMPLES,
    test_distances: np.ndarray | None = None,
    sample_distances: np.ndarray | None = None,
) -> tuple[float | None, int]:
    """The C_T statistic (Meehan et al. 2020) on standardised arrays; returns (C_T, cells used).

    k-means cells (``cells``, default ``min(20, n_test // 50)``; scipy's ``kmeans2``, k-means++) are fitted on the training
    rows; in each cell the samples' nearest-training-row distances are compared with the test
    rows' by a Mann-Whitney z-score, and C_T is the mean of those z-scores weighted by the
    test rows' share of each cell, over the cells holding at least ``min_samples`` samples and
    one test row. For a model independent of the training rows each z is N(0, 1) and C_T has
    sd sqrt(sum w^2) (about 1/sqrt(k)); a copying model gives strongly negative values.
    None when no cell qualifies.
    """
    k = cells if cells is not None else max(1, min(CT_CELLS, len(test) // 50))
    rng = np.random.default_rng(seed)
    fit_rows = (
        train if len(train) <= CT_MAX_TRAIN_FIT else train[rng.choice(len(train), CT_MAX_TRAIN_FIT, replace=False)]
    )
    with warnings.catch_warnings():  # an empty cell is harmless here: it holds no sample and is skipped
        warnings.simplefilter("ignore", UserWarning)
        centres, _ = kmeans2(fit_rows, min(k, len(fit_rows)), minit="++", seed=rng)
    test_cell, sample_cell = vq(test, centres)[0], vq(samples, centres)[0]
    d_test = nearest_distances(test, train) if test_distances is None else test_distances
    d_samples = nearest_distances(samples, train) if sample_distances is None else sample_distances
    z_scores, weights = [], []
    for c in range(len(centres)):
        in_test, in_samples = test_cell == c, sample_cell == c
        if in_samples.sum() < min_samples or not in_test.any():
            continue
        z_scores.append(mann_whitney_z(d_samples[in_samples], d_test[in_test]))
        weights.append(in_test.mean())
    if not weights:
        return None, 0
    w = np.asarray(weights)
    return float(np.dot(w, z_scores) / w.sum()), len(weights)


def outlying(train_scaler: Standardiser, samples: np.ndarray, limit: float = OUTLIER_SDS) -> dict[str, float]:
    """``outlier_fraction``: share of samples with any |z| > ``limit``; ``max_abs_z``: largest |z| (training SDs)."""
    z = np.abs(train_scaler(samples))
    return {"outlier_fraction": float((z > limit).any(axis=1).mean()), "max_abs_z": float(z.max())}


def memorisation_metrics(
    train: np.ndarray, test: np.ndarray, samples: np.ndarray, *, seed: int = 0
) -> dict[str, float | int | None]:
    """Every metric of the module table for one cell (train (N, d), test (n, d), samples (m, d)).

    ``nn_distance_ratio`` is None when the test rows' median distance is 0 (test rows repeat
    training rows), ``data_copying_ct`` when no cell has enough samples.
    """
    train, test, samples = (np.asarray(a, dtype=np.float64) for a in (train, test, samples))
    scale = Standardiser(train)
    tr, te, sa = scale(train), scale(test), scale(samples)
    d_test, d_samples = nearest_distances(te, tr), nearest_distances(sa, tr)
    median_test = float(np.median(d_test))
    ratio = float(np.median(d_samples)) / median_test if median_test > 0 else None
    close = float((d_samples < np.quantile(d_test, CLOSE_QUANTILE)).mean())
    ct, used = data_copying_ct(tr, te, sa, seed=seed, test_distances=d_test, sample_distances=d_samples)
    return {
        "nn_distance_ratio": ratio,
        "nn_close_fraction": close,
        "data_copying_ct": ct,
        "data_copying_cells": used,
        **outlying(scale, samples),
    }
