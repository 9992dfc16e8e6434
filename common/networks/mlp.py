"""MLP builder, the DrQ-v2 feature trunk and twin Q heads (drqv2 `drqv2.py`, `Actor`/`Critic`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def mlp(
    in_dim: int,
    hidden_dims: Sequence[int],
    out_dim: int,
    *,
    activation: Callable[[], nn.Module] = nn.ReLU,
    dropout: float = 0.0,
    layer_norm: bool = False,
    output_activation: Callable[[], nn.Module] | None = None,
) -> nn.Sequential:
    """Linear layers through `hidden_dims` to `out_dim`.

    Each hidden block is Linear -> [Dropout] -> [LayerNorm] -> activation (the optional parts are the DrM
    MetaWorld Q-head variant); the output Linear is followed by `output_activation` if given. Activations
    are not in-place, so forward hooks on a Linear see its own output.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for hidden in hidden_dims:
        layers.append(nn.Linear(dim, hidden))
        if dropout > 0.0:
            layers.append(nn.Dropout(dropout))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(activation())
        dim = hidden
    layers.append(nn.Linear(dim, out_dim))
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


class Trunk(nn.Sequential):
    """Linear(in_dim -> feature_dim) -> LayerNorm -> Tanh: the DrQ-v2 projection of encoder features."""

    def __init__(self, in_dim: int, feature_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class TwinQ(nn.Module):
    """Two independent Q heads on ``concat(h, a)``, each ``mlp(feature + action, hidden_dims, 1)``.

    `forward(h, a)` returns ``(q1, q2)``, each of shape ``(B, 1)``. Initialisation is left to the caller
    (e.g. ``module.apply(orthogonal_init_)``), as DrQ-v2 initialises whole actor/critic modules.
    """

    def __init__(
        self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int], **mlp_kwargs: object
    ) -> None:
        super().__init__()
        self.q1 = mlp(feature_dim + action_dim, hidden_dims, 1, **mlp_kwargs)  # type: ignore[arg-type]
        self.q2 = mlp(feature_dim + action_dim, hidden_dims, 1, **mlp_kwargs)  # type: ignore[arg-type]

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([h, action], dim=-1)
        return self.q1(x), self.q2(x)
