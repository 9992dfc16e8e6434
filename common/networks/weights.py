"""Weight initialisation and target updates (drqv2 `utils.py`: `weight_init`, `soft_update_params`)."""

from __future__ import annotations

import torch
from torch import nn


def orthogonal_init_(module: nn.Module) -> None:
    """DrQ-v2's initialisation, meant for ``net.apply(orthogonal_init_)``.

    Linear: orthogonal weight (gain 1), zero bias. Conv2d / ConvTranspose2d: orthogonal weight with the
    ReLU gain sqrt(2), zero bias. Other modules (LayerNorm, ...) keep PyTorch's defaults.
    """
    if isinstance(module, nn.Linear):
        gain = 1.0
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        gain = nn.init.calculate_gain("relu")
    else:
        return
    nn.init.orthogonal_(module.weight.data, gain)
    if module.bias is not None:
        module.bias.data.fill_(0.0)


@torch.no_grad()
def soft_update_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak update of `target`'s parameters in place: ``target <- tau * source + (1 - tau) * target``.

    Parameters only (buffers are not touched), matched in `parameters()` order; note the argument order
    is the reverse of drqv2's ``soft_update_params(net, target_net, tau)``.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    target_params = list(target.parameters())
    source_params = list(source.parameters())
    if len(target_params) != len(source_params):
        raise ValueError("soft_update_: target and source have different numbers of parameters")
    for t, s in zip(target_params, source_params, strict=True):
        t.mul_(1.0 - tau).add_(s, alpha=tau)
