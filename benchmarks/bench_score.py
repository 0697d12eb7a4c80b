"""asv benchmarks of the training-free score kernel and the probability-flow labeller.

Speed is judged as ratios measured in one run (these machines are noisy):

* ``track_fraction_of_matmul``: the score kernel's GFLOP/s (4 N M d flops: the q.k product
  and the weighted sum of values) over the GFLOP/s of the comparable float32 product
  (M x d) @ (d x N), timed the same way and interleaved with the kernel. Target >= 0.5.
  Caveat: for small d that product is bound by writing its M x N result (4 bytes per 2 d
  flops), not by arithmetic, so it is a weak reference; the kernel never materialises M x N.
* ``track_fraction_of_peak_matmul``: the same kernel GFLOP/s over a compute-bound square
  float32 matmul (1024^3), the machine's practical float32 peak. At small d the kernel does one
  exp per (query, row) pair against only 4 d counted flops, so this fraction is necessarily
  low at d = 2; ``track_pairs_per_second`` reports that regime directly.

Run ``python benchmarks/bench_score.py`` for the ratios without asv
(``--labels`` also times labelling 20,000 pairs from 20,000 2-D rows with 100 Euler steps;
``--threads N`` sets the thread count).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

try:
    from harness.toolkit.training_free_score import Schedule, flow_to_data, fused_backend, score
except ImportError:  # plain `python benchmarks/bench_score.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness.toolkit.training_free_score import Schedule, flow_to_data, fused_backend, score

N_ROWS, N_QUERIES, T = 20_000, 4_000, 0.5
ROUNDS = 5


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(fns: dict, rounds: int = ROUNDS, device: str = "cpu") -> dict[str, float]:
    """Best-of-``rounds`` seconds for each callable, alternating them so load changes hit all
    (the device synchronised before reading the clock)."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _problem(d: int, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    z, data = torch.randn(N_QUERIES, d, generator=g), torch.randn(N_ROWS, d, generator=g)
    return z.to(device), data.to(device)


def kernel_ratios(d: int, rounds: int = ROUNDS, device: str = "cpu") -> dict[str, float]:
    """GFLOP/s of the score kernel, of the (M x d) @ (d x N) matmul and of a square matmul, and their ratios
    (all float32 on ``device``, at the process's matmul precision)."""
    z, data = _problem(d, device=device)
    square = torch.randn(1024, 1024, generator=torch.Generator(device="cpu").manual_seed(1)).to(device)
    secs = _interleaved(
        {
            "kernel": lambda: score(z, T, data),
            "matmul": lambda: z @ data.T,
            "square": lambda: square @ square,
        },
        rounds,
        device,
    )
    flops = {"kernel": 4 * N_ROWS * N_QUERIES * d, "matmul": 2 * N_ROWS * N_QUERIES * d, "square": 2 * 1024**3}
    gflops = {k: flops[k] / secs[k] / 1e9 for k in secs}
    return {
        **{f"gflops_{k}": v for k, v in gflops.items()},
        "fraction_of_matmul": gflops["kernel"] / gflops["matmul"],
        "fraction_of_peak_matmul": gflops["kernel"] / gflops["square"],
        "pairs_per_second": N_ROWS * N_QUERIES / secs["kernel"],
    }


class ScoreKernel:
    """The exact score at N = 20,000 rows, M = 4,000 queries (fused attention on CPU)."""

    params = [2, 43]
    param_names = ["d"]
    timeout = 300

    def setup(self, d: int) -> None:
        torch.set_flush_denormal(True)
        self.z, self.data = _problem(d)
        score(self.z[:10], T, self.data[:10])  # pick and check the fused backend once

    def time_score(self, d: int) -> None:
        score(self.z, T, self.data)

    def track_fraction_of_matmul(self, d: int) -> float:
        return kernel_ratios(d)["fraction_of_matmul"]

    track_fraction_of_matmul.unit = "fraction"

    def track_fraction_of_peak_matmul(self, d: int) -> float:
        return kernel_ratios(d)["fraction_of_peak_matmul"]

    track_fraction_of_peak_matmul.unit = "fraction"

    def track_pairs_per_second(self, d: int) -> float:
        return kernel_ratios(d, rounds=3)["pairs_per_second"]

    track_pairs_per_second.unit = "pairs/s"


def label(mode: str, n_pairs: int = 20_000, n_rows: int = 20_000, steps: int = 100) -> torch.Tensor:
    """The labelling workload: n_pairs trajectories over n_rows 2-D rows, Euler with ``steps`` steps."""
    g = torch.Generator().manual_seed(0)
    data, z = torch.randn(n_rows, 2, generator=g), torch.randn(n_pairs, 2, generator=g)
    return flow_to_data(z, data, Schedule(), steps=steps, mode=mode, generator=torch.Generator().manual_seed(1))


class Labelling:
    """20,000 labelled pairs from 20,000 2-D rows with 100 Euler steps (the quick-profile shape)."""

    params = ["minibatch", "minibatch_refresh"]  # "exact" (4e10 pairs, ~1 min or more): run `--labels`
    param_names = ["mode"]
    number = 1
    repeat = 1
    warmup_time = 0
    timeout = 600

    def time_label(self, mode: str) -> None:
        label(mode)


def main(argv: list[str]) -> None:
    """``--threads N`` sets torch's thread count; ``--labels`` adds the labelling timings."""
    if "--threads" in argv:
        torch.set_num_threads(int(argv[argv.index("--threads") + 1]))
    torch.set_flush_denormal(True)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, backend {fused_backend('cpu', torch.float32, 2)}"
    )
    for d in ScoreKernel.params:
        r = kernel_ratios(d)
        print(
            f"d={d:3d}: kernel {r['gflops_kernel']:.2f} GFLOP/s, (M x d)@(d x N) matmul {r['gflops_matmul']:.2f}, "
            f"square matmul {r['gflops_square']:.2f} -> fraction_of_matmul {r['fraction_of_matmul']:.2f}, "
            f"fraction_of_peak_matmul {r['fraction_of_peak_matmul']:.3f}, {r['pairs_per_second'] / 1e9:.2f} G pairs/s"
        )
    if "--labels" in argv:
        for mode in [*Labelling.params, "exact"]:
            secs = _once(lambda: label(mode))  # noqa: B023 (called at once)
            print(f"label 20,000 pairs / 20,000 rows / d=2 / 100 Euler steps, mode={mode}: {secs:.2f} s")


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main(sys.argv[1:])
