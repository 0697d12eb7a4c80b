"""Variational autoencoder with Gaussian encoder and decoder (Kingma & Welling, ICLR 2014).

q(z|x) = N(mu_q(x), diag sigma_q(x)^2), p(z) = N(0, I),
p(x|z) = N(mu_p(z), diag sigma_p(z)^2) with a learned per-point decoder scale
floored at ``min_decoder_std`` (in standardised units) so the likelihood stays
bounded. Trained by maximising the ELBO (one reparameterised sample, analytic
KL) with Adam (eps 1e-4 as in Burda et al.), optionally with a cosine learning
rate decay and a linear KL warm-up over the first ``kl_warmup`` fraction of
steps (Bowman et al. 2016; without it quick fits on 8gaussians often used a
single latent direction).

``log_prob`` is the importance-weighted bound of Burda, Grosse & Salakhutdinov
(ICLR 2016) with K = ``k_eval`` proposals from q:
log p(x) >= E[log (1/K) sum_k p(x, z_k) / q(z_k|x)], which increases with K
towards log p(x); kind "bound". It is evaluated in chunks of points and of
proposals (memory bounded) with a generator seeded from ``seed``, so repeated
calls give identical values.

Profiles
--------
smoke : tiny, for the contract test (~1-2 s on 512 points).
quick : 2-core CPU budget of ~8 s for fit on 20,000 2-D points + 5,000 samples +
        the K = 50 bound on 5,000 points: 2,000 steps, lr 2e-3 cosine, 5% warm-up.
paper : Burda et al. (2016): two deterministic hidden layers of 200 tanh units
        in encoder and decoder, Adam (beta 0.9, 0.999, eps 1e-4), lr 1e-3,
        batch 20, no warm-up; evaluation with K = 1,000 (Burda et al. used 5,000
        on MNIST and a stepwise lr decay). Latent size d and the step count are
        ours (tabular data).

Example::

    m = methods.create("vae", "smoke").fit(x)
    m.log_prob(x[:100])   # importance-weighted lower bound, nats
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from methods import register
from methods._checkpoint import is_checkpoint
from methods._torch import (seeded_init, Standardizer, check_loss, generator, minibatches, mlp, progress,
                            resolve_device, to_tensor)
from methods.base import Bool, Choice, Float, Int, Method

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU}
LOG_2PI = math.log(2.0 * math.pi)
EVAL_ROWS = 1 << 16  # (proposal, point) pairs evaluated at once in the bound


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag std^2) summed over the last axis."""
    return (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI).sum(dim=-1)


class GaussianMLP(nn.Module):
    """u (..., d_in) -> (mean, std), each (..., d_out); std = min_std + softplus(raw)."""

    def __init__(self, d_in: int, d_out: int, hidden: int, layers: int, act: type[nn.Module], min_std: float) -> None:
        super().__init__()
        self.d_out = d_out
        self.min_std = min_std
        self.net = mlp(d_in, 2 * d_out, hidden, layers, act)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(u).split(self.d_out, dim=-1)
        return mean, self.min_std + nn.functional.softplus(raw)


@torch.no_grad()
def iwae_bound(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Importance-weighted bound log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(.|x); x (n, d) -> (n,).

    ``encoder(x) -> (mean, std)`` of q(z|x); ``decoder(z) -> (mean, std)`` of p(x|z).
    """
    mean_q, std_q = encoder(x)
    k_chunk = max(1, EVAL_ROWS // len(x))
    log_w = []
    for start in range(0, k, k_chunk):
        eps = torch.randn((min(k_chunk, k - start), *mean_q.shape), generator=g, device=x.device, dtype=x.dtype)
        z = mean_q + std_q * eps                                   # (kc, n, dz)
        mean_p, std_p = decoder(z)
        log_prior = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI
        log_q = gaussian_log_prob(z, mean_q, std_q)
        log_w.append(gaussian_log_prob(x, mean_p, std_p) + log_prior - log_q)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


@register
class VAE(Method):
    """Gaussian VAE; likelihood = importance-weighted lower bound (Burda et al. 2016)."""

    name = "vae"
    log_prob_kind = "bound"
    profiles = {
        "smoke": dict(latent_dim=None, hidden=32, layers=2, activation="silu", steps=200, batch=256,
                      lr=3e-3, cosine=True, kl_warmup=0.05, min_decoder_std=1e-3, k_eval=16, eval_batch=1024),
        "quick": dict(latent_dim=None, hidden=128, layers=2, activation="silu", steps=2000, batch=256,
                      lr=2e-3, cosine=True, kl_warmup=0.05, min_decoder_std=1e-3, k_eval=50, eval_batch=1024),
        "paper": dict(latent_dim=None, hidden=200, layers=2, activation="tanh", steps=200_000, batch=20,
                      lr=1e-3, cosine=False, kl_warmup=0.0, min_decoder_std=1e-3, k_eval=1000, eval_batch=256),
    }
    param_specs = {
        "latent_dim": Choice(None) | Int(min=1), "hidden": Int(min=1), "layers": Int(min=1),
        "activation": Choice(*ACTIVATIONS), "steps": Int(min=1), "batch": Int(min=1), "lr": Float(gt=0),
        "cosine": Bool(), "kl_warmup": Float(min=0, max=1), "min_decoder_std": Float(gt=0),
        "k_eval": Int(min=1), "eval_batch": Int(min=1),
    }

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p = self.params
        if p["activation"] not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {p['activation']!r}")
        if int(p["k_eval"]) < 1:
            raise ValueError(f"k_eval must be a positive integer, got {p['k_eval']!r}")
        self.device_ = resolve_device(self.device)
        self.latent_dim_ = int(p["latent_dim"] or self.dim_)
        self.scaler_ = Standardizer(train)
        act = ACTIVATIONS[p["activation"]]
        with seeded_init(self.seed):
            encoder = GaussianMLP(self.dim_, self.latent_dim_, p["hidden"], p["layers"], act, 1e-4)
            decoder = GaussianMLP(self.latent_dim_, self.dim_, p["hidden"], p["layers"], act, p["min_decoder_std"])
        self.encoder_, self.decoder_ = encoder.to(self.device_), decoder.to(self.device_)
        with self.phase("training"):
            self._train(to_tensor(self.scaler_.forward(train), self.device_))
        if val is not None:
            with torch.no_grad():
                g = generator(self.seed + 2, self.device_)
                elbo = self._elbo(to_tensor(self.scaler_.forward(val[:10_000]), self.device_), g)
            self.info_["val_elbo"] = float(elbo) + self.scaler_.log_det

    def _elbo(self, x: torch.Tensor, g: torch.Generator, kl_weight: float = 1.0) -> torch.Tensor:
        """Mean ELBO over rows: one reparameterised sample, analytic KL to N(0, I) times ``kl_weight``."""
        mean_q, std_q = self.encoder_(x)
        z = mean_q + std_q * torch.randn(mean_q.shape, generator=g, device=x.device)
        mean_p, std_p = self.decoder_(z)
        kl = 0.5 * (mean_q**2 + std_q**2 - 1.0).sum(-1) - torch.log(std_q).sum(-1)
        return (gaussian_log_prob(x, mean_p, std_p) - kl_weight * kl).mean()

    def _train(self, x: torch.Tensor) -> None:
        p = self.params
        g_cpu, g_dev = generator(self.seed, "cpu"), generator(self.seed + 1, self.device_)
        parameters = [*self.encoder_.parameters(), *self.decoder_.parameters()]
        opt = torch.optim.Adam(parameters, lr=p["lr"], eps=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, p["steps"]) if p["cosine"] else None
        warmup_steps = p["kl_warmup"] * p["steps"]
        loss_value = float("nan")
        batches = minibatches(len(x), p["batch"], p["steps"], g_cpu, self.device_)
        for step, idx in enumerate(progress(batches, p["steps"], f"{self.name} training")):
            kl_weight = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
            loss = -self._elbo(x[idx], g_dev, kl_weight)
            loss_value = check_loss(loss, step, self.name)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if is_checkpoint(step + 1, p["steps"]) and self.checkpoint("training", step + 1, p["steps"],
                                                                       val_loglik=self._log_prob):
                break
        self.info_["final_elbo"] = -loss_value + self.scaler_.log_det

    def _sample(self, n: int, seed: int) -> np.ndarray:
        g = generator(seed, self.device_)
        out = []
        with torch.no_grad():
            for start in range(0, n, EVAL_ROWS):
                z = torch.randn(min(EVAL_ROWS, n - start), self.latent_dim_, generator=g, device=self.device_)
                mean, std = self.decoder_(z)
                out.append((mean + std * torch.randn(mean.shape, generator=g, device=self.device_)).cpu().numpy())
        return self.scaler_.inverse(np.concatenate(out).astype(np.float64))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        y = to_tensor(self.scaler_.forward(x), self.device_)
        g = generator(self.seed + 3, self.device_)
        k = int(p["k_eval"])
        out = [iwae_bound(self.encoder_, self.decoder_, y[i:i + p["eval_batch"]], k, g).cpu().numpy()
               for i in range(0, len(y), p["eval_batch"])]
        return np.concatenate(out).astype(np.float64) + self.scaler_.log_det
