"""The stochastic effective horizon of a tabular MDP (Laidlaw, Zhu, Russell, Dragan 2024, Sec. 3).

Q^1 is the uniformly random policy's time-indexed Q and Q^{i+1} one Bellman optimality backup of Q^i
(`common.mdp.solve.qvi_iterates`). The MDP is k-QVI-solvable when every policy greedy on Q^k is optimal
(`common.mdp.effective_horizon.min_k_qvi_solvable`, the authors' `calculate_minimum_k`, which the stochastic
paper's analysis script runs on the sticky-action MDP: cassidylaidlaw/effective-horizon@1a83eb7
EffectiveHorizon.jl/src/analyze_sticky_actions.jl).

The stochastic bound replaces the deterministic paper's GORP bound (k + log_A m_k, which needs one next state
per action: `common.mdp.effective_horizon.effective_horizon_bound`) by the gap of Q^k:

    Δ_k = min over (t, s) of  max_a Q^k_t(s, a) - max_{a not greedy} Q^k_t(s, a)
    H̄_k = k + log_A(1 / Δ_k²)   when the MDP is k-QVI-solvable, else ∞;   H̄ = min_k H̄_k

so that A^{H̄_k} = A^k / Δ_k², the factor SQIRL's sample complexity grows with (the paper's stochastic
effective horizon and Theorem 3.6). DEVIATION: the minimum runs over the (t, s) that a policy greedy on
Q^k can reach from the start (every greedy action, ties included), as `min_k_qvi_solvable` checks optimality
there: states no greedy policy visits cannot change what SQIRL learns. Rewards are used as given; the paper's
analysis assumes returns in [0, 1], which MiniGrid's 0/1 reward satisfies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from common.mdp.effective_horizon import OPTIMALITY_TOL, greedy_returns, min_k_qvi_solvable
from common.mdp.solve import finite_horizon_q, greedy_actions, qvi_sequence
from common.mdp.tabular import TabularMDP

GREEDY_TOL = 1e-12  # two Q values closer than this are a tie (as `min_k_qvi_solvable` and `greedy_returns`)


@dataclass(frozen=True)
class HorizonAnalysis:
    """Everything `analyze` computes for one MDP cut after `horizon` steps."""

    horizon: int
    num_states: int
    num_actions: int
    optimal_return: float
    random_return: float
    worst_return: float
    greedy_returns: dict[int, float]  # k -> return of acting greedily on Q^k (ties against the agent)
    min_k: int | None  # smallest k that is QVI-solvable (None: none up to max_k)
    gaps: dict[int, float] = field(default_factory=dict)  # k -> Δ_k (inf: no suboptimal action is reachable)
    bounds: dict[int, float] = field(default_factory=dict)  # k -> H̄_k
    effective_horizon: float = math.inf  # H̄ = min_k H̄_k (inf: not solvable up to max_k)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("greedy_returns", "gaps", "bounds"):
            out[key] = {str(k): v for k, v in out[key].items()}
        return out


def gap(mdp: TabularMDP, Q: np.ndarray, optimal: np.ndarray | None = None) -> tuple[float, bool]:
    """(Δ, solvable) of one Q^k: Δ is the smallest margin between a greedy action and the best non-greedy one
    over the (t, s) reachable from the start by greedy actions (inf when none of them has a non-greedy
    action); solvable: every greedy action there is in `optimal[t, s, a]` (the Q*-optimal actions), the
    check of `min_k_qvi_solvable`."""
    visited = mdp.initial > 0
    live = ~mdp.terminal.astype(bool)
    smallest, solvable = math.inf, True
    for t in range(len(Q)):
        greedy = greedy_actions(Q[t], GREEDY_TOL)
        here = visited & live
        if optimal is not None and (here[:, None] & greedy & ~optimal[t]).any():
            solvable = False
        top = Q[t].max(1)
        runner_up = np.where(greedy, -np.inf, Q[t]).max(1)
        rows = here & np.isfinite(runner_up)
        if rows.any():
            smallest = min(smallest, float((top - runner_up)[rows].min()))
        visited = np.einsum("sa,sak->k", (here[:, None] & greedy).astype(float), mdp.P) > 0
    return smallest, solvable


def stochastic_bound(k: int, delta: float, num_actions: int) -> float:
    """H̄_k = k + log_A(1 / Δ_k²) (k alone when Δ_k is infinite: every reachable action is greedy)."""
    if math.isinf(delta):
        return float(k)
    return k + math.log(1.0 / delta**2) / math.log(num_actions)


def analyze(mdp: TabularMDP, horizon: int, max_k: int = 5) -> HorizonAnalysis:
    """Optimal, random and worst returns, greedy returns J_1..J_max_k, min k, the gaps and H̄ of `mdp`."""
    if horizon < 1 or max_k < 1:
        raise ValueError(f"horizon={horizon} and max_k={max_k} must be >= 1")
    start = mdp.initial
    q_opt = finite_horizon_q(mdp, horizon, "optimal")
    optimal = float(start @ q_opt[0].max(1))
    is_optimal = q_opt >= q_opt.max(-1, keepdims=True) - OPTIMALITY_TOL
    worst = float(start @ finite_horizon_q(mdp, horizon, "worst")[0].min(1))
    iterates = qvi_sequence(mdp, horizon, max_k)  # Q^1 is the random policy's Q
    random_return = float(start @ iterates[0][0].mean(1))
    min_k = min_k_qvi_solvable(mdp, horizon, max_k)
    returns = greedy_returns(mdp, horizon, max_k)
    gaps: dict[int, float] = {}
    bounds: dict[int, float] = {}
    for k, Q in enumerate(iterates, start=1):
        # k-QVI-solvability need not be monotone in k: each k is checked on its own
        gaps[k], solvable = gap(mdp, Q, is_optimal)
        bounds[k] = stochastic_bound(k, gaps[k], mdp.num_actions) if solvable else math.inf
    return HorizonAnalysis(
        horizon=horizon,
        num_states=mdp.num_states,
        num_actions=mdp.num_actions,
        optimal_return=optimal,
        random_return=random_return,
        worst_return=worst,
        greedy_returns=returns,
        min_k=min_k,
        gaps=gaps,
        bounds=bounds,
        effective_horizon=min(bounds.values()),
    )
