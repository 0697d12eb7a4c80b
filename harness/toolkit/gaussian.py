"""Gaussian log densities (torch), and LOG_2PI."""

from __future__ import annotations

import math

import torch

__all__ = ["LOG_2PI", "standard_normal_log_prob", "diagonal_normal_log_prob"]

LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) per row, (n, d) -> (n,)."""
    return -0.5 * (x**2).sum(dim=1) - 0.5 * x.shape[1] * LOG_2PI


def diagonal_normal_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag std^2) summed over the last axis, (..., d) -> (...)."""
    return (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI).sum(dim=-1)
