#!/usr/bin/env python3
"""Per-row accuracy and cost of the ODE likelihoods at each profile: the table of docs/likelihoods.md.

For every method whose likelihood solves an ODE (``flow_ode``) and every dataset asked for, fits the
method once (``--train-profile``, default quick: a paper-profile network takes days on a CPU), then
scores the first ``--rows`` test rows with each profile's likelihood solver and with the reference
(float64, rtol = atol = 1e-7; ``ode.REFERENCE``) through ``harness.toolkit.ode.accuracy``, the check
the test suite uses. Prints a Markdown table: per-row max and mean error (nats), per-row evaluations
(mean, max), seconds, and whether the profile meets 0.01 nats per row.

Usage::

    DENSITYBENCH_DATA=... python scripts/likelihood_accuracy.py --datasets 8gaussians,power-plant \\
        --methods score_diffusion,flow_matching --rows 500 --out OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets
import methods
from harness.toolkit import ode

ROW_ACCURACY = 0.01


def fitted(name: str, dataset: str, profile: str, out: Path):
    """The method fitted with ``profile`` on the dataset's training split (cached under ``out``), and the test split."""
    path = out / f"{name}-{dataset}-{profile}.pkl"
    splits = datasets.get(dataset).load(seed=0)
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f), splits.test
    model = methods.create(name, profile, device="cpu", seed=0).fit(splits.train, splits.val)
    with path.open("wb") as f:
        pickle.dump(model, f)
    return model, splits.test


def study(name: str, dataset: str, rows: int, train_profile: str, out: Path) -> list[dict]:
    model, test = fitted(name, dataset, train_profile, out)
    y = model.standardised(test[:rows])
    start = time.perf_counter()
    reference = model.flow_ode(**ode.REFERENCE)
    lines = []
    for profile in ("smoke", "quick", "paper"):
        settings = methods.profile_params(name, profile)
        solver = {"method": settings.get("solver", "dopri5"), "steps": settings.get("ode_steps", 0)}
        solver.update(rtol=settings["loglik_tol"], atol=settings["loglik_tol"])
        result = ode.accuracy(model.flow_ode(**solver), reference, y)
        lines.append(
            {"method": name, "dataset": dataset, "profile": profile, "rows": len(y), "solver": solver, **vars(result)}
        )
        print(json.dumps(lines[-1]), flush=True)
    print(f"# {name} {dataset}: {time.perf_counter() - start:.0f} s with the reference", flush=True)
    return lines


def table(lines: list[dict]) -> str:
    head = "| method | dataset | profile | tolerance | max err | mean err | NFE mean | NFE max | s | <= 0.01 |"
    out = [head, "|" + " --- |" * 10]
    for r in lines:
        solver = r["solver"]
        fixed = solver["method"] in ode.MARCHES
        tol = f"{solver['method']}, {solver['steps']} steps" if fixed else f"{solver['method']} {solver['rtol']:g}"
        out.append(
            f"| {r['method']} | {r['dataset']} | {r['profile']} | {tol} | {r['max_err']:.4f} | {r['mean_err']:.4f} "
            f"| {r['nfe_mean']:.0f} | {r['nfe_max']} | {r['seconds']:.1f} | {'yes' if r['max_err'] <= ROW_ACCURACY else 'no'} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="score_diffusion,flow_matching")
    parser.add_argument("--datasets", default="8gaussians,power-plant")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--train-profile", default="quick")
    parser.add_argument("--out", type=Path, required=True, help="folder for fitted models and results.jsonl")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for dataset in args.datasets.split(","):
        for name in args.methods.split(","):
            lines += study(name, dataset, args.rows, args.train_profile, args.out)
    (args.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    print(table(lines))


if __name__ == "__main__":
    main()
