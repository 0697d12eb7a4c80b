"""asv benchmarks of the sample-quality metrics at 5,000 x 5,000 rows, d = 2 and 63.

The default benchmark computes ``compute_sample_metrics`` for ~80 cells on 2
cores, so the target is about 3 s for all metrics at d = 2 and a few seconds
per metric at d = 63. ``track_cpu_seconds_total`` reports process CPU time,
which a busy machine inflates less than wall time.

Run ``python benchmarks/bench_metrics.py`` to print wall and CPU seconds per
metric without asv (``--rounds N``: best of N, default 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    from harness import sample_metrics as sm
except ImportError:  # plain `python benchmarks/bench_metrics.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import sample_metrics as sm

N = 5000
DIMS = (2, 63)


def _samples(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference N(0, I) and a model sample with a small shift and scale error."""
    rng = np.random.default_rng(d)
    return rng.normal(size=(N, d)), 0.1 + 1.1 * rng.normal(size=(N, d))


class SampleMetrics:
    """Seconds per metric at 5,000 x 5,000 rows."""

    params = [list(DIMS)]
    param_names = ["d"]
    timeout = 300
    number = 1
    repeat = 2

    def setup(self, d: int) -> None:
        self.reference, self.model = _samples(d)
        sm.compute_sample_metrics(self.reference[:200], self.model[:200], seed=0)  # imports, warm-up

    def _run(self, name: str) -> None:
        sm.SAMPLE_METRICS[name].function(self.reference, self.model, seed=0)

    def time_mmd2(self, d: int) -> None:
        self._run("mmd2")

    def time_energy_distance(self, d: int) -> None:
        self._run("energy_distance")

    def time_sliced_wasserstein(self, d: int) -> None:
        self._run("sliced_wasserstein")

    def time_c2st_accuracy(self, d: int) -> None:
        self._run("c2st_accuracy")

    def time_marginal_kl(self, d: int) -> None:
        self._run("marginal_kl")

    def time_compute_sample_metrics(self, d: int) -> None:
        sm.compute_sample_metrics(self.reference, self.model, seed=0)

    def track_cpu_seconds_total(self, d: int) -> float:
        start = time.process_time()
        sm.compute_sample_metrics(self.reference, self.model, seed=0)
        return time.process_time() - start

    track_cpu_seconds_total.unit = "seconds"


class HistogramTV:
    """Seconds for histogram_tv of 5,000 2-D samples against a Gaussian density, 50 x 50 bins."""

    timeout = 120

    def setup(self) -> None:
        self.model = _samples(2)[1]

    def time_histogram_tv(self) -> None:
        sm.histogram_tv(self.model, lambda p: -0.5 * (p * p).sum(1) - np.log(2 * np.pi), ((-5, 5), (-5, 5)), seed=0)


class Memorisation:
    """Memorisation and outlier metrics of one cell (20,000 training rows, 5,000 test rows and samples),
    and their CPU time as a ratio of the sample-quality metrics' on the same machine (target: below 1)."""

    params = [list(DIMS)]
    param_names = ["d"]
    timeout = 300
    number = 1
    repeat = 2

    def setup(self, d: int) -> None:
        from harness.memorisation import memorisation_metrics

        self.metrics = memorisation_metrics
        rng = np.random.default_rng(d + 1)
        self.train = rng.normal(size=(4 * N, d))
        self.reference, self.model = _samples(d)

    def time_memorisation_metrics(self, d: int) -> None:
        self.metrics(self.train, self.reference, self.model, seed=0)

    def track_cpu_ratio_to_sample_metrics(self, d: int) -> float:
        start = time.process_time()
        self.metrics(self.train, self.reference, self.model, seed=0)
        mid = time.process_time()
        sm.compute_sample_metrics(self.reference, self.model, seed=0)
        return (mid - start) / (time.process_time() - mid)

    track_cpu_ratio_to_sample_metrics.unit = "ratio"


def _best(fn, rounds: int) -> tuple[float, float]:
    """Best-of-``rounds`` (wall, CPU) seconds."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(rounds):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    bench = SampleMetrics()
    print(f"{'d':>3}  {'metric':<24} {'wall s':>8} {'cpu s':>8}")
    for d in DIMS:
        bench.setup(d)
        for name, spec in sm.SAMPLE_METRICS.items():
            wall, cpu = _best(lambda: spec.function(bench.reference, bench.model, seed=0), args.rounds)  # noqa: B023 (called at once)
            print(f"{d:>3}  {name:<24} {wall:8.3f} {cpu:8.3f}", flush=True)
        wall, cpu = _best(lambda: sm.compute_sample_metrics(bench.reference, bench.model, seed=0), args.rounds)
        print(f"{d:>3}  {'compute_sample_metrics':<24} {wall:8.3f} {cpu:8.3f}", flush=True)
    tv = HistogramTV()
    tv.setup()
    wall, cpu = _best(tv.time_histogram_tv, args.rounds)
    print(f"{2:>3}  {'histogram_tv (50x50)':<24} {wall:8.3f} {cpu:8.3f}")


if __name__ == "__main__":
    main()
