"""Extreme Q-Learning, offline ("X-QL"): "Extreme Q-Learning: MaxEnt RL without Entropy".

Garg, Hejna, Geist, Ermon, ICLR 2023 (arXiv 2301.02328). `# Eq. N` tags use the numbering of the paper PDF the
authors ship with their code (Div99/XQL @dff09af docs/extreme_q_learning.pdf): Eq. 11 the Extreme-V (Gumbel)
loss, Eq. 12 the policy extraction, Eq. 14 the Q regression. The code
follows the authors' offline implementation, Div99/XQL @dff09af `offline/` (built on IQL's code):
`critic.py` (`gumbel_rescale_loss`, `update_v`, `update_q`), `actor.py` (`update`), `learner.py`
(`_update_jit`, `Learner`), `value_net.py`, `policy.py`, `train_offline.py` (flags, reward normalisation).

Reads top to bottom: the networks, `prepare` (reward scale), `act`, then `update` in the official order:
V from the target critic (Gumbel regression), the actor from the new V (AWR), Q bootstrapped from the new V,
then the target critic. `Batch.discount` already holds gamma (0 at a terminal). Nothing guards against
inf/NaN: XQL's known instability (exp of a large (Q - V) / beta) stops the run as `diverged`
(common/session.py), as it should.
"""

from __future__ import annotations

from typing import Any

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
    advantage_weights,
    cosine_lr,
    gaussian_log_prob,
    locomotion_reward_scale,
    orthogonal_relu_init_,
)
from common.offline.data import OfflineData
from common.offline.dual_losses import gumbel_loss
from common.precision import autocast, check_precision

CFG_KEYS = (
    "actor_lr",
    "value_lr",
    "critic_lr",
    "hidden_dim",
    "tau",
    "loss_temp",
    "max_clip",
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
SCHEDULES = ("cosine", "constant")
REWARD_SCALINGS = ("none", "locomotion", "antmaze")  # train_offline.py `make_env_and_dataset`
NOISE_CLIP = 0.5  # critic.py update_v: jnp.clip(noise * std, -0.5, 0.5)


def check_common(owner: str, cfg: DictConfig, keys: tuple[str, ...], spec: EnvSpec) -> None:
    """The checks XQL-style agents make first; one-line ConfigErrors."""
    check_state_control(owner, cfg, keys, spec)
    if cfg.actor_lr_schedule not in SCHEDULES:
        raise ConfigError(
            f"paper.agent.actor_lr_schedule={cfg.actor_lr_schedule!r} must be one of {', '.join(SCHEDULES)}"
        )
    if cfg.actor_lr_schedule == "cosine" and int(cfg.max_steps) < 1:
        raise ConfigError(f"paper.agent.max_steps={cfg.max_steps} must be positive for the cosine schedule")


class XQLAgent:
    """Offline XQL: Gumbel-regression V, twin Q regressed on r + gamma V(s'), AWR policy
    (`common.agent.OfflineAgent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_common("XQL", cfg, CFG_KEYS, spec)
        if cfg.reward_scaling not in REWARD_SCALINGS:
            choices = ", ".join(REWARD_SCALINGS)
            raise ConfigError(f"paper.agent.reward_scaling={cfg.reward_scaling!r} must be one of {choices}")
        if not float(cfg.loss_temp) > 0.0:
            raise ConfigError(f"paper.agent.loss_temp={cfg.loss_temp} must be positive (the Gumbel beta)")
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
        self.beta = float(cfg.loss_temp)
        self.max_clip = None if cfg.max_clip is None else float(cfg.max_clip)
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
        obs_dim, action_dim, hidden = spec.obs_shape[0], spec.action_shape[0], int(cfg.hidden_dim)

        # Networks (value_net.py, policy.py): 256x256 ReLU MLPs, orthogonal init (gain sqrt 2) everywhere.
        # V has LayerNorm after each hidden Dense (mujoco_config.py layernorm=True -> ValueCritic only);
        # the twin critics never do (DoubleCritic's default).
        self.actor = GaussianActor(
            obs_dim, action_dim, hidden, float(cfg.log_std_min), float(cfg.log_std_max)
        )
        self.critic = TwinQ(obs_dim, action_dim, [hidden, hidden])
        self.value = mlp(obs_dim, [hidden, hidden], 1, layer_norm=bool(cfg.value_layer_norm))
        for net in (self.actor, self.critic, self.value):
            net.apply(orthogonal_relu_init_).to(self.device)
        self.critic_target = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())  # learner.py: same init key
        self.critic_target.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=float(cfg.critic_lr))
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=float(cfg.value_lr))

        self.reward_scale = 1.0  # set by `prepare`, saved with the checkpoint
        self.num_updates = 0  # the cosine schedule's count

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Dataset statistics (train_offline.py `make_env_and_dataset`): locomotion datasets (hopper,
    # halfcheetah, walker2d) get r <- r * 1000 / (max - min episode return); antmaze r - 1; else raw.
    # States stay raw, as in the official code.
    # -----------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineData) -> None:
        if self.reward_scaling == "locomotion":
            try:
                self.reward_scale = locomotion_reward_scale(data, self.reward_span)
            except ValueError as e:
                raise ConfigError(
                    f"XQL reward scaling needs episodes with different returns, but {e}; "
                    f"set paper.agent.reward_scaling=none"
                ) from None

    # -----------------------------------------------------------------------------------------------
    # Acting (evaluation.py: `sample_actions(temperature=0)`, the tanh'd mean; samples clipped to [-1, 1]).
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        with self._autocast():
            mean, log_std = self.actor(obs_t)
        action = mean if eval_mode else mean + log_std.exp() * torch.randn_like(mean)
        return action[0].clamp(-1.0, 1.0).cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (learner.py `_update_jit`, num_v_updates = 1)
    # -----------------------------------------------------------------------------------------------
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

        # Eq. 11 (Gumbel regression): L(V) = E[e^z - z - 1], z = (min(Q1', Q2')(s, a) - V(s)) / beta,
        # Q' the target critic; z clipped at max_clip and the loss rescaled by e^-max(z) (critic.py
        # `gumbel_rescale_loss`); its minimiser is the soft maximum beta log E_mu[e^(Q / beta)].
        with torch.no_grad(), self._autocast():
            tq1, tq2 = self.critic_target(v_obs, v_act)
        q_target = torch.min(tq1, tq2).float()
        with self._autocast():
            v = self.value(v_obs).float()
        value_loss = gumbel_loss(q_target - v, self.beta, self.max_clip).mean()
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_opt.step()

        # Eq. 12 policy extraction (argmin_pi E[e^((Q - V)/beta) log pi]) as IQL's AWR (actor.py `update`):
        # L_pi = -E[min(exp(temperature * (min(Q1', Q2')(s, a) - V(s))), 100) log pi(a|s)], the new V.
        with torch.no_grad():
            with self._autocast():
                v_new = self.value(obs).float()
            adv = q_target[:n] - v_new
            weights = advantage_weights(adv, self.temperature, self.adv_weight_max)
        with self._autocast():
            mean, log_std = self.actor(obs)
        actor_loss = -(weights * gaussian_log_prob(action, mean, log_std)).mean()
        lr = cosine_lr(self.actor_lr, self.num_updates, self.max_steps) if self.cosine else self.actor_lr
        for group in self.actor_opt.param_groups:  # learner.py: cosine decay of the actor's step size
            group["lr"] = lr
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Eq. 14 (offline Q): Q_i(s, a) <- r + gamma V(s'), the new V (critic.py `update_q`); the official
        # "mse" is huber(Q - y, delta=20) = (Q - y)^2 / 2 for |Q - y| <= 20, summed over both heads.
        with torch.no_grad():
            with self._autocast():
                next_v = self.value(next_obs).float()
            target = reward + discount * next_v
        with self._autocast():
            q1, q2 = self.critic(obs, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.huber_loss(q1, target, delta=self.huber_delta) + F.huber_loss(
            q2, target, delta=self.huber_delta
        )
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Target critic: theta' <- tau theta + (1 - tau) theta', tau = 0.005 (learner.py `target_update`).
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
        state.update(reward_scale=self.reward_scale, num_updates=self.num_updates)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "XQL", extra=("reward_scale", "num_updates"))
        self.reward_scale = float(state["reward_scale"])
        self.num_updates = int(state["num_updates"])
