"""The flagship: the diffusion-model-assisted supervised generator of Liu et al. (2024).

Read top to bottom it is the paper's algorithm: the teacher (the probability-flow ODE with the
training-free score) labels noise with samples, an MLP G learns noise -> sample by regression, and
sampling is one pass of G; then (ours) an invertible student gives G's samples a likelihood. The
networks are fitted in ``methods/_flagship_fit.py``. Measurements behind the profiles: docs/flagship.md.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from harness.toolkit.compat import nflows_warnings_silenced
from harness.toolkit.device import batched, resolve_device, single_cpu_thread, to_tensor
from harness.toolkit.distances import energy_distance
from harness.toolkit.nets import mlp
from harness.toolkit.seeding import numpy_stream, seeded_init, stream_seed, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training_free_score import MODES, SOLVERS, Schedule, choose_eps, flow_to_data
from methods import register
from methods._flagship_fit import STUDENT_PROFILES, STUDENT_SPECS, StudentSettings, fit_student, regress_generator
from methods.base import PROFILES, Choice, Float, Int, Method, Spec

__all__ = ["SupervisedDiffusion", "TrainingFreeTeacher", "TEACHER_PROFILES", "TEACHER_SPECS", "paper_hidden"]

SAMPLE_BATCH = 65_536  # rows per forward pass of G on a GPU
#: On a CPU, rows per pass of G that keep its activations in cache: 2,048 rows sampled
#: 20% faster than 65,536 at d = 43 (H = 1,400) and 11% at d = 2 (H = 256), 2 cores.
CPU_SAMPLE_BATCH = 2_048
LOG_PROB_BATCH = 8_192  # rows per forward pass of the student
EPS_VAL_ROWS = 2_000  # validation rows scored by eps="auto"
FIDELITY_PAIRS = 1_000  # held-out labelled pairs on which G is compared with its teacher
STUDENT_CHECK_DRAWS = 4_096  # draws of G on which the student is compared with G

#: Paper hidden width by data dimension: POWER, GAS, HEPMASS, MINIBOONE (authors' code).
PAPER_HIDDEN = {6: 256, 8: 512, 21: 1024, 43: 1400}
PAPER_PAIRS = 200_000


class Stream(IntEnum):
    """Seed-stream purposes (``harness.toolkit.seeding``), one independent stream each; the values fix the results."""

    LABEL_NOISE = 1  # z of the labelled pairs
    LABEL_MC_ROWS = 2  # the teacher's Monte-Carlo rows while labelling
    GENERATOR_BATCHES = 3  # G's minibatch order
    STUDENT_BATCHES = 4  # the student's minibatch order
    GENERATOR_INIT = 5  # G's initial weights
    STUDENT_INIT = 6  # the student's initial weights
    SAMPLE_NOISE = 7  # z of ``sample``
    STUDENT_CHECK_NOISE = 9  # z on which the student is compared with G
    DISTILL_NOISE = 10  # z of the draws of G that the student is distilled on
    LEARNED_TEACHER = 11  # the seed of a learned teacher's fit
    BANDWIDTH = 12  # rows held out and scored by eps="auto"
    HELD_OUT_NOISE = 13  # z (and validation rows) of the teacher-fidelity check
    HELD_OUT_MC_ROWS = 14  # the teacher's Monte-Carlo rows for those held-out labels


# ------------------------------------------------------------------ 1. the teacher
#: Parameter specs of the probability-flow teacher (this method's and ``training_free_ode``'s).
TEACHER_SPECS: dict[str, Spec] = {
    "eps": Choice("auto") | Float(gt=0, lt=1),
    "steps": Int(min=1),
    "solver": Choice(*SOLVERS),
    "score_mode": Choice(*MODES),
    "mc_batch": Int(min=1),
    "chunk": Choice("auto") | Int(min=1),
}
#: The teacher's settings per profile; ``paper`` is the authors' UCI code (Euler, 500 steps, eps 0.01).
TEACHER_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(eps=0.01, steps=20, solver="euler", score_mode="minibatch", mc_batch=256, chunk=5000),
    "quick": dict(eps=0.01, steps=100, solver="euler", score_mode="minibatch", mc_batch=1000, chunk=5000),
    "paper": dict(eps=0.01, steps=500, solver="euler", score_mode="minibatch", mc_batch=1000, chunk="auto"),
}


@dataclass(frozen=True, eq=False)
class TrainingFreeTeacher:
    """The paper's labeller: the probability-flow ODE dZ/dt = f(t) Z - 0.5 g^2(t) S(Z, t) from t = 1 to 0,
    with the training-free score S of ``data`` (N, d), the standardised training rows.

    ``mode``: the score over all rows ("exact") or Monte-Carlo batches of ``mc_batch`` rows drawn once
    per ``chunk`` trajectories ("minibatch") or at every step ("minibatch_refresh"). At t = 0 the flow
    samples the KDE p_0 = mean_j N(x_j, eps I) (docs/flagship.md); ``eps`` is None for "auto" until
    ``with_eps_chosen``.
    """

    data: torch.Tensor
    eps: float | None
    steps: int
    solver: str
    mode: str
    mc_batch: int
    chunk: int

    @classmethod
    def from_params(cls, params: dict[str, Any], data: torch.Tensor) -> TrainingFreeTeacher:
        """The teacher of a method's parameters (``TEACHER_SPECS``); ``chunk="auto"`` is 2,000 when
        d = 43 (MINIBOONE) else 5,000, as in the authors' code."""
        eps, chunk = params["eps"], params["chunk"]
        return cls(
            data=data,
            eps=None if eps == "auto" else float(eps),
            steps=params["steps"],
            solver=params["solver"],
            mode=params["score_mode"],
            mc_batch=params["mc_batch"],
            chunk=(2000 if data.shape[1] == 43 else 5000) if chunk == "auto" else chunk,
        )

    @property
    def evaluations(self) -> int:
        """Score evaluations per trajectory."""
        return self.steps * (2 if self.solver == "heun" else 1)

    def with_eps_chosen(
        self, val: np.ndarray | None, scaler: Standardiser, rng: np.random.Generator
    ) -> tuple[TrainingFreeTeacher, dict[str, Any]]:
        """This teacher with its eps set, and what to record of it: ``{"eps": eps}``, for "auto" with
        ``eps_val_loglik`` ({eps: mean log-likelihood, standardised units}).

        "auto" (beyond the paper) is a KDE's bandwidth selection: the eps whose p_0 scores the highest
        mean log-likelihood (``choose_eps``) on up to 2,000 validation rows ``val`` (M, d) standardised by
        ``scaler``, or when None on 10% of the training rows held out; ``rng`` draws the rows.
        """
        if self.eps is not None:
            return self, {"eps": self.eps}
        data = self.data
        if val is None:
            perm = torch.from_numpy(rng.permutation(len(data))).to(data.device)
            cut = max(1, len(data) // 10)
            centres, held = data[perm[cut:]], data[perm[:cut]]
        else:
            centres, held = data, to_tensor(scaler.forward(val), data.device)
        if len(held) > EPS_VAL_ROWS:
            held = held[torch.from_numpy(rng.choice(len(held), EPS_VAL_ROWS, replace=False)).to(data.device)]
        eps, scores = choose_eps(centres, held.to(data.dtype))
        chosen = replace(self, eps=eps)
        return chosen, {"eps_val_loglik": {f"{e:.4g}": v for e, v in sorted(scores.items())}, "eps": chosen.eps}

    def label(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Labels x0 (n, d), standardised: the flow from the noise ``z`` (n, d) at t = 1 back to t = 0
        (Monte-Carlo rows drawn with ``generator``)."""
        return flow_to_data(
            z,
            self.data,
            Schedule(eps=self.eps),
            steps=self.steps,
            solver=self.solver,
            mode=self.mode,
            mc_batch=self.mc_batch,
            chunk=self.chunk,
            generator=generator,
        )


#: Teachers of the labels: the training-free score (the paper) or a learned model, by its method name.
#: A learned one must offer ``transport(z) -> (x, nfe)``, the deterministic ODE map of noise to data.
TEACHERS = {"training_free": None, "score_model": "score_diffusion", "flow_matching": "flow_matching"}


# ------------------------------------------------------------------ 2. the generator
#: G's pairs, width and training per profile; ``paper``: the authors' (Adam 2e-3, full batch, 20,000 iterations).
GENERATOR_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(n_pairs=1024, hidden=32, iters=150, lr=2e-3, batch_size=256),
    "quick": dict(n_pairs=20_000, hidden=256, iters=4000, lr=2e-3, batch_size=512),
    "paper": dict(n_pairs="auto", hidden="auto", iters=20_000, lr=2e-3, batch_size=None),
}


def paper_hidden(d: int) -> int:
    """The authors' hidden width for dimension ``d`` (256 unless d is a UCI set's)."""
    return PAPER_HIDDEN.get(int(d), 256)


@register
class SupervisedDiffusion(Method):
    """Diffusion-assisted supervised generator G: z -> x, with an invertible student for the likelihood.

    1. labelling: n_pairs z ~ N(0, I), labels x0 = the probability-flow ODE from z at t = 1 back to
       t = 0 with the teacher's score (``teacher="training_free"``: the Monte-Carlo training-free
       score of the standardised data, the paper's; ``"score_model"`` / ``"flow_matching"``: a fitted
       ``score_diffusion`` / ``flow_matching`` model with ``teacher_profile``, whose fit is the phase
       "teacher");
    2. training: an MLP G (d -> H -> H -> d, tanh) fitted to the pairs by mean squared error (Adam,
       the paper's stepwise lr schedule);
    3. sampling: x = G(z) for fresh z, one forward pass.

    Likelihood (beyond the paper): G is not invertible, so a rational-quadratic coupling flow T
    (nflows) is regressed on the pairs (min mean |T^{-1}(z_i) - x_i|^2, ``student_steps``) and then
    fitted by maximum likelihood to fresh draws of G (``student_distill_steps``), so that its density
    describes G's samples. ``log_prob`` is log N(T(x); 0, I) + log|det dT/dx| (+ the standardiser's),
    normalised by construction (kind "exact"): the student's density, not G's own. ``info_`` records
    ``student_generator_gap`` (mean |T^{-1}(z) - G(z)|^2) and ``student_generator_ce`` (cross-entropy of
    4,096 draws of G under the student), and, for the training-free teacher, G's error against its
    teacher on held-out pairs (``teacher_fidelity_energy``...). The teacher is a Gaussian KDE of the
    standardised data with bandwidth sqrt(eps); ``eps="auto"`` picks eps by the validation
    log-likelihood of that KDE (``info_["eps"]``).

    Parameters
    ----------
    teacher, teacher_profile : the labelling teacher and a learned teacher's profile.
    eps, steps, solver, score_mode, mc_batch, chunk : the probability flow (``TrainingFreeTeacher``):
        eps (or "auto"), ODE steps, "euler" or "heun", and how the score uses the data.
    n_pairs, hidden, iters, lr, batch_size : pairs ("auto": max(200,000, N)), G's width ("auto": the
        paper's per dimension), Adam iterations, learning rate and minibatch (None: full batch).
    student_layers, student_bins, student_hidden, student_blocks, student_tail_bound : the coupling flow.
    student_steps, student_distill_steps, student_mle_steps, student_batch_size, student_lr : its three
        training stages (regression, distillation, optional maximum likelihood on the data).

    Profiles: ``paper`` is the authors' UCI code (explicit Euler, 500 steps, eps 0.01, Monte-Carlo
    batches of 1,000, 200,000 pairs, G of H = 256/512/1024/1400 on POWER/GAS/HEPMASS/MINIBOONE, Adam
    2e-3 full batch, 20,000 iterations with the lr halved at 5k, quartered at 10k, divided by 8 at 12k;
    the student is ours); ``quick``: 100 Euler steps, 20,000 pairs, G trained on 4,000 minibatches of
    512, a 4-layer student. Measurements: docs/flagship.md.

    References
    ----------
    Liu, Yang, Zhang, Bao, Cao & Zhang, "Diffusion-Model-Assisted Supervised Learning of Generative
    Models for Density Estimation", J. Mach. Learn. Model. Comput. 5(1), 2024 (arXiv 2310.14458).
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019 (the student).

    Example
    -------
    ::

        m = methods.create("supervised_diffusion", profile="quick", seed=0).fit(train)
        x = m.sample(5000, seed=1)      # (5000, d): one pass of G
        lp = m.log_prob(test)           # (n,) the invertible student's log density
        m.info_["student_generator_ce"] # how well that density describes G's samples
    """

    name: ClassVar[str] = "supervised_diffusion"
    log_prob_kind: ClassVar[str | None] = "exact"
    plot_style: ClassVar[tuple[str, str]] = ("#d62728", "o")
    profiles: ClassVar[dict[str, dict]] = {
        p: {
            "teacher": "training_free",
            "teacher_profile": p,
            **TEACHER_PROFILES[p],
            **GENERATOR_PROFILES[p],
            **STUDENT_PROFILES[p],
        }
        for p in PROFILES
    }
    param_specs: ClassVar[dict[str, Spec]] = {
        "teacher": Choice(*TEACHERS),
        "teacher_profile": Choice(*PROFILES),
        **TEACHER_SPECS,
        "n_pairs": Choice("auto") | Int(min=1),
        "hidden": Choice("auto") | Int(min=1),
        "iters": Int(min=1),
        "lr": Float(gt=0),
        "batch_size": Choice(None) | Int(min=1),
        **STUDENT_SPECS,
    }
    #: The teacher's bandwidth eps (the KDE the labels sample, docs/flagship.md), G's width and lr, the
    #: student's width and lr; the label count and step counts stay the profile's (docs/tuning.md).
    search_space: ClassVar[dict[str, Spec]] = {
        "eps": Float(1e-3, 0.3, log=True),
        "hidden": Int(32, 2048, log=True),
        "lr": Float(3e-4, 1e-2, log=True),
        "student_hidden": Int(16, 256, log=True),
        "student_lr": Float(3e-4, 1e-2, log=True),
    }

    @classmethod
    def check_params(cls, params: dict[str, Any], dim: int | None) -> None:
        if not params["student_steps"] + params["student_distill_steps"] + params["student_mle_steps"]:
            raise ValueError(
                "the student needs training: student_steps, student_distill_steps and student_mle_steps are all 0"
            )

    # ----------------------------------------------------------------- fit
    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p, (n, d) = self.params, train.shape
        self.device_ = device = resolve_device(self.device)
        self.scaler_ = Standardiser(train)
        data = to_tensor(self.scaler_.forward(train), device)
        teacher = TrainingFreeTeacher.from_params(p, data)
        with self.phase("bandwidth") if teacher.eps is None else nullcontext():
            teacher, chosen = teacher.with_eps_chosen(val, self.scaler_, numpy_stream(self.seed, Stream.BANDWIDTH))
        self.info_.update(chosen)

        # 1. labels: noise z and its image x0 under the teacher's probability flow
        n_pairs = max(PAPER_PAIRS, n) if p["n_pairs"] == "auto" else p["n_pairs"]
        z = torch.randn(n_pairs, d, generator=torch_stream(self.seed, Stream.LABEL_NOISE, device), device=device)
        x0, label_nfe = self._label(z, train, teacher)
        self.checkpoint("labels", 0, 0)  # labels done: a time, no quality (G does not exist yet)

        # 2. G: z -> x0 by regression
        hidden = paper_hidden(d) if p["hidden"] == "auto" else p["hidden"]
        with self.phase("training"), single_cpu_thread(device):
            mse = self._fit_generator(z, x0, hidden)
        if p["teacher"] == "training_free":  # held-out labels from the same probability flow
            with self.phase("fidelity"):
                self.info_.update(self._teacher_fidelity(teacher, min(FIDELITY_PAIRS, n_pairs), val))

        # 3. the likelihood (ours): an invertible student of G's samples
        with self.phase("student"), nflows_warnings_silenced(), single_cpu_thread(device):
            regression, distill, nll = self._fit_student(z, x0, data)
            gap, cross_entropy = self._student_fidelity(d)

        self.info_.update(
            {
                "n_pairs": n_pairs,
                "hidden": hidden,
                "label_nfe": label_nfe,
                "label_mean_sq_norm": float(x0.square().sum(dim=1).mean()),
                "train_mse": mse,
                "student_regression_mse": regression,
                "student_distill_nll": distill,
                "student_mle_nll": nll,
                "student_generator_gap": gap,
                "student_generator_ce": cross_entropy,
            }
        )

    def _label(self, z: torch.Tensor, train: np.ndarray, teacher: TrainingFreeTeacher) -> tuple[torch.Tensor, float]:
        """Labels x0 (n, d) for the noise ``z`` (n, d), standardised, from the chosen teacher, and the teacher's
        evaluations per trajectory. A learned teacher (``TEACHERS``) is first fitted to ``train`` with
        ``teacher_profile``, in its own fit phase "teacher"; it standardises the data as we do."""
        name = self.params["teacher"]
        if name == "training_free":
            with self.phase("labeling"):
                x0 = teacher.label(z, torch_stream(self.seed, Stream.LABEL_MC_ROWS, self.device_))
            return x0, teacher.evaluations
        import methods

        with self.phase("teacher"):
            model = methods.create(
                TEACHERS[name],
                self.params["teacher_profile"],
                device=str(self.device_),
                seed=stream_seed(self.seed, Stream.LEARNED_TEACHER),
            ).fit(train)
        with self.phase("labeling"):
            x0, nfe = model.transport(z)
        self.info_["teacher_final_loss"] = model.info_.get("final_loss")
        return x0, nfe / math.ceil(len(z) / model.params["eval_batch"])

    def _fit_generator(self, z: torch.Tensor, x0: torch.Tensor, hidden: int) -> float:
        """Build G (d -> hidden -> hidden -> d, tanh; seeded init) and regress it on the pairs; returns the MSE."""
        d, p = z.shape[1], self.params
        with seeded_init(stream_seed(self.seed, Stream.GENERATOR_INIT)):
            self.net_ = mlp(d, d, hidden, layers=2, act=nn.Tanh).to(self.device_)
        mse = regress_generator(
            self.net_,
            z,
            x0,
            iters=p["iters"],
            lr=p["lr"],
            batch=p["batch_size"],
            g=torch_stream(self.seed, Stream.GENERATOR_BATCHES, "cpu"),
            checkpoint=lambda step: self.checkpoint("generator", step, p["iters"], sample=self._sample),
        )
        self.net_.eval()
        return mse

    @torch.no_grad()
    def _teacher_fidelity(self, teacher: TrainingFreeTeacher, n: int, val: np.ndarray | None) -> dict[str, float]:
        """How far G is from its teacher, on ``n`` fresh pairs labelled like the training ones but held out.

        In data units: ``teacher_fidelity_energy``, the energy distance between G(z) and the teacher's
        labels (G's error against what it was taught); ``heldout_mse``, mean |G(z) - x0|^2 per coordinate
        (standardised, comparable with ``train_mse``); with ``val``, ``teacher_val_energy`` and
        ``generator_val_energy``, the labels' and G's energy distance to up to ``n`` validation rows
        (the teacher's own error and G's, on the same footing).
        """
        noise = torch_stream(self.seed, Stream.HELD_OUT_NOISE, self.device_)
        z = torch.randn(n, self.dim_, generator=noise, device=self.device_)
        x0 = teacher.label(z, torch_stream(self.seed, Stream.HELD_OUT_MC_ROWS, self.device_))
        x_g = batched(self.net_, z, SAMPLE_BATCH)
        out = {"heldout_mse": float((x_g - x0).square().mean())}
        labels, drawn = (self.scaler_.inverse(x.double().cpu().numpy()) for x in (x0, x_g))
        out["teacher_fidelity_energy"] = energy_distance(labels, drawn)
        if val is not None and len(val) >= 2:
            rows = val[numpy_stream(self.seed, Stream.HELD_OUT_NOISE).permutation(len(val))[:n]]
            out["teacher_val_energy"] = energy_distance(rows, labels)
            out["generator_val_energy"] = energy_distance(rows, drawn)
        return out

    def _fit_student(self, z: torch.Tensor, x0: torch.Tensor, data: torch.Tensor):
        """Build the coupling flow (seeded init) and fit it (``fit_student``): regressed on the pairs, G's
        distribution distilled into it, optionally fine-tuned on ``data``. Returns the stages' final losses."""
        settings = StudentSettings.from_params(self.params)
        with seeded_init(stream_seed(self.seed, Stream.STUDENT_INIT)):
            flow = settings.build(z.shape[1])
        self.student_ = flow.to(self.device_)
        noise, shape = torch_stream(self.seed, Stream.DISTILL_NOISE, self.device_), (settings.batch, z.shape[1])

        @torch.no_grad()
        def generator_draws() -> torch.Tensor:
            return self.net_(torch.randn(shape, generator=noise, device=self.device_))

        losses = fit_student(
            self.student_,
            z,
            x0,
            data,
            settings,
            draw_generator=generator_draws,
            g=torch_stream(self.seed, Stream.STUDENT_BATCHES, "cpu"),  # minibatch indices are drawn on the CPU
            checkpoint=lambda stage, step, planned: self.checkpoint(stage, step, planned, val_loglik=self._log_prob),
        )
        self.student_.eval()
        return losses

    @torch.no_grad()
    def _student_fidelity(self, d: int) -> tuple[float, float]:
        """How closely the student tracks G on fresh z: in standardised units
        mean |T^{-1}(z) - G(z)|^2, and the cross-entropy -mean log q(G(z)) of G's draws under the student
        in nats of the data's units (comparable with a test log-likelihood)."""
        noise = torch_stream(self.seed, Stream.STUDENT_CHECK_NOISE, self.device_)
        z = torch.randn(STUDENT_CHECK_DRAWS, d, generator=noise, device=self.device_)
        x_generator = self.net_(z)
        x_student, _ = self.student_._transform.inverse(z)
        gap = float((x_student - x_generator).square().sum(dim=1).mean())
        return gap, -float(self.student_.log_prob(x_generator).mean()) - float(self.scaler_.log_det)

    # ----------------------------------------------------------------- sample / log_prob
    @torch.no_grad()
    def _sample(self, n: int, seed: int) -> np.ndarray:
        z = torch.randn(
            n, self.dim_, generator=torch_stream(seed, Stream.SAMPLE_NOISE, self.device_), device=self.device_
        )
        x = batched(self.net_, z, CPU_SAMPLE_BATCH if self.device_.type == "cpu" else SAMPLE_BATCH)
        return self.scaler_.inverse(x.double().cpu().numpy())

    @torch.no_grad()
    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        xs = to_tensor(self.scaler_.forward(x), self.device_)
        with nflows_warnings_silenced():
            lp = batched(self.student_.log_prob, xs, LOG_PROB_BATCH)
        return lp.double().cpu().numpy() + self.scaler_.log_det
