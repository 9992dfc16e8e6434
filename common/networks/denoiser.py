"""SynthER's residual-MLP denoiser for flat vectors (conglu1997/SynthER `diffusion/denoiser_network.py`).

    h = Linear(x_in, dim_t)(x) + time_mlp(c_noise)          # the noise embedding is added once, at the input
    h = Linear(dim_t, width)(h)
    h = h + Linear(act(LN(h)))      x num_blocks              # LN optional: off in SynthER's gin files
    out = Linear(width, x_in)(act(h))

`time_mlp` maps the scalar noise input through frozen random Fourier features (16, plus the raw input: 17)
and Linear -> SiLU -> Linear to `dim_t` (lucidrains `RandomOrLearnedSinusoidalPosEmb`, random variant).
Presets (SynthER gin): offline width 2048 x 6 blocks, dim_t 128; online width 1024 x 6, dim_t 256; ReLU.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU}


class RandomFourierEmbedding(nn.Module):
    """t -> [t, sin(2 pi w t), cos(2 pi w t)] with frozen w ~ N(0, 1) of size dim/2; output dim + 1."""

    weights: torch.Tensor

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier feature dim must be even, got {dim}")
        self.register_buffer("weights", torch.randn(dim // 2))  # a buffer: saved, never trained

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1)
        freqs = t * self.weights[None] * (2.0 * math.pi)
        return torch.cat([t, freqs.sin(), freqs.cos()], dim=-1)


class ResidualBlock(nn.Module):
    """h + Linear(act(LN(h))) (SynthER `ResidualBlock`, pre-activation)."""

    def __init__(self, width: int, activation: str, layer_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.act = ACTIVATIONS[activation]()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(self.act(self.norm(h)))


class ResidualMLPDenoiser(nn.Module):
    """F(x_in, c_noise) -> same shape as x_in; the EDM preconditioning is applied by the caller.

    `forward(x, noise)` takes x of shape (B, dim) and the noise input (c_noise = ln(sigma) / 4) of shape (B,)
    or (B, 1).
    """

    def __init__(
        self,
        dim: int,
        width: int = 1024,
        num_blocks: int = 6,
        dim_t: int = 128,
        fourier_dim: int = 16,
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.proj = nn.Linear(dim, dim_t)
        self.time_mlp = nn.Sequential(
            RandomFourierEmbedding(fourier_dim),
            nn.Linear(fourier_dim + 1, dim_t),
            nn.SiLU(),
            nn.Linear(dim_t, dim_t),
        )
        self.inp = nn.Linear(dim_t, width)
        self.blocks = nn.Sequential(
            *[ResidualBlock(width, activation, layer_norm) for _ in range(num_blocks)]
        )
        self.out_act = ACTIVATIONS[activation]()
        self.out = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) + self.time_mlp(noise)
        return self.out(self.out_act(self.blocks(self.inp(h))))
