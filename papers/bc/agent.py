"""Behaviour cloning: a deterministic policy regressed onto the dataset's actions.

Pomerleau, "Efficient Training of Artificial Neural Networks for Autonomous Navigation", Neural Computation
3(1), 1991 (ALVINN); here the offline-RL baseline "BC" of corl-team/CORL @eeeeef2
`algorithms/offline/any_percent_bc.py` (`Actor`, `BC.train`, `train`), which this file follows line by line.
The top-`frac` trajectory selection of "x% BC" (`keep_best_trajectories`) is in `loop.py`: it chooses the data
the shared offline loop samples from, before `prepare` sees it.

Reads top to bottom: the network, `prepare` (state statistics), `act`, then `update`. The run loop owns the
dataset sampler and the batch size; BC reads only the states and actions of a batch.
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
from common.networks import mlp
from common.offline.data import OfflineData, state_statistics
from common.precision import autocast, check_precision

CFG_KEYS = ("lr", "hidden_dim", "normalize_states", "state_norm_eps")


# ---------------------------------------------------------------------------------------------------
# Network (any_percent_bc.py `Actor`): 256x256 ReLU MLP with PyTorch's default initialisation, tanh output
# times max_action (= 1: every rlrepro action lives in [-1, 1]).
# ---------------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """obs -> [Linear -> ReLU] x 2 -> Linear -> tanh: a deterministic action in [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, [hidden_dim, hidden_dim], action_dim, output_activation=nn.Tanh)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).float()


class BCAgent:
    """Behaviour cloning by mean-squared action regression (`common.agent.OfflineAgent`)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, device: torch.device, precision: str) -> None:
        check_state_control("BC", cfg, CFG_KEYS, spec)
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.normalize_states = bool(cfg.normalize_states)
        self.state_norm_eps = float(cfg.state_norm_eps)
        obs_dim, action_dim = spec.obs_shape[0], spec.action_shape[0]

        self.actor = Actor(obs_dim, action_dim, int(cfg.hidden_dim)).to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=float(cfg.lr))

        # Dataset statistics, set by `prepare` (identity until then) and saved with the checkpoint.
        self.obs_mean = torch.zeros(obs_dim, device=self.device)
        self.obs_std = torch.ones(obs_dim, device=self.device)
        self.num_updates = 0  # any_percent_bc.py `BC.total_it`

    def _autocast(self) -> Any:
        return autocast(self.device, self.precision)

    # -----------------------------------------------------------------------------------------------
    # Dataset statistics (any_percent_bc.py `train`: `compute_mean_std(..., eps=1e-3)`, `normalize_states`,
    # `wrap_env`): s <- (s - mean) / (std + 1e-3) over the states of the data trained on (after the top-frac
    # selection), for training and evaluation alike.
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
    # Acting (any_percent_bc.py `Actor.act`): the deterministic actor on the normalised state, in eval and
    # training mode alike (offline: nothing explores).
    # -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        with self._autocast():
            action = self.actor(self.normalize(obs_t))
        return action[0].cpu().numpy()

    # -----------------------------------------------------------------------------------------------
    # Learning (any_percent_bc.py `BC.train`): one Adam step on the regression loss. Rewards, next states
    # and discounts in the batch are unused.
    # -----------------------------------------------------------------------------------------------
    def update(self, batch: Batch, step: int) -> dict[str, float]:
        self.num_updates += 1
        b = batch.to_torch(self.device)
        obs, action = self.normalize(b["obs"].float()), b["action"].float()

        # Eq. (BC)  pi = argmin E_{(s, a) ~ D} ||pi(s) - a||^2, as F.mse_loss(pi, action): the mean over the
        # batch *and* the action dimensions (any_percent_bc.py `actor_loss = F.mse_loss(pi, action)`).
        with self._autocast():
            pi = self.actor(obs)
        actor_loss = F.mse_loss(pi, action)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():  # one device sync for all scalars
            values = torch.stack([actor_loss.detach(), pi.abs().mean()]).tolist()
        return {"actor_loss": values[0], "pi_abs": values[1]}

    # -----------------------------------------------------------------------------------------------
    # Checkpointing (any_percent_bc.py `BC.state_dict`: actor, optimiser, total_it; plus the state
    # statistics): tensors, numbers and strings only (loads with torch.load(..., weights_only=True)).
    # -----------------------------------------------------------------------------------------------
    def _parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {"actor": self.actor, "actor_opt": self.actor_opt}

    def state_dict(self) -> dict[str, Any]:
        state = parts_state(self._parts())
        state.update(
            obs_mean=self.obs_mean.clone(), obs_std=self.obs_std.clone(), num_updates=self.num_updates
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self._parts(), state, "BC", extra=("obs_mean", "obs_std", "num_updates"))
        self.obs_mean = torch.as_tensor(state["obs_mean"], device=self.device).clone()
        self.obs_std = torch.as_tensor(state["obs_std"], device=self.device).clone()
        self.num_updates = int(state["num_updates"])
