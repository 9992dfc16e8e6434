"""The deep variant (Ávila Pires et al. 2025, Sec. 6 "Deep reinforcement learning"): a DQN-style agent with a
categorical return-distribution head, on the stock-augmented observation, acting greedily for the objective.

The agent sees (s, c) as features — a one-hot of the MDP state and the stock c scaled to [-1, 1] — so the
network must generalise over stocks instead of reading a table. Its head outputs, per action, a categorical
distribution of the return-to-go G over atoms on the return grid [G_min, G_max] (step `paper.stock.step`),
trained by C51's cross-entropy against the projected target (the shared `common.value_losses.C51Loss`;
Z' the target network):

    target(s, c, a) = Π[r + Z'(s', c', a*)],   a* = argmax_a' E_{G ~ Z'(s', c', a')}[f(c' + G)]

with c' = c + r (γ = 1) and f the objective's stock utility (objectives.py): the same greedy rule as
stock-augmented distributional value iteration (dp.py `AugmentedDP.greedy`), with the network in place of
the table. Acting: ε-greedy on that rule. The initial stock is drawn uniformly among the objective's
choices during training (CVaR: one per candidate b); at the end the agent picks the c_0 its own network
rates best (max_b b + E[f(c_0 + G)]), and its greedy policy is evaluated *exactly* on the augmented MDP.

DEVIATION: the paper's deep experiments are Atari-scale DQN variants; this is the same construction at the
size of the tabular MDPs here, so that the learned policy can be scored against the exact optimum. γ = 1
only (the stock is then c_0 plus the rewards so far, exactly on the grid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from common.errors import ConfigError
from common.networks import mlp
from common.value_losses import C51Loss
from papers.distributional_dp.dp import AugmentedDP, Solution
from papers.distributional_dp.stock import return_bounds

DEEP_KEYS = (
    "num_steps",
    "hidden_dim",
    "lr",
    "batch_size",
    "replay_size",
    "learning_starts",
    "epsilon_start",
    "epsilon_end",
    "epsilon_steps",
    "target_every",
)


@dataclass(frozen=True)
class DeepSettings:
    num_steps: int  # env steps (one update each after learning_starts)
    hidden_dim: int
    lr: float
    batch_size: int
    replay_size: int
    learning_starts: int
    epsilon_start: float
    epsilon_end: float
    epsilon_steps: int
    target_every: int  # updates between target-network copies

    @classmethod
    def from_config(cls, deep: DictConfig) -> DeepSettings:
        missing = [k for k in DEEP_KEYS if k not in deep]
        if missing:
            raise ConfigError(f"paper.deep is missing {', '.join(missing)}")
        floats = ("lr", "epsilon_start", "epsilon_end")
        s = cls(**{k: float(deep[k]) if k in floats else int(deep[k]) for k in DEEP_KEYS})  # type: ignore[arg-type]
        for k in ("num_steps", "hidden_dim", "batch_size", "replay_size", "epsilon_steps", "target_every"):
            if getattr(s, k) < 1:
                raise ConfigError(f"paper.deep.{k}={getattr(s, k)} must be >= 1")
        if not 0.0 <= s.epsilon_end <= s.epsilon_start <= 1.0:
            raise ConfigError("paper.deep needs 0 <= epsilon_end <= epsilon_start <= 1")
        if s.lr <= 0:
            raise ConfigError(f"paper.deep.lr={s.lr} must be positive")
        return s


class StockFeatures:
    """(s, c) of each augmented state as the network's input: one-hot(s) and c / max|c|."""

    def __init__(self, dp: AugmentedDP) -> None:
        aug = dp.aug
        stocks = aug.stock_value()
        scale = max(float(np.abs(stocks).max()), 1.0)
        onehot = np.eye(aug.mdp.num_states, dtype=np.float32)[aug.base]
        self.table = torch.as_tensor(
            np.concatenate([onehot, (stocks / scale)[:, None]], 1), dtype=torch.float32
        )

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index]


class StockDQN:
    """The categorical Q-network, its target copy and the update (module docstring)."""

    def __init__(self, dp: AugmentedDP, settings: DeepSettings, seed: int) -> None:
        if dp.aug.mdp.gamma != 1.0:
            raise ConfigError(
                f"the deep variant needs an undiscounted MDP (gamma = 1), this one has {dp.aug.mdp.gamma}"
            )
        torch.manual_seed(seed)
        lo, hi = return_bounds(dp.aug.mdp)
        self.num_actions = dp.aug.num_actions
        self.atoms_count = int(round((hi - lo) / dp.aug.step)) + 1
        if self.atoms_count < 2:
            raise ConfigError("the MDP's returns take a single value: nothing to learn")
        self.loss_fn = C51Loss(lo, hi, self.atoms_count)  # the atoms of G
        # f(c + G) for every augmented state's stock c and every atom of G: fixed, so computed once
        c_plus_g = dp.aug.stock_value()[:, None] + self.loss_fn.locations.numpy()[None, :].astype(np.float64)
        self.utility = torch.as_tensor(dp.objective.utility(c_plus_g), dtype=torch.float32)  # (N, m)
        self.features = StockFeatures(dp)
        width = self.features.table.shape[1]
        self.net = mlp(width, [settings.hidden_dim, settings.hidden_dim], self.num_actions * self.atoms_count)
        self.target = mlp(
            width, [settings.hidden_dim, settings.hidden_dim], self.num_actions * self.atoms_count
        )
        self.target.load_state_dict(self.net.state_dict())
        self.target.requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=settings.lr)
        self.updates, self.target_every = 0, settings.target_every

    def _logits(self, net: nn.Module, index: torch.Tensor) -> torch.Tensor:
        return net(self.features(index)).view(-1, self.num_actions, self.atoms_count)

    def scores(self, net: nn.Module, index: torch.Tensor) -> torch.Tensor:
        """E[f(c + G)] for every action at augmented states `index`: (B, A)."""
        probs = self._logits(net, index).softmax(-1)
        return (probs * self.utility[index][:, None, :]).sum(-1)

    @torch.no_grad()
    def greedy(self, index: torch.Tensor) -> torch.Tensor:
        return self.scores(self.net, index).argmax(-1)

    def update(
        self,
        index: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        nxt: torch.Tensor,
        done: torch.Tensor,
    ) -> float:
        with torch.no_grad():
            best = self.scores(self.target, nxt).argmax(-1)  # a* by the objective at (s', c')
            next_logits = self._logits(self.target, nxt)[torch.arange(len(nxt)), best]
            target = self.loss_fn.target(
                reward, 1.0 - done, next_logits
            )  # Π[r + Z(s', c', a*)]; 0 at the end
        logits = self._logits(self.net, index)[torch.arange(len(index)), action]
        loss = -(target * F.log_softmax(logits, -1)).sum(-1).mean()  # C51's cross-entropy
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates += 1
        if self.updates % self.target_every == 0:
            self.target.load_state_dict(self.net.state_dict())
        return float(loss.detach())


class AugmentedSimulator:
    """Samples the augmented MDP one transition at a time (its sparse rows), rewards as stock changes."""

    def __init__(self, dp: AugmentedDP, rng: np.random.Generator) -> None:
        self.dp, self.aug, self.rng = dp, dp.aug, rng
        A = self.aug.num_actions
        order = np.argsort(self.aug.src, kind="stable")
        self._dst, self._prob = self.aug.dst[order], self.aug.prob[order]
        self._bounds = np.searchsorted(self.aug.src[order], np.arange(self.aug.num_states * A + 1))

    def start(self) -> int:
        j = self.dp.choices[int(self.rng.integers(len(self.dp.choices)))]  # an initial stock, uniformly
        probs, states = zip(*self.aug.initial[j], strict=True)
        return int(self.rng.choice(states, p=np.asarray(probs) / sum(probs)))

    def step(self, i: int, a: int) -> tuple[float, int, bool]:
        row = i * self.aug.num_actions + a
        lo, hi = self._bounds[row], self._bounds[row + 1]
        p = self._prob[lo:hi]
        j = int(self._dst[lo:hi][self.rng.choice(hi - lo, p=p / p.sum())])
        reward = float(self.aug.stock[j] - self.aug.stock[i]) * self.aug.step  # c' = c + r (γ = 1)
        return reward, j, bool(self.aug.terminal[j])


def train_deep(
    dp: AugmentedDP,
    settings: DeepSettings,
    seed: int,
    tol: float,
    max_iterations: int,
    on_progress: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Solution:
    """Train `StockDQN` for `settings.num_steps` env steps, then evaluate its greedy policy exactly from the
    initial stock its network rates best. `on_progress(step, loss)` every 100 steps."""
    rng = np.random.default_rng(seed)
    agent, sim = StockDQN(dp, settings, seed), AugmentedSimulator(dp, rng)
    size = settings.replay_size
    buf_i, buf_a, buf_j = (np.zeros(size, np.int64) for _ in range(3))
    buf_r, buf_d = np.zeros(size, np.float32), np.zeros(size, np.float32)
    i, loss = sim.start(), float("nan")
    for step in range(settings.num_steps):
        if should_stop():
            break
        frac = min(step / settings.epsilon_steps, 1.0)
        eps = settings.epsilon_start + frac * (settings.epsilon_end - settings.epsilon_start)
        if rng.random() < eps:
            a = int(rng.integers(agent.num_actions))
        else:
            a = int(agent.greedy(torch.tensor([i]))[0])
        r, j, done = sim.step(i, a)
        k = step % size  # a ring: the oldest transition goes first
        buf_i[k], buf_a[k], buf_r[k], buf_j[k], buf_d[k] = i, a, r, j, float(done)
        i = sim.start() if done else j
        if step >= settings.learning_starts:
            idx = rng.integers(min(step + 1, size), size=settings.batch_size)
            loss = agent.update(
                *(torch.as_tensor(b[idx]) for b in (buf_i, buf_a, buf_r, buf_j, buf_d))  # type: ignore[arg-type]
            )
        if on_progress is not None and (step + 1) % 100 == 0:
            on_progress(step + 1, loss)
    everything = torch.arange(dp.aug.num_states)
    policy = agent.greedy(everything).numpy()
    # the initial stock the network rates best: max_j offset(c_0) + E[f(c_0 + G)] at the start, own estimate
    with torch.no_grad():
        rated = agent.scores(agent.net, everything).max(-1).values.numpy()
    estimates = [
        dp.objective.offset(dp.aug.initial_stocks[j]) + sum(p * float(rated[s]) for p, s in dp.aug.initial[j])
        for j in dp.choices
    ]
    start = dp.choices[int(np.argmax(estimates))]
    return dp.solution(policy, tol, max_iterations, agent.updates, start=start)
