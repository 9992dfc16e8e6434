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

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.agent import check_state_control
from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.networks import soft_update_
from common.offline.awr import (
    ACTION_CLIP,
    SCHEDULES,
    awr_actor_step,
    awr_weights,
    cosine_lr,
    locomotion_reward_scale,
)
from common.offline.data import OfflineData
from common.offline.implicit_value import (
    awr_scalars,
    build_implicit_nets,
    critic_step,
    implicit_parts,
    next_value,
    value_step,
)
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


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Sec. 4.1's L_2^tau(u) = |tau - 1(u < 0)| u^2 (critic.py `loss`: tau if u > 0, else 1 - tau)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff.pow(2)


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
        obs_dim = spec.obs_shape[0]
        dropout = 0.0 if cfg.dropout_rate is None else float(cfg.dropout_rate)

        # Networks (common/offline/implicit_value.py; value_net.py `DoubleCritic`, `ValueCritic`; policy.py
        # `NormalTanhPolicy` as learner.py builds it: state-independent log std, tanh'd mean, no squashing):
        # 256x256 ReLU MLPs, orthogonal init (gain sqrt 2), no LayerNorm, Dropout in the actor only if
        # dropout_rate; the target critic a copy of the critic (learner.py: the same init key).
        # mujoco_config.py: Adam 3e-4 for all three; the actor's step size follows the cosine schedule.
        # `policy: deterministic` uses the mean alone (CORL `DeterministicPolicy`).
        nets = build_implicit_nets(cfg, spec, self.device, value_layer_norm=False, dropout=dropout)
        self.actor, self.critic, self.critic_target, self.value = nets[:4]
        self.actor_opt, self.critic_opt, self.value_opt = nets[4:]

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
            try:
                self.reward_scale = locomotion_reward_scale(data, self.reward_span)
            except ValueError as e:
                raise ConfigError(
                    f"IQL reward scaling needs episodes with different returns, but {e}; "
                    f"set paper.agent.reward_scaling=none"
                ) from None
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
        q_target, v, value_loss = value_step(
            self.critic_target,
            self.value,
            self.value_opt,
            obs,
            action,
            lambda diff: expectile_loss(diff, self.expectile),
            self.device,
            self.precision,
        )

        # Eq. 7  L_pi = -E[exp(beta * (Q'(s, a) - V(s))) log pi(a|s)], weights clipped at 100, beta = 3
        # (actor.py `update`: advantage from the target critic and the just-updated V).
        # policy: deterministic replaces -log pi by ||pi(s) - a||^2 (CORL `_update_policy`).
        # learner.py: optax.cosine_decay_schedule(-actor_lr, max_steps) after Adam; its count is 0 at the
        # first update, so the first step uses the full lr and the lr reaches 0 at max_steps.
        adv, weights = awr_weights(
            self.value, obs, q_target, self.temperature, self.adv_weight_max, self.device, self.precision
        )
        lr = cosine_lr(self.actor_lr, self.num_updates, self.max_steps) if self.cosine else self.actor_lr
        self.actor.train()
        actor_loss, log_std = awr_actor_step(
            self.actor,
            self.actor_opt,
            obs,
            action,
            weights,
            lr,
            self.device,
            self.precision,
            self.deterministic,
        )

        # Eq. 6  L_Q = E[(r + gamma * V(s') - Q_i(s, a))^2] summed over both heads, V = the new V
        # (critic.py `update_q`: ((q1 - y)^2 + (q2 - y)^2).mean(); discount = gamma, 0 at a terminal).
        target = reward + discount * next_value(self.value, next_obs, self.device, self.precision)
        critic_loss, q1, q2 = critic_step(
            self.critic,
            self.critic_opt,
            obs,
            action,
            lambda q1, q2: ((q1 - target).pow(2) + (q2 - target).pow(2)).mean(),
            self.device,
            self.precision,
        )

        # Target critic: theta' <- tau * theta + (1 - tau) * theta', tau = 0.005 (learner.py `target_update`).
        soft_update_(self.critic_target, self.critic, self.tau)
        self.num_updates += 1

        losses = (value_loss, critic_loss, actor_loss)
        return awr_scalars(reward, v, q1, q2, losses, adv, weights, self.adv_weight_max, log_std, lr)

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: the networks and optimisers, the dataset statistics and the schedule's count; tensors,
    # numbers and strings only (weights_only-loadable).
    # -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = parts_state(implicit_parts(self))
        state.update(
            reward_scale=self.reward_scale,
            obs_mean=self.obs_mean.clone(),
            obs_std=self.obs_std.clone(),
            num_updates=self.num_updates,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(
            implicit_parts(self), state, "IQL", extra=("reward_scale", "obs_mean", "obs_std", "num_updates")
        )
        self.reward_scale = float(state["reward_scale"])
        self.obs_mean = torch.as_tensor(state["obs_mean"], device=self.device).clone()
        self.obs_std = torch.as_tensor(state["obs_std"], device=self.device).clone()
        self.num_updates = int(state["num_updates"])
