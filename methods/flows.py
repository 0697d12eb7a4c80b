"""Normalizing-flow baselines from nflows 0.14 blocks: MAF, RealNVP and the two rational-quadratic spline flows.

All four are fitted by maximum likelihood on standardised data (``harness.toolkit.mle.fit_mle``) and
give exact, normalised log densities. nflows 0.14 on current torch: ``NaiveLinear`` is never used
(its inverse calls the removed ``torch.solve``), and ``LULinear``'s deprecation warning is silenced
around sampling.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.nn.nets import ResidualNet
from nflows.transforms import (
    AffineCouplingTransform,
    BatchNorm,
    CompositeTransform,
    LULinear,
    MaskedAffineAutoregressiveTransform,
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    PiecewiseRationalQuadraticCouplingTransform,
    RandomPermutation,
    ReversePermutation,
    Transform,
)
from nflows.utils.torchutils import create_alternating_binary_mask
from torch import nn
from torch.nn import functional as F

from harness.toolkit.compat import nflows_warnings_silenced
from harness.toolkit.device import batched, resolve_device, to_tensor
from harness.toolkit.mle import TrainConfig, fit_mle
from harness.toolkit.seeding import global_torch_rng, seeded_init, stream_seed
from harness.toolkit.standardise import Standardiser
from methods import register
from methods.base import PROFILES, Bool, Choice, Float, Int, Method, Spec

__all__ = ["MAF", "RealNVP", "NSFAutoregressive", "NSFCoupling"]

SAMPLE_BATCH = 10_000  # rows per inverse pass when sampling
LOG_PROB_BATCH = 8192  # rows per forward pass in log_prob

SAMPLE = 3  # seed-stream purpose of sampling (fit_mle uses the primary stream and purposes 1, 2)


class _TwoNets(nn.Module):
    """Coupling net of the MAF paper's Real NVP: separate MLPs for shift and log-scale.

    Shift net uses ReLU, scale net tanh (Papamakarios et al. 2017, code
    ``ml/models/nvps.py``). Output (b, 2 * out_half) is [shift, unconstrained
    scale], the layout nflows' ``AffineCouplingTransform`` expects.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        half = d_out // 2
        self.shift = _mlp(d_in, half, hidden, layers, nn.ReLU, dropout)
        self.scale = _mlp(d_in, half, hidden, layers, nn.Tanh, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([self.shift(x), self.scale(x)], dim=1)


def _mlp(d_in: int, d_out: int, hidden: int, layers: int, act: type[nn.Module], dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = d_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), act()]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
        width = hidden
    mods.append(nn.Linear(width, d_out))
    return nn.Sequential(*mods)


class _NflowsFlow(Method):
    """Shared machinery: build an nflows ``Flow``, fit it by maximum likelihood,
    evaluate and sample in batches on the method's device.

    Subclasses define ``_step(i, d)``, the i-th data-to-noise layer, and
    ``reverse_between`` (insert a ``ReversePermutation`` between layers when no
    LU layers are used: the MAF paper's order reversal for autoregressive flows;
    coupling flows alternate their masks instead).

    Architecture keys: ``n_layers`` flow steps; ``hidden`` units; ``n_blocks``
    (see each class); ``dropout`` in the conditioner nets; ``batch_norm`` adds
    a batch-norm transform after every step (MAF paper); ``use_lu`` precedes
    every step, and ends the flow, with a random permutation and an LU-factored
    linear layer (NSF paper). Training keys: see ``harness.toolkit.mle.TrainConfig``.
    """

    log_prob_kind: ClassVar[str] = "exact"
    min_dim: ClassVar[int] = 2  # a 1-D autoregressive or coupling step has nothing to condition on
    param_specs: ClassVar[dict[str, Spec]] = {
        "n_layers": Int(min=1),
        "hidden": Int(min=1),
        "n_blocks": Int(min=1),
        "dropout": Float(min=0, lt=1),
        "batch_norm": Bool(),
        "use_lu": Bool(),
        # training (harness.toolkit.mle.TrainConfig)
        "batch_size": Int(min=1),
        "lr": Float(gt=0),
        "steps": Int(min=1),
        "grad_clip": Choice(None) | Float(gt=0),
        "eval_every": Choice("epoch") | Int(min=1),
        "patience": Choice(None) | Int(min=1),
        "weight_decay": Float(min=0),
        "anneal": Bool(),
    }
    #: Architecture and optimiser; training length stays the profile's (docs/tuning.md).
    search_space: ClassVar[dict[str, Spec]] = {
        "lr": Float(1e-5, 1e-2, log=True),
        "hidden": Int(16, 1024, log=True),
        "n_layers": Int(2, 12),
        "n_blocks": Int(1, 3),
        "dropout": Float(0.0, 0.3),
    }
    reverse_between: ClassVar[bool] = False

    # ----------------------------------------------------------- building
    def _step(self, i: int, d: int) -> Transform:
        raise NotImplementedError

    def _build_transform(self, d: int) -> Transform:
        p = self.params
        parts: list[Transform] = []
        for i in range(p["n_layers"]):
            if p["use_lu"]:
                parts += [RandomPermutation(d), LULinear(d, identity_init=True)]
            elif self.reverse_between and i > 0:
                parts.append(ReversePermutation(d))
            parts.append(self._step(i, d))
            if p["batch_norm"]:
                parts.append(BatchNorm(d))
        if p["use_lu"]:
            parts += [RandomPermutation(d), LULinear(d, identity_init=True)]
        return CompositeTransform(parts)

    # ----------------------------------------------------------- contract
    def _fit(self, train: np.ndarray, val: np.ndarray | None) -> None:
        d = train.shape[1]
        config = TrainConfig.from_params(self.params)
        self.device_ = resolve_device(self.device)
        self.scaler_ = Standardiser(train)
        x_train = to_tensor(self.scaler_.forward(train), self.device_)
        x_val = None if val is None else to_tensor(self.scaler_.forward(val), self.device_)
        with seeded_init(self.seed):
            self.flow_ = Flow(self._build_transform(d), StandardNormal([d])).to(self.device_)
        with self.phase("training"):
            info = fit_mle(
                self.flow_,
                self._data_log_prob,
                x_train,
                x_val,
                config,
                seed=self.seed,
                name=self.name,
                checkpoint=lambda step, planned, ll: self.checkpoint("training", step, planned, val_loglik=ll),
            )
        self.info_.update(info, n_params=sum(p.numel() for p in self.flow_.parameters()))

    def _data_log_prob(self, x_std: torch.Tensor) -> torch.Tensor:
        """Log density in data units of standardised rows ``x_std`` (b, d) -> (b,)."""
        return self.flow_.log_prob(x_std) + self.scaler_.log_det

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        x_std = to_tensor(self.scaler_.forward(x), self.device_)
        return batched(self._data_log_prob, x_std, LOG_PROB_BATCH).double().cpu().numpy()

    @torch.no_grad()
    def _sample(self, n: int, seed: int) -> np.ndarray:
        chunks = []
        # nflows' StandardNormal draws from torch's global generator: fork it, seed it, restore it.
        with global_torch_rng(stream_seed(seed, SAMPLE), self.device_), nflows_warnings_silenced():
            for start in range(0, n, SAMPLE_BATCH):
                chunks.append(self.flow_.sample(min(SAMPLE_BATCH, n - start)))
        return self.scaler_.inverse(torch.cat(chunks).double().cpu().numpy())


def _profiles(arch: dict[str, dict[str, Any]], train: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {**arch[name], **train[name]} for name in PROFILES}


# Training settings. "paper" entries differ per family and are set per class.
_SMOKE_TRAIN = dict(
    batch_size=128, lr=3e-3, steps=60, grad_clip=5.0, eval_every=20, patience=None, weight_decay=0.0, anneal=True
)
# quick: sized by measurement for a ~10 s cell (fit on 20,000 2-D points, log_prob and samples on 5,000).
_QUICK_TRAIN = dict(
    batch_size=512, lr=3e-3, steps=800, grad_clip=5.0, eval_every=100, patience=5, weight_decay=0.0, anneal=True
)
_QUICK_NSF_TRAIN = dict(_QUICK_TRAIN, batch_size=1024, lr=5e-3, steps=300, eval_every=50)
# MAF paper (Papamakarios et al. 2017) and the authors' code (gpapamak/maf, experiments.py):
# Adam lr 1e-4 without annealing, minibatch 100, L2 weight decay 1e-6 (coefficient/2 * |w|^2,
# i.e. Adam weight_decay 1e-6), validation every epoch, stop after 30 epochs without improvement,
# no gradient clipping and no step cap (our cap of 10^8 steps never binds in practice).
_MAF_PAPER_TRAIN = dict(
    batch_size=100,
    lr=1e-4,
    steps=100_000_000,
    grad_clip=None,
    eval_every="epoch",
    patience=30,
    weight_decay=1e-6,
    anneal=False,
)
# NSF paper (Durkan et al. 2019) UCI script defaults (bayesiains/nsf, experiments/uci.py):
# batch 64, Adam lr 3e-4 cosine-annealed to 0 over 200k steps, grad-norm clip 5, validation every
# 250 steps with the best-validation checkpoint kept, no early stopping.
_NSF_PAPER_TRAIN = dict(
    batch_size=64, lr=3e-4, steps=200_000, grad_clip=5.0, eval_every=250, patience=None, weight_decay=0.0, anneal=True
)


@register
class MAF(_NflowsFlow):
    """Masked autoregressive flow (Papamakarios, Pavlakou & Murray, NeurIPS 2017).

    Each step is an affine MADE (nflows ``MaskedAffineAutoregressiveTransform``,
    plain masked MLP with ReLU, ``n_blocks`` hidden layers of ``hidden`` units),
    followed by a batch-norm transform when ``batch_norm``; the variable order
    is reversed between MADEs. Density: one pass; sampling: d sequential MADE passes per step.

    Profiles:

    * ``paper``: MAF (5) of the paper's UCI experiments as run by the authors'
      code (gpapamak/maf, ``run_experiments.py``/``experiments.py``): 5 MADEs,
      2 hidden layers of 512 ReLU units (their HEPMASS/MINIBOONE/BSDS300
      width; POWER and GAS used 100, GAS with tanh), batch norm between MADEs,
      sequential degrees, Adam 1e-4, batch 100, weight decay 1e-6, early
      stopping after 30 epochs without validation improvement.
      Differences that remain: nflows parametrises the scale as
      softplus(.) + 1e-3 rather than exp, and its batch norm uses running
      averages (momentum 0.1) where the original recomputed statistics on the
      whole training set.
    * ``quick``: ours, sized by measurement so fit on 20,000 2-D points plus
      log_prob on 5,000 and 5,000 samples takes under 10 s on CPU: 5 MADEs of
      2 x 64 units with batch norm, batch 512, Adam 3e-3 cosine, 800 steps.
    * ``smoke``: ours, well under a second on 512 points (contract tests).

    Parameters: see ``_NflowsFlow`` (architecture) and ``harness.toolkit.mle.TrainConfig`` (training).

    References
    ----------
    Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.

    Example
    -------
    ::

        m = methods.create("maf", "smoke", seed=0).fit(train, val)
        m.log_prob(test)                # (n,) exact log density, nats
    """

    name = "maf"
    plot_style = ("#1f77b4", "s")
    reverse_between = True
    profiles = _profiles(
        arch={
            "smoke": dict(n_layers=2, hidden=16, n_blocks=1, dropout=0.0, batch_norm=False, use_lu=False),
            "quick": dict(n_layers=5, hidden=64, n_blocks=2, dropout=0.0, batch_norm=True, use_lu=False),
            "paper": dict(n_layers=5, hidden=512, n_blocks=2, dropout=0.0, batch_norm=True, use_lu=False),
        },
        train={"smoke": _SMOKE_TRAIN, "quick": _QUICK_TRAIN, "paper": _MAF_PAPER_TRAIN},
    )

    def _step(self, i: int, d: int) -> Transform:
        p = self.params
        return MaskedAffineAutoregressiveTransform(
            features=d,
            hidden_features=p["hidden"],
            num_blocks=p["n_blocks"] - 1,  # nflows: initial layer + blocks
            use_residual_blocks=False,
            random_mask=False,
            activation=F.relu,
            dropout_probability=p["dropout"],
        )


@register
class RealNVP(_NflowsFlow):
    """Real NVP affine coupling flow (Dinh, Sohl-Dickstein & Bengio, ICLR 2017).

    Each step is an nflows ``AffineCouplingTransform`` with alternating masks
    (so every dimension is transformed, also for d = 2) whose conditioner is the
    MAF paper's pair of MLPs (``n_blocks`` hidden layers of ``hidden`` units;
    shift net ReLU, scale net tanh), followed by a batch-norm transform when
    ``batch_norm``.
    Density and sampling are both one pass per step.

    Profiles:

    * ``paper``: Real NVP (10) as the MAF paper ran it on UCI (authors' code,
      gpapamak/maf ``nvps.py``/``experiments.py``): 10 coupling layers, 2 hidden
      layers of 512 units (their HEPMASS/MINIBOONE/BSDS300 width; POWER and GAS
      used 100; they ran 1 and 2 hidden layers), batch norm after every
      coupling layer, Adam 1e-4, batch 100,
      weight decay 1e-6, early stopping after 30 epochs without improvement.
      Difference that remains: nflows bounds the scale as sigmoid(. + 2) + 1e-3
      where the original used exp.
    * ``quick``: ours, measured under 10 s for the whole 2-D cell on CPU:
      6 coupling layers with 1 x 64-unit nets and batch norm, batch 512,
      Adam 5e-3 cosine, 800 steps.
    * ``smoke``: ours, well under a second on 512 points.

    Parameters: see ``_NflowsFlow`` (architecture) and ``harness.toolkit.mle.TrainConfig`` (training).

    References
    ----------
    Dinh, Sohl-Dickstein & Bengio, "Density Estimation Using Real NVP", ICLR 2017.

    Example
    -------
    ::

        m = methods.create("realnvp", "smoke", seed=0).fit(train, val)
        m.log_prob(test)                # (n,) exact log density, nats
    """

    name = "realnvp"
    plot_style = ("#17becf", "D")
    profiles = _profiles(
        arch={
            "smoke": dict(n_layers=2, hidden=16, n_blocks=1, dropout=0.0, batch_norm=False, use_lu=False),
            "quick": dict(n_layers=6, hidden=64, n_blocks=1, dropout=0.0, batch_norm=True, use_lu=False),
            "paper": dict(n_layers=10, hidden=512, n_blocks=2, dropout=0.0, batch_norm=True, use_lu=False),
        },
        train={"smoke": _SMOKE_TRAIN, "quick": dict(_QUICK_TRAIN, lr=5e-3), "paper": _MAF_PAPER_TRAIN},
    )

    def _step(self, i: int, d: int) -> Transform:
        p = self.params
        return AffineCouplingTransform(
            mask=create_alternating_binary_mask(d, even=(i % 2 == 0)),
            transform_net_create_fn=lambda d_in, d_out: _TwoNets(d_in, d_out, p["hidden"], p["n_blocks"], p["dropout"]),
        )


_NSF_SPECS = {**_NflowsFlow.param_specs, "bins": Int(min=1), "tail_bound": Float(gt=0)}
_NSF_SPACE = {**_NflowsFlow.search_space, "bins": Int(4, 16)}
# NSF paper UCI script defaults (bayesiains/nsf experiments/uci.py): 10 steps of
# [random permutation + LU linear, RQ transform] plus a final linear layer, 256 hidden
# units, 2 residual blocks, 8 bins, linear tails outside [-3, 3], dropout 0.25, no batch norm.
_NSF_PAPER_ARCH = dict(
    n_layers=10, hidden=256, n_blocks=2, bins=8, tail_bound=3.0, dropout=0.25, batch_norm=False, use_lu=True
)
_NSF_QUICK_ARCH = dict(
    n_layers=3, hidden=64, n_blocks=1, bins=8, tail_bound=3.0, dropout=0.0, batch_norm=False, use_lu=True
)
_NSF_SMOKE_ARCH = dict(
    n_layers=2, hidden=16, n_blocks=1, bins=4, tail_bound=3.0, dropout=0.0, batch_norm=False, use_lu=True
)


_NSF_PROFILES = _profiles(
    arch={"smoke": _NSF_SMOKE_ARCH, "quick": _NSF_QUICK_ARCH, "paper": _NSF_PAPER_ARCH},
    train={"smoke": _SMOKE_TRAIN, "quick": _QUICK_NSF_TRAIN, "paper": _NSF_PAPER_TRAIN},
)


@register
class NSFAutoregressive(_NflowsFlow):
    """Rational-quadratic neural spline flow, autoregressive (Durkan, Bekasov,
    Murray & Papamakarios, NeurIPS 2019).

    Each step is a random permutation and an LU-factored linear layer, then an
    nflows ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` (residual
    MADE with ``n_blocks`` residual blocks, ``bins`` bins, identity tails
    outside [-tail_bound, tail_bound]); a final permutation + LU layer closes
    the flow. Density: one pass; sampling: d sequential MADE passes per step.

    Profiles:

    * ``paper``: the defaults of the authors' UCI script (bayesiains/nsf
      ``experiments/uci.py``): 10 steps, LU linear layers, 256 hidden
      features, 2 residual blocks, 8 bins, tail bound 3, dropout 0.25, batch
      64, Adam 3e-4 with cosine annealing, 200k steps, grad-norm clip 5,
      best-validation checkpoint (no early stopping). The paper tuned some of
      these per dataset (its appendix table); override them to reproduce a
      particular row.
    * ``quick``: ours, measured under 10 s for the whole 2-D cell on CPU:
      3 steps, 64 hidden, 1 residual block, 8 bins, batch 1024, Adam 5e-3
      cosine, 300 steps.
    * ``smoke``: ours, about a second on 512 points.

    Parameters: see ``_NflowsFlow`` (architecture) and ``harness.toolkit.mle.TrainConfig`` (training).

    References
    ----------
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.

    Example
    -------
    ::

        m = methods.create("nsf_ar", "smoke", seed=0).fit(train, val)
        m.log_prob(test)                # (n,) exact log density, nats
    """

    name = "nsf_ar"
    plot_style = ("#2ca02c", "^")
    reverse_between = True
    profiles = _NSF_PROFILES
    param_specs = _NSF_SPECS
    search_space = _NSF_SPACE

    def _step(self, i: int, d: int) -> Transform:
        p = self.params
        return MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            features=d,
            hidden_features=p["hidden"],
            num_bins=p["bins"],
            tails="linear",
            tail_bound=p["tail_bound"],
            num_blocks=p["n_blocks"],
            use_residual_blocks=True,
            random_mask=False,
            activation=F.relu,
            dropout_probability=p["dropout"],
        )


@register
class NSFCoupling(_NflowsFlow):
    """Rational-quadratic neural spline flow, coupling (Durkan et al., NeurIPS 2019).

    Each step is a random permutation and an LU-factored linear layer, then an
    nflows ``PiecewiseRationalQuadraticCouplingTransform`` with alternating
    masks (every dimension is transformed, also for d = 2), a ``ResidualNet``
    conditioner (``n_blocks`` residual blocks of ``hidden`` units), ``bins``
    bins, linear tails outside [-tail_bound, tail_bound], and the paper's
    unconditional piecewise-linear transform of the identity half; a final
    permutation + LU layer closes the flow. Density and sampling: one pass.

    Profiles:

    * ``paper``: as ``nsf_ar`` (authors' UCI script defaults with
      ``--base_transform_type rq-coupling``).
    * ``quick``: ours, as ``nsf_ar``.
    * ``smoke``: ours, about a second on 512 points.

    Parameters: see ``_NflowsFlow`` (architecture) and ``harness.toolkit.mle.TrainConfig`` (training).

    References
    ----------
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.

    Example
    -------
    ::

        m = methods.create("nsf_c", "smoke", seed=0).fit(train, val)
        m.log_prob(test)                # (n,) exact log density, nats
    """

    name = "nsf_c"
    plot_style = ("#bcbd22", "<")
    profiles = _NSF_PROFILES
    param_specs = _NSF_SPECS
    search_space = _NSF_SPACE

    def _step(self, i: int, d: int) -> Transform:
        p = self.params
        return PiecewiseRationalQuadraticCouplingTransform(
            mask=create_alternating_binary_mask(d, even=(i % 2 == 0)),
            transform_net_create_fn=lambda d_in, d_out: ResidualNet(
                d_in,
                d_out,
                hidden_features=p["hidden"],
                num_blocks=p["n_blocks"],
                activation=F.relu,
                dropout_probability=p["dropout"],
            ),
            num_bins=p["bins"],
            tails="linear",
            tail_bound=p["tail_bound"],
            apply_unconditional_transform=True,
        )
