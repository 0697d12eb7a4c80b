"""Where the flagship generator G puts its mass wrong, on a held-out 5-D Gaussian mixture (docs/flagship.md).

The mixture (6 components, unequal weights and shapes, 20,000 / 5,000 / 5,000 rows) is built
here and is in no test or default grid. For each setting of ``supervised_diffusion`` (quick
profile plus overrides) the script records:

* KL(p || q) on test points through the student, and the energy distance of 5,000 draws of G;
* label noise: two labels of the same z under independent Monte-Carlo batches, 0.5 E|x_a - x_b|^2
  per coordinate (standardised) = the part of G's MSE that no regression can remove;
* where G's mass goes: the share of G's draws in the true density's thin regions (log p below the
  1st percentile of log p on test rows: 0.01 for fresh data), and the total variation between the
  mixture weights and G's share per component (draws assigned to their most likely component);
* KL(p || q) split by component: which clumps the student under-covers;
* the same mass placement for the teacher's own samples (settings ``teacher*``).

    PYTHONPATH=$PWD nice -n 5 .venv/bin/python scripts/flagship_g_study.py --out g.jsonl base one_batch
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import methods
from harness.sample_metrics import energy_distance
from harness.toolkit.device import to_tensor
from methods.supervised_diffusion import TrainingFreeTeacher

SETTINGS = {
    "base": {},
    "one_batch": {"chunk": 1_000_000},  # one Monte-Carlo batch for every pair: a deterministic label map
    "mc_5000": {"mc_batch": 5000},
    "exact": {"score_mode": "exact"},  # every training row in every score: deterministic, the full KDE
    "eps_auto": {"eps": "auto"},
    "wide_g": {"hidden": 512},
    "long_g": {"iters": 8000},
    "exact_long_g": {"score_mode": "exact", "iters": 8000},
}
#: The teacher alone (``training_free_ode``, quick): where its labels put their mass.
TEACHERS = {"teacher": {}, "teacher_auto": {"eps": "auto"}, "teacher_exact": {"score_mode": "exact"}}


class Mixture:
    """A fixed 5-D Gaussian mixture: 6 components, weights 0.05-0.35, anisotropic covariances."""

    def __init__(self, seed: int = 2024, d: int = 5, k: int = 6) -> None:
        rng = np.random.default_rng(seed)
        self.weights = np.array([0.35, 0.2, 0.15, 0.15, 0.1, 0.05])[:k]
        self.means = rng.normal(0, 2.0, size=(k, d))
        self.covs = []
        for _ in range(k):
            a = rng.normal(size=(d, d)) * rng.uniform(0.1, 0.5, size=d)
            self.covs.append(a @ a.T + 0.01 * np.eye(d))

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        return np.stack([rng.multivariate_normal(self.means[c], self.covs[c]) for c in comp])

    def component_log_probs(self, x: np.ndarray) -> np.ndarray:
        """(n, k): log w_c + log N(x; m_c, S_c)."""
        return np.stack(
            [
                np.log(w) + multivariate_normal(m, c).logpdf(x)
                for w, m, c in zip(self.weights, self.means, self.covs, strict=False)
            ],
            axis=1,
        )

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        return logsumexp(self.component_log_probs(x), axis=1)


def fitted_teacher(model, train: np.ndarray) -> TrainingFreeTeacher:
    """The probability flow that labelled ``model``'s pairs (its eps as chosen at fit)."""
    data = to_tensor(model.scaler_.forward(train), "cpu")
    return replace(TrainingFreeTeacher.from_params(model.params, data), eps=model.info_["eps"])


def label_noise(model, train: np.ndarray, n: int = 2000) -> float:
    """0.5 E|x_a - x_b|^2 per coordinate for two labels of the same z under independent MC batches."""
    teacher = fitted_teacher(model, train)
    z = torch.randn(n, train.shape[1], generator=torch.Generator().manual_seed(99))
    a, b = (teacher.label(z, torch.Generator().manual_seed(s)) for s in (1, 2))
    return float(0.5 * (a - b).square().mean())


def mass_placement(mix: Mixture, draws: np.ndarray, test: np.ndarray) -> dict:
    """Share of ``draws`` in the thin regions (log p under the 1st percentile of test rows) and the
    total variation between the mixture weights and the draws' shares per most likely component."""
    thin = np.quantile(mix.log_prob(test), 0.01)
    share = np.bincount(mix.component_log_probs(draws).argmax(1), minlength=len(mix.weights)) / len(draws)
    return {
        "thin_share": float((mix.log_prob(draws) < thin).mean()),
        "component_tv": float(0.5 * np.abs(share - mix.weights).sum()),
        "component_share": share.round(4).tolist(),
    }


def measure_teacher(name: str, mix: Mixture, train, val, test) -> dict:
    t0 = time.perf_counter()
    model = methods.create("training_free_ode", "quick", seed=0, device="cpu", **TEACHERS[name]).fit(train, val)
    draws = model.sample(5000, seed=1)
    return {
        "setting": name,
        "overrides": TEACHERS[name],
        "seconds": time.perf_counter() - t0,
        "eps": model.info_["eps"],
        "energy_to_test": energy_distance(test, draws),
        **mass_placement(mix, draws, test),
    }


def error_concentration(model, mix: Mixture, train: np.ndarray, test: np.ndarray, n: int = 2000) -> dict:
    """Is G's error spread evenly or concentrated on a few z (between basins of the label map)?

    Labels 2,000 fresh z as in training; returns the share of G's squared error carried by the 10%
    of pairs with the largest error, and the thin-region share of G(z) on those pairs and on the rest.
    """
    teacher = fitted_teacher(model, train)
    z = torch.randn(n, train.shape[1], generator=torch.Generator().manual_seed(98))
    x0 = teacher.label(z, torch.Generator().manual_seed(97))
    with torch.no_grad():
        g = model.net_(z)
    err = (g - x0).square().sum(1).numpy()
    top = err >= np.quantile(err, 0.9)
    thin = np.quantile(mix.log_prob(test), 0.01)
    g_thin = mix.log_prob(model.scaler_.inverse(g.double().numpy())) < thin
    label_thin = mix.log_prob(model.scaler_.inverse(x0.double().numpy())) < thin
    return {
        "top10_error_share": float(err[top].sum() / err.sum()),
        "thin_share_top10": float(g_thin[top].mean()),
        "thin_share_rest": float(g_thin[~top].mean()),
        "label_thin_share": float(label_thin.mean()),
    }


def measure(name: str, mix: Mixture, train, val, test) -> dict:
    t0 = time.perf_counter()
    model = methods.create("supervised_diffusion", "quick", seed=0, device="cpu", **SETTINGS[name]).fit(train, val)
    fit_s = time.perf_counter() - t0
    draws = model.sample(5000, seed=1)
    lp_true_test = mix.log_prob(test)
    lp_true_draws = mix.log_prob(draws)
    thin = np.quantile(lp_true_test, 0.01)
    gap = lp_true_test - model.log_prob(test)
    comp_test = mix.component_log_probs(test).argmax(1)
    comp_draws = mix.component_log_probs(draws).argmax(1)
    share = np.bincount(comp_draws, minlength=len(mix.weights)) / len(draws)
    info = model.info_
    return {
        "setting": name,
        "overrides": SETTINGS[name],
        "fit_s": fit_s,
        "eps": info["eps"],
        "kl": float(gap.mean()),
        "kl_se": float(gap.std(ddof=1) / np.sqrt(len(gap))),
        "energy_to_test": energy_distance(test, draws),
        "train_mse": info["train_mse"],
        "heldout_mse": info["heldout_mse"],
        "label_noise": label_noise(model, train) if model.params["score_mode"] != "exact" else 0.0,
        "teacher_fidelity_energy": info["teacher_fidelity_energy"],
        "teacher_val_energy": info.get("teacher_val_energy"),
        "generator_val_energy": info.get("generator_val_energy"),
        "student_generator_ce": info["student_generator_ce"],
        "thin_share": float((lp_true_draws < thin).mean()),
        "component_tv": float(0.5 * np.abs(share - mix.weights).sum()),
        "component_share": share.round(4).tolist(),
        "kl_by_component": [float(gap[comp_test == c].mean()) for c in range(len(mix.weights))],
        **error_concentration(model, mix, train, test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", choices=sorted(SETTINGS) + sorted(TEACHERS))
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file (appended)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mix = Mixture()
    train, val, test = mix.sample(20_000, 1), mix.sample(5_000, 2), mix.sample(5_000, 3)
    for name in args.settings:
        row = (measure_teacher if name in TEACHERS else measure)(name, mix, train, val, test)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
