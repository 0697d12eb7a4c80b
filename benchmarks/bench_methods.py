"""asv benchmarks across methods: sampling throughput, fit time, and the paper's speed claims.

Ratios are measured in one run (these machines are noisy):

* ``SamplingThroughput.track_samples_per_s``: every method, n = 100,000 samples (batched
  inside each method), models fitted with the ``smoke`` profile on 2,000 rows, sampling
  settings of the ``quick`` profile (the harness default), d = 2 and d = 43.
* ``SpeedRatios.track_generator_over_score_diffusion`` and ``..._over_maf``: sampling
  throughput of ``supervised_diffusion`` over ``score_diffusion`` (probability-flow ODE at
  its default tolerance) and over ``maf``, timed interleaved in one process. Targets: >= 100x
  and >= 10x.
* ``FitQuick.time_fit``: the ``quick`` fit of every method on ``8gaussians``.
* ``LabelMemory.peakmem_labels``: peak memory of label generation as N grows; it must stay
  bounded by the chunk sizes, not grow with N x M.

``python benchmarks/bench_methods.py`` prints the ratios without asv.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

try:
    import methods
except ImportError:  # plain `python benchmarks/bench_methods.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import methods

N_SAMPLES = 100_000
DIMS = (2, 43)
SLOW_SAMPLERS = {"training_free_ode"}  # solves an ODE against the data per request: see bench_sampling_flagship


def mixture(n: int, d: int, seed: int = 0) -> np.ndarray:
    """A d-dimensional mixture of 8 Gaussians with random means (float64)."""
    rng = np.random.default_rng(seed)
    means = 3 * rng.standard_normal((8, d))
    return means[rng.integers(0, 8, n)] + 0.5 * rng.standard_normal((n, d))


def fitted(name: str, d: int, n: int = 2000):
    """``name`` fitted with its smoke profile, sampling settings from its quick profile."""
    smoke, quick = methods.profile_params(name, "smoke"), methods.profile_params(name, "quick")
    sampling = {k: quick[k] for k in quick if any(s in k for s in ("tol", "sampler", "eval_batch"))}
    return methods.create(name, "smoke", device="cpu", seed=0, **{**smoke, **sampling}).fit(mixture(n, d))


def samples_per_second(model, n: int = N_SAMPLES, rounds: int = 1) -> float:
    model.sample(min(n, 256), seed=1)  # warm-up
    best = float("inf")
    for r in range(rounds):
        t0 = time.perf_counter()
        model.sample(n, seed=2 + r)
        best = min(best, time.perf_counter() - t0)
    return n / best


class SamplingThroughput:
    params = ([m for m in methods.available() if m not in SLOW_SAMPLERS], list(DIMS))
    param_names = ["method", "d"]
    timeout = 900

    def setup(self, name, d):
        self.model = fitted(name, d)

    def track_samples_per_s(self, name, d):
        return samples_per_second(self.model)

    track_samples_per_s.unit = "samples/s"


def speed_ratios(d: int, n: int = N_SAMPLES) -> dict[str, float]:
    """Sampling throughput of the generator, score_diffusion and maf, and the ratios."""
    rates = {name: samples_per_second(fitted(name, d), n) for name in ("supervised_diffusion", "score_diffusion", "maf")}
    return {**{f"{k}_per_s": v for k, v in rates.items()},
            "over_score_diffusion": rates["supervised_diffusion"] / rates["score_diffusion"],
            "over_maf": rates["supervised_diffusion"] / rates["maf"]}


class SpeedRatios:
    params = list(DIMS)
    param_names = ["d"]
    timeout = 1800

    def setup_cache(self):
        return {d: speed_ratios(d) for d in DIMS}

    def track_generator_over_score_diffusion(self, cache, d):
        return cache[d]["over_score_diffusion"]

    def track_generator_over_maf(self, cache, d):
        return cache[d]["over_maf"]

    track_generator_over_score_diffusion.unit = "ratio"
    track_generator_over_maf.unit = "ratio"


class FitQuick:
    params = methods.available()
    param_names = ["method"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, name):
        import datasets

        self.splits = datasets.get("8gaussians").load(seed=0)

    def time_fit(self, name):
        methods.create(name, "quick", device="cpu", seed=0).fit(self.splits.train, self.splits.val)


class LabelMemory:
    """Peak RSS of labelling 2,000 trajectories (10 Euler steps, exact score) as N grows."""

    params = [10_000, 100_000, 1_000_000]
    param_names = ["n_rows"]
    timeout = 900

    def setup(self, n_rows):
        import torch

        g = torch.Generator().manual_seed(0)
        self.data = torch.randn(n_rows, 2, generator=g)
        self.z = torch.randn(2_000, 2, generator=g)

    def peakmem_labels(self, n_rows):
        from methods.training_free_score import flow_to_data

        flow_to_data(self.z, self.data, steps=10, mode="exact")


if __name__ == "__main__":
    for d in DIMS:
        r = speed_ratios(d)
        print(f"d={d}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()))
