"""Test plugin (loaded through DENSITYBENCH_PLUGINS): a method that kills its worker process."""

import os

import numpy as np

import methods
from methods.base import Method


@methods.register
class CrashWorker(Method):
    name = "crash_worker"
    log_prob_kind = None
    profiles = {p: {} for p in ("smoke", "quick", "paper")}

    def _fit(self, train, val):
        os._exit(7)

    def _sample(self, n, seed):  # pragma: no cover
        return np.zeros((n, self.dim_))
