"""Stream AC(λ) for continuous actions (Elsayed, Vasan & Mahmood, 2024, Alg. 6), one update per env step.

Follows upstream `stream_ac_continuous.py` (github.com/mohmdelsayed/streaming-drl) for every constant:
a Gaussian policy and a value network, each two hidden layers of 128 with LayerNorm + LeakyReLU, sparse
init (90%); one ObGD optimiser per network (lr 1, γ 0.99, λ 0.8, κ_π 3, κ_V 2); entropy 0.01; observations
normalised and rewards scaled online (`common/stream.py`). The time feature is appended by the loop
(`paper.time_feature`). Every trick is a config switch, which gives the "stream barrier" AC(λ) baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.distributions import Normal

from common.checkpoint import Part, load_parts, parts_state
from common.envs.base import EnvSpec
from common.stream import (
    RewardScaler,
    StreamObservations,
    StreamTrunk,
    StreamValue,
    TraceOptimizer,
    init_stream_,
)


class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layer_norm: bool) -> None:
        super().__init__()
        self.trunk = StreamTrunk(obs_dim, hidden, layer_norm)
        self.mu = nn.Linear(hidden, action_dim)
        self.pre_std = nn.Linear(hidden, action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.mu(h), F.softplus(self.pre_std(h))  # upstream: std = softplus, no floor or clamp


class StreamACAgent:
    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        if len(spec.action_shape) != 1 or spec.pixels:
            raise ValueError(f"stream AC needs state observations and a vector action, got {spec}")
        # DEVIATION: CPU and fp32 only. One unbatched sample per update: a GPU or bf16 only adds latency.
        self.device = torch.device("cpu")
        self.gamma, self.entropy_coef = float(cfg.gamma), float(cfg.entropy_coef)
        obs_dim, action_dim = spec.obs_shape[0], spec.action_shape[0]
        self.actor = Actor(obs_dim, action_dim, cfg.hidden_dim, cfg.layer_norm)
        self.critic = StreamValue(obs_dim, cfg.hidden_dim, cfg.layer_norm)
        init_stream_(self.actor, cfg.sparse_init, cfg.sparsity)
        init_stream_(self.critic, cfg.sparse_init, cfg.sparsity)
        trace = dict(kind=cfg.optimizer, lr=cfg.lr, gamma=cfg.gamma, lamda=cfg.lamda)
        self.actor_opt = TraceOptimizer(list(self.actor.parameters()), kappa=cfg.kappa_policy, **trace)
        self.critic_opt = TraceOptimizer(list(self.critic.parameters()), kappa=cfg.kappa_value, **trace)
        # the time feature (last coordinate, when the loop adds it) is not normalised, as upstream
        self.obs = StreamObservations(obs_dim - int(cfg.time_feature), cfg.normalize_obs)
        self.rewards = RewardScaler(cfg.gamma, cfg.scale_reward)

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        x = torch.from_numpy(self.obs.current(obs, eval_mode))
        mu, std = self.actor(x)
        if eval_mode:
            return mu.numpy()  # DEVIATION: upstream has no evaluation; we evaluate the policy mean
        # DEVIATION: the shared env clips this sample to [-1, 1] and then rescales [-1, 1] affinely onto the
        # env's [low, high]. Upstream (stream_ac_continuous.py) wraps the env in gymnasium's ClipAction,
        # which clips the raw sample to [low, high] with no rescaling. Identical when the bounds are [-1, 1]
        # (Hopper, HalfCheetah, Walker2d, Ant, dog and most DMC tasks); elsewhere the executed action differs
        # (Pendulum-v1 [-2, 2]: 0.6 runs as 1.2 here, 0.6 upstream; InvertedPendulum-v5 [-3, 3]; Humanoid-v5
        # [-0.4, 0.4]). Kept because every rlrepro agent acts in [-1, 1] through the same env code and runs in
        # progress use it (tests/test_stream_x.py pins it). Both learn from the unclipped sample, as upstream.
        return Normal(mu, std).sample().numpy()

    def learn(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool,
    ) -> dict[str, float]:
        done = terminated or truncated
        s = torch.from_numpy(self.obs.current(obs, eval_mode=False))
        r = self.rewards(reward, done)
        s_next = torch.from_numpy(self.obs.next(next_obs, done))
        a = torch.as_tensor(action, dtype=torch.float32)

        # Eq. (TD error) δ = r + γ V(s') (1 − done) − V(s). As upstream, a time-limit end also cuts the
        # bootstrap: with the time feature in the input, the task is finite-horizon and V = 0 there.
        v = self.critic(s)
        with torch.no_grad():
            v_next = self.critic(s_next) * (0.0 if done else 1.0)
        delta = float(r + self.gamma * v_next - v.detach())

        mu, std = self.actor(s)
        dist = Normal(mu, std)
        log_prob = dist.log_prob(a).sum()
        entropy = dist.entropy().sum()
        self.actor_opt.zero_grad()
        self.critic_opt.zero_grad()
        (-v).backward()  # ObGD descends −δ z, so the critic's trace accumulates ∇V (Alg. 6)
        # policy trace: ∇log π(a|s) + η sign(δ) ∇H(π(·|s))  (upstream: entropy term scaled by sign(δ))
        (-(log_prob + self.entropy_coef * float(np.sign(delta)) * entropy)).backward()
        actor_step = self.actor_opt.step(delta, reset=done)
        critic_step = self.critic_opt.step(delta, reset=done)
        return {
            "td_error": delta,
            "value": float(v.detach()),
            "entropy": float(entropy.detach()),
            "scaled_reward": r,
            "actor_step_size": actor_step,
            "critic_step_size": critic_step,
        }

    def end_episode(self) -> None:
        self.actor_opt.reset_traces()
        self.critic_opt.reset_traces()
        self.rewards.trace = 0.0
        self.obs.forget()

    def diagnostics(self) -> dict[str, float]:
        return {"obs_count": float(self.obs.normalizer.stats.count)}

    def _parts(self) -> dict[str, Part]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "obs": self.obs,
            "rewards": self.rewards,
        }

    def state_dict(self) -> dict[str, Any]:
        return parts_state(self._parts())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "stream AC")
