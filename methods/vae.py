"""Variational autoencoder with Gaussian encoder and decoder; likelihood by the importance-weighted bound."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from harness.toolkit.device import resolve_device, to_tensor
from harness.toolkit.gaussian import LOG_2PI
from harness.toolkit.gaussian import diagonal_normal_log_prob as gaussian_log_prob
from harness.toolkit.nets import mlp
from harness.toolkit.seeding import row_normal, seeded_init, stream_seed, torch_stream
from harness.toolkit.standardise import Standardiser
from harness.toolkit.training import Adam, minibatches, train
from methods import register
from methods.base import Bool, Choice, Float, Int, Method

__all__ = ["VAE", "GaussianMLP", "iwae_bound"]

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU}
EVAL_ROWS = 1 << 16  # (proposal, point) pairs evaluated at once in the bound
BOUND_GAP_ROWS = 500  # rows of the K-versus-4K bound gap
NOISE, VALIDATION, BOUND, SAMPLE = 1, 2, 3, 4  # seed-stream purposes


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
def iwae_bound(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Importance-weighted bound log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(.|x); x (n, d) -> (n,).

    ``encoder(x) -> (mean, std)`` of q(z|x); ``decoder(z) -> (mean, std)`` of p(x|z). The proposals'
    noise is row-keyed (``row_normal`` with ``seed``): a row's bound is the same in any batch, and the
    first K of 4K proposals are the K ones.
    """
    mean_q, std_q = encoder(x)
    k_chunk = max(1, EVAL_ROWS // len(x))
    log_w = []
    for start in range(0, k, k_chunk):
        eps = row_normal(x, seed, min(k_chunk, k - start), mean_q.shape[1], offset=start)
        z = mean_q + std_q * eps  # (kc, n, dz)
        mean_p, std_p = decoder(z)
        log_prior = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI
        log_q = gaussian_log_prob(z, mean_q, std_q)
        log_w.append(gaussian_log_prob(x, mean_p, std_p) + log_prior - log_q)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


@register
class VAE(Method):
    """Gaussian VAE: q(z|x) = N(mu_q(x), diag sigma_q(x)^2), p(z) = N(0, I), p(x|z) = N(mu_p(z), diag sigma_p(z)^2).

    The decoder scale is learned per point and floored at ``min_decoder_std`` (standardised units)
    so the likelihood stays bounded. Training maximises the ELBO (one reparameterised sample,
    analytic KL) with Adam (eps 1e-4, as Burda et al.), an optional cosine decay and a linear KL
    warm-up over the first ``kl_warmup`` fraction of steps (Bowman et al. 2016). ``log_prob`` is the
    importance-weighted bound log (1/K) sum_k p(x, z_k) / q(z_k|x), K = ``k_eval`` (kind "bound";
    it rises with K towards log p(x)), from a fixed stream so repeated calls agree.

    Parameters
    ----------
    latent_dim : latent size (None: d).
    hidden, layers, activation : width, depth and activation of encoder and decoder MLPs.
    steps, batch, lr, cosine : Adam steps, rows per step, learning rate, cosine decay.
    kl_warmup : fraction of steps over which the KL weight rises from 0 to 1.
    min_decoder_std : floor of the decoder's standard deviation.
    k_eval, eval_batch : proposals of the bound and rows per evaluation batch.

    Profiles: ``paper`` follows Burda et al. (2016): 2 x 200 tanh units, Adam lr 1e-3, batch 20,
    K = 1,000 (latent size and step count are ours); ``quick``: 2,000 steps, lr 2e-3 cosine, 5% warm-up.

    References
    ----------
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
    Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.

    Example
    -------
    ::

        m = methods.create("vae", "smoke", seed=0).fit(x)
        m.log_prob(x[:100])             # (100,) importance-weighted lower bound, nats
    """

    name = "vae"
    log_prob_kind = "bound"
    plot_style = ("#8c564b", "h")
    profiles = {
        "smoke": dict(
            latent_dim=None,
            hidden=32,
            layers=2,
            activation="silu",
            steps=200,
            batch=256,
            lr=3e-3,
            cosine=True,
            kl_warmup=0.05,
            min_decoder_std=1e-3,
            k_eval=16,
            eval_batch=1024,
        ),
        "quick": dict(
            latent_dim=None,
            hidden=128,
            layers=2,
            activation="silu",
            steps=2000,
            batch=256,
            lr=2e-3,
            cosine=True,
            kl_warmup=0.05,
            min_decoder_std=1e-3,
            k_eval=50,
            eval_batch=1024,
        ),
        "paper": dict(
            latent_dim=None,
            hidden=200,
            layers=2,
            activation="tanh",
            steps=200_000,
            batch=20,
            lr=1e-3,
            cosine=False,
            kl_warmup=0.0,
            min_decoder_std=1e-3,
            k_eval=1000,
            eval_batch=256,
        ),
    }
    param_specs = {
        "latent_dim": Choice(None) | Int(min=1),
        "hidden": Int(min=1),
        "layers": Int(min=1),
        "activation": Choice(*ACTIVATIONS),
        "steps": Int(min=1),
        "batch": Int(min=1),
        "lr": Float(gt=0),
        "cosine": Bool(),
        "kl_warmup": Float(min=0, max=1),
        "min_decoder_std": Float(gt=0),
        "k_eval": Int(min=1),
        "eval_batch": Int(min=1),
    }
    search_space = {
        "lr": Float(1e-4, 1e-2, log=True),
        "hidden": Int(16, 512, log=True),
        "layers": Int(1, 4),
        "kl_warmup": Float(0.0, 0.3),
    }

    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        p = self.params
        self.device_ = resolve_device(self.device)
        self.latent_dim_ = int(p["latent_dim"] or self.dim_)
        self.scaler_ = Standardiser(train)
        act = ACTIVATIONS[p["activation"]]
        with seeded_init(self.seed):
            encoder = GaussianMLP(self.dim_, self.latent_dim_, p["hidden"], p["layers"], act, 1e-4)
            decoder = GaussianMLP(self.latent_dim_, self.dim_, p["hidden"], p["layers"], act, p["min_decoder_std"])
        self.encoder_, self.decoder_ = encoder.to(self.device_), decoder.to(self.device_)
        with self.phase("training"):
            self._train(to_tensor(self.scaler_.forward(train), self.device_))
        if val is not None:
            with torch.no_grad():
                g = torch_stream(self.seed, VALIDATION, self.device_)
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
        g = torch_stream(self.seed, NOISE, self.device_)
        opt = Adam(
            [*self.encoder_.parameters(), *self.decoder_.parameters()],
            p["lr"],
            eps=1e-4,
            schedule="cosine" if p["cosine"] else None,
            steps=p["steps"],
        )
        warmup_steps = p["kl_warmup"] * p["steps"]

        def step(k: int, idx: torch.Tensor) -> torch.Tensor:
            kl_weight = min(1.0, k / warmup_steps) if warmup_steps > 0 else 1.0
            return opt.step(-self._elbo(x[idx], g, kl_weight))

        result = train(
            step,
            p["steps"],
            name=self.name,
            batches=minibatches(len(x), p["batch"], p["steps"], torch_stream(self.seed), self.device_),
            hook=lambda k, _: self.checkpoint("training", k, p["steps"], val_loglik=self._log_prob),
        )
        self.info_["final_elbo"] = -float(result.loss) + self.scaler_.log_det

    def _sample(self, n: int, seed: int) -> np.ndarray:
        g = torch_stream(seed, SAMPLE, self.device_)
        out = []
        with torch.no_grad():
            for start in range(0, n, EVAL_ROWS):
                z = torch.randn(min(EVAL_ROWS, n - start), self.latent_dim_, generator=g, device=self.device_)
                mean, std = self.decoder_(z)
                out.append((mean + std * torch.randn(mean.shape, generator=g, device=self.device_)).cpu().numpy())
        return self.scaler_.inverse(np.concatenate(out).astype(np.float64))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        return self._bound(x, int(self.params["k_eval"]))

    def _bound(self, x: np.ndarray, k: int) -> np.ndarray:
        """The importance-weighted bound (n,) with ``k`` proposals per row of ``x`` (n, d), in data units."""
        p = self.params
        y = to_tensor(self.scaler_.forward(x), self.device_)
        seed = stream_seed(self.seed, BOUND)
        out = [
            iwae_bound(self.encoder_, self.decoder_, y[i : i + p["eval_batch"]], k, seed).cpu().numpy()
            for i in range(0, len(y), p["eval_batch"])
        ]
        return np.concatenate(out).astype(np.float64) + self.scaler_.log_det

    def likelihood_error(self, x: np.ndarray) -> dict[str, float]:
        """``bound_gap``: mean bound with 4K proposals minus mean bound with K (``k_eval``) on the first
        ``BOUND_GAP_ROWS`` rows of ``x``; the first K of the 4K proposals are the K ones, so the gap is the
        bound's slack that more proposals remove, with little Monte-Carlo noise."""
        rows, k = x[:BOUND_GAP_ROWS], int(self.params["k_eval"])
        return {"bound_gap": float(np.mean(self._bound(rows, 4 * k) - self._bound(rows, k)))}
