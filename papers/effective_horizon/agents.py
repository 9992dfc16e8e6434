"""SQIRL and GORP on a `TabularMDP` sampled as a simulator, and the search for their sample complexity.

Both learn a time-indexed policy one timestep at a time, exploring with the uniformly random policy:

- SQIRL (Laidlaw, Zhu, Russell, Dragan 2024, Sec. 3, Algorithm 1; cassidylaidlaw/effective-horizon@1a83eb7
  effective_horizon/sb3/algorithms/sqirl.py): at iteration i, collect m episodes that follow the learned
  π_0 .. π_{i-1} and then act at random; regress Q̂^1 on the Monte Carlo return-to-go of the random
  continuation (Q^1 = Q^{π_rand}), then Q̂^j on r + γ max_a Q̂^{j-1}(s', a) (fitted-Q iteration: Q^j is one
  Bellman backup of Q^{j-1}) for j = 2..k, each over every step t >= i of the episodes (as the authors' code
  stores them; only t < i + k - j + 1 matter); π_i acts greedily on Q̂^k_i.
- GORP (Laidlaw, Russell, Dragan 2023, Algorithm 1; run_gorp.jl @1a83eb7): at iteration i, for each of the
  A^k action sequences run m episodes (learned actions before i, the sequence, then random) and keep the first
  action of the sequence with the best mean return. Its policy is open loop (one action per timestep).

Regression is a pluggable `Regressor`: `TabularRegressor` (the exact least-squares fit of a table, i.e. the
sample mean per (t, s, a)) for tests and checks, and `NeuralRegressor` (an MLP, as the paper's deep SQIRL).

Sample complexity follows the authors' GORP script (run_gorp.jl @1a83eb7): a run's sample complexity is the
number of env steps it took if its final policy solves the env (its exact return reaches the threshold; the
authors require the optimal return itself, see the README's DEVIATIONs) and infinite otherwise; for one
(k, m) it is the median over seeded runs; the search looks for the smallest m whose median is finite
(doubling m, then bisecting, as their script bisects), and SQIRL's is the smallest over k (`loop.py`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from common.mdp.tabular import TabularMDP

# ----------------------------------------------------------------------------------------------- episodes


@dataclass
class Batch:
    """m episodes of at most T steps, time-major: arrays (T, m); `alive[t, j]`: episode j took step t."""

    states: np.ndarray  # s_t (int)
    actions: np.ndarray  # a_t
    rewards: np.ndarray  # r_t
    next_states: np.ndarray  # s_{t+1}
    ended: np.ndarray  # s_{t+1} is terminal (no bootstrapping from it)
    alive: np.ndarray
    returns: np.ndarray  # discounted return-to-go from t

    @property
    def steps(self) -> int:
        return int(self.alive.sum())


class Simulator:
    """Samples `mdp` fast: each (s, a) keeps only its possible next states (sticky actions give two)."""

    def __init__(self, mdp: TabularMDP) -> None:
        self.mdp = mdp
        width = max(1, int((mdp.P > 0).sum(-1).max()))
        self.next = np.argsort(-mdp.P, axis=-1, kind="stable")[..., :width]  # (S, A, K)
        self.prob = np.take_along_axis(mdp.P, self.next, -1)
        self.cdf = np.cumsum(self.prob, -1)
        self.terminal = mdp.terminal.astype(bool)
        self.expected_reward = mdp.expected_reward

    def step(self, s: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pick = (rng.random(len(s))[:, None] > self.cdf[s, a]).sum(1)
        return self.next[s, a, np.minimum(pick, self.next.shape[-1] - 1)]


def rollout(
    sim: Simulator,
    horizon: int,
    m: int,
    choose: Callable[[int, np.ndarray], np.ndarray],
    rng: np.random.Generator,
    gamma: float | None = None,
) -> Batch:
    """Run m episodes for at most `horizon` steps in parallel; `choose(t, states)` gives the actions;
    `returns` are discounted by `gamma` (default the MDP's)."""
    mdp, T = sim.mdp, horizon
    S = np.zeros((T, m), np.int64)
    A, S2 = np.zeros_like(S), np.zeros_like(S)
    R = np.zeros((T, m))
    alive = np.zeros((T, m), bool)
    s = rng.choice(mdp.num_states, size=m, p=mdp.initial)
    on = ~sim.terminal[s]
    for t in range(T):
        if not on.any():
            break
        a = choose(t, s)
        nxt = sim.step(s, a, rng)
        S[t], A[t], S2[t], alive[t] = s, a, nxt, on
        R[t] = np.where(on, mdp.R[s, a, nxt], 0.0)
        on = on & ~sim.terminal[nxt]
        s = np.where(alive[t], nxt, s)
    G = np.zeros_like(R)
    acc = np.zeros(m)
    discount = mdp.gamma if gamma is None else gamma
    for t in reversed(range(T)):
        acc = R[t] + discount * acc
        G[t] = acc
    return Batch(S, A, R, S2, sim.terminal[S2], alive, G)


def policy_return(sim: Simulator, horizon: int, policy: np.ndarray) -> float:
    """The exact expected return from the start of the time-indexed deterministic policy `policy[t, s]`
    (backward induction over the possible next states only)."""
    mdp = sim.mdp
    V = np.zeros(mdp.num_states)
    rows = np.arange(mdp.num_states)
    for t in reversed(range(horizon)):
        a = policy[t]
        nxt = V[sim.next[rows, a]] * sim.prob[rows, a]
        V = np.where(sim.terminal, 0.0, sim.expected_reward[rows, a] + mdp.gamma * nxt.sum(-1))
    return float(mdp.initial @ V)


# ---------------------------------------------------------------------------------------------- regression


Fitted = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (t[n], s[n]) -> Q̂[n, a]


class Regressor(Protocol):
    def fit(self, t: np.ndarray, s: np.ndarray, a: np.ndarray, y: np.ndarray, slot: int) -> Fitted:
        """Fit Q̂(t, s, a) ≈ y by least squares; `slot` j names which Q̂^j it is (a regressor may start from
        its previous fit of the same slot)."""
        ...


class TabularRegressor:
    """The least-squares fit over all functions of (t, s, a): the mean target of each visited triple;
    unvisited actions are -inf (never greedy unless nothing was tried), unvisited states 0. `stationary`:
    over functions of (s, a) only, pooling the timesteps (a cheaper, coarser class for long horizons)."""

    def __init__(self, horizon: int, num_states: int, num_actions: int, stationary: bool = False) -> None:
        self.stationary = stationary
        self.shape = (1 if stationary else horizon, num_states, num_actions)

    def fit(self, t: np.ndarray, s: np.ndarray, a: np.ndarray, y: np.ndarray, slot: int) -> Fitted:
        if self.stationary:
            t = np.zeros_like(t)
        flat = np.ravel_multi_index((t, s, a), self.shape)
        size = int(np.prod(self.shape))
        total = np.bincount(flat, weights=y, minlength=size)
        count = np.bincount(flat, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            table = (total / count).reshape(self.shape)
        seen = count.reshape(self.shape).any(-1, keepdims=True)
        table = np.where(np.isnan(table), np.where(seen, -np.inf, 0.0), table)
        if self.stationary:
            return lambda tt, ss: table[0, ss]
        return lambda tt, ss: table[tt, ss]


class NeuralRegressor:
    """MLPs from (state features, fraction of the episode left) to one output per action, trained with Adam on
    the squared error of the taken action, with the sb3 SQIRL's settings (@1a83eb7 sqirl.py / train.py: hidden
    [64, 64], lr 1e-4, batch 128, ceil(n * 10 epochs / 128) updates per fit, gradient norm clipped at 10; the
    time-remaining input is the authors' `TimeRemainingWrapper`, envs/minigrid.py). Each Q̂^j has its own
    network, which every later fit continues from (the authors train one network for all timesteps, warm).
    DEVIATION: an MLP on symbolic features instead of the authors' MiniGridCNN on the image observation; k
    networks fitted to each iteration's fresh data instead of one k-headed network over a replay buffer, and
    no loss scaling."""

    def __init__(
        self,
        features: np.ndarray,
        horizon: int,
        num_actions: int,
        hidden: tuple[int, ...] = (64, 64),
        lr: float = 1e-4,
        batch_size: int = 128,
        epochs: int = 10,
        min_updates: int = 10,
        seed: int = 0,
    ) -> None:
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.horizon, self.num_actions = horizon, num_actions
        self.batch_size, self.epochs, self.min_updates = batch_size, epochs, min_updates
        self.gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.hidden, self.lr = hidden, lr
        self.nets: dict[int, tuple[nn.Module, torch.optim.Optimizer]] = {}

    def _net(self, slot: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        if slot not in self.nets:
            sizes = (self.features.shape[1] + 1, *self.hidden)
            layers: list[nn.Module] = []
            for i, o in itertools.pairwise(sizes):
                layers += [nn.Linear(i, o), nn.ReLU()]
            net = nn.Sequential(*layers, nn.Linear(sizes[-1], self.num_actions))
            self.nets[slot] = (net, torch.optim.Adam(net.parameters(), lr=self.lr))
        return self.nets[slot]

    def _inputs(self, t: np.ndarray, s: np.ndarray) -> torch.Tensor:
        remaining = torch.as_tensor((self.horizon - t) / self.horizon, dtype=torch.float32)[:, None]
        return torch.cat([self.features[torch.as_tensor(s)], remaining], 1)

    def fit(self, t: np.ndarray, s: np.ndarray, a: np.ndarray, y: np.ndarray, slot: int) -> Fitted:
        net, opt = self._net(slot)
        x, act, target = self._inputs(t, s), torch.as_tensor(a), torch.as_tensor(y, dtype=torch.float32)
        n = len(target)
        for _ in range(max(self.min_updates, math.ceil(n * self.epochs / self.batch_size))):
            idx = torch.randint(n, (min(self.batch_size, n),), generator=self.gen)
            loss = ((net(x[idx]).gather(1, act[idx, None])[:, 0] - target[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
        frozen = [p.detach().clone() for p in net.parameters()]  # later fits must not change this Q̂

        def predict(tt: np.ndarray, ss: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = torch.func.functional_call(
                    net,
                    dict(zip([k for k, _ in net.named_parameters()], frozen, strict=True)),
                    (self._inputs(tt, ss),),
                )
            return out.numpy().astype(np.float64)

        return predict


# ---------------------------------------------------------------------------------------------- the agents


@dataclass(frozen=True)
class Learned:
    policy: np.ndarray  # (T, S) actions; SQIRL: greedy on Q̂^k_t at each state, GORP: one action per t
    steps: int  # env steps used


def sqirl(
    sim: Simulator,
    horizon: int,
    k: int,
    m: int,
    regressor: Regressor,
    rng: np.random.Generator,
    gamma: float | None = None,
) -> Learned:
    """SQIRL with planning depth k and m episodes per iteration (see the module docstring); its targets are
    discounted by `gamma` (default the MDP's)."""
    mdp = sim.mdp
    gamma = mdp.gamma if gamma is None else gamma
    T, S, A = horizon, mdp.num_states, mdp.num_actions
    policy = np.zeros((T, S), np.int64)
    steps = 0
    for i in range(T):

        def choose(t: int, s: np.ndarray, i: int = i) -> np.ndarray:
            return policy[t, s] if t < i else rng.integers(A, size=len(s))

        batch = rollout(sim, T, m, choose, rng, gamma)
        steps += batch.steps
        # every step from i on: Q̂^1 on the return-to-go, Q̂^j on the backup of Q̂^{j-1} (sb3 SQIRL stores the
        # steps t >= i of each episode, sqirl.py `_store_episode`)
        tt, jj = np.nonzero(batch.alive[i:])
        tt = tt + i
        if not (tt == i).any():  # every sampled episode ended before step i: later π_t stay action 0
            break
        states, acts = batch.states[tt, jj], batch.actions[tt, jj]
        fitted = regressor.fit(tt, states, acts, batch.returns[tt, jj], 1)
        nxt, last = batch.next_states[tt, jj], batch.ended[tt, jj] | (tt + 1 >= T)
        for j in range(2, k + 1):
            boot = np.where(last, 0.0, fitted(np.minimum(tt + 1, T - 1), nxt).max(1))
            fitted = regressor.fit(tt, states, acts, batch.rewards[tt, jj] + gamma * boot, j)
        policy[i] = np.argmax(fitted(np.full(S, i), np.arange(S)), axis=1)
    return Learned(policy, steps)


def gorp(sim: Simulator, horizon: int, k: int, m: int, rng: np.random.Generator) -> Learned:
    """GORP with k-step action sequences and m episodes per sequence (open loop; see the module docstring)."""
    T, S, A = horizon, sim.mdp.num_states, sim.mdp.num_actions
    actions = np.zeros(T, np.int64)
    steps = 0
    for i in range(T):
        best, best_value = 0, -math.inf
        for sequence in itertools.product(range(A), repeat=k):

            def choose(t: int, s: np.ndarray, i: int = i, seq: tuple[int, ...] = sequence) -> np.ndarray:
                if t < i:
                    return np.full(len(s), actions[t])
                if t < i + k:
                    return np.full(len(s), seq[t - i])
                return rng.integers(A, size=len(s))

            batch = rollout(sim, T, m, choose, rng)
            steps += batch.steps
            value = float(batch.returns[0].mean())
            if value > best_value:
                best, best_value = sequence[0], value
        actions[i] = best
    return Learned(np.repeat(actions[:, None], S, 1), steps)


# ------------------------------------------------------------------------------------ sample complexity


@dataclass(frozen=True)
class SearchResult:
    k: int
    m: int | None  # smallest m whose median run is optimal (None: none within the budget)
    sample_complexity: float  # median env steps at that m (inf: not reached)
    tried: dict[int, float]  # m -> median sample complexity


def median_sample_complexity(
    learn: Callable[[int, np.random.Generator], Learned],
    evaluate: Callable[[np.ndarray], float],
    optimal: float,
    m: int,
    runs: int,
    seed: int,
    tol: float,
) -> float:
    """Median over `runs` seeded runs with m episodes of: steps used if the policy is optimal, else inf."""
    out = []
    for r in range(runs):
        learned = learn(m, np.random.default_rng([seed, m, r]))
        out.append(learned.steps if evaluate(learned.policy) >= optimal - tol else math.inf)
    return float(np.median(out))


def search_m(
    learn: Callable[[int, np.random.Generator], Learned],
    evaluate: Callable[[np.ndarray], float],
    optimal: float,
    k: int,
    runs: int,
    seed: int,
    tol: float,
    max_steps: int,
    steps_per_run_per_m: int,
    on_try: Callable[[int, float], None] | None = None,
) -> SearchResult:
    """The smallest m (doubling from 1, then bisecting) whose median run is optimal; an m is tried only when
    m * `steps_per_run_per_m` (the most steps a run with that m can take) is at most `max_steps`."""
    tried: dict[int, float] = {}

    def attempt(m: int) -> float:
        if m not in tried:
            tried[m] = median_sample_complexity(learn, evaluate, optimal, m, runs, seed, tol)
            if on_try is not None:
                on_try(m, tried[m])
        return tried[m]

    low, high = 0, 1  # invariant: low fails (0: not tried), high is the next to try
    while True:
        if high * steps_per_run_per_m > max_steps:
            return SearchResult(k, None, math.inf, tried)
        if not math.isinf(attempt(high)):
            break
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if math.isinf(attempt(mid)):
            low = mid
        else:
            high = mid
    return SearchResult(k, high, tried[high], tried)
