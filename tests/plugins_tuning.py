"""Test plugin (imported by the tuning tests, or loaded through DENSITYBENCH_PLUGINS): a method whose
validation log-likelihood is a known function of its one tuned parameter, and a dataset whose test
split raises when it is read."""

from __future__ import annotations

import time

import numpy as np

import datasets
import methods
from datasets.base import Dataset, Splits
from methods.base import Float, Int, Method

LOG_2PI = float(np.log(2 * np.pi))


@methods.register
class TuningProbe(Method):
    """N(mean of the data, s^2 I) with s = exp(log_scale): the validation log-likelihood peaks where s is
    the data's scale. "Training" takes ``steps`` checkpoints whose scale shrinks from 2 s to s, each
    reporting the validation log-likelihood (pruners see a curve), after ``delay`` seconds."""

    name = "tuning_probe"
    log_prob_kind = "exact"
    profiles = {p: {"log_scale": 1.0, "steps": 3, "delay": 0.0} for p in ("smoke", "quick", "paper")}
    param_specs = {"log_scale": Float(-5.0, 5.0), "steps": Int(1, 100), "delay": Float(0.0, 60.0)}
    search_space = {"log_scale": Float(-2.0, 2.0)}

    def _fit(self, train, val):
        p = self.params
        self.mean_ = train.mean(axis=0)
        final = float(np.exp(p["log_scale"]))
        with self.phase("training"):
            for k in range(1, p["steps"] + 1):
                self.scale_ = final * (1.0 + (p["steps"] - k) / p["steps"])
                time.sleep(p["delay"])
                self.checkpoint("training", k, p["steps"], val_loglik=self._log_prob)
        self.scale_ = final

    def _sample(self, n, seed):
        return self.mean_ + self.scale_ * np.random.default_rng(seed).standard_normal((n, self.dim_))

    def _log_prob(self, x):
        z = (x - self.mean_) / self.scale_
        return -0.5 * (z**2).sum(1) - self.dim_ * (np.log(self.scale_) + 0.5 * LOG_2PI)


class GuardedSplits(Splits):
    """Splits whose test split raises when it is read."""

    @property
    def test(self) -> np.ndarray:
        raise RuntimeError("the test split was read")

    @test.setter
    def test(self, value: np.ndarray) -> None:
        self._test = value


@datasets.register
class GuardedTest(Dataset):
    """A 2-D Gaussian whose test split raises when read: tuning must never touch it."""

    name = "guarded_test"
    dim = 2
    synthetic = True

    def load(self, seed=0, root=None):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((1500, 2)) * [2.0, 0.5]
        return GuardedSplits(x[:1000], x[1000:1250], x[1250:])
