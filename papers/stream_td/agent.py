"""Stream TD(λ): streaming prediction of a fixed policy's value (Elsayed, Vasan & Mahmood, 2024, Alg. 2).

Follows upstream `stream_td.py` (github.com/mohmdelsayed/streaming-drl): a value network of two hidden
layers of 128 with LayerNorm + LeakyReLU, sparse init (90%), ObGD (lr 1, γ 0.99, λ 0.8, κ 2),
observations normalised then rewards scaled online (that file's wrapper order).

DEVIATION: upstream predicts a cumulant of the ETTm2 time series (downloaded at run time, smoothed by an
observation trace β = 0.999). Here the stream comes from any configured env, driven by a fixed policy
(`policy: random` — uniform in [-1, 1] or over the discrete actions — or `zero`): no network access, and
the same loop and logs as the control agents. Learning progress shows in `td_error`/`value` of train.jsonl;
the evaluation return is the fixed policy's own return.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.checkpoint import Part, load_parts, parts_state
from common.envs.base import EnvSpec
from common.stream import (
    RewardScaler,
    StreamObservations,
    StreamValue,
    TraceOptimizer,
    init_stream_,
)

POLICIES = ("random", "zero")


class StreamTDAgent:
    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        if spec.pixels:
            raise ValueError("stream TD here predicts from state observations")
        if cfg.policy not in POLICIES:
            raise ValueError(f"paper.agent.policy must be one of {', '.join(POLICIES)}, got {cfg.policy!r}")
        # DEVIATION: CPU and fp32 only. One unbatched sample per update: a GPU or bf16 only adds latency.
        self.policy, self.gamma = str(cfg.policy), float(cfg.gamma)
        self.num_actions: int | None = getattr(spec, "num_actions", None)
        self.action_shape = spec.action_shape
        obs_dim = spec.obs_shape[0]
        self.net = StreamValue(obs_dim, cfg.hidden_dim, cfg.layer_norm)
        init_stream_(self.net, cfg.sparse_init, cfg.sparsity)
        self.opt = TraceOptimizer(
            list(self.net.parameters()), cfg.optimizer, cfg.lr, cfg.gamma, cfg.lamda, cfg.kappa_value
        )
        self.obs = StreamObservations(obs_dim - int(cfg.time_feature), cfg.normalize_obs)
        self.rewards = RewardScaler(cfg.gamma, cfg.scale_reward)

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        self.obs.current(obs, eval_mode)  # the first observation of an episode counts in the statistics
        if self.num_actions is not None:
            if self.policy == "zero":
                return np.asarray(0)
            return np.asarray(int(torch.randint(self.num_actions, ())))
        if self.policy == "zero":
            return np.zeros(self.action_shape, np.float32)
        return (torch.rand(self.action_shape) * 2.0 - 1.0).numpy()

    def predict(self, obs: np.ndarray) -> float:
        """V(s) in units of the scaled reward (multiply by √σ² of the reward scaler for the raw scale)."""
        with torch.no_grad():
            return float(self.net(torch.from_numpy(self.obs.current(obs, eval_mode=True))))

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
        s_next = torch.from_numpy(self.obs.next(next_obs, done))
        r = self.rewards(reward, done)
        # δ = r + γ V(s') (1 − done) − V(s); upstream cuts the bootstrap at `terminated` (its only end)
        v = self.net(s)
        with torch.no_grad():
            target = r + self.gamma * float(self.net(s_next)) * (0.0 if done else 1.0)
        delta = float(target - v.detach())
        self.opt.zero_grad()
        (-v).backward()
        step_size = self.opt.step(delta, reset=done)
        return {"td_error": delta, "value": float(v.detach()), "scaled_reward": r, "step_size": step_size}

    def end_episode(self) -> None:
        self.opt.reset_traces()
        self.rewards.trace = 0.0
        self.obs.forget()

    def _parts(self) -> dict[str, Part]:
        return {"net": self.net, "opt": self.opt, "obs": self.obs, "rewards": self.rewards}

    def state_dict(self) -> dict[str, Any]:
        return parts_state(self._parts())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "stream TD")
