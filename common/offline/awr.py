"""Advantage-weighted policy extraction as the implicit-value offline methods share it (IQL's code, which
XQL, DVL and ReCOIL build on: ikostrikov/implicit_q_learning @09d7002 actor.py, policy.py, learner.py,
common.py): a Gaussian policy with a tanh'd mean and a state-independent log std, its log-likelihood,
the clipped weights exp(beta * A), the actor's cosine step size, the orthogonal init and the D4RL
locomotion reward scale; then the AWR actor step itself (`awr_weights`, `awr_actor_step`) and acting with
the policy's mean (`gaussian_act`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from common.errors import ConfigError
from common.networks import mlp
from common.offline.data import OfflineData
from common.precision import autocast

SCHEDULES = ("cosine", "constant")  # learner.py opt_decay_schedule: "cosine" or none
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


def check_actor_schedule(cfg: DictConfig) -> None:
    """`actor_lr_schedule` is one of SCHEDULES and the cosine one has positive `max_steps`; one-line
    ConfigErrors."""
    if cfg.actor_lr_schedule not in SCHEDULES:
        raise ConfigError(
            f"paper.agent.actor_lr_schedule={cfg.actor_lr_schedule!r} must be one of {', '.join(SCHEDULES)}"
        )
    if cfg.actor_lr_schedule == "cosine" and int(cfg.max_steps) < 1:
        raise ConfigError(f"paper.agent.max_steps={cfg.max_steps} must be positive for the cosine schedule")


def locomotion_reward_scale(data: OfflineData, span: float = 1000.0) -> float:
    """train_offline.py `normalize`: rewards * span / (max - min episode return) over the dataset's episodes
    (hopper, halfcheetah, walker2d); ValueError when every episode returns the same."""
    returns = data.episode_returns()
    spread = float(returns.max() - returns.min())
    if not np.isfinite(spread) or spread <= 0.0:
        raise ValueError(f"all {len(returns)} episode(s) return {returns.max():.4g}")
    return span / spread


class GaussianActor(nn.Module):
    """obs -> [Linear -> ReLU (-> Dropout)] x 2 -> Linear -> tanh = mean; log std a free vector (starts at 0).

    policy.py `NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False,
    log_std_min=-5)`: the mean goes through tanh, the Gaussian itself is not squashed, log std clipped to
    [log_std_min, log_std_max] (LOG_STD_MAX = 2). `dropout` 0 (the locomotion configs) adds no layer;
    Dropout after ReLU (common.py MLP) equals ReLU after Dropout (a positive rescaling of x or 0), the order
    common.networks.mlp uses.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int,
        log_std_min: float,
        log_std_max: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mean = mlp(
            obs_dim, [hidden_dim, hidden_dim], action_dim, dropout=dropout, output_activation=nn.Tanh
        )
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return self.mean(obs).float(), log_std.expand(obs.shape[0], -1)


# ---------------------------------------------------------------------------------------------------------
# The AWR actor step (actor.py `update`), run after V's step: weights from min(Q1', Q2') of the target critic
# and the just-updated V, then one Adam step on  L_pi = -E[min(exp(temperature * (Q - V)), max) log pi(a|s)].
# ---------------------------------------------------------------------------------------------------------
def awr_weights(
    value: nn.Module,
    obs: torch.Tensor,
    q_target: torch.Tensor,
    temperature: float,
    max_weight: float,
    device: torch.device,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, w): A = q_target - V(obs) with the current V, w = `advantage_weights(A)`; no gradient."""
    with torch.no_grad():
        with autocast(device, precision):
            v_new = value(obs).float()
        adv = q_target - v_new
        weights = advantage_weights(adv, temperature, max_weight)
    return adv, weights


def awr_actor_step(
    actor: nn.Module,
    actor_opt: torch.optim.Optimizer,
    obs: torch.Tensor,
    action: torch.Tensor,
    weights: torch.Tensor,
    lr: float,
    device: torch.device,
    precision: str,
    deterministic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on mean(w * -log pi(a|s)) at step size `lr` (the schedule's value, set on every group);
    `deterministic` swaps -log pi for ||mean(s) - a||^2 (CORL iql.py `DeterministicPolicy`).
    Returns (actor loss, log std)."""
    with autocast(device, precision):
        mean, log_std = actor(obs)
    if deterministic:
        nll = (mean - action).pow(2).sum(-1, keepdim=True)
    else:
        nll = -gaussian_log_prob(action, mean, log_std)
    actor_loss = (weights * nll).mean()
    for group in actor_opt.param_groups:
        group["lr"] = lr
    actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward()
    actor_opt.step()
    return actor_loss, log_std


@torch.no_grad()
def gaussian_act(
    actor: nn.Module, obs: torch.Tensor, sample: bool, device: torch.device, precision: str
) -> np.ndarray:
    """evaluation.py `sample_actions(temperature=0)`: the tanh'd mean of one (1, obs_dim) state, or a sample
    of the Gaussian when `sample`; clipped to [-1, 1] (learner.py)."""
    with autocast(device, precision):
        mean, log_std = actor(obs)
    action = mean + log_std.exp() * torch.randn_like(mean) if sample else mean
    return action[0].clamp(-1.0, 1.0).cpu().numpy()
