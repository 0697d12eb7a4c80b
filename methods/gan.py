"""Wasserstein GAN with gradient penalty (Gulrajani et al., NeurIPS 2017).

Generator G: z ~ N(0, I_latent) -> x and critic D: x -> R, both MLPs. Each
generator step follows ``n_critic`` critic steps on
    E[D(G(z))] - E[D(x)] + lambda E[(|grad D(x_hat)| - 1)^2],
x_hat uniform on segments between real and generated points; the generator
minimises -E[D(G(z))]. Adam for both. No likelihood (``log_prob_kind`` None).

Profiles
--------
smoke : tiny, for the contract test (~1-2 s on 512 points).
quick : 2-core CPU budget of ~8 s for fit on 20,000 2-D points + 5,000 samples:
        450 generator steps of 64-unit MLPs, lr 1e-3, and the authors' toy-data
        penalty lambda = 0.1 (``gan_toy.py``). Measured on a 2-D Gaussian,
        lambda = 10 kept the generator oscillating (spread and correlation
        swinging) for 1,500 steps at lr 1e-4 and 1e-3, while lambda = 0.1
        matched it within 500 steps; on 8gaussians it covers all 8 modes.
paper : Gulrajani et al. (2017). Algorithm 1 defaults: lambda = 10,
        n_critic = 5, Adam lr 1e-4; betas (0.5, 0.9) and the toy-data setup of
        the authors' ``gan_toy.py`` (three hidden ReLU layers of 512 units,
        batch 256, 100,000 generator steps, noise size 2 for 2-D data).
        Algorithm 1 states beta1 = 0 (we keep 0.5 from ``gan_toy.py``) and
        ``gan_toy.py`` uses lambda = 0.1 on toy sets (as our quick profile does).

Example::

    m = methods.create("gan", "smoke").fit(x)
    m.sample(1000)                       # (1000, d)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from methods import register
from methods._checkpoint import is_checkpoint
from methods._torch import (seeded_init, Standardizer, check_loss, generator, minibatches, mlp, progress,
                            resolve_device, to_tensor)
from methods.base import Choice, Float, Int, Method, Seq

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
SAMPLE_BATCH = 1 << 16


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """E[(|grad critic(x_hat)|_2 - 1)^2] with x_hat = u real + (1 - u) fake, u ~ U(0, 1) per row."""
    u = torch.rand(real.shape[0], 1, generator=g, device=real.device)
    x_hat = (u * real + (1 - u) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.norm(dim=1) - 1.0) ** 2).mean()


@register
class WGANGP(Method):
    """WGAN-GP with MLP generator and critic; a sampler only."""

    name = "gan"
    log_prob_kind = None
    profiles = {
        "smoke": dict(latent_dim=None, hidden=32, layers=2, activation="relu", steps=60, n_critic=5,
                      batch=256, lr=1e-3, betas=(0.5, 0.9), gp_weight=0.1),
        "quick": dict(latent_dim=None, hidden=64, layers=3, activation="relu", steps=450, n_critic=5,
                      batch=256, lr=1e-3, betas=(0.5, 0.9), gp_weight=0.1),
        "paper": dict(latent_dim=None, hidden=512, layers=3, activation="relu", steps=100_000, n_critic=5,
                      batch=256, lr=1e-4, betas=(0.5, 0.9), gp_weight=10.0),
    }
    param_specs = {
        "latent_dim": Choice(None) | Int(min=1), "hidden": Int(min=1), "layers": Int(min=1),
        "activation": Choice(*ACTIVATIONS), "steps": Int(min=1), "n_critic": Int(min=1), "batch": Int(min=1),
        "lr": Float(gt=0), "betas": Seq(Float(min=0, lt=1), length=2), "gp_weight": Float(min=0),
    }

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p = self.params
        if p["activation"] not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {p['activation']!r}")
        for key in ("n_critic", "steps"):
            if int(p[key]) < 1:
                raise ValueError(f"{key} must be a positive integer, got {p[key]!r}")
        self.device_ = resolve_device(self.device)
        self.latent_dim_ = int(p["latent_dim"] or max(self.dim_, 2))
        self.scaler_ = Standardizer(train)
        act = ACTIVATIONS[p["activation"]]
        with seeded_init(self.seed):
            gen = mlp(self.latent_dim_, self.dim_, p["hidden"], p["layers"], act)
            critic = mlp(self.dim_, 1, p["hidden"], p["layers"], act)
        self.generator_, self.critic_ = gen.to(self.device_), critic.to(self.device_)
        with self.phase("training"):
            self._train(to_tensor(self.scaler_.forward(train), self.device_))

    def _train(self, x: torch.Tensor) -> None:
        p = self.params
        g_cpu, g_dev = generator(self.seed, "cpu"), generator(self.seed + 1, self.device_)
        opt_g = torch.optim.Adam(self.generator_.parameters(), lr=p["lr"], betas=tuple(p["betas"]))
        opt_c = torch.optim.Adam(self.critic_.parameters(), lr=p["lr"], betas=tuple(p["betas"]))
        batch = min(p["batch"], len(x))
        real_batches = iter(minibatches(len(x), batch, p["steps"] * p["n_critic"], g_cpu, self.device_))
        critic_loss = gen_loss = float("nan")
        for step in progress(range(p["steps"]), p["steps"], f"{self.name} training"):
            for _ in range(p["n_critic"]):
                real = x[next(real_batches)]
                with torch.no_grad():
                    fake = self.generator_(self._noise(batch, g_dev))
                wasserstein = self.critic_(fake).mean() - self.critic_(real).mean()
                loss_c = wasserstein + p["gp_weight"] * gradient_penalty(self.critic_, real, fake, g_dev)
                critic_loss = check_loss(loss_c, step, self.name)
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
            loss_g = -self.critic_(self.generator_(self._noise(batch, g_dev))).mean()
            gen_loss = check_loss(loss_g, step, self.name)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if is_checkpoint(step + 1, p["steps"]) and self.checkpoint("training", step + 1, p["steps"],
                                                                       sample=self._sample):
                break
        self.info_.update(critic_loss=critic_loss, generator_loss=gen_loss,
                          wasserstein_estimate=-float(wasserstein.detach()))

    def _noise(self, n: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim_, generator=g, device=self.device_)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        g = generator(seed, self.device_)
        with torch.no_grad():
            out = [self.generator_(self._noise(min(SAMPLE_BATCH, n - i), g)).cpu().numpy()
                   for i in range(0, n, SAMPLE_BATCH)]
        return self.scaler_.inverse(np.concatenate(out).astype(np.float64))
