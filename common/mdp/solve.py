"""Exact dynamic programming on a `TabularMDP`: value iteration, policy evaluation by a linear solve, the Q of
a policy, the uniformly random policy's Q, greedy policies, and the time-indexed (finite-horizon) versions the
effective-horizon analysis uses.

Policies are arrays ``pi[s, a]`` of action probabilities (a deterministic policy is one-hot; `one_hot` makes
one from actions). Terminal states have value 0. Standard references: Puterman (1994), *Markov Decision
Processes*, Ch. 4 (finite horizon, backward induction) and Ch. 6 (discounted: value iteration, policy
evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.mdp.tabular import TabularMDP


@dataclass(frozen=True)
class ValueIterationResult:
    V: np.ndarray  # V*[s]
    Q: np.ndarray  # Q*[s, a]
    iterations: int
    residuals: list[float]  # sup-norm change of V at each sweep
    converged: bool


def backup(mdp: TabularMDP, V: np.ndarray) -> np.ndarray:
    """Q[s, a] = sum_s' P[s, a, s'] (R[s, a, s'] + γ V[s']), with V = 0 on terminal states."""
    V = np.where(mdp.terminal, 0.0, V)
    return mdp.expected_reward + mdp.gamma * np.einsum("ijk,k->ij", mdp.P, V)


def value_iteration(
    mdp: TabularMDP, tol: float = 1e-10, max_iterations: int = 100_000, V0: np.ndarray | None = None
) -> ValueIterationResult:
    """Iterate V <- max_a backup(V) from `V0` (zeros) until the sup-norm change is at most `tol`."""
    V = np.zeros(mdp.num_states) if V0 is None else np.asarray(V0, np.float64).copy()
    residuals: list[float] = []
    for _ in range(max_iterations):
        new = np.where(mdp.terminal, 0.0, backup(mdp, V).max(1))
        residuals.append(float(np.abs(new - V).max()))
        V = new
        if residuals[-1] <= tol:
            break
    return ValueIterationResult(V, backup(mdp, V), len(residuals), residuals, residuals[-1] <= tol)


def one_hot(actions: np.ndarray, num_actions: int) -> np.ndarray:
    """pi[s, a] of the deterministic policy taking `actions[s]`."""
    pi = np.zeros((len(actions), num_actions))
    pi[np.arange(len(actions)), actions] = 1.0
    return pi


def uniform_policy(mdp: TabularMDP) -> np.ndarray:
    """pi[s, a] = 1 / A: the uniformly random policy."""
    return np.full((mdp.num_states, mdp.num_actions), 1.0 / mdp.num_actions)


def policy_evaluation(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """V^pi exactly: the solution of (I - γ P_pi) V = r_pi on the non-terminal states (0 on terminal ones).

    With γ = 1 the system is singular when the policy can stay away from the terminal states forever: that is
    an error (its values are infinite or undefined)."""
    live = ~mdp.terminal.astype(bool)
    P_pi = np.einsum("ia,iak->ik", pi, mdp.P)[np.ix_(live, live)]
    r_pi = np.einsum("ia,ia->i", pi, mdp.expected_reward)[live]
    A = np.eye(int(live.sum())) - mdp.gamma * P_pi
    try:
        v = np.linalg.solve(A, r_pi)
    except np.linalg.LinAlgError as e:
        raise ValueError(
            "policy evaluation is singular: with γ = 1 the policy must reach a terminal state"
        ) from e
    if not np.allclose(A @ v, r_pi, atol=1e-6 * max(1.0, float(np.abs(r_pi).max(initial=0.0)))):
        raise ValueError("policy evaluation is singular: with γ = 1 the policy must reach a terminal state")
    V = np.zeros(mdp.num_states)
    V[live] = v
    return V


def q_of_policy(mdp: TabularMDP, pi: np.ndarray) -> np.ndarray:
    """Q^pi[s, a] = backup(V^pi)."""
    return backup(mdp, policy_evaluation(mdp, pi))


def random_policy_q(mdp: TabularMDP) -> np.ndarray:
    """Q of the uniformly random policy (exact)."""
    return q_of_policy(mdp, uniform_policy(mdp))


def greedy_actions(Q: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """mask[..., a]: action a is within `tol` of the best in its state (every greedy action, ties too)."""
    return Q.max(-1, keepdims=True) - tol <= Q


def greedy_policy(Q: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """The deterministic greedy policy's actions: the first of the greedy actions in each state."""
    return np.argmax(greedy_actions(Q, tol), axis=-1)


# ----------------------------------------------------------------------------- finite horizon (time-indexed)


def finite_horizon_q(mdp: TabularMDP, horizon: int, pi: np.ndarray | str) -> np.ndarray:
    """Q_t[s, a] for t = 0 .. horizon-1 of an episode cut after `horizon` steps (backward induction), shape
    (horizon, S, A). `pi`: "optimal" (max over actions), "worst" (min), or a policy pi[s, a] (or
    pi[t, s, a]) to evaluate, e.g. `uniform_policy(mdp)`."""
    T, S, A = horizon, mdp.num_states, mdp.num_actions
    Q = np.zeros((T, S, A))
    V_next = np.zeros(S)
    for t in reversed(range(T)):
        Q[t] = backup(mdp, V_next)
        if isinstance(pi, str):
            if pi not in ("optimal", "worst"):
                raise ValueError(f"pi={pi!r}: use 'optimal', 'worst' or an array pi[s, a]")
            V_next = Q[t].max(1) if pi == "optimal" else Q[t].min(1)
        else:
            p = pi[t] if pi.ndim == 3 else pi
            V_next = np.einsum("ia,ia->i", p, Q[t])
    return Q


def qvi_sequence(mdp: TabularMDP, horizon: int, max_k: int) -> list[np.ndarray]:
    """[Q^1, ..., Q^max_k] of Laidlaw et al., each (horizon, S, A): Q^1 is the random policy's Q_t, and each
    further step is one Bellman optimality backup over the whole horizon, Q^{i+1}_t = backup(max_a
    Q^i_{t+1}) (Q_T = 0)."""
    if max_k < 1:
        raise ValueError(f"k={max_k} must be >= 1")
    Q = finite_horizon_q(mdp, horizon, uniform_policy(mdp))
    out = [Q]
    for _ in range(max_k - 1):
        nxt = np.zeros_like(Q)
        for t in range(horizon):
            V = Q[t + 1].max(1) if t + 1 < horizon else np.zeros(mdp.num_states)
            nxt[t] = backup(mdp, V)
        Q = nxt
        out.append(Q)
    return out


def qvi_iterates(mdp: TabularMDP, horizon: int, k: int) -> np.ndarray:
    """Q^k alone (`qvi_sequence`'s last)."""
    return qvi_sequence(mdp, horizon, k)[-1]
