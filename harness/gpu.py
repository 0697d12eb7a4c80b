"""CUDA without a CUDA context in the harness process.

A forked child of a process that has initialised CUDA cannot use CUDA, so the
harness parent never calls ``torch.cuda``: it asks a short-lived child process
whether a GPU is visible (NVML-based, ``PYTORCH_NVML_BASED_CUDA_CHECK=1``), and
each cell worker records the GPU it runs on (:func:`device_info`) and applies
the float32 matmul-precision policy (:func:`apply_precision_policy`).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any

from harness.errors import UserError

NVML_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"
#: float32 matmul precision in every cell worker (torch.set_float32_matmul_precision): "highest"
#: (the default: no TF32, so GPU and CPU rows compute the same float32 arithmetic), "high" (TF32
#: matmuls and convolutions on GPUs that have them) or "medium".
MATMUL_PRECISION_ENV = "DENSITYBENCH_MATMUL_PRECISION"
MATMUL_PRECISIONS = ("highest", "high", "medium")
#: Where the sample-quality metrics (MMD, energy distance, sliced W2, C2ST, marginal KL) run.
SAMPLE_METRICS_DEVICE = "cpu"

_PROBE = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


@functools.cache
def cuda_device_count() -> int:
    """CUDA GPUs visible to torch, asked of a child process: the caller creates no CUDA context.

    0 without asking when this torch is built without CUDA.
    """
    import torch

    if not torch.backends.cuda.is_built():
        return 0
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, NVML_ENV: "1"},
        )
        return int(out.stdout.split()[-1]) if out.returncode == 0 else 0
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def resolve_device(requested: str) -> str:
    """The device a cell will get (``harness.toolkit.device.resolve_device``), decided without a CUDA
    context in this process: "auto" -> "cuda" when a GPU is visible, else "cpu"."""
    from harness.toolkit.device import resolve_device as resolve

    return str(resolve(requested, cuda_available=lambda: cuda_device_count() > 0))


def matmul_precision() -> str:
    """The float32 matmul precision policy ($DENSITYBENCH_MATMUL_PRECISION, default "highest")."""
    value = os.environ.get(MATMUL_PRECISION_ENV, "highest").strip() or "highest"
    if value not in MATMUL_PRECISIONS:
        raise UserError(f"{MATMUL_PRECISION_ENV} must be one of {', '.join(MATMUL_PRECISIONS)}, got '{value}'")
    return value


def apply_precision_policy() -> dict[str, Any]:
    """Set the policy in this (worker) process; returns what is now in force, for the row."""
    import torch

    policy = matmul_precision()
    torch.set_float32_matmul_precision(policy)
    torch.backends.cudnn.allow_tf32 = policy != "highest"
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
    }


def device_info(device: str) -> dict[str, Any]:
    """The GPU a worker runs on (name, memory, capability, CUDA version); {} on the CPU."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return {}
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "gpu": torch.cuda.get_device_name(index),
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "gpu_capability": f"{props.major}.{props.minor}",
        "cuda_version": torch.version.cuda,
    }
