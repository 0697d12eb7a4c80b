"""Wasserstein GAN with gradient penalty (Gulrajani et al., NeurIPS 2017): a sampler without a likelihood."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from harness.toolkit.device import resolve_device, to_tensor
from harness.toolkit.nets import mlp
from harness.toolkit.seeding import seeded_init, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training import Adam, minibatches, train
from methods import register
from methods.base import Choice, Float, Int, Method, Seq

__all__ = ["WGANGP", "gradient_penalty"]

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
SAMPLE_BATCH = 1 << 16
NOISE, SAMPLE = 1, 2  # seed-stream purposes: training noise (latents, penalty points), sampling


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """E[(|grad critic(x_hat)|_2 - 1)^2] with x_hat = u real + (1 - u) fake, u ~ U(0, 1) per row."""
    u = torch.rand(real.shape[0], 1, generator=g, device=real.device)
    x_hat = (u * real + (1 - u) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.norm(dim=1) - 1.0) ** 2).mean()


@register
class WGANGP(Method):
    """WGAN-GP: MLP generator G: z ~ N(0, I) -> x and critic D: x -> R, trained in alternation.

    Each generator step follows ``n_critic`` critic steps on
    E[D(G(z))] - E[D(x)] + gp_weight E[(|grad D(x_hat)| - 1)^2] (x_hat uniform on segments between
    real and generated points); the generator minimises -E[D(G(z))]. Adam for both, on
    standardised data. No likelihood (``log_prob_kind`` None).

    Parameters
    ----------
    latent_dim : noise size (None: max(d, 2)).
    hidden, layers, activation : width, depth and activation of both MLPs.
    steps : generator steps; n_critic : critic steps per generator step; batch : rows per step.
    lr, betas : Adam settings of both networks; gp_weight : gradient-penalty weight lambda.

    Profiles: ``paper`` is Algorithm 1 (lambda 10, n_critic 5, lr 1e-4) with the toy-data setup of the
    authors' ``gan_toy.py`` (3 x 512 ReLU, batch 256, betas (0.5, 0.9), 100,000 steps); ``quick``
    uses their toy-data lambda = 0.1 (lambda = 10 kept the generator oscillating on a 2-D Gaussian).

    References
    ----------
    Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville, "Improved Training of Wasserstein GANs",
    NeurIPS 2017.

    Example
    -------
    ::

        m = methods.create("gan", "smoke", seed=0).fit(x)
        m.sample(1000)                  # (1000, d)
    """

    name = "gan"
    log_prob_kind = None
    plot_style = ("#ff7f0e", "X")
    profiles = {
        "smoke": dict(
            latent_dim=None,
            hidden=32,
            layers=2,
            activation="relu",
            steps=60,
            n_critic=5,
            batch=256,
            lr=1e-3,
            betas=(0.5, 0.9),
            gp_weight=0.1,
        ),
        "quick": dict(
            latent_dim=None,
            hidden=64,
            layers=3,
            activation="relu",
            steps=450,
            n_critic=5,
            batch=256,
            lr=1e-3,
            betas=(0.5, 0.9),
            gp_weight=0.1,
        ),
        "paper": dict(
            latent_dim=None,
            hidden=512,
            layers=3,
            activation="relu",
            steps=100_000,
            n_critic=5,
            batch=256,
            lr=1e-4,
            betas=(0.5, 0.9),
            gp_weight=10.0,
        ),
    }
    param_specs = {
        "latent_dim": Choice(None) | Int(min=1),
        "hidden": Int(min=1),
        "layers": Int(min=1),
        "activation": Choice(*ACTIVATIONS),
        "steps": Int(min=1),
        "n_critic": Int(min=1),
        "batch": Int(min=1),
        "lr": Float(gt=0),
        "betas": Seq(Float(min=0, lt=1), length=2),
        "gp_weight": Float(min=0),
    }
    search_space = {
        "lr": Float(1e-5, 3e-3, log=True),
        "hidden": Int(16, 1024, log=True),
        "layers": Int(2, 4),
        "gp_weight": Float(0.01, 100.0, log=True),
    }

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p = self.params
        self.device_ = resolve_device(self.device)
        self.latent_dim_ = int(p["latent_dim"] or max(self.dim_, 2))
        self.scaler_ = Standardiser(train)
        act = ACTIVATIONS[p["activation"]]
        with seeded_init(self.seed):
            gen = mlp(self.latent_dim_, self.dim_, p["hidden"], p["layers"], act)
            critic = mlp(self.dim_, 1, p["hidden"], p["layers"], act)
        self.generator_, self.critic_ = gen.to(self.device_), critic.to(self.device_)
        with self.phase("training"):
            self._train(to_tensor(self.scaler_.forward(train), self.device_))

    def _train(self, x: torch.Tensor) -> None:
        p, n_critic = self.params, self.params["n_critic"]
        g = torch_stream(self.seed, NOISE, self.device_)
        opt_g = Adam(self.generator_.parameters(), p["lr"], betas=p["betas"])
        opt_c = Adam(self.critic_.parameters(), p["lr"], betas=p["betas"])
        batch = min(p["batch"], len(x))
        real_batches = minibatches(len(x), batch, p["steps"] * n_critic, torch_stream(self.seed), self.device_)
        last: dict[str, torch.Tensor] = {}

        def step(k: int, indices: tuple[torch.Tensor, ...]) -> torch.Tensor:
            for idx in indices:  # n_critic critic steps, then one generator step
                real = x[idx]
                with torch.no_grad():
                    fake = self.generator_(self._noise(batch, g))
                last["wasserstein"] = self.critic_(fake).mean() - self.critic_(real).mean()
                last["critic"] = opt_c.step(
                    last["wasserstein"] + p["gp_weight"] * gradient_penalty(self.critic_, real, fake, g)
                )
            last["generator"] = opt_g.step(-self.critic_(self.generator_(self._noise(batch, g))).mean())
            return torch.stack([last["critic"], last["generator"]])

        train(
            step,
            p["steps"],
            name=self.name,
            batches=zip(*[real_batches] * n_critic, strict=True),
            hook=lambda k, _: self.checkpoint("training", k, p["steps"], sample=self._sample),
        )
        self.info_.update(
            critic_loss=float(last["critic"].detach()),
            generator_loss=float(last["generator"].detach()),
            wasserstein_estimate=-float(last["wasserstein"].detach()),
        )

    def _noise(self, n: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim_, generator=g, device=self.device_)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        g = torch_stream(seed, SAMPLE, self.device_)
        with torch.no_grad():
            out = [
                self.generator_(self._noise(min(SAMPLE_BATCH, n - i), g)).cpu().numpy()
                for i in range(0, n, SAMPLE_BATCH)
            ]
        return self.scaler_.inverse(np.concatenate(out).astype(np.float64))
