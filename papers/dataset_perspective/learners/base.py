"""What the nine learners share: the networks, the minibatch, epsilon-greedy acting and checkpoints.

kschweig/OfflineRL @478661f source/networks/critic.py (`Critic`) and actor.py (`Actor`): state -> three
Linear(256) + SELU layers -> Linear(num_actions x outputs); weights Kaiming-normal (fan_in, linear gain),
biases 0, and `torch.manual_seed(seed)` at the start of every network's construction (so an actor and a critic
of the same shapes start equal, as upstream). source/agents/*.py `policy`: epsilon-greedy on Q with
eps = max(1 + (0.01 - 1) / 1000 * iterations, 0.01) while training online, `eval_eps = 0` when evaluated.
Each learner's update is in its own file (bc.py, bve.py, ...), top to bottom.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from common.checkpoint import load_parts, parts_state


@dataclass
class DiscreteBatch:
    """One minibatch (all tensors on the learner's device): actions (B,) long, the rest (B,) float32 or
    (B, obs_dim). `not_done` = 1 - done, as upstream's buffer stores it; `mc_return` is the discounted
    return-to-go (MCE), `next_action` the dataset's next action (BVE)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    not_done: torch.Tensor
    next_action: torch.Tensor
    mc_return: torch.Tensor


def network(obs_dim: int, outputs: int, cfg: DictConfig, seed: int) -> nn.Sequential:
    """The upstream `Critic`/`Actor` body: [Linear(hidden) -> SELU] x hidden_layers -> Linear(outputs)."""
    torch.manual_seed(seed)  # critic.py / actor.py: every network is seeded at construction
    layers: list[nn.Module] = []
    size = obs_dim
    for _ in range(int(cfg.hidden_layers)):
        layers += [nn.Linear(size, int(cfg.hidden_dim)), nn.SELU()]
        size = int(cfg.hidden_dim)
    net = nn.Sequential(*layers, nn.Linear(size, outputs))
    for param in net.parameters():
        if param.dim() == 1:
            nn.init.constant_(param, 0.0)
        else:
            nn.init.kaiming_normal_(param, mode="fan_in", nonlinearity="linear")
    return net


class DiscreteLearner(ABC):
    """Shared plumbing; subclasses set `self.q` (and maybe more nets) and define `values` and `update`."""

    name = "learner"
    greedy = True  # act by argmax of `values` (False: sample from `policy_probs`: BC, CRR)

    def __init__(
        self,
        cfg: DictConfig,
        obs_dim: int,
        num_actions: int,
        discount: float,
        seed: int,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.obs_dim, self.num_actions, self.discount = obs_dim, num_actions, float(discount)
        self.seed, self.device = int(seed), torch.device(device)
        self.rng = np.random.default_rng(seed)  # agent.py `self.rng`: the epsilon coin and random actions
        self.iterations = 0
        self.eps_start, self.eps_end = float(cfg.epsilon_start), float(cfg.epsilon_end)
        self.eps_slope = (self.eps_end - self.eps_start) / int(cfg.epsilon_decay_updates)
        self.eval_eps = 0.0  # train_online.py sets 0.2 for the noisy dataset

    def net(self, outputs: int) -> nn.Sequential:
        return network(self.obs_dim, outputs, self.cfg, self.seed).to(self.device)

    def adam(self, *nets: nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam([p for n in nets for p in n.parameters()], lr=float(self.cfg.lr))

    # ---------------------------------------------------------------------------------------- acting
    @abstractmethod
    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """Action values (B, A) used greedily (eval mode of the upstream networks)."""

    def policy_probs(self, obs: torch.Tensor) -> torch.Tensor:
        """The acting distribution (B, A); a value learner's is greedy: all mass on argmax Q (first of ties).
        Learners that act by sampling (`greedy = False`) return their policy's probabilities instead."""
        values = self.values(obs)
        return F.one_hot(values.argmax(-1), values.shape[-1]).to(values.dtype)

    def epsilon(self, eval_mode: bool) -> float:
        if eval_mode:
            return self.eval_eps
        return max(self.eps_slope * self.iterations + self.eps_start, self.eps_end)

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int = 0, eval_mode: bool = True) -> np.ndarray:
        """Upstream `policy`: with probability 1 - eps the learner's choice, else a uniform action."""
        if self.rng.uniform(0, 1) > self.epsilon(eval_mode):
            x = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(1, -1)
            if self.greedy:
                return np.asarray(int(self.values(x).argmax(-1)))
            return np.asarray(int(torch.distributions.Categorical(self.policy_probs(x)).sample()))
        return np.asarray(int(self.rng.integers(self.num_actions)))

    @abstractmethod
    def update(self, batch: DiscreteBatch) -> dict[str, float]:
        """One gradient step on `batch`; the scalars to log."""

    # ---------------------------------------------------------------------------------- checkpoints
    @abstractmethod
    def parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """The networks and optimisers a checkpoint saves, by name."""

    def state_dict(self) -> dict[str, Any]:
        return {**parts_state(self.parts()), "iterations": self.iterations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_parts(self.parts(), state, self.name, extra=("iterations",))
        self.iterations = int(state["iterations"])


def huber(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """nn.SmoothL1Loss() (beta 1, mean), the TD loss of every upstream value learner."""
    return nn.functional.smooth_l1_loss(x, y)
