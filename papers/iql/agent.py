"""IQL: "Offline Reinforcement Learning with Implicit Q-Learning".

Kostrikov, Nair and Levine, ICLR 2022 (arXiv 2110.06169). `# Eq. N` tags use the paper's numbering. The code
follows the authors' JAX implementation, ikostrikov/implicit_q_learning @09d7002: `learner.py` (update order,
cosine actor schedule, policy construction), `critic.py` (expectile value loss, Q loss), `actor.py`
(advantage-weighted regression), `policy.py` (`NormalTanhPolicy`), `common.py` (`MLP`, orthogonal init),
`value_net.py`, `dataset_utils.py` and `train_offline.py` (reward scaling), `configs/mujoco_config.py`
(locomotion hyperparameters); cross-checked with corl-team/CORL @eeeeef2 `algorithms/offline/iql.py`.

Reads top to bottom: the networks, `prepare` (reward scale, optional state statistics), `act`, then `update`.
The run loop owns the dataset sampler and the batch size; `Batch.discount` already holds gamma (0 at a
terminal), so there is no gamma here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from common.agent import check_state_control
from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.networks import TwinQ, mlp, soft_update_
from common.offline.data import OfflineData
from common.precision import autocast, check_precision

CFG_KEYS = (
    "actor_lr",
    "value_lr",
    "critic_lr",
    "hidden_dim",
    "tau",
    "expectile",
    "temperature",
    "adv_weight_max",
    "dropout_rate",
    "policy",
    "log_std_min",
    "log_std_max",
    "actor_lr_schedule",
    "max_steps",
    "reward_scaling",
    "reward_span",
    "normalize_states",
    "state_norm_eps",
)
POLICIES = ("gaussian", "deterministic")
REWARD_SCALINGS = ("none", "locomotion", "antmaze")  # train_offline.py `make_env_and_dataset`, per dataset
SCHEDULES = ("cosine", "constant")
ACTION_CLIP = 1.0 - 1e-5  # dataset_utils.py `D4RLDataset(clip_to_eps=True, eps=1e-5)`
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def orthogonal_relu_init_(module: nn.Module) -> None:
    """common.py `default_init`: every Dense (hidden and output) orthogonal with gain sqrt(2), zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(module.bias)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Sec. 4.1's L_2^tau(u) = |tau - 1(u < 0)| u^2 (critic.py `loss`: tau if u > 0, else 1 - tau)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff.pow(2)


def advantage_weights(adv: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """Eq. 7's exp(beta * (Q - V)), clipped above at `max_weight` (actor.py: jnp.minimum(exp_a, 100.0))."""
    return torch.exp(temperature * adv).clamp(max=max_weight)


def gaussian_log_prob(action: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(a; mean, diag(exp(log_std)^2)), summed over action dimensions: shape (B, 1)."""
    z = (action - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - LOG_SQRT_2PI).sum(-1, keepdim=True)


def cosine_lr(base_lr: float, count: int, total: int) -> float:
    """optax.cosine_decay_schedule(base_lr, total) at `count` (alpha 0): base * (1 + cos(pi * k / T)) / 2."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(count, total) / total))


# ---------------------------------------------------------------------------------------------------
# Networks (value_net.py `DoubleCritic`, `ValueCritic`; policy.py `NormalTanhPolicy`): 256x256 ReLU MLPs,
# all initialised by `orthogonal_relu_init_`. The twin critics are common.networks.TwinQ.
# ---------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """obs -> [Linear -> ReLU (-> Dropout)] x 2 -> Linear -> tanh = mean; log std one free vector.

    learner.py builds `NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False,
    log_std_min=-5.0)`: the mean goes through tanh, the Gaussian itself is not squashed, and log std is a
    state-independent parameter starting at 0, clipped to [log_std_min, log_std_max] (policy.py
    LOG_STD_MAX = 2). `policy: deterministic` uses the mean alone (CORL `DeterministicPolicy`).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int,
        dropout: float,
        log_std_min: float,
        log_std_max: float,
    ) -> None:
        super().__init__()
        # Dropout after ReLU (common.py MLP) equals ReLU after Dropout (a positive rescaling of x or 0),
        # which is the order common.networks.mlp uses.
        self.mean = mlp(
            obs_dim, [hidden_dim, hidden_dim], action_dim, dropout=dropout, output_activation=nn.Tanh
        )
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return self.mean(obs).float(), log_std.expand(obs.shape[0], -1)


class IQLAgent:
    """Implicit Q-Learning: expectile V, SARSA-style Q, AWR policy (`common.agent.OfflineAgent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("IQL", cfg, CFG_KEYS, spec)
        if cfg.policy not in POLICIES:
            raise ConfigError(f"paper.agent.policy={cfg.policy!r} must be one of {', '.join(POLICIES)}")
        if cfg.actor_lr_schedule not in SCHEDULES:
            raise ConfigError(
                f"paper.agent.actor_lr_schedule={cfg.actor_lr_schedule!r} must be one of "
                f"{', '.join(SCHEDULES)}"
            )
        if cfg.reward_scaling not in REWARD_SCALINGS:
            choices = ", ".join(REWARD_SCALINGS)
            raise ConfigError(f"paper.agent.reward_scaling={cfg.reward_scaling!r} must be one of {choices}")
        if not 0.0 < float(cfg.expectile) < 1.0:
            raise ConfigError(f"paper.agent.expectile={cfg.expectile} must lie in (0, 1) (0.5 = plain MSE)")
        if cfg.actor_lr_schedule == "cosine" and int(cfg.max_steps) < 1:
            raise ConfigError(
                f"paper.agent.max_steps={cfg.max_steps} must be positive for the cosine schedule"
            )
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.tau = float(cfg.tau)
        self.expectile = float(cfg.expectile)
        self.temperature = float(cfg.temperature)
        self.adv_weight_max = float(cfg.adv_weight_max)
        self.deterministic = cfg.policy == "deterministic"
        self.actor_lr = float(cfg.actor_lr)
        self.cosine = cfg.actor_lr_schedule == "cosine"
        self.max_steps = int(cfg.max_steps)
        self.reward_scaling = str(cfg.reward_scaling)
        self.reward_span = float(cfg.reward_span)
        # antmaze: r - 1 (train_offline.py); a constant of the config, so not part of the checkpoint
        self.reward_shift = -1.0 if self.reward_scaling == "antmaze" else 0.0
        self.normalize_states = bool(cfg.normalize_states)
        self.state_norm_eps = float(cfg.state_norm_eps)
        obs_dim, action_dim, hidden = spec.obs_shape[0], spec.action_shape[0], int(cfg.hidden_dim)
        dropout = 0.0 if cfg.dropout_rate is None else float(cfg.dropout_rate)

        self.actor = Actor(
            obs_dim, action_dim, hidden, dropout, float(cfg.log_std_min), float(cfg.log_std_max)
        )
        self.critic = TwinQ(obs_dim, action_dim, [hidden, hidden])
        self.value = mlp(obs_dim, [hidden, hidden], 1)
        for net in (self.actor, self.critic, self.value):
            net.apply(orthogonal_relu_init_).to(self.device)
        # learner.py builds the target critic from the critic's own init key: an identical copy.
        self.critic_target = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        # mujoco_config.py: Adam 3e-4 for all three; the actor's step size follows the cosine schedule.
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=float(cfg.critic_lr))
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=float(cfg.value_lr))

        # Dataset statistics, set by `prepare` (identity until then) and saved with the checkpoint.
        self.reward_scale = 1.0
        self.obs_mean = torch.zeros(obs_dim, device=self.device)
        self.obs_std = torch.ones(obs_dim, device=self.device)
        self.num_updates = 0  # the cosine schedule's count

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Dataset statistics. Rewards, per dataset family as train_offline.py `make_env_and_dataset` decides by
    # the env name (here `reward_scaling`, set per env in conf/paper_env/iql_<env>.yaml):
    #   locomotion (hopper, halfcheetah, walker2d; `normalize`): r <- r * 1000 / (max - min episode return)
    #     over the dataset's trajectories;
    #   antmaze: r <- r - 1;   none (every other dataset): r as stored.
    # States: the official code leaves them raw (normalize_states: false); CORL normalises them by mean/std.
    # -----------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineData) -> None:
        if self.reward_scaling == "locomotion":
            returns = data.episode_returns()
            span = float(returns.max() - returns.min())
            if not np.isfinite(span) or span <= 0.0:
                raise ConfigError(
                    f"IQL reward scaling needs episodes with different returns, but all {len(returns)} "
                    f"episode(s) return {returns.max():.4g}; set paper.agent.reward_scaling=none"
                )
            self.reward_scale = self.reward_span / span
        if self.normalize_states:
            obs = data.observations.astype(np.float64)
            self.obs_mean = torch.as_tensor(obs.mean(0), dtype=torch.float32, device=self.device)
            self.obs_std = torch.as_tensor(
                obs.std(0) + self.state_norm_eps, dtype=torch.float32, device=self.device
            )

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    # -----------------------------------------------------------------------------------------------
    # Acting (evaluation.py: `sample_actions(obs, temperature=0.0)`, i.e. the Gaussian's mean, tanh'd;
    # learner.py clips samples to [-1, 1]). Outside evaluation the Gaussian is sampled.
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        obs_t = self.normalize(torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0))
        self.actor.eval()
        with self._autocast():
            mean, log_std = self.actor(obs_t)
        action = mean if eval_mode or self.deterministic else mean + log_std.exp() * torch.randn_like(mean)
        return action[0].clamp(-1.0, 1.0).cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (learner.py `_update_jit`): V from the target critic, then the actor with the *new* V,
    # then Q bootstrapped from the new V, then the target critic. Each network has its own optimiser step.
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to_torch(self.device)
        obs, next_obs = self.normalize(b["obs"].float()), self.normalize(b["next_obs"].float())
        action = b["action"].float().clamp(-ACTION_CLIP, ACTION_CLIP)
        reward = b["reward"].float() * self.reward_scale + self.reward_shift
        discount = b["discount"].float()

        # Eq. 5  L_V = E[L_2^tau(min(Q1', Q2')(s, a) - V(s))], Q' the target critic (critic.py `update_v`).
        with torch.no_grad(), self._autocast():
            target_q1, target_q2 = self.critic_target(obs, action)
        q_target = torch.min(target_q1, target_q2).float()
        with self._autocast():
            v = self.value(obs).float()
        value_loss = expectile_loss(q_target - v, self.expectile).mean()
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        # Eq. 7  L_pi = -E[exp(beta * (Q'(s, a) - V(s))) log pi(a|s)], weights clipped at 100, beta = 3
        # (actor.py `update`: advantage from the target critic and the just-updated V).
        # policy: deterministic replaces -log pi by ||pi(s) - a||^2 (CORL `_update_policy`).
        with torch.no_grad():
            with self._autocast():
                v_new = self.value(obs).float()
            adv = q_target - v_new
            weights = advantage_weights(adv, self.temperature, self.adv_weight_max)
        self.actor.train()
        with self._autocast():
            mean, log_std = self.actor(obs)
        if self.deterministic:
            nll = (mean - action).pow(2).sum(-1, keepdim=True)
        else:
            nll = -gaussian_log_prob(action, mean, log_std)
        actor_loss = (weights * nll).mean()
        # learner.py: optax.cosine_decay_schedule(-actor_lr, max_steps) after Adam; its count is 0 at the
        # first update, so the first step uses the full lr and the lr reaches 0 at max_steps.
        lr = cosine_lr(self.actor_lr, self.num_updates, self.max_steps) if self.cosine else self.actor_lr
        for group in self.actor_opt.param_groups:
            group["lr"] = lr
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Eq. 6  L_Q = E[(r + gamma * V(s') - Q_i(s, a))^2] summed over both heads, V = the new V
        # (critic.py `update_q`: ((q1 - y)^2 + (q2 - y)^2).mean(); discount = gamma, 0 at a terminal).
        with torch.no_grad():
            with self._autocast():
                next_v = self.value(next_obs).float()
            target = reward + discount * next_v
        with self._autocast():
            q1, q2 = self.critic(obs, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = ((q1 - target).pow(2) + (q2 - target).pow(2)).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Target critic: theta' <- tau * theta + (1 - tau) * theta', tau = 0.005 (learner.py `target_update`).
        soft_update_(self.critic_target, self.critic, self.tau)
        self.num_updates += 1

        with torch.no_grad():
            scalars = {
                "batch_reward": reward.mean(),  # after scaling
                "value_loss": value_loss,
                "v": v.mean(),
                "critic_loss": critic_loss,
                "q": q1.mean(),
                "q2": q2.mean(),
                "actor_loss": actor_loss,
                "adv": adv.mean(),
                "adv_weight": weights.mean(),
                "adv_weight_clipped": (weights >= self.adv_weight_max).float().mean(),
                "log_std": log_std.mean(),
            }
            values = torch.stack([s.reshape(()).float() for s in scalars.values()]).tolist()  # one sync
        return {**dict(zip(scalars, values, strict=True)), "actor_lr": lr}

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "value": self.value,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "value_opt": self.value_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        state = parts_state(self._parts())
        state.update(
            reward_scale=self.reward_scale,
            obs_mean=self.obs_mean.clone(),
            obs_std=self.obs_std.clone(),
            num_updates=self.num_updates,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "IQL", extra=("reward_scale", "obs_mean", "obs_std", "num_updates"))
        self.reward_scale = float(state["reward_scale"])
        self.obs_mean = torch.as_tensor(state["obs_mean"], device=self.device).clone()
        self.obs_std = torch.as_tensor(state["obs_std"], device=self.device).clone()
        self.num_updates = int(state["num_updates"])
