"""Small network builders shared by the neural methods."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(d_in: int, d_out: int, hidden: int, layers: int = 2, act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """Plain MLP (..., d_in) -> (..., d_out) with ``layers`` hidden layers of ``hidden`` units and ``act``."""
    mods: list[nn.Module] = []
    width = d_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), act()]
        width = hidden
    mods.append(nn.Linear(width, d_out))
    return nn.Sequential(*mods)
