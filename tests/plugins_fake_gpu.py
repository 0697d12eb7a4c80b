"""Test plugin (loaded through DENSITYBENCH_PLUGINS): a pretend GPU inside cell workers only.

In a worker process (``multiprocessing.parent_process()`` is set) with
``DENSITYBENCH_FAKE_GPU=<name>``, torch's CUDA queries report one GPU of that
name; the harness process is left alone, so a test can make every CUDA query
there fail loudly. ``fake_gpu_mean`` fits a Gaussian with numpy, whatever device
it is given, and reports that device.
"""

import multiprocessing
import os
from types import SimpleNamespace

import numpy as np
import torch

import methods
from methods.base import Method

FAKE_GPU_ENV = "DENSITYBENCH_FAKE_GPU"

if multiprocessing.parent_process() is not None and os.environ.get(FAKE_GPU_ENV):
    _props = SimpleNamespace(name=os.environ[FAKE_GPU_ENV], total_memory=141 * 2**30, major=9, minor=0)
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_name = lambda device=None: _props.name
    torch.cuda.get_device_properties = lambda device=None: _props
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.reset_peak_memory_stats = lambda device=None: None
    torch.cuda.max_memory_allocated = lambda device=None: 3 * 2**20
    torch.cuda.max_memory_reserved = lambda device=None: 4 * 2**20


@methods.register
class FakeGpuMean(Method):
    name = "fake_gpu_mean"
    log_prob_kind = "exact"
    profiles = {p: {} for p in methods.PROFILES}

    def _fit(self, train, val):
        with self.phase("training"):
            self.mean_, self.std_ = train.mean(0), train.std(0)
        self.info_["device_given"] = str(self.device)

    def _sample(self, n, seed):
        return self.mean_ + self.std_ * np.random.default_rng(seed).standard_normal((n, self.dim_))

    def _log_prob(self, x):
        z = (x - self.mean_) / self.std_
        return -0.5 * (z**2).sum(1) - np.log(self.std_).sum() - 0.5 * self.dim_ * np.log(2 * np.pi)
