"""asv benchmarks across methods: sampling throughput, fit time, and the paper's speed claims.

Ratios are measured in one run (these machines are noisy):

* ``SamplingThroughput.track_samples_per_s``: every method, n = 100,000 samples (batched
  inside each method), models fitted with the ``smoke`` profile on 2,000 rows, sampling
  settings of the ``quick`` profile (the harness default), d = 2 and d = 43.
* ``SpeedRatios.track_generator_over_score_diffusion`` and ``..._over_maf``: sampling
  throughput of ``supervised_diffusion`` over ``score_diffusion`` (probability-flow ODE at
  the profile's tolerance) and over ``maf``, timed interleaved in one process, with the
  networks and sampler settings of the ``quick`` and of the ``paper`` profile (short fits:
  what a model learned changes its cost only through the ODE's NFE, which is tracked).
  Targets: >= 100x and >= 10x.
* ``FitQuick.time_fit``: the ``quick`` fit of every method on ``8gaussians``;
  ``FitQuick.track_checkpoint_percent``: the share of that fit's wall time spent evaluating its
  training checkpoints (``Method.checkpoint``), in percent. Target: <= 5.
* ``LabelMemory.peakmem_labels``: peak memory of label generation as N grows; it must stay
  bounded by the chunk sizes, not grow with N x M.

``python benchmarks/bench_methods.py`` prints the ratios without asv.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

try:
    import methods
except ImportError:  # plain `python benchmarks/bench_methods.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import methods

os.environ.setdefault("DENSITYBENCH_NO_PROGRESS", "1")  # no training bars in benchmark output

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


#: Short fits for the ratio benchmarks: only training length shrinks; architectures and sampling
#: settings stay the profile's (G's student is not used for sampling, so it is made tiny).
CHEAP_FIT = {
    "supervised_diffusion": dict(
        steps=5,
        n_pairs=2_000,
        iters=20,
        batch_size=512,
        student_layers=1,
        student_hidden=8,
        student_steps=2,
        student_distill_steps=0,
        student_batch_size=256,
    ),
    "score_diffusion": dict(steps=500, batch=512, lr=2e-3, ema_decay=0.0),
    "maf": dict(steps=100, batch_size=512, lr=1e-3, eval_every=50, patience=None),
}
#: Samples per timed call, sized for about a second each on 2 CPU cores.
RATIO_SAMPLES = {"supervised_diffusion": 100_000, "score_diffusion": 2_000, "maf": 10_000}


def fitted_cheaply(name: str, profile: str, d: int, n: int = 4000, device: str = "cpu"):
    """``name`` with ``profile``'s architecture and sampling settings, briefly trained on a mixture."""
    x = mixture(n + 1000, d)
    return methods.create(name, profile, device=device, seed=0, **CHEAP_FIT[name]).fit(x[:n], x[n:])


def speed_ratios(
    profile: str, d: int, rounds: int = 2, device: str = "cpu", samples: dict[str, int] | None = None
) -> dict[str, float]:
    """Sampling throughput of the generator, score_diffusion and maf with ``profile``'s networks and
    sampler settings (score_diffusion: probability-flow ODE at that profile's tolerance), timed
    interleaved (device synchronised), best of ``rounds``; the ratios; and score_diffusion's NFE per
    sample. ``samples``: samples per timed call (default RATIO_SAMPLES)."""
    from harness.toolkit.device import synchronize

    samples = RATIO_SAMPLES if samples is None else samples
    models = {name: fitted_cheaply(name, profile, d, device=device) for name in RATIO_SAMPLES}
    for model in models.values():
        model.sample(256, seed=1)  # warm-up
    best = dict.fromkeys(models, 0.0)
    for r in range(rounds):
        for name, model in models.items():
            n = samples[name]
            synchronize(str(model.device_) if hasattr(model, "device_") else "cpu")
            t0 = time.perf_counter()
            model.sample(n, seed=2 + r)  # returns a host array: the device work has finished
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    nfe = models["score_diffusion"].info_["nfe_sample"] / -(
        -samples["score_diffusion"] // methods.profile_params("score_diffusion", profile)["eval_batch"]
    )
    return {
        **{f"{k}_per_s": v for k, v in best.items()},
        "over_score_diffusion": best["supervised_diffusion"] / best["score_diffusion"],
        "over_maf": best["supervised_diffusion"] / best["maf"],
        "score_diffusion_nfe": nfe,
    }


class SpeedRatios:
    """The paper's speed claim: generator over score_diffusion (target >= 100x) and over maf (>= 10x).

    ``quick`` is what the default report runs; ``paper`` uses the published widths (G: H = 256 at
    d = 2, 1,400 at d = 43; score network 4 x 256, ODE tolerance 1e-5; MAF 5 x 2 x 512).
    """

    params = (["quick", "paper"], list(DIMS))
    param_names = ["profile", "d"]
    timeout = 1800

    def setup_cache(self):
        return {(p, d): speed_ratios(p, d) for p in self.params[0] for d in DIMS}

    def track_generator_over_score_diffusion(self, cache, profile, d):
        return cache[(profile, d)]["over_score_diffusion"]

    def track_generator_over_maf(self, cache, profile, d):
        return cache[(profile, d)]["over_maf"]

    def track_score_diffusion_nfe(self, cache, profile, d):
        return cache[(profile, d)]["score_diffusion_nfe"]

    track_generator_over_score_diffusion.unit = "ratio"
    track_generator_over_maf.unit = "ratio"
    track_score_diffusion_nfe.unit = "NFE"


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

    def track_checkpoint_percent(self, name):
        model = methods.create(name, "quick", device="cpu", seed=0)
        start = time.perf_counter()
        model.fit(self.splits.train, self.splits.val)
        return 100.0 * model.checkpoint_s_ / (time.perf_counter() - start)

    track_checkpoint_percent.unit = "%"


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
        from harness.toolkit.training_free_score import flow_to_data

        flow_to_data(self.z, self.data, steps=10, mode="exact")


if __name__ == "__main__":
    for profile in ("quick", "paper"):
        for d in DIMS:
            r = speed_ratios(profile, d)
            print(f"{profile} d={d}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()), flush=True)
