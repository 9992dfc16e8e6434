"""Stream Q(λ) for discrete actions (Elsayed, Vasan & Mahmood, 2024, Alg. 7), one update per env step.

Follows upstream `stream_q.py` (github.com/mohmdelsayed/streaming-drl): a Q-network of two hidden layers
(32 units for classic control) with LayerNorm + LeakyReLU and sparse init (90%); Watkins's Q(λ) with ObGD
(lr 1, γ 0.99, λ 0.8, κ 2): traces are reset at episode ends and after every non-greedy action;
ε-greedy with ε decaying linearly from 1 to 0.01 over the first 5% of the steps; observations normalised
and rewards scaled online; the time feature is appended by the loop (`paper.time_feature`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from common.checkpoint import Part, load_parts, parts_state
from common.envs.base import EnvSpec
from common.stream import (
    RewardScaler,
    StreamObservations,
    StreamTrunk,
    TraceOptimizer,
    init_stream_,
)


class QNetwork(nn.Module):
    def __init__(self, obs_dim: int, num_actions: int, hidden: int, layer_norm: bool) -> None:
        super().__init__()
        self.trunk = StreamTrunk(obs_dim, hidden, layer_norm)
        self.q = nn.Linear(hidden, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(self.trunk(obs))


def epsilon_at(step: int, start: float, end: float, duration: float) -> float:
    """Upstream `linear_schedule`, evaluated at its 1-based time step (`step` counts from 0)."""
    slope = (end - start) / duration
    return max(slope * (step + 1) + start, end)


class StreamQAgent:
    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        num_actions = getattr(spec, "num_actions", None)
        if num_actions is None or spec.pixels:
            raise ValueError("stream Q needs a discrete-action env from states (env suite gym_discrete)")
        # DEVIATION: CPU and fp32 only. One unbatched sample per update: a GPU or bf16 only adds latency.
        self.num_actions, self.gamma = int(num_actions), float(cfg.gamma)
        self.eps_start, self.eps_end = float(cfg.epsilon_start), float(cfg.epsilon_end)
        self.eps_steps = float(cfg.exploration_fraction) * float(cfg.total_steps)
        obs_dim = spec.obs_shape[0]
        self.net = QNetwork(obs_dim, self.num_actions, cfg.hidden_dim, cfg.layer_norm)
        init_stream_(self.net, cfg.sparse_init, cfg.sparsity)
        self.opt = TraceOptimizer(
            list(self.net.parameters()), cfg.optimizer, cfg.lr, cfg.gamma, cfg.lamda, cfg.kappa_value
        )
        self.obs = StreamObservations(obs_dim - int(cfg.time_feature), cfg.normalize_obs)
        self.rewards = RewardScaler(cfg.gamma, cfg.scale_reward)
        self._nongreedy = False  # was the last training action exploratory? (Watkins: cut the traces)

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        greedy = int(self.net(torch.from_numpy(self.obs.current(obs, eval_mode))).argmax())
        if eval_mode:
            return np.asarray(greedy)
        epsilon = epsilon_at(step, self.eps_start, self.eps_end, self.eps_steps)
        # DEVIATION: the coin and the random action come from torch's RNG (checkpointed with the run)
        # instead of numpy's global one; same distribution.
        action = greedy
        if float(torch.rand(())) < epsilon:
            action = int(torch.randint(self.num_actions, ()))
        self._nongreedy = action != greedy  # a random draw equal to the greedy action counts as greedy
        return np.asarray(action)

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

        # δ = r + γ max_a' Q(s', a') (1 − done) − Q(s, a); as upstream, a time-limit end cuts the bootstrap
        q_sa = self.net(s)[int(action)]
        with torch.no_grad():
            target = r + self.gamma * float(self.net(s_next).max()) * (0.0 if done else 1.0)
        delta = float(target - q_sa.detach())
        self.opt.zero_grad()
        (-q_sa).backward()
        step_size = self.opt.step(delta, reset=done or self._nongreedy)
        return {"td_error": delta, "q": float(q_sa.detach()), "scaled_reward": r, "step_size": step_size}

    def end_episode(self) -> None:
        self.opt.reset_traces()
        self.rewards.trace = 0.0
        self.obs.forget()

    def _parts(self) -> dict[str, Part]:
        return {"net": self.net, "opt": self.opt, "obs": self.obs, "rewards": self.rewards}

    def state_dict(self) -> dict[str, Any]:
        return parts_state(self._parts())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "stream Q")
