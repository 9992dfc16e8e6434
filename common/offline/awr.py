"""Advantage-weighted policy extraction as the implicit-value offline methods share it (IQL's code, which
XQL, DVL and ReCOIL build on: ikostrikov/implicit_q_learning @09d7002 actor.py, policy.py, learner.py,
common.py): a Gaussian policy with a tanh'd mean and a state-independent log std, its log-likelihood,
the clipped weights exp(beta * A), the actor's cosine step size, the orthogonal init and the D4RL
locomotion reward scale."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from common.networks import mlp
from common.offline.data import OfflineData

ACTION_CLIP = 1.0 - 1e-5  # dataset_utils.py `D4RLDataset(clip_to_eps=True, eps=1e-5)`
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def orthogonal_relu_init_(module: nn.Module) -> None:
    """common.py `default_init`: every Dense (hidden and output) orthogonal with gain sqrt(2), zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(module.bias)


def advantage_weights(adv: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """exp(temperature * A), clipped above at `max_weight` (actor.py: jnp.minimum(exp_a, 100.0))."""
    return torch.exp(temperature * adv).clamp(max=max_weight)


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mean, diag(exp(log_std)^2)), summed over action dimensions: shape (B, 1)."""
    z = (action - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - LOG_SQRT_2PI).sum(-1, keepdim=True)


def cosine_lr(base_lr: float, count: int, total: int) -> float:
    """optax.cosine_decay_schedule(base_lr, total) at `count` (alpha 0): base * (1 + cos(pi * k / T)) / 2."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(count, total) / total))


def locomotion_reward_scale(data: OfflineData, span: float = 1000.0) -> float:
    """train_offline.py `normalize`: rewards * span / (max - min episode return) over the dataset's episodes
    (hopper, halfcheetah, walker2d); ValueError when every episode returns the same."""
    returns = data.episode_returns()
    spread = float(returns.max() - returns.min())
    if not np.isfinite(spread) or spread <= 0.0:
        raise ValueError(f"all {len(returns)} episode(s) return {returns.max():.4g}")
    return span / spread


class GaussianActor(nn.Module):
    """obs -> [Linear -> ReLU] x 2 -> Linear -> tanh = mean; log std one free vector (starts at 0).

    policy.py `NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False,
    log_std_min=-5)`: the mean goes through tanh, the Gaussian itself is not squashed, log std clipped to
    [log_std_min, log_std_max] (LOG_STD_MAX = 2). Dropout rate 0 in the locomotion configs: none here.
    """

    def __init__(
        self, obs_dim: int, action_dim: int, hidden_dim: int, log_std_min: float, log_std_max: float
    ) -> None:
        super().__init__()
        self.mean = mlp(obs_dim, [hidden_dim, hidden_dim], action_dim, output_activation=nn.Tanh)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return self.mean(obs).float(), log_std.expand(obs.shape[0], -1)
