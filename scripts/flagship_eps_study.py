"""The flagship's bandwidth: eps fixed at the paper's 0.01 against eps="auto" (docs/flagship.md).

Fits the teacher ``training_free_ode`` and (with ``--generator``) ``supervised_diffusion``
(quick profile, seed 0) with both settings on each dataset, measures every cell as the harness
does (``harness.evaluate.evaluate_cell``: likelihood, sample quality, memorisation) and appends
one JSON line per cell to ``--out``; prints a Markdown table at the end. The teacher has no
likelihood in the harness, but its density is the KDE p_0 = mean_j N(x_j, eps I) (standardised),
so its rows carry that KDE's test log-likelihood (and KL where the density is known) in closed form.

    PYTHONPATH=$PWD nice -n 5 .venv/bin/python \\
        scripts/flagship_eps_study.py --datasets 8gaussians,checkerboard,rings --out eps.jsonl [--generator]

Real datasets are read from the data root (``$DENSITYBENCH_DATA``, else ``~/.cache/densitybench``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import datasets
import methods
from harness.evaluate import evaluate_cell
from harness.toolkit.training_free_score import kde_log_likelihood

TEACHER = (("training_free_ode", {"eps": 0.01}), ("training_free_ode", {"eps": "auto"}))
GENERATOR = (("supervised_diffusion", {"eps": 0.01}), ("supervised_diffusion", {"eps": "auto"}))
COLUMNS = (
    "test_loglik",
    "kl",
    "energy_distance",
    "c2st_accuracy",
    "nn_distance_ratio",
    "nn_close_fraction",
    "data_copying_ct",
    "outlier_fraction",
)


def teacher_density(model, dataset, test: np.ndarray) -> dict:
    """Test log-likelihood (and KL) of the KDE the teacher samples: mean_j N(x_j, eps I), standardised."""
    test_std = torch.as_tensor(model.scaler_.forward(test), dtype=model.data_.dtype)
    lp = float(kde_log_likelihood(test_std, model.data_, [model.info_["eps"]])[0]) + model.scaler_.log_det
    out = {"test_loglik": lp}
    if dataset.has_density:
        out["kl"] = float(np.mean(dataset.log_prob(test))) - lp
    return out


def run(dataset: str, out: Path, profile: str, cells) -> None:
    ds = datasets.get(dataset)
    splits = ds.load(seed=0)
    for name, params in cells:
        model = methods.create(name, profile, seed=0, device="cpu", **params)
        t0 = time.perf_counter()
        result = evaluate_cell(model, ds, splits, seed=0, sample_size=5000)
        info = {k: v for k, v in result["info"].items() if not isinstance(v, (dict, list))}
        metrics = {k: result["metrics"].get(k) for k in COLUMNS}
        if name == "training_free_ode":
            metrics.update(teacher_density(model, ds, splits.test))
        row = {
            "dataset": dataset,
            "method": name,
            "params": params,
            "seconds": time.perf_counter() - t0,
            "metrics": metrics,
            "info": info,
        }
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def table(out: Path) -> str:
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    head = ["dataset", "method", "eps"] + list(COLUMNS) + ["fit+eval s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        eps = r["info"].get("eps", "")
        eps = f"{eps:.3g}" + (" (auto)" if r["params"].get("eps") == "auto" else "") if eps != "" else "-"
        vals = [("-" if r["metrics"].get(c) is None else f"{r['metrics'][c]:.4g}") for c in COLUMNS]
        lines.append("| " + " | ".join([r["dataset"], r["method"], eps] + vals + [f"{r['seconds']:.0f}"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", required=True, help="comma list")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file (appended)")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--generator", action="store_true", help="also fit supervised_diffusion (minutes per cell)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    if not args.table_only:
        torch.set_num_threads(1)
        for dataset in args.datasets.split(","):
            run(dataset, args.out, args.profile, TEACHER + (GENERATOR if args.generator else ()))
    print(table(args.out))


if __name__ == "__main__":
    main()
