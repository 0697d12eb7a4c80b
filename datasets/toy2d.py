"""The eight 2-D toy sets of FFJORD (Grathwohl, Chen et al., ICLR 2019), with true log densities.

Rewritten with an explicit ``numpy.random.Generator``; splits and fresh samples
come from independent seeded streams. Construction, densities and the departures
from FFJORD: docs/datasets.md.

Example::

    ds = datasets.get("moons")
    splits = ds.load(seed=0)              # (20000, 2), (5000, 2), (5000, 2)
    ds.log_prob(splits.test).mean()       # true test log-likelihood, nats
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.special import i0e, logsumexp

from datasets import register
from datasets.base import Dataset, Splits
from harness.toolkit.gaussian import LOG_2PI

SPLIT_STREAMS = (1, 2, 3)  # train, val, test
SAMPLE_STREAM = 4
_CHUNK_ELEMENTS = 1 << 20  # rows x quadrature nodes held at once in log_prob
_D = 1.0 / np.sqrt(2.0)
_COMPASS = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (_D, _D), (_D, -_D), (-_D, _D), (-_D, -_D)])


# --------------------------------------------------------------------- helpers
def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _check_points(x: object) -> np.ndarray:
    """(n, 2) finite float64 array, or a one-line ValueError."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"x must be a numeric array: {e}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("x contains NaN or inf")
    return arr


def _stream(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([tag, seed])


def _balanced_counts(n: int, parts: int) -> np.ndarray:
    """Sizes of ``parts`` groups: ``n // parts`` each, the first ``n % parts`` one more."""
    counts = np.full(parts, n // parts)
    counts[: n % parts] += 1
    return counts


def _log_gauss2(sq_dist: np.ndarray, sigma: float) -> np.ndarray:
    """log N(x; c, sigma^2 I_2) from the squared distance |x - c|^2."""
    return -0.5 * sq_dist / sigma**2 - LOG_2PI - 2.0 * np.log(sigma)


def _log_noisy_circle(radius_x: np.ndarray, r: float, sigma: float) -> np.ndarray:
    """Log density at |x| = ``radius_x`` of a uniform-angle circle of radius r plus N(0, sigma^2 I).

    p(x) = exp(-(|x|^2 + r^2) / (2 sigma^2)) I0(|x| r / sigma^2) / (2 pi sigma^2);
    with i0e(z) = exp(-z) I0(z) the log is
    -(|x| - r)^2 / (2 sigma^2) + log i0e(|x| r / sigma^2) - log(2 pi sigma^2).
    """
    z = radius_x * r / sigma**2
    return -0.5 * (radius_x - r) ** 2 / sigma**2 + np.log(i0e(z)) - LOG_2PI - 2.0 * np.log(sigma)


def _composite_gauss_legendre(a: float, b: float, panels: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and log weights of ``panels`` equal Gauss-Legendre panels of ``order`` nodes on [a, b]."""
    ref_nodes, ref_weights = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(a, b, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    nodes = (mid + half * ref_nodes).ravel()
    weights = (half * ref_weights).ravel()
    return nodes, np.log(weights)


def _log_curve_density(
    x: np.ndarray, centres: np.ndarray, log_weights: np.ndarray, length: float, sigma: float
) -> np.ndarray:
    """log of (1 / length) * integral of N(x; c(t), sigma^2 I) dt by quadrature, in the log domain.

    x (n, 2); centres (m, 2) = c(t_j) at the nodes; log_weights (m,) the nodes' log weights.
    Memory is bounded by evaluating ``_CHUNK_ELEMENTS`` (row, node) pairs at a time.
    """
    out = np.empty(len(x))
    scale = 0.5 / sigma**2
    centre_terms = log_weights - scale * (centres**2).sum(axis=1)  # (m,)
    rows = max(1, _CHUNK_ELEMENTS // len(centres))
    for start in range(0, len(x), rows):
        block = x[start : start + rows]
        # log w_j - |x - c_j|^2 / (2 sigma^2), expanded (a matmul with inner size 2 is slow)
        terms = np.multiply.outer(2.0 * scale * block[:, 0], centres[:, 0])
        terms += np.multiply.outer(2.0 * scale * block[:, 1], centres[:, 1])
        terms += centre_terms
        terms -= scale * (block**2).sum(axis=1, keepdims=True)
        peak = terms.max(axis=1, keepdims=True)
        np.subtract(terms, peak, out=terms)
        np.exp(terms, out=terms)
        out[start : start + rows] = np.log(terms.sum(axis=1)) + peak[:, 0]
    return out - np.log(length) - LOG_2PI - 2.0 * np.log(sigma)


# ------------------------------------------------------------------ base class
class ToyDataset(Dataset):
    """A 2-D synthetic set: seeded splits, fresh samples, and (when known) the true log density.

    ``n_train`` / ``n_val`` / ``n_test`` (default 20,000 / 5,000 / 5,000) are
    class attributes; set them on an instance or a subclass to change the sizes.
    """

    dim = 2
    synthetic: ClassVar[bool] = True
    group: ClassVar[str] = "2d"
    n_train: int = 20_000
    n_val: int = 5_000
    n_test: int = 5_000

    def load(self, seed: int = 0, root: Path | None = None) -> Splits:
        """Train, val and test, each drawn from its own stream of ``seed``; ``root`` is unused."""
        seed = _check_seed(seed)
        parts = [
            self._generate(_check_count(n), _stream(seed, tag))
            for n, tag in zip(self.sizes(), SPLIT_STREAMS, strict=False)
        ]
        return Splits(*parts)

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` fresh points (n, 2) float64; independent of the splits for the same seed."""
        return self._generate(_check_count(n), _stream(_check_seed(seed), SAMPLE_STREAM))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """True natural-log density of each row of ``x`` (n, 2); shape (n,)."""
        if not self.has_density:
            raise NotImplementedError(f"dataset '{self.name}' has no known density")
        return self._log_prob(_check_points(x))

    def sizes(self) -> tuple[int, int, int]:
        return (int(self.n_train), int(self.n_val), int(self.n_test))

    @abstractmethod
    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points (n, 2) float64 drawn with ``rng``."""

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _NoisyCircles(ToyDataset):
    """Circles of the given radii with uniform angles, plus isotropic Gaussian noise ``sigma``."""

    radii: ClassVar[tuple[float, ...]]
    sigma: ClassVar[float]
    has_density = True

    @abstractmethod
    def _counts(self, n: int) -> list[int]:
        """Points per circle, in the order of ``radii``."""

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        radius = np.repeat(self.radii, self._counts(n))
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return rng.permutation(x) + self.sigma * rng.standard_normal((n, 2))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(x, axis=1)
        parts = [_log_noisy_circle(norm, r, self.sigma) for r in self.radii]
        return logsumexp(parts, axis=0) - np.log(len(self.radii))


class _NoisyCurves(ToyDataset):
    """Points c_k(t) + N(0, sigma^2 I) on curves k with t uniform on [t_min, t_max].

    ``log_prob`` integrates the noise density along each curve by composite
    Gauss-Legendre quadrature (``panels`` x ``order`` nodes) in the log domain;
    curves have equal weights.
    """

    t_range: ClassVar[tuple[float, float]]
    sigma: ClassVar[float]
    panels: ClassVar[int]
    order: ClassVar[int] = 8
    has_density = True

    @staticmethod
    @abstractmethod
    def _curves() -> list[Callable[[np.ndarray], np.ndarray]]:
        """Each maps t (m,) to points (m, 2)."""

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        a, b = self.t_range
        nodes, log_w = _composite_gauss_legendre(a, b, self.panels, self.order)
        parts = [_log_curve_density(x, curve(nodes), log_w, b - a, self.sigma) for curve in self._curves()]
        return logsumexp(parts, axis=0) - np.log(len(parts))


# -------------------------------------------------------------------- datasets
@register
class EightGaussians(ToyDataset):
    """Eight Gaussians N(4 c_k / 1.414, (0.5 / 1.414)^2 I), c_k the 8 unit compass directions."""

    name = "8gaussians"
    description = "8 isotropic Gaussians on a circle of radius 2.83 (FFJORD)"
    has_density = True
    centres: ClassVar[np.ndarray] = 4.0 * _COMPASS / 1.414
    std: ClassVar[float] = 0.5 / 1.414

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        component = rng.integers(len(self.centres), size=n)
        return self.centres[component] + self.std * rng.standard_normal((n, 2))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        sq = ((x[:, None, :] - self.centres[None]) ** 2).sum(axis=-1)
        return logsumexp(_log_gauss2(sq, self.std), axis=1) - np.log(len(self.centres))


@register
class Checkerboard(ToyDataset):
    """Uniform on the 8 'black' squares of side 2 of a 4 x 4 board on [-4, 4)^2.

    Square (i, j) = [2i, 2i + 2) x [2j, 2j + 2), i, j in {-2, ..., 1}, is black
    when i + j is even. Density 1/32 there; ``log_prob`` is -inf elsewhere
    (off the board and on the white squares).
    """

    name = "checkerboard"
    description = "uniform on 8 squares of a 4x4 checkerboard on [-4,4]^2 (FFJORD)"
    has_density = True

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.uniform(-2.0, 2.0, size=n)
        row_shift = np.floor(u) % 2  # odd columns hold the odd rows
        v = rng.uniform(0.0, 1.0, size=n) - 2.0 * rng.integers(2, size=n) + row_shift
        return 2.0 * np.stack([u, v], axis=1)

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        cell = np.floor(x / 2.0)
        on_board = ((cell >= -2) & (cell <= 1)).all(axis=1)
        black = (cell.sum(axis=1) % 2) == 0
        return np.where(on_board & black, -np.log(32.0), -np.inf)


@register
class Rings(_NoisyCircles):
    """Four concentric circles, radii 3, 2.25, 1.5, 0.75, plus N(0, 0.08^2 I)."""

    name = "rings"
    description = "4 concentric noisy circles, radii 0.75-3 (FFJORD)"
    radii = (3.0, 2.25, 1.5, 0.75)
    sigma = 0.08

    def _counts(self, n: int) -> list[int]:
        quarter = n // 4
        return [quarter, quarter, quarter, n - 3 * quarter]


@register
class Circles(_NoisyCircles):
    """make_circles(factor 0.5, noise 0.08) scaled by 3: radii 3 and 1.5, noise 0.24."""

    name = "circles"
    description = "2 concentric noisy circles, radii 3 and 1.5 (FFJORD / sklearn)"
    radii = (3.0, 1.5)
    sigma = 0.08 * 3.0  # the noise is added before the scaling

    def _counts(self, n: int) -> list[int]:
        return [n // 2, n - n // 2]


def _outer_moon(t: np.ndarray) -> np.ndarray:
    return np.stack([2.0 * np.cos(t) - 1.0, 2.0 * np.sin(t) - 0.2], axis=1)


def _inner_moon(t: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - 2.0 * np.cos(t), 0.8 - 2.0 * np.sin(t)], axis=1)


@register
class Moons(_NoisyCurves):
    """make_moons(noise 0.1) * 2 + (-1, -0.2): two half circles of radius 2, noise 0.2.

    Outer arc (2 cos t - 1, 2 sin t - 0.2), inner arc (1 - 2 cos t, 0.8 - 2 sin t),
    t uniform on [0, pi]. Quadrature: 48 panels x 8 nodes per arc.
    """

    name = "moons"
    description = "two interleaved noisy half circles (FFJORD / sklearn)"
    t_range = (0.0, float(np.pi))
    sigma = 0.1 * 2.0  # the noise is added before the scaling
    panels = 48

    @staticmethod
    def _curves() -> list[Callable[[np.ndarray], np.ndarray]]:
        return [_outer_moon, _inner_moon]

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        t = rng.uniform(0.0, np.pi, size=n)
        outer = n // 2
        x = np.concatenate([_outer_moon(t[:outer]), _inner_moon(t[outer:])])
        return rng.permutation(x) + self.sigma * rng.standard_normal((n, 2))


def _swiss_roll(t: np.ndarray) -> np.ndarray:
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5.0


@register
class SwissRoll(_NoisyCurves):
    """make_swiss_roll(noise 1) coordinates (0, 2) / 5: (t cos t, t sin t) / 5 + N(0, 0.2^2 I).

    t uniform on [1.5 pi, 4.5 pi]. Quadrature: 128 panels x 8 nodes.
    """

    name = "swissroll"
    description = "noisy 2-D swiss roll spiral (FFJORD / sklearn)"
    t_range = (1.5 * np.pi, 4.5 * np.pi)
    sigma = 1.0 / 5.0
    panels = 128

    @staticmethod
    def _curves() -> list[Callable[[np.ndarray], np.ndarray]]:
        return [_swiss_roll]

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        t = rng.uniform(*self.t_range, size=n)
        return _swiss_roll(t) + self.sigma * rng.standard_normal((n, 2))


@register
class Pinwheel(ToyDataset):
    """Five curved arms (Johnson et al. 2016, as in FFJORD); no closed-form density here.

    Features f ~ N((1, 0), diag(0.3^2, 0.1^2)) are rotated by -(2 pi k / 5 + 0.25 exp(f_0))
    for arm k and scaled by 2.
    """

    name = "pinwheel"
    description = "5 curved arms of a pinwheel (FFJORD)"
    has_density = False
    arms: ClassVar[int] = 5

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        arm = np.repeat(np.arange(self.arms), _balanced_counts(n, self.arms))
        f = rng.standard_normal((n, 2)) * np.array([0.3, 0.1]) + np.array([1.0, 0.0])
        angle = 2.0 * np.pi * arm / self.arms + 0.25 * np.exp(f[:, 0])
        cos, sin = np.cos(angle), np.sin(angle)
        x = np.stack([f[:, 0] * cos + f[:, 1] * sin, f[:, 1] * cos - f[:, 0] * sin], axis=1)
        return 2.0 * rng.permutation(x)


@register
class TwoSpirals(ToyDataset):
    """Two interleaved spirals (FFJORD); no closed-form density here.

    t = 3 pi sqrt(u), point (-t cos t + 0.5 u1, t sin t + 0.5 u2) with u, u1, u2
    uniform; the second spiral is the negation; everything / 3 + N(0, 0.1^2 I).
    """

    name = "2spirals"
    description = "two interleaved noisy spirals (FFJORD)"
    has_density = False

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        t = 3.0 * np.pi * np.sqrt(rng.uniform(size=n))
        jitter = 0.5 * rng.uniform(size=(n, 2))
        arm = np.stack([-t * np.cos(t), t * np.sin(t)], axis=1) + jitter
        arm[n // 2 :] *= -1.0
        return rng.permutation(arm) / 3.0 + 0.1 * rng.standard_normal((n, 2))
