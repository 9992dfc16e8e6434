"""The DrQ-v2 convolutional pixel encoder (drqv2 `drqv2.py`, class `Encoder`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.networks.weights import orthogonal_init_


def conv_out_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Spatial output size of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


class PixelEncoder(nn.Module):
    """Conv3x3(C, stride 2) -> ReLU -> (num_layers - 1) x [Conv3x3(C, stride 1) -> ReLU] -> flatten.

    Input: ``(B, channels, H, W)`` pixels in the uint8 range [0, 255] (any dtype); they are scaled to
    ``obs / 255 - 0.5``. No padding, so 9x84x84 gives 32x35x35 = 39200 features (`repr_dim`, computed
    from `obs_shape`). Weights get `orthogonal_init_` (ReLU gain for the convolutions).
    """

    def __init__(self, obs_shape: Sequence[int], num_filters: int = 32, num_layers: int = 4) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"PixelEncoder needs a (channels, height, width) shape, got {tuple(obs_shape)}")
        if num_layers < 1:
            raise ValueError(f"PixelEncoder needs at least one layer, got num_layers={num_layers}")
        channels, height, width = (int(d) for d in obs_shape)
        layers: list[nn.Module] = []
        in_channels = channels
        for i in range(num_layers):
            stride = 2 if i == 0 else 1
            layers += [nn.Conv2d(in_channels, num_filters, kernel_size=3, stride=stride), nn.ReLU()]
            in_channels = num_filters
            height, width = conv_out_size(height, 3, stride), conv_out_size(width, 3, stride)
        if height < 1 or width < 1:
            raise ValueError(f"observation {tuple(obs_shape)} is too small for {num_layers} conv layers")
        self.convnet = nn.Sequential(*layers)
        self.out_shape: tuple[int, int, int] = (num_filters, height, width)
        self.repr_dim: int = num_filters * height * width
        self.apply(orthogonal_init_)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 - 0.5
        return self.convnet(x).flatten(start_dim=1)
