"""The flagship's teacher as a sampler: the probability-flow ODE with the training-free score."""

from __future__ import annotations

from contextlib import nullcontext
from enum import IntEnum
from typing import ClassVar

import numpy as np
import torch

from harness.toolkit.device import resolve_device, to_tensor
from harness.toolkit.seeding import numpy_stream, torch_stream
from harness.toolkit.standardise import Standardiser
from methods import register
from methods.base import Float, Method, Spec
from methods.supervised_diffusion import TEACHER_PROFILES, TEACHER_SPECS, TrainingFreeTeacher


class Stream(IntEnum):
    """Seed-stream purposes (``harness.toolkit.seeding``), one independent stream each; the values fix the results."""

    SAMPLE_NOISE = 7  # z of ``sample``
    SAMPLE_MC_ROWS = 8  # the score's Monte-Carlo rows while sampling
    BANDWIDTH = 12  # rows held out and scored by eps="auto"


@register
class TrainingFreeODE(Method):
    """The flagship's teacher as a sampler: the probability-flow ODE with the training-free score.

    ``fit`` standardises and stores the data (and picks eps for ``eps="auto"``); each ``sample`` call
    draws z ~ N(0, I) and integrates dZ/dt = f(t) Z - 0.5 g^2(t) S(Z, t) from t = 1 to 0 with the exact
    score S of the data smoothed by the forward process (``info_["nfe"]`` score evaluations per
    sample). No likelihood (its density is the KDE mean_j N(x_j, eps I) of the standardised data).

    Parameters
    ----------
    eps, steps, solver, score_mode, mc_batch, chunk : as ``supervised_diffusion``'s labelling.

    Profiles are the labelling settings of ``supervised_diffusion``'s profiles.

    References
    ----------
    Liu et al., J. Mach. Learn. Model. Comput. 5(1), 2024 (arXiv 2310.14458).

    Example
    -------
    ::

        m = methods.create("training_free_ode", "smoke", seed=0).fit(x)
        m.sample(500, seed=1)           # (500, d); m.info_["nfe"] score evaluations each
    """

    name: ClassVar[str] = "training_free_ode"
    log_prob_kind: ClassVar[str | None] = None
    plot_style: ClassVar[tuple[str, str]] = ("#e377c2", "v")
    profiles: ClassVar[dict[str, dict]] = TEACHER_PROFILES
    param_specs: ClassVar[dict[str, Spec]] = TEACHER_SPECS
    search_space: ClassVar[dict[str, Spec]] = {"eps": Float(1e-3, 0.3, log=True)}

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        self.device_ = resolve_device(self.device)
        with self.phase("setup"):  # all the "training" there is: standardise and store the data
            self.scaler_ = Standardiser(train)
            data = to_tensor(self.scaler_.forward(train), self.device_)
        teacher = TrainingFreeTeacher.from_params(self.params, data)
        with self.phase("bandwidth") if teacher.eps is None else nullcontext():
            self.teacher_, chosen = teacher.with_eps_chosen(
                val, self.scaler_, numpy_stream(self.seed, Stream.BANDWIDTH)
            )
        self.info_.update(chosen)
        self.info_["nfe"] = self.teacher_.evaluations

    def _sample(self, n: int, seed: int) -> np.ndarray:
        z = torch.randn(
            n, self.dim_, generator=torch_stream(seed, Stream.SAMPLE_NOISE, self.device_), device=self.device_
        )
        x = self.teacher_.label(z, torch_stream(seed, Stream.SAMPLE_MC_ROWS, self.device_))
        return self.scaler_.inverse(x.double().cpu().numpy())
