"""Stock augmentation of a tabular MDP (Ávila Pires et al. 2025, Sec. 3 "Stock-Augmented Return Distribution
Optimization").

The augmented state is (s, c): the MDP state and the stock c, a statistic of the rewards so far. A step from
(s, c) that pays r and reaches s' moves the stock to

    c' = (c + r) / γ                                                     # the paper's stock update

so that c_t = γ^-t (c_0 + sum_{i<t} γ^i r_i) and c_0 + G_0 = γ^t (c_t + G_t): the stock-augmented return c + G
seen from any step is the whole episode's c_0 + G_0, rescaled. With γ = 1 the stock is c_0 plus the rewards
so far, and c_t + G_t = c_0 + G_0 exactly.

Stocks live on a grid of spacing `step` (`c_0` and the rewards must lie on it): with γ = 1 every stock is then
on the grid exactly; with γ < 1, (c + r) / γ is rounded to the nearest grid point. DEVIATION: that rounding
is this implementation's discretisation (the paper's stock is real-valued); the tests and the committed
results use γ = 1, where nothing is rounded. Only the (s, c) reachable from the initial states and the
given initial stocks are built; more than `max_states` of them is a one-line `ConfigError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError
from common.mdp.tabular import TabularMDP

GRID_TOL = 1e-6  # a value is "on the grid" within this many grid steps


def on_grid(x: float | np.ndarray, step: float) -> bool:
    k = np.asarray(x, np.float64) / step
    return bool(np.all(np.abs(k - np.round(k)) <= GRID_TOL))


def check_rewards_on_grid(mdp: TabularMDP, step: float) -> None:
    if not on_grid(mdp.R[mdp.P > 0], step):
        raise ConfigError(
            f"paper.stock.step={step}: every reward of the MDP must be a multiple of it (the stock and the "
            f"return distributions live on that grid); choose a step that divides the rewards"
        )


@dataclass(frozen=True)
class StockAugmentedMDP:
    """The reachable part of the stock-augmented MDP, with stocks as integer multiples of `step`.

    State i is (`base[i]`, `stock[i] * step`); `terminal[i]` when `base[i]` is terminal. Transitions are
    sparse rows: from state `src[n] // A` under action `src[n] % A` to state `dst[n]` with probability
    `prob[n]`.
    `initial[j]` lists (probability, state) of the start under initial stock `initial_stocks[j]`.
    """

    mdp: TabularMDP
    step: float
    base: np.ndarray
    stock: np.ndarray  # integer grid index of each state's stock
    terminal: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    prob: np.ndarray
    initial_stocks: tuple[float, ...]
    initial: tuple[tuple[tuple[float, int], ...], ...]

    @property
    def num_states(self) -> int:
        return len(self.base)

    @property
    def num_actions(self) -> int:
        return self.mdp.num_actions

    def stock_value(self) -> np.ndarray:
        return self.stock * self.step


def next_stock(c: int, r: float, gamma: float, step: float) -> int:
    """Grid index of (c step + r) / γ (rounded to the grid when γ < 1)."""
    return int(round((c * step + r) / gamma / step)) if gamma > 0 else 0


def augment(
    mdp: TabularMDP, initial_stocks: Sequence[float], step: float, max_states: int = 200_000
) -> StockAugmentedMDP:
    """Enumerate the (s, c) reachable from the initial states with each of `initial_stocks`."""
    if mdp.gamma == 0.0:
        raise ConfigError("stock augmentation divides by γ: it needs γ > 0")
    check_rewards_on_grid(mdp, step)
    if not on_grid(np.asarray(initial_stocks, np.float64), step):
        raise ConfigError(
            f"the initial stocks {list(initial_stocks)} must be multiples of paper.stock.step={step}"
        )
    A = mdp.num_actions
    index: dict[tuple[int, int], int] = {}
    order: list[tuple[int, int]] = []
    queue: deque[tuple[int, int]] = deque()

    def visit(s: int, c: int) -> int:
        if (s, c) not in index:
            if len(order) >= max_states:
                raise ConfigError(
                    f"the stock-augmented MDP has more than paper.stock.max_states={max_states} reachable "
                    f"(state, stock) pairs: too large to enumerate; use a coarser paper.stock.step, a "
                    f"shorter env.horizon, or raise the limit"
                )
            index[s, c] = len(order)
            order.append((s, c))
            queue.append((s, c))
        return index[s, c]

    initial = []
    for c0 in initial_stocks:
        k0 = int(round(c0 / step))
        initial.append(
            tuple((float(mdp.initial[s]), visit(int(s), k0)) for s in np.flatnonzero(mdp.initial > 0))
        )
    src, dst, prob = [], [], []
    while queue:
        s, c = queue.popleft()
        i = index[s, c]
        if mdp.terminal[s]:
            continue
        for a in range(A):
            for s2 in np.flatnonzero(mdp.P[s, a] > 0):
                j = visit(int(s2), next_stock(c, float(mdp.R[s, a, s2]), mdp.gamma, step))
                src.append(i * A + a)
                dst.append(j)
                prob.append(float(mdp.P[s, a, s2]))
    base = np.array([s for s, _ in order], np.int64)
    stock = np.array([c for _, c in order], np.int64)
    return StockAugmentedMDP(
        mdp=mdp,
        step=float(step),
        base=base,
        stock=stock,
        terminal=mdp.terminal.astype(bool)[base],
        src=np.array(src, np.int64),
        dst=np.array(dst, np.int64),
        prob=np.array(prob, np.float64),
        initial_stocks=tuple(float(c) for c in initial_stocks),
        initial=tuple(initial),
    )


def return_bounds(mdp: TabularMDP, max_sweeps: int = 100_000) -> tuple[float, float]:
    """The smallest and largest return any policy can get from the initial states (every outcome counted),
    by iterating the best- and worst-case backups to their fixed point; a `ConfigError` when they diverge
    (γ = 1 with a cycle that pays rewards: the return is unbounded, add env.horizon)."""
    live = mdp.P > 0
    hi = np.zeros(mdp.num_states)
    lo = np.zeros(mdp.num_states)
    for _ in range(max_sweeps):
        val_hi = np.where(live, mdp.R + mdp.gamma * hi[None, None, :], -np.inf).max(-1).max(-1)
        val_lo = np.where(live, mdp.R + mdp.gamma * lo[None, None, :], np.inf).min(-1).min(-1)
        val_hi[mdp.terminal] = 0.0
        val_lo[mdp.terminal] = 0.0
        done = np.allclose(val_hi, hi, atol=1e-12) and np.allclose(val_lo, lo, atol=1e-12)
        hi, lo = val_hi, val_lo
        if done:
            start = mdp.initial > 0
            return float(lo[start].min()), float(hi[start].max())
        if max(np.abs(hi).max(), np.abs(lo).max()) > 1e12:
            break
    raise ConfigError(
        "the returns of this MDP are unbounded (γ = 1 and a cycle that pays rewards): cut its episodes with "
        "env.horizon=<T>"
    )
