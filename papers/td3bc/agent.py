"""TD3+BC: "A Minimalist Approach to Offline Reinforcement Learning".

Fujimoto and Gu, NeurIPS 2021 (arXiv 2106.06860). `# Eq. N` tags use the paper's numbering; "Alg. 1" is TD3
(Fujimoto, van Hoof, Meger 2018, arXiv 1802.09477), which TD3+BC changes in two lines. The code follows the
authors' implementation, sfujim/TD3_BC @8791ad7: `TD3_BC.py` (networks, `train`), `main.py` (defaults, eval)
and `utils.py` (`ReplayBuffer.normalize_states`), cross-checked with corl-team/CORL @eeeeef2
`algorithms/offline/td3_bc.py`.

Reads top to bottom: the networks, `prepare` (state statistics), `act`, then `update`. The run loop owns the
dataset sampler and the batch size; `Batch.discount` already holds gamma (0 at a terminal), so no gamma here.
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
from common.offline.data import OfflineData, state_statistics
from common.precision import autocast, check_precision

CFG_KEYS = (
    "actor_lr",
    "critic_lr",
    "hidden_dim",
    "tau",
    "policy_noise",
    "noise_clip",
    "policy_freq",
    "alpha",
    "normalize_states",
    "state_norm_eps",
)


# ---------------------------------------------------------------------------------------------------
# Networks (TD3_BC.py `Actor`, `Critic`): 256x256 ReLU MLPs with PyTorch's default initialisation.
# The twin critics are common.networks.TwinQ (Q1 = `.q1`, used alone by the actor loss, as `Critic.Q1`).
# ---------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """obs -> [Linear -> ReLU] x 2 -> Linear -> tanh: a deterministic action in [-1, 1] (max_action 1)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, [hidden_dim, hidden_dim], action_dim, output_activation=nn.Tanh)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).float()


class TD3BCAgent:
    """TD3 with a behaviour-cloning term and normalised Q in the actor loss (`common.agent.OfflineAgent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("TD3+BC", cfg, CFG_KEYS, spec)
        if int(cfg.policy_freq) < 1:
            raise ConfigError(f"paper.agent.policy_freq={cfg.policy_freq} must be a positive integer")
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.tau = float(cfg.tau)
        # main.py multiplies both by max_action; our actions live in [-1, 1], so max_action = 1.
        self.policy_noise = float(cfg.policy_noise)
        self.noise_clip = float(cfg.noise_clip)
        self.policy_freq = int(cfg.policy_freq)
        self.alpha = float(cfg.alpha)
        self.normalize_states = bool(cfg.normalize_states)
        self.state_norm_eps = float(cfg.state_norm_eps)
        obs_dim, action_dim, hidden = spec.obs_shape[0], spec.action_shape[0], int(cfg.hidden_dim)

        self.actor = Actor(obs_dim, action_dim, hidden).to(self.device)
        self.actor_target = Actor(obs_dim, action_dim, hidden).to(self.device)
        self.actor_target.load_state_dict(self.actor.state_dict())  # copy.deepcopy in TD3_BC.py
        self.critic = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic_target = TwinQ(obs_dim, action_dim, [hidden, hidden]).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_target.requires_grad_(False)
        self.critic_target.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=float(cfg.actor_lr))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=float(cfg.critic_lr))

        # Dataset statistics, set by `prepare` (identity until then) and saved with the checkpoint.
        self.obs_mean = torch.zeros(obs_dim, device=self.device)
        self.obs_std = torch.ones(obs_dim, device=self.device)
        self.num_updates = 0  # TD3_BC.py `total_it`: drives the policy delay

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Dataset statistics (Eq. 5, state normalisation; main.py `--normalize` True, utils.py
    # `normalize_states`): s <- (s - mean) / (std + 1e-3) over the dataset's states, for training and
    # evaluation alike. TD3+BC leaves rewards untouched.
    # -----------------------------------------------------------------------------------------------
    def prepare(self, data: OfflineData) -> None:
        if not self.normalize_states:
            return
        mean, std = state_statistics(data.observations, self.state_norm_eps)
        self.obs_mean = torch.as_tensor(mean, device=self.device)
        self.obs_std = torch.as_tensor(std, device=self.device)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    # -----------------------------------------------------------------------------------------------
    # Acting (TD3_BC.py `select_action`): the deterministic actor on the normalised state, in eval and
    # training mode alike (offline: nothing explores).
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        with self._autocast():
            action = self.actor(self.normalize(obs_t))
        return action[0].cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (TD3_BC.py `train`)
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        self.num_updates += 1
        b = batch.to_torch(self.device)
        obs, next_obs = self.normalize(b["obs"].float()), self.normalize(b["next_obs"].float())
        action, reward, discount = b["action"].float(), b["reward"].float(), b["discount"].float()

        # TD3's target smoothing: a' = clip(pi'(s') + clip(eps, -c, c), -1, 1), eps ~ N(0, 0.2^2), c 0.5;
        # clipped double Q: y = r + gamma * min(Q1', Q2')(s', a')  (discount = gamma, 0 at a terminal).
        with torch.no_grad():
            noise = (torch.randn_like(action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
            with self._autocast():
                next_action = (self.actor_target(next_obs) + noise).clamp(-1.0, 1.0)
                target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2).float()

        # Critic loss: MSE(Q1, y) + MSE(Q2, y), as TD3_BC.py (no 1/2 factor).
        with self._autocast():
            q1, q2 = self.critic(obs, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        metrics: dict[str, torch.Tensor] = {
            "batch_reward": reward.mean(),
            "critic_loss": critic_loss,
            "q": q1.mean(),
            "q2": q2.mean(),
            "target_q": target_q.mean(),
        }

        # Delayed policy updates (Alg. 1, d = 2): the actor and both targets move on every policy_freq-th
        # update (TD3_BC.py: `total_it % policy_freq == 0`, total_it counted from 1).
        if self.num_updates % self.policy_freq == 0:
            # Eq. 3  pi = argmax E[lambda * Q(s, pi(s)) - (pi(s) - a)^2]
            # Eq. 4  lambda = alpha / (1/N sum |Q(s_i, a_i)|), the mean over the batch of |Q1(s, pi(s))|,
            #        treated as a constant (detached), alpha = 2.5.
            # The BC term is F.mse_loss: the mean over batch *and* action dimensions (TD3_BC.py).
            # The critic is frozen for this pass (TD3_BC.py lets it collect gradients that the next
            # critic zero_grad discards: the same parameters result).
            with self._autocast():
                pi = self.actor(obs)
            self.critic.requires_grad_(False)
            with self._autocast():
                pi_q = self.critic.q1(torch.cat([obs, pi], dim=-1)).float()
            self.critic.requires_grad_(True)
            lmbda = self.alpha / pi_q.abs().mean().detach()
            bc_loss = F.mse_loss(pi, action)
            actor_loss = -lmbda * pi_q.mean() + bc_loss
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()

            # theta' <- tau * theta + (1 - tau) * theta', tau = 0.005, for the critics and the actor.
            soft_update_(self.critic_target, self.critic, self.tau)
            soft_update_(self.actor_target, self.actor, self.tau)
            metrics.update(actor_loss=actor_loss, bc_loss=bc_loss, lmbda=lmbda, pi_q=pi_q.mean())

        with torch.no_grad():  # one device sync for all scalars
            values = torch.stack([v.reshape(()).float() for v in metrics.values()]).tolist()
        return dict(zip(metrics, values, strict=True))

    # -----------------------------------------------------------------------------------------------
    # Checkpointing: tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
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
        state = parts_state(self._parts())
        state.update(
            obs_mean=self.obs_mean.clone(), obs_std=self.obs_std.clone(), num_updates=self.num_updates
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "TD3+BC", extra=("obs_mean", "obs_std", "num_updates"))
        self.obs_mean = torch.as_tensor(state["obs_mean"], device=self.device).clone()
        self.obs_std = torch.as_tensor(state["obs_std"], device=self.device).clone()
        self.num_updates = int(state["num_updates"])
