"""The learner that IQL's code family shares (ikostrikov/implicit_q_learning @09d7002 `learner.py`, reused by
Div99/XQL @dff09af and hari-sikchi/DVL @4b7cf11 `offline/`): a state value V, twin critics Q1, Q2 with a
Polyak target, and an AWR actor, updated in the order V -> actor -> Q -> target critic.

Reads top to bottom: the networks and their optimisers (`ImplicitNets`, `build_implicit_nets`, checkpoint
`PARTS`); the V step and the Q step, each taking the paper's loss as a function (`value_step`,
`critic_step`); the logged scalars; then `ImplicitValueAgent`, the whole agent of the XQL family (XQL,
f-DVL), whose only paper-specific piece is the value loss of diff = Q - V: a paper subclasses it, validates
and stores that loss's settings in `configure_value_loss` and states the loss (with its `# Eq. N`) in
`value_loss`. Papers that differ elsewhere (IQL, ReCOIL) call the functions from their own update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from common.agent import check_state_control
from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.networks import TwinQ, mlp, soft_update_
from common.offline.awr import (
    ACTION_CLIP,
    GaussianActor,
    awr_actor_step,
    awr_weights,
    check_actor_schedule,
    cosine_lr,
    gaussian_act,
    locomotion_reward_scale,
    orthogonal_relu_init_,
)
from common.offline.data import OfflineData
from common.precision import autocast, check_precision

# ---------------------------------------------------------------------------------------------------------
# Networks (value_net.py `DoubleCritic`, `ValueCritic`; policy.py `NormalTanhPolicy`): two-hidden-layer ReLU
# MLPs, orthogonal init (gain sqrt 2) everywhere; LayerNorm only in V and only if asked (XQL/DVL
# mujoco_config.py layernorm=True), never in the critics. The target critic starts as a copy (learner.py
# builds it from the critic's own init key). One Adam per network.
# ---------------------------------------------------------------------------------------------------------
PARTS = ("actor", "critic", "critic_target", "value", "actor_opt", "critic_opt", "value_opt")


class ImplicitNets(NamedTuple):
    actor: GaussianActor
    critic: TwinQ
    critic_target: TwinQ
    value: nn.Sequential
    actor_opt: torch.optim.Adam
    critic_opt: torch.optim.Adam
    value_opt: torch.optim.Adam


def build_implicit_nets(
    cfg: DictConfig, spec: EnvSpec, device: torch.device, value_layer_norm: bool, dropout: float = 0.0
) -> ImplicitNets:
    """The networks from cfg's hidden_dim, log_std_min/max and actor/critic/value_lr, in the creation order
    (actor, critic, V, then the target) that fixes the seeded initial weights."""
    obs_dim, action_dim, hidden = spec.obs_shape[0], spec.action_shape[0], int(cfg.hidden_dim)
    actor = GaussianActor(
        obs_dim, action_dim, hidden, float(cfg.log_std_min), float(cfg.log_std_max), dropout=dropout
    )
    critic = TwinQ(obs_dim, action_dim, [hidden, hidden])
    value = mlp(obs_dim, [hidden, hidden], 1, layer_norm=value_layer_norm)
    for net in (actor, critic, value):
        net.apply(orthogonal_relu_init_).to(device)
    critic_target = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    return ImplicitNets(
        actor,
        critic,
        critic_target,
        value,
        torch.optim.Adam(actor.parameters(), lr=float(cfg.actor_lr)),
        torch.optim.Adam(critic.parameters(), lr=float(cfg.critic_lr)),
        torch.optim.Adam(value.parameters(), lr=float(cfg.value_lr)),
    )


# ---------------------------------------------------------------------------------------------------------
# V step (critic.py `update_v`): diff = min(Q1', Q2')(s, a) - V(s), Q' the target critic; one Adam step on
# mean(value_loss(diff)). `value_loss` is the paper's element-wise loss (it may also pick rows).
# ---------------------------------------------------------------------------------------------------------
def value_step(
    critic_target: nn.Module,
    value: nn.Module,
    value_opt: torch.optim.Optimizer,
    obs: torch.Tensor,
    action: torch.Tensor,
    value_loss: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (min(Q1', Q2'), V before the step, the loss)."""
    with torch.no_grad(), autocast(device, precision):
        tq1, tq2 = critic_target(obs, action)
    q_target = torch.min(tq1, tq2).float()
    with autocast(device, precision):
        v = value(obs).float()
    loss = value_loss(q_target - v).mean()
    value_opt.zero_grad(set_to_none=True)
    loss.backward()
    value_opt.step()
    return q_target, v, loss


# ---------------------------------------------------------------------------------------------------------
# Q step (critic.py `update_q`): one Adam step on critic_loss(Q1(s, a), Q2(s, a)), the paper's regression
# of both heads onto its target (built by the caller from the new V).
# ---------------------------------------------------------------------------------------------------------
def critic_step(
    critic: nn.Module,
    critic_opt: torch.optim.Optimizer,
    obs: torch.Tensor,
    action: torch.Tensor,
    critic_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (the loss, Q1, Q2) with Q1, Q2 in float32."""
    with autocast(device, precision):
        q1, q2 = critic(obs, action)
    q1, q2 = q1.float(), q2.float()
    loss = critic_loss(q1, q2)
    critic_opt.zero_grad(set_to_none=True)
    loss.backward()
    critic_opt.step()
    return loss, q1, q2


@torch.no_grad()
def next_value(
    value: nn.Module, next_obs: torch.Tensor, device: torch.device, precision: str
) -> torch.Tensor:
    """V(s') with the current V, no gradient (the bootstrap of every Q target here)."""
    with autocast(device, precision):
        return value(next_obs).float()


def logged_scalars(scalars: dict[str, torch.Tensor], actor_lr: float) -> dict[str, float]:
    """The update's scalars as floats with one device sync, plus the actor's step size."""
    with torch.no_grad():
        values = torch.stack([s.reshape(()).float() for s in scalars.values()]).tolist()
    return {**dict(zip(scalars, values, strict=True)), "actor_lr": actor_lr}


@torch.no_grad()
def awr_scalars(
    reward: torch.Tensor,
    v: torch.Tensor,
    q1: torch.Tensor,
    q2: torch.Tensor,
    losses: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    adv: torch.Tensor,
    weights: torch.Tensor,
    max_weight: float,
    log_std: torch.Tensor,
    actor_lr: float,
) -> dict[str, float]:
    """What an update on one batch logs: batch_reward (after scaling), value_loss, v, critic_loss, q, q2,
    actor_loss, adv, adv_weight, adv_weight_clipped (share at `max_weight`), log_std; `losses` is (value,
    critic, actor)."""
    value_loss, critic_loss, actor_loss = losses
    scalars = {
        "batch_reward": reward.mean(),
        "value_loss": value_loss,
        "v": v.mean(),
        "critic_loss": critic_loss,
        "q": q1.mean(),
        "q2": q2.mean(),
        "actor_loss": actor_loss,
        "adv": adv.mean(),
        "adv_weight": weights.mean(),
        "adv_weight_clipped": (weights >= max_weight).float().mean(),
        "log_std": log_std.mean(),
    }
    return logged_scalars(scalars, actor_lr)


def implicit_parts(agent: object) -> dict[str, nn.Module | torch.optim.Optimizer]:
    """The agent's checkpointed networks and optimisers, by the names in PARTS (the state_dict keys)."""
    return {name: getattr(agent, name) for name in PARTS}


# ---------------------------------------------------------------------------------------------------------
# The XQL-family agent (`common.agent.OfflineAgent`). Config keys: the paper's CFG_KEYS, its value loss's
# own keys followed by IMPLICIT_VALUE_KEYS.
# ---------------------------------------------------------------------------------------------------------
IMPLICIT_VALUE_KEYS = (
    "actor_lr",
    "value_lr",
    "critic_lr",
    "hidden_dim",
    "tau",
    "temperature",
    "adv_weight_max",
    "value_layer_norm",
    "critic_huber_delta",
    "sample_random_times",
    "action_noise",
    "noise_std",
    "log_std_min",
    "log_std_max",
    "actor_lr_schedule",
    "max_steps",
    "reward_scaling",
    "reward_span",
)
REWARD_SCALINGS = ("none", "locomotion", "antmaze")  # train_offline.py `make_env_and_dataset`
NOISE_CLIP = 0.5  # critic.py update_v: jnp.clip(noise * std, -0.5, 0.5)


class ImplicitValueAgent(ABC):
    """V by the paper's loss of Q - V, twin Q regressed on r + gamma V(s'), AWR policy. Subclasses set
    `owner` (the name in error messages), `cfg_keys`, `configure_value_loss` and `value_loss`."""

    owner: str
    cfg_keys: tuple[str, ...]

    @abstractmethod
    def configure_value_loss(self, cfg: DictConfig) -> None:
        """Validate (one-line ConfigErrors) and store the value loss's settings."""

    @abstractmethod
    def value_loss(self, diff: torch.Tensor) -> torch.Tensor:
        """The element-wise value loss of diff = min(Q1', Q2')(s, a) - V(s)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control(self.owner, cfg, self.cfg_keys, spec)
        check_actor_schedule(cfg)
        if cfg.reward_scaling not in REWARD_SCALINGS:
            choices = ", ".join(REWARD_SCALINGS)
            raise ConfigError(f"paper.agent.reward_scaling={cfg.reward_scaling!r} must be one of {choices}")
        self.configure_value_loss(cfg)
        if int(cfg.sample_random_times) < 0:
            raise ConfigError(f"paper.agent.sample_random_times={cfg.sample_random_times} must be >= 0")
        if bool(cfg.action_noise) and int(cfg.sample_random_times) > 0:
            # critic.py adds the noise to batch.actions, which no longer matches the extended batch
            raise ConfigError(
                "paper.agent.action_noise=true and sample_random_times>0 cannot be combined (the official "
                "update_v fails on that shape mismatch); set one of them off"
            )
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.tau = float(cfg.tau)
        self.temperature = float(cfg.temperature)
        self.adv_weight_max = float(cfg.adv_weight_max)
        self.huber_delta = float(cfg.critic_huber_delta)
        self.random_times = int(cfg.sample_random_times)
        self.action_noise = bool(cfg.action_noise)
        self.noise_std = float(cfg.noise_std)
        self.actor_lr = float(cfg.actor_lr)
        self.cosine = cfg.actor_lr_schedule == "cosine"
        self.max_steps = int(cfg.max_steps)
        self.reward_scaling = str(cfg.reward_scaling)
        self.reward_span = float(cfg.reward_span)
        self.reward_shift = -1.0 if self.reward_scaling == "antmaze" else 0.0  # train_offline.py: r - 1
        nets = build_implicit_nets(cfg, spec, self.device, bool(cfg.value_layer_norm))
        self.actor, self.critic, self.critic_target, self.value = nets[:4]
        self.actor_opt, self.critic_opt, self.value_opt = nets[4:]
        self.reward_scale = 1.0  # set by `prepare`, saved with the checkpoint
        self.num_updates = 0  # the cosine schedule's count

    # -----------------------------------------------------------------------------------------------------
    # Dataset statistics (train_offline.py `make_env_and_dataset`): locomotion datasets (hopper,
    # halfcheetah, walker2d) get r <- r * 1000 / (max - min episode return); antmaze r - 1; else raw.
    # States stay raw, as in the official code.
    # -----------------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineData) -> None:
        if self.reward_scaling == "locomotion":
            try:
                self.reward_scale = locomotion_reward_scale(data, self.reward_span)
            except ValueError as e:
                raise ConfigError(
                    f"{self.owner} reward scaling needs episodes with different returns, but {e}; "
                    f"set paper.agent.reward_scaling=none"
                ) from None

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        return gaussian_act(self.actor, obs_t, not eval_mode, self.device, self.precision)

    # -----------------------------------------------------------------------------------------------------
    # Learning (learner.py `_update_jit`, num_v_updates = 1). `Batch.discount` already holds gamma (0 at a
    # terminal).
    # -----------------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to_torch(self.device)
        obs, next_obs = b["obs"].float(), b["next_obs"].float()
        action = b["action"].float().clamp(-ACTION_CLIP, ACTION_CLIP)
        reward = b["reward"].float() * self.reward_scale + self.reward_shift
        discount = b["discount"].float()

        # V's inputs (critic.py `update_v`): the batch, plus `sample_random_times` uniform actions per
        # state ("1/2 (rho + Unif)", each state repeated in place), or dataset actions + clipped N(0, std^2)
        # noise (`--noise`), clipped to [-1, 1].
        n = obs.shape[0]
        v_obs, v_act = obs, action
        if self.random_times > 0:
            v_obs = torch.cat([obs, obs.repeat_interleave(self.random_times, dim=0)])
            v_act = torch.cat(
                [action, torch.rand(v_obs.shape[0] - n, action.shape[1], device=self.device) * 2.0 - 1.0]
            )
        elif self.action_noise:
            noise = (torch.randn_like(action) * self.noise_std).clamp(-NOISE_CLIP, NOISE_CLIP)
            v_act = (action + noise).clamp(-1.0, 1.0)

        # V: mean of the paper's `value_loss(min(Q1', Q2')(s, a) - V(s))` over V's inputs.
        q_target, v, value_loss = value_step(
            self.critic_target,
            self.value,
            self.value_opt,
            v_obs,
            v_act,
            self.value_loss,
            self.device,
            self.precision,
        )

        # Policy extraction, AWR (actor.py `update`) on the batch rows, with the new V:
        # L_pi = -E[min(exp(temperature * (min(Q1', Q2')(s, a) - V(s))), 100) log pi(a|s)];
        # learner.py: cosine decay of the actor's step size.
        adv, weights = awr_weights(
            self.value, obs, q_target[:n], self.temperature, self.adv_weight_max, self.device, self.precision
        )
        lr = cosine_lr(self.actor_lr, self.num_updates, self.max_steps) if self.cosine else self.actor_lr
        actor_loss, log_std = awr_actor_step(
            self.actor, self.actor_opt, obs, action, weights, lr, self.device, self.precision
        )

        # Q_i(s, a) <- r + gamma V(s'), the new V (critic.py `update_q`); the official "mse" is
        # huber(Q - y, delta=20) = (Q - y)^2 / 2 for |Q - y| <= 20, summed over both heads.
        target = reward + discount * next_value(self.value, next_obs, self.device, self.precision)

        def huber_twin(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
            return F.huber_loss(q1, target, delta=self.huber_delta) + F.huber_loss(
                q2, target, delta=self.huber_delta
            )

        critic_loss, q1, q2 = critic_step(
            self.critic, self.critic_opt, obs, action, huber_twin, self.device, self.precision
        )

        # Target critic: theta' <- tau theta + (1 - tau) theta', tau = 0.005 (learner.py `target_update`).
        soft_update_(self.critic_target, self.critic, self.tau)
        self.num_updates += 1

        losses = (value_loss, critic_loss, actor_loss)
        return awr_scalars(reward, v, q1, q2, losses, adv, weights, self.adv_weight_max, log_std, lr)

    # -----------------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = parts_state(implicit_parts(self))
        state.update(reward_scale=self.reward_scale, num_updates=self.num_updates)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(implicit_parts(self), state, self.owner, extra=("reward_scale", "num_updates"))
        self.reward_scale = float(state["reward_scale"])
        self.num_updates = int(state["num_updates"])
