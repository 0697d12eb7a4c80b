#!/usr/bin/env python3
"""Per-row accuracy and cost of the ODE likelihoods at each profile: the table of docs/likelihoods.md.

For every method whose likelihood solves an ODE (``flow_ode``) and every dataset asked for, fits the
method once (``--train-profile``, default quick: a paper-profile network takes days on a CPU), then for
each profile applies that profile's solver settings (``solver``, ``min_ode_steps``, ``max_ode_steps``,
``loglik_tol``) to the fitted network, runs the step check the method runs at the end of ``fit``, and
scores the first ``--rows`` test rows with the chosen steps, with the figure grid's steps and with the
reference: the same flow in float64 with its steps doubled until no row changes by more than
``ode.REFERENCE_CHANGE`` (``ode.reference_log_prob``). Prints a Markdown table and writes
``results.jsonl`` under ``--out``.

Usage::

    DENSITYBENCH_DATA=... python scripts/likelihood_accuracy.py --datasets 8gaussians,power-plant \\
        --methods score_diffusion,flow_matching --rows 500 --out OUT_DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets
import methods
from harness.toolkit import ode

ROW_ACCURACY = 0.01
SOLVER_PARAMS = ("solver", "min_ode_steps", "max_ode_steps", "loglik_tol", "sample_tol")


def fitted(name: str, dataset: str, profile: str, out: Path):
    """The method fitted with ``profile`` on the dataset's training split (cached under ``out``), and the splits."""
    path = out / f"{name}-{dataset}-{profile}.pkl"
    splits = datasets.get(dataset).load(seed=0)
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f), splits
    model = methods.create(name, profile, device="cpu", seed=0).fit(splits.train, splits.val)
    with path.open("wb") as f:
        pickle.dump(model, f)
    return model, splits


def with_solver_of(model, profile: str, train):
    """A copy of ``model`` with ``profile``'s solver settings and the step counts its check chooses on ``train``."""
    settings = methods.profile_params(model.name, profile)
    twin = copy.deepcopy(model)
    twin.params.update({key: settings[key] for key in SOLVER_PARAMS})
    start = time.perf_counter()
    twin.choose_steps(train)
    return twin, time.perf_counter() - start


def study(name: str, dataset: str, rows: int, train_profile: str, out: Path) -> list[dict]:
    model, splits = fitted(name, dataset, train_profile, out)
    y = model.standardised(splits.test[:rows])
    start = time.perf_counter()
    reference, choice = ode.reference_log_prob(model.flow_ode(torch.float64, steps=64), y)
    reference_s = time.perf_counter() - start
    print(f"# {name} {dataset}: reference at {2 * choice.steps} steps (float64), {reference_s:.0f} s", flush=True)
    lines = []
    for profile in methods.PROFILES:
        twin, check_s = with_solver_of(model, profile, splits.train)
        result = ode.accuracy(twin.flow_ode(), reference, y)
        figure = ode.accuracy(twin.flow_ode(steps=twin.figure_steps_), reference, y)
        info = {k: v for k, v in twin.info_.items() if k.startswith(("loglik_steps", "sample_steps", "figure_steps"))}
        lines.append(
            {
                "method": name,
                "dataset": dataset,
                "profile": profile,
                "rows": len(y),
                "solver": {key: twin.params[key] for key in SOLVER_PARAMS},
                **info,
                "check_s": check_s,
                "reference_steps": 2 * choice.steps,
                **vars(result),
                "figure_max_err": figure.max_err,
                "figure_mean_err": figure.mean_err,
            }
        )
        print(json.dumps(lines[-1]), flush=True)
    return lines


def table(lines: list[dict]) -> str:
    head = (
        "| method | dataset | profile | loglik_tol | steps (capped) | NFE | max err | mean err | s | "
        "figure steps: max err | sample steps | <= 0.01 |"
    )
    out = [head, "|" + " --- |" * 12]
    for r in lines:
        capped = " (capped)" if r["loglik_steps_capped"] else ""
        out.append(
            f"| {r['method']} | {r['dataset']} | {r['profile']} | {r['solver']['loglik_tol']:g} "
            f"| {r['loglik_steps']}{capped} | {r['nfe']} | {r['max_err']:.4f} | {r['mean_err']:.5f} "
            f"| {r['seconds']:.1f} | {r['figure_steps']}: {r['figure_max_err']:.3f} | {r['sample_steps']} "
            f"| {'yes' if r['max_err'] <= ROW_ACCURACY else 'no'} |"
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
