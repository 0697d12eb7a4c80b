#!/usr/bin/env python3
"""Fit and evaluation seconds of every cell of one seed of a grid, in one warm process.

Usage (from a checkout's root; run two checkouts side by side to compare code versions)::

    DENSITYBENCH_DATA=... .venv/bin/python scripts/evaluation_seconds.py OUT.jsonl \\
        [--datasets 8gaussians,checkerboard,circles] [--methods all] [--profile quick] [--seed 0]

Each cell runs ``harness.evaluate.evaluate_cell`` as a worker does (single-threaded, the modules a pool
worker preloads imported first); a cell's evaluation seconds are its wall time minus its fit's. Appends
one JSON line per cell: method, dataset, fit_wall_s, eval_s, fit_phases, log_prob_s, test_loglik.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ot  # noqa: F401  (preloaded as in a pool worker, so imports are not timed)
import sklearn.neural_network  # noqa: F401
import torch

import datasets
import methods
from harness.config import DEFAULT_DATASETS
from harness.evaluate import evaluate_cell


def cell_seconds(name: str, dataset: str, profile: str, seed: int) -> dict:
    ds = datasets.get(dataset)
    splits = ds.load(seed=seed)
    model = methods.create(name, profile, device="cpu", seed=seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = evaluate_cell(model, ds, splits, seed=seed, sample_size=5000, artifact_path=Path(folder) / "a.npz")
    total, timings = time.perf_counter() - start, result["timings"]
    return {
        "method": name,
        "dataset": dataset,
        "fit_wall_s": timings["fit_wall_s"],
        "eval_s": total - timings["fit_wall_s"],
        "fit_phases": timings.get("fit_phases"),
        "log_prob_s": timings.get("log_prob_s"),
        "test_loglik": result["metrics"].get("test_loglik"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON lines file (appended to)")
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    parser.add_argument("--methods", default="all")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = methods.names() if args.methods == "all" else args.methods.split(",")
    with args.out.open("a", encoding="utf-8") as out:
        for dataset in args.datasets.split(","):
            for name in names:
                line = cell_seconds(name, dataset, args.profile, args.seed)
                out.write(json.dumps(line) + "\n")
                out.flush()
                print(
                    f"{dataset} {name}: fit {line['fit_wall_s']:.1f} s, evaluation {line['eval_s']:.1f} s", flush=True
                )


if __name__ == "__main__":
    main()
