"""DrQ-v2: "Mastering Visual Continuous Control: Improved Data-Augmented Reinforcement Learning".

Yarats, Fergus, Lazaric, Pinto, ICLR 2022 (arXiv 2107.09645). Follows facebookresearch/drqv2 @c0c650b,
`drqv2.py` (Encoder, Actor, Critic, DrQV2Agent) and `utils.py` (schedule, TruncatedNormal, weight_init).
Formula tags refer to Section 3 of the arXiv paper ("DrQ-v2"): [aug] random shifts, [critic] n-step
clipped double-Q critic loss, [actor] DDPG actor loss, [sigma] scheduled exploration noise sigma(t).

Reads top to bottom: the networks (built from `common.networks`), then `act`, then `update`.
The run loop owns seed frames, update frequency, batch size, n-step returns and replay; `Batch.discount`
already holds gamma^n (or 0 at a terminal), so there is no gamma here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from common.augment import RandomShiftsAug
from common.buffers.base import Batch
from common.checkpoint import load_parts, parts_state
from common.distributions import TruncatedNormal
from common.envs.base import EnvSpec
from common.errors import ConfigError
from common.networks import PixelEncoder, Trunk, TwinQ, mlp, orthogonal_init_, soft_update_
from common.precision import autocast, check_precision
from common.schedule import parse_schedule

CFG_KEYS = (
    "lr",
    "feature_dim",
    "hidden_dim",
    "critic_target_tau",
    "num_expl_steps",
    "stddev_schedule",
    "stddev_clip",
)


# ---------------------------------------------------------------------------------------------------
# Networks (drqv2.py: Encoder, Actor, Critic). The encoder is common.networks.PixelEncoder.
# ---------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """Trunk(repr -> feature) -> MLP(hidden, hidden) -> tanh mean; pi(.|h) = TruncatedNormal(mean, std)."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim)
        self.policy = mlp(feature_dim, [hidden_dim, hidden_dim], action_dim)
        self.apply(orthogonal_init_)

    def forward(self, h: torch.Tensor, std: float) -> TruncatedNormal:
        mean = torch.tanh(self.policy(self.trunk(h))).float()  # fp32 distribution even under bf16 autocast
        return TruncatedNormal(mean, torch.full_like(mean, std))


class Critic(nn.Module):
    """Its own Trunk(repr -> feature), then two Q heads MLP(hidden, hidden) -> 1 on concat(feature, a)."""

    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = Trunk(repr_dim, feature_dim)
        self.q = TwinQ(feature_dim, action_dim, [hidden_dim, hidden_dim])
        self.apply(orthogonal_init_)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q(self.trunk(h), action)


class DrQV2Agent:
    """DDPG with an augmented conv encoder trained by the critic only (see `common.agent.Agent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        missing = [k for k in CFG_KEYS if k not in cfg]
        if missing:
            raise ConfigError(
                f"paper.agent is missing {', '.join(missing)} (DrQ-v2 needs {', '.join(CFG_KEYS)})"
            )
        if not spec.pixels or len(spec.obs_shape) != 3:
            raise ConfigError(f"DrQ-v2 needs pixel observations (C, H, W), got obs_shape {spec.obs_shape}")
        if len(spec.action_shape) != 1:
            raise ConfigError(f"DrQ-v2 needs a flat action vector, got action_shape {spec.action_shape}")
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.lr = float(cfg.lr)
        self.critic_target_tau = float(cfg.critic_target_tau)
        self.num_expl_steps = int(cfg.num_expl_steps)
        self.stddev_schedule = parse_schedule(cfg.stddev_schedule)  # [sigma], validated at start-up
        self.stddev_clip = float(cfg.stddev_clip)
        self.action_shape = tuple(spec.action_shape)
        feature_dim, hidden_dim = int(cfg.feature_dim), int(cfg.hidden_dim)
        action_dim = self.action_shape[0]

        self.encoder = PixelEncoder(spec.obs_shape).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic = Critic(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic_target = Critic(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)

        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=self.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.lr)

        self.aug = RandomShiftsAug(pad=4)  # [aug]

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Acting (drqv2.py: DrQV2Agent.act)
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        if not eval_mode and step < self.num_expl_steps:
            # DEVIATION: drqv2 runs the networks, samples, then overwrites the action with U(-1, 1); we
            # draw U(-1, 1) directly. Same action distribution, no wasted forward pass; the torch RNG
            # stream differs from drqv2's (no Gaussian draw during the first num_expl_steps steps).
            return torch.empty(self.action_shape).uniform_(-1.0, 1.0).numpy()
        obs_t = torch.tensor(obs, device=self.device).unsqueeze(0)  # a copy: env arrays may be read-only
        stddev = self.stddev_schedule(step)  # [sigma]
        with self._autocast():
            dist = self.actor(self.encoder(obs_t), stddev)
        action = dist.mean if eval_mode else dist.sample(clip=None)
        return action[0].float().cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (drqv2.py: DrQV2Agent.update, update_critic, update_actor)
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to_torch(self.device)
        action, reward, discount = b["action"].float(), b["reward"].float(), b["discount"].float()
        stddev = self.stddev_schedule(step)  # [sigma]: same sigma for target actions and the actor loss

        # [aug]: augment obs and next_obs independently (fp32, outside autocast), then encode.
        obs = self.aug(b["obs"].float())
        next_obs = self.aug(b["next_obs"].float())
        with self._autocast():
            h = self.encoder(obs)
            with torch.no_grad():
                next_h = self.encoder(next_obs)

        # [critic] y = R_n + gamma^n * min(Q1', Q2')(h', a'),  a' = clip_[-1,1](pi(h') + clip(sigma*eps, ±c)).
        with torch.no_grad():
            with self._autocast():
                next_action = self.actor(next_h, stddev).sample(clip=self.stddev_clip)
                target_q1, target_q2 = self.critic_target(next_h, next_action)
            target_v = torch.min(target_q1, target_q2).float()
            target_q = reward + discount * target_v  # discount = gamma^n, or 0 at a terminal

        # [critic] L = (Q1(h, a) - y)^2 + (Q2(h, a) - y)^2, batch mean; trains critic AND encoder.
        with self._autocast():
            q1, q2 = self.critic(h, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        # [actor] L = -min(Q1, Q2)(h, a),  a = clip_[-1,1](pi(h) + clip(sigma*eps, ±c)), on detached h,
        # so only the critic trains the encoder. The critic's own grads from this backward are discarded
        # (zeroed before the next critic step), as in drqv2.
        h = h.detach()
        with self._autocast():
            dist = self.actor(h, stddev)
            pi_action = dist.sample(clip=self.stddev_clip)
            pi_q1, pi_q2 = self.critic(h, pi_action)
        actor_loss = -torch.min(pi_q1, pi_q2).float().mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        # Target critic: theta' <- tau * theta + (1 - tau) * theta' (drqv2 utils.soft_update_params).
        soft_update_(self.critic_target, self.critic, self.critic_target_tau)

        with torch.no_grad():
            scalars = {
                "batch_reward": reward.mean(),
                "critic_loss": critic_loss,
                "critic_q1": q1.mean(),
                "critic_q2": q2.mean(),
                "critic_target_q": target_q.mean(),
                "actor_loss": actor_loss,
                "actor_logprob": dist.log_prob(pi_action).sum(-1).mean(),
                "actor_ent": dist.entropy().sum(-1).mean(),
            }
            values = torch.stack(list(scalars.values())).tolist()  # one device sync for all metrics
        metrics = dict(zip(scalars, values, strict=True))
        metrics["actor_stddev"] = stddev
        return metrics

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            "encoder": self.encoder,
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "encoder_opt": self.encoder_opt,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
        }

    def state_dict(self) -> dict[str, Any]:
        return parts_state(self._parts())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "DrQ-v2")
