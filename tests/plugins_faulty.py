"""Test plugin (loaded through DENSITYBENCH_PLUGINS): a method that kills its worker process and
one that hangs."""

import os

import numpy as np

import methods
from methods.base import Method


@methods.register
class CrashWorker(Method):
    name = "crash_worker"
    log_prob_kind = None
    profiles = {p: {} for p in methods.PROFILES}

    def _fit(self, train, val):
        os._exit(7)

    def _sample(self, n, seed):  # pragma: no cover
        return np.zeros((n, self.dim_))


@methods.register
class HangWorker(Method):
    """Fits for ten minutes: a worker that is certainly alive when a test kills or stops its harness."""

    name = "hang_worker"
    log_prob_kind = None
    profiles = {p: {} for p in methods.PROFILES}

    def _fit(self, train, val):
        import time

        time.sleep(600)

    def _sample(self, n, seed):  # pragma: no cover
        return np.zeros((n, self.dim_))
