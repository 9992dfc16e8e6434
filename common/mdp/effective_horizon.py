"""The effective horizon (Laidlaw, Russell, Dragan 2023, "Bridging RL Theory and Practice with the Effective
Horizon", NeurIPS, arXiv 2304.09853; Laidlaw, Zhu, Russell, Dragan 2024, "The Effective Horizon Explains Deep
RL Performance in Stochastic Environments", ICLR, arXiv 2312.08369), computed exactly on a `TabularMDP` cut
after T steps (undiscounted in the papers: γ = 1; `mdp.gamma` is used as given).

- Q^1 is the random policy's time-indexed Q, and Q^{i+1} one Bellman optimality backup of Q^i
  (`common.mdp.solve.qvi_iterates`). The MDP is *k-QVI-solvable* when every policy greedy with respect to Q^k
  is optimal; `min_k_qvi_solvable` checks it as the authors' code does (cassidylaidlaw/effective-horizon
  @54051f9 EffectiveHorizon.jl/src/value_iteration.jl `calculate_minimum_k`): at every (t, s) reachable by
  following greedy actions from the start, every greedy action (ties included) must be optimal.
  `greedy_returns` gives the return of acting greedily on each Q^k (ties broken against the agent).
- `effective_horizon_bound` is the paper's simple bound H = min_k H_k, H_k = k + log_A m_k (the GORP sample
  complexity bound of the first paper's Theorem 5.4), as that repository computes it (@b2ce1b1
  EffectiveHorizon.jl/src/gorp_bounds.jl `compute_simple_effective_horizon`): m_k is the largest over the
  greedy-reachable (t, s) of ceil(16 σ² / Δ² · ln(2 T A^k)), with Δ the gap in Q^k between the best action and
  the best suboptimal one and σ² a bound on the variance of the random policy's return at the leaves of the
  k-step search, (Q_rand - Q_worst)(Q_opt - Q_worst), maximised along the k steps; the result is capped at T.
  Deterministic MDPs only (the theorem's setting); the stochastic paper's bound is left to its plugin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from common.mdp.solve import finite_horizon_q, greedy_actions, qvi_iterates, uniform_policy
from common.mdp.tabular import TabularMDP

OPTIMALITY_TOL = 1e-6  # an action is optimal when its Q* is within this of V* (the authors use 1e-4)


def _optimal(mdp: TabularMDP, horizon: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Q*_t and the mask of optimal actions, both (T, S, A)."""
    q_opt = finite_horizon_q(mdp, horizon, "optimal")
    return q_opt, q_opt >= q_opt.max(-1, keepdims=True) - tol


def _next_visited(mdp: TabularMDP, visited: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """States reachable in one step from `visited` states by the `chosen[s, a]` actions."""
    mass = np.einsum("sa,sak->k", (visited[:, None] & chosen).astype(float), mdp.P)
    return mass > 0


def min_k_qvi_solvable(
    mdp: TabularMDP, horizon: int, max_k: int | None = None, tol: float = OPTIMALITY_TOL
) -> int | None:
    """The smallest k for which acting greedily on Q^k is optimal from the start (None: none up to `max_k`,
    default `horizon`; k = horizon always works, since Q^T = Q*)."""
    _, optimal = _optimal(mdp, horizon, tol)
    Q = qvi_iterates(mdp, horizon, 1)
    for k in range(1, (max_k or horizon) + 1):
        if k > 1:
            Q = _backup_all(mdp, Q)
        visited = mdp.initial > 0
        works = True
        for t in range(horizon):
            greedy = greedy_actions(Q[t], 1e-12)
            if (visited[:, None] & greedy & ~optimal[t]).any():
                works = False
                break
            visited = _next_visited(mdp, visited, greedy)
        if works:
            return k
    return None


def _backup_all(mdp: TabularMDP, Q: np.ndarray) -> np.ndarray:
    """One optimality backup of every time step (the last one keeps its one-step values)."""
    out = Q.copy()
    for t in range(len(Q) - 1):
        out[t] = mdp.expected_reward + mdp.gamma * np.einsum("sak,k->sa", mdp.P, Q[t + 1].max(1))
    return out


def greedy_returns(mdp: TabularMDP, horizon: int, max_k: int) -> dict[int, float]:
    """For k = 1 .. max_k, the expected return from the start of acting greedily on Q^k, ties broken against
    the agent (the authors' `calculate_greedy_returns`, value_iteration.jl @54051f9): it reaches the optimal
    return exactly when k >= `min_k_qvi_solvable`."""
    out: dict[int, float] = {}
    Q = qvi_iterates(mdp, horizon, 1)
    for k in range(1, max_k + 1):
        if k > 1:
            Q = _backup_all(mdp, Q)
        V = np.zeros(mdp.num_states)
        for t in reversed(range(horizon)):
            q_eval = mdp.expected_reward + mdp.gamma * np.einsum("sak,k->sa", mdp.P, V)
            V = np.where(greedy_actions(Q[t], 1e-12), q_eval, np.inf).min(1)
            V[mdp.terminal.astype(bool)] = 0.0
        out[k] = float(mdp.initial @ V)
    return out


@dataclass(frozen=True)
class EffectiveHorizonBound:
    effective_horizon: float  # min(T, min_k H_k)
    H: dict[int, float] = field(default_factory=dict)  # H_k for each k tried (inf: Q^k's greedy policy fails)
    m: dict[int, int] = field(default_factory=dict)  # m_k for each k that works


def effective_horizon_bound(
    mdp: TabularMDP, horizon: int, max_k: int | None = None, tol: float = OPTIMALITY_TOL
) -> EffectiveHorizonBound:
    """H = min(T, min_k k + log_A m_k) for a deterministic MDP (see the module docstring)."""
    if not mdp.is_deterministic:
        raise ValueError("effective_horizon_bound is the deterministic-MDP bound; this MDP is stochastic")
    T, A = horizon, mdp.num_actions
    nxt = mdp.P.argmax(-1)  # the next state of each (s, a)
    q_rand = finite_horizon_q(mdp, T, uniform_policy(mdp))
    q_worst = finite_horizon_q(mdp, T, "worst")
    q_opt, optimal = _optimal(mdp, T, tol)
    var = (q_rand - q_worst) * (q_opt - q_worst)  # Bhatia–Davis bound on each leaf's return variance
    Q = q_rand.copy()
    best, H, ms = float(T), {}, {}
    k = 1
    while k < best and k <= (max_k or T):
        visited = mdp.initial > 0
        m_k, works = 1, True
        for t in range(T):
            sub = np.where(optimal[t], -np.inf, Q[t]).max(1)  # best suboptimal action's Q^k (-inf: none)
            top = Q[t].max(1)
            rows = np.flatnonzero(visited)
            if (top[rows] <= sub[rows]).any():
                works = False
                break
            gap = top[rows] - sub[rows]
            sigma2 = var[t, rows].max(1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(np.isinf(gap), 0.0, 16.0 * sigma2 / gap**2)
            log_term = math.log(2 * T) + k * math.log(A)
            m_k = max(m_k, *(max(1, math.ceil(r * log_term)) for r in ratio)) if len(rows) else m_k
            chosen = Q[t] > sub[:, None]
            visited = _next_visited(mdp, visited, chosen)
        if works:
            H[k] = k + math.log(m_k) / math.log(A)
            ms[k] = m_k
            best = min(best, H[k])
        else:
            H[k] = math.inf
        # one more step of search: Q^{k+1}, and the variance bound of the deeper leaves
        Q = _backup_all(mdp, Q)
        deeper = var.copy()
        for t in range(T - 1):
            deeper[t] = var[t + 1].max(1)[nxt]
        var = deeper
        k += 1
    return EffectiveHorizonBound(best, H, ms)
