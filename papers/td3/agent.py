"""TD3: "Addressing Function Approximation Error in Actor-Critic Methods".

Fujimoto, van Hoof, Meger, ICML 2018 (arXiv 1802.09477). Section and line tags refer to that paper: Sec. 4.2
(clipped double Q-learning), Sec. 5.2 (delayed policy and target updates), Sec. 5.3 (target policy smoothing)
and Algorithm 1. The settings and the update order are those of the authors' code, sfujim/TD3 @6a9f761
`TD3.py` (networks, `train`) and `main.py` (exploration, start steps, batch size).

Reads top to bottom: the networks, `act`, then `update`. The run loop owns the random start steps' timing,
the replay and the batch size; `Batch.discount` already holds gamma (0 at a true terminal).
"""

from __future__ import annotations

from collections.abc import Callable
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
from common.precision import autocast, check_precision

CFG_KEYS = (
    "lr",
    "hidden_dim",
    "tau",
    "policy_noise",
    "noise_clip",
    "policy_delay",
    "expl_noise",
    "num_expl_steps",
)


# ---------------------------------------------------------------------------------------------------
# Networks (TD3.py `Actor`, `Critic`): 256x256 ReLU MLPs with PyTorch's default Linear init.
# ---------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """obs -> [Linear -> ReLU] x 2 -> Linear -> tanh: a deterministic action in [-1, 1] (max_action = 1)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, [hidden_dim, hidden_dim], action_dim, output_activation=nn.Tanh)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


# A term added to the critic loss (papers that change only TD3's critic objective, e.g. MEX): called with the
# agent, the batch's obs, action, next_obs and the critics' Q1(s, a), Q2(s, a); returns the term (a scalar
# tensor that the critic loss gains) and scalars to log.
CriticTerm = Callable[
    ["TD3Agent", torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, dict[str, torch.Tensor]],
]


class TD3Agent:
    """TD3: twin critics, target policy smoothing, delayed actor and target updates (`common.agent.Agent`).

    `critic_term`, when given, is added to the critic loss (`CriticTerm`); TD3 itself has none."""

    def __init__(
        self,
        cfg: DictConfig,
        spec: EnvSpec,
        device: torch.device,
        precision: str,
        critic_term: CriticTerm | None = None,
    ) -> None:
        check_state_control("TD3", cfg, CFG_KEYS, spec)
        if int(cfg.policy_delay) < 1:
            raise ConfigError(f"paper.agent.policy_delay={cfg.policy_delay} must be >= 1")
        if float(cfg.policy_noise) < 0 or float(cfg.noise_clip) < 0 or float(cfg.expl_noise) < 0:
            raise ConfigError("paper.agent.policy_noise, noise_clip and expl_noise must be >= 0")
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.tau = float(cfg.tau)
        # Our actions are in [-1, 1], so max_action = 1 and main.py's `x * max_action` scalings drop out.
        self.policy_noise, self.noise_clip = float(cfg.policy_noise), float(cfg.noise_clip)
        self.expl_noise = float(cfg.expl_noise)
        self.policy_delay = int(cfg.policy_delay)
        self.num_expl_steps = int(cfg.num_expl_steps)
        self.num_updates = 0  # TD3.py `total_it`
        self.critic_term = critic_term
        self.action_shape = tuple(spec.action_shape)
        obs_dim, action_dim, hidden = spec.obs_shape[0], self.action_shape[0], int(cfg.hidden_dim)

        self.actor = Actor(obs_dim, action_dim, hidden).to(self.device)
        self.actor_target = Actor(obs_dim, action_dim, hidden).to(self.device)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic_target = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)

        lr = float(cfg.lr)  # TD3.py: Adam(lr=3e-4) for the actor and the critics
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Acting (main.py: random actions for start_timesteps, then pi(s) + N(0, expl_noise), clipped)
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        if not eval_mode and step < self.num_expl_steps:
            # main.py samples env.action_space (uniform in the box) for start_timesteps steps: U(-1, 1) here.
            return torch.empty(self.action_shape).uniform_(-1.0, 1.0).numpy()
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        with self._autocast():
            action = self.actor(obs_t).float()[0]
        if not eval_mode:  # Algorithm 1: a = clip(pi(s) + eps), eps ~ N(0, sigma); main.py clips to the box
            action = (action + self.expl_noise * torch.randn_like(action)).clamp(-1.0, 1.0)
        return action.cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (TD3.py `train`): critics every update; actor and both targets every `policy_delay`-th.
    # -----------------------------------------------------------------------------------------------
    def target_q(self, next_obs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
        """y = r + gamma * min_i Q'_i(s', clip(pi'(s') + clip(eps, -c, c), -1, 1)),  eps ~ N(0, sigma).

        Sec. 5.3 (target policy smoothing) inside Sec. 4.2's clipped double-Q target; `discount` is gamma,
        or 0 at a true terminal (TD3.py `not_done * discount`)."""
        with torch.no_grad():
            with self._autocast():
                next_action = self.actor_target(next_obs).float()
            noise = (torch.randn_like(next_action) * self.policy_noise).clamp(
                -self.noise_clip, self.noise_clip
            )
            next_action = (next_action + noise).clamp(-1.0, 1.0)
            with self._autocast():
                q1, q2 = self.critic_target(next_obs, next_action)
            return reward + discount * torch.min(q1, q2).float()

    def update(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to_torch(self.device)
        obs, action, next_obs = b["obs"].float(), b["action"].float(), b["next_obs"].float()
        reward, discount = b["reward"].float(), b["discount"].float()
        self.num_updates += 1
        target_q = self.target_q(next_obs, reward, discount)

        # Critic loss: sum of both heads' MSE to the shared target (TD3.py; Algorithm 1 "update critics").
        with self._autocast():
            q1, q2 = self.critic(obs, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        scalars: dict[str, torch.Tensor] = {
            "batch_reward": reward.mean(),
            "q": q1.mean(),
            "q2": q2.mean(),
            "target_q": target_q.mean(),
        }
        if self.critic_term is not None:  # a paper's extra critic objective (MEX's optimism term)
            term, extra = self.critic_term(self, obs, action, next_obs, q1, q2)
            scalars.update(td_loss=critic_loss, **extra)
            critic_loss = critic_loss + term
        scalars["critic_loss"] = critic_loss
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # Sec. 5.2: the actor and the targets move on every d-th update (TD3.py: total_it % policy_freq == 0,
        # total_it counted from 1, so the first actor update is the d-th).
        if self.num_updates % self.policy_delay == 0:
            # Deterministic policy gradient through Q1 only: J = -Q1(s, pi(s)) (TD3.py `critic.Q1`).
            self.critic.requires_grad_(False)  # the critics' gradients are not needed for this pass
            with self._autocast():
                actor_q = self.critic.q1(torch.cat([obs, self.actor(obs)], dim=-1)).float()
            self.critic.requires_grad_(True)
            actor_loss = -actor_q.mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            # theta' <- tau * theta + (1 - tau) * theta' for the critics, then the actor (TD3.py order).
            soft_update_(self.critic_target, self.critic, self.tau)
            soft_update_(self.actor_target, self.actor, self.tau)
            scalars["actor_loss"] = actor_loss

        with torch.no_grad():  # one device sync for every scalar
            values = torch.stack([v.detach().reshape(()).float() for v in scalars.values()]).tolist()
        return dict(zip(scalars, values, strict=True))

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors and numbers only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        return {**parts_state(self._parts()), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "TD3", extra=("num_updates",))
        self.num_updates = int(state["num_updates"])
