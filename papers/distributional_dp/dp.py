"""Distributional value and policy iteration on the stock-augmented MDP (Ávila Pires et al. 2025, Sec. 4
"Distributional Dynamic Programming"), with categorical return distributions, and the two baselines it is
compared with: classic DP and distributional DP without the stock.

Return distributions are categorical on evenly spaced atoms (Bellemare, Dabney, Munos 2017; the projection of
Rowland et al. 2018 for values between atoms). On the augmented MDP, η(s, c) is the distribution of the
stock-augmented return c + G. Its Bellman operator follows from c + G = γ (c' + G'), c' = (c + r) / γ:

    η(s, c, a) = sum_{s'} P(s' | s, a) · (x ↦ γ x)# η(s', c')          # distributional Bellman operator
    η(s, c)    = δ_c                    at terminal s                   # nothing more is earned

With γ = 1 the push-forward is the identity and the rewards move into the stock: with stocks and rewards on
the atom grid, every distribution is exact (no projection happens). The greedy step picks
argmax_a E_{x ~ η(s, c, a)}[f(x)] for the objective's utility f (`objectives.py`); value iteration alternates
it with one application of the operator, policy iteration evaluates each greedy policy to convergence first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.mdp import value_iteration
from common.mdp.tabular import TabularMDP
from papers.distributional_dp.objectives import Objective
from papers.distributional_dp.stock import StockAugmentedMDP, check_rewards_on_grid, return_bounds

OnIteration = Callable[[int, float, float], None]  # (iteration, objective value, Bellman residual)


def grid(lo: float, hi: float, step: float) -> np.ndarray:
    """Atoms k * step from the grid point at or below `lo` to the one at or above `hi`, 0 included."""
    k_lo = int(np.floor(min(lo, 0.0) / step + 1e-6))
    k_hi = int(np.ceil(max(hi, 0.0) / step - 1e-6))
    return np.arange(k_lo, k_hi + 1) * step


def projection(values: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """M[i, j]: the weight on atom j of a unit mass at values[i], split between the two nearest atoms in
    proportion to closeness (Rowland et al. 2018, the Cramér projection), clipped at the ends."""
    v = np.clip(values, atoms[0], atoms[-1])
    step = atoms[1] - atoms[0] if len(atoms) > 1 else 1.0
    pos = (v - atoms[0]) / step
    lo = np.clip(np.floor(pos + 1e-9).astype(int), 0, len(atoms) - 1)
    hi = np.minimum(lo + 1, len(atoms) - 1)
    frac = np.clip(pos - lo, 0.0, 1.0)
    M = np.zeros((len(values), len(atoms)))
    np.add.at(M, (np.arange(len(values)), lo), 1.0 - frac)
    np.add.at(M, (np.arange(len(values)), hi), frac)
    return M


@dataclass
class Solution:
    """A policy, the return distribution it gets from the start and the objective's value of it."""

    policy: np.ndarray  # actions, one per state of the MDP it was computed on
    probs: np.ndarray  # P(G = returns[j])
    returns: np.ndarray
    value: float
    iterations: int = 0
    initial_stock: float = 0.0  # the chosen c_0 (CVaR: -b)


class AugmentedDP:
    """Distributional DP for `objective` on `aug`, the stock-augmented MDP; the initial stock is chosen
    among `choose` (default: all of `aug.initial_stocks`; `aug` may hold more, e.g. 0 to evaluate other
    policies)."""

    def __init__(
        self, aug: StockAugmentedMDP, objective: Objective, choose: Sequence[float] | None = None
    ) -> None:
        self.aug, self.objective = aug, objective
        wanted = aug.initial_stocks if choose is None else tuple(float(c) for c in choose)
        self.choices = [j for j, c in enumerate(aug.initial_stocks) if any(abs(c - w) < 1e-9 for w in wanted)]
        stocks = aug.stock_value()
        self.atoms = grid(float(stocks.min()), float(stocks.max()), aug.step)
        self.u = objective.utility(self.atoms)
        self.scale = None if aug.mdp.gamma == 1.0 else projection(aug.mdp.gamma * self.atoms, self.atoms)
        self.k0 = int(round(self.atoms[0] / aug.step))
        self.terminal_eta = np.zeros((aug.num_states, len(self.atoms)))
        self.terminal_eta[np.arange(aug.num_states), aug.stock - self.k0] = 1.0  # δ_c
        rows, starts = np.unique(aug.src, return_index=True)  # `augment` writes rows in order of (x, a)
        self._rows, self._starts = rows, starts

    def q(self, eta: np.ndarray) -> np.ndarray:
        """η(s, c, a) for every augmented state and action, shape (N, A, m) (terminal rows stay 0)."""
        N, A, m = self.aug.num_states, self.aug.num_actions, len(self.atoms)
        mixed = np.zeros((N * A, m))
        if len(self._rows):
            mixed[self._rows] = np.add.reduceat(self.aug.prob[:, None] * eta[self.aug.dst], self._starts)
        out = mixed.reshape(N, A, m)
        return out if self.scale is None else out @ self.scale

    def greedy(self, eta_sa: np.ndarray, current: np.ndarray | None = None) -> np.ndarray:
        """argmax_a E[f(c + G)] under η(s, c, a); ties keep `current` (policy iteration then terminates)."""
        scores = eta_sa @ self.u
        best = scores.argmax(1)
        if current is not None:
            keep = scores[np.arange(len(current)), current] >= scores.max(1) - 1e-12
            best = np.where(keep, current, best)
        return best

    def apply(self, eta_sa: np.ndarray, policy: np.ndarray) -> np.ndarray:
        out = eta_sa[np.arange(len(policy)), policy]
        out[self.aug.terminal] = self.terminal_eta[self.aug.terminal]
        return out

    def start(self, eta: np.ndarray) -> tuple[int, float]:
        """The best initial stock (index into `aug.initial_stocks`) and the objective's value there."""
        values = [
            self.objective.offset(self.aug.initial_stocks[j])
            + sum(p * float(eta[i] @ self.u) for p, i in self.aug.initial[j])
            for j in self.choices
        ]
        best = int(np.argmax(values))
        return self.choices[best], float(values[best])

    def value_iteration(
        self, tol: float, max_iterations: int, on_iteration: OnIteration | None = None
    ) -> Solution:
        """η_{k+1} = greedy application of the operator to η_k, from η_0(s, c) = δ_c, until the largest
        change of a probability is at most `tol` (or `max_iterations`); then the greedy policy, evaluated."""
        eta = self.terminal_eta.copy()
        policy = np.zeros(self.aug.num_states, np.int64)
        iterations = 0
        for iterations in range(1, max_iterations + 1):
            eta_sa = self.q(eta)
            policy = self.greedy(eta_sa)
            new = self.apply(eta_sa, policy)
            residual = float(np.abs(new - eta).max())
            eta = new
            if on_iteration is not None:
                on_iteration(iterations, self.start(eta)[1], residual)
            if residual <= tol:
                break
        return self.solution(policy, tol, max_iterations, iterations)

    def evaluate(self, policy: np.ndarray, tol: float, max_iterations: int) -> np.ndarray:
        """η^π by iterating its distributional Bellman operator from δ_c (exact once the longest episode is
        covered when γ = 1 and the episodes end)."""
        eta = self.terminal_eta.copy()
        for _ in range(max_iterations):
            new = self.apply(self.q(eta), policy)
            done = float(np.abs(new - eta).max()) <= tol
            eta = new
            if done:
                break
        return eta

    def policy_iteration(
        self, tol: float, max_iterations: int, on_iteration: OnIteration | None = None
    ) -> Solution:
        """Evaluate π_k, improve greedily, until the policy stops changing (or `max_iterations`)."""
        policy = np.zeros(self.aug.num_states, np.int64)
        iterations = 0
        for iterations in range(1, max_iterations + 1):
            eta = self.evaluate(policy, tol, max_iterations)
            eta_sa = self.q(eta)
            improved = self.greedy(eta_sa, current=policy)
            residual = float(np.abs(self.apply(eta_sa, improved) - eta).max())
            if on_iteration is not None:
                on_iteration(iterations, self.start(eta)[1], residual)
            if np.array_equal(improved, policy):
                break
            policy = improved
        return self.solution(policy, tol, max_iterations, iterations)

    def solution(
        self, policy: np.ndarray, tol: float, max_iterations: int, iterations: int, start: int | None = None
    ) -> Solution:
        """`policy`'s return distribution, evaluated exactly, from initial stock `start` (an index into
        `aug.initial_stocks`; default: the best one under the exact evaluation)."""
        eta = self.evaluate(policy, tol, max_iterations)
        j = self.start(eta)[0] if start is None else start
        c0 = self.aug.initial_stocks[j]
        probs = sum(p * eta[i] for p, i in self.aug.initial[j])
        returns = self.atoms - c0  # at step 0 the distribution is of c_0 + G, unscaled
        value = float(self.objective.value(np.asarray(probs), returns))
        return Solution(policy, np.asarray(probs), returns, value, iterations, c0)

    def lifted(self, base_policy: np.ndarray) -> np.ndarray:
        """A policy of the MDP's states as a policy of the augmented states (it ignores the stock)."""
        return base_policy[self.aug.base]


# ------------------------------------------------------------------------------------------ the baselines


def base_distributional_vi(
    mdp: TabularMDP,
    objective: Objective,
    step: float,
    tol: float,
    max_iterations: int,
    on_iteration: OnIteration | None = None,
) -> np.ndarray:
    """Distributional value iteration without the stock: η(s, a) is the distribution of the return-to-go G
    from s, and each state takes the action whose η(s, a) the objective ranks best, as if the rewards already
    collected did not matter. Returns that Markov policy (actions per state)."""
    check_rewards_on_grid(mdp, step)
    lo, hi = return_bounds(mdp)
    atoms = grid(lo, hi, step)
    S = mdp.num_states
    zero = np.zeros((S, len(atoms)))
    zero[:, int(np.argmin(np.abs(atoms)))] = 1.0  # δ_0: terminal states, and the start of the iteration
    live = mdp.P > 0
    rewards = np.unique(np.round(mdp.R[live] / step)) * step
    pushes = [
        (r, projection(r + mdp.gamma * atoms, atoms), np.where(live & np.isclose(mdp.R, r), mdp.P, 0.0))
        for r in rewards
    ]
    eta, policy = zero.copy(), np.zeros(S, np.int64)
    for iteration in range(1, max_iterations + 1):
        eta_sa = sum(np.einsum("sak,km->sam", W, eta) @ M for _, M, W in pushes)
        policy = objective.value(eta_sa, atoms).argmax(1)
        new = np.where(mdp.terminal[:, None], zero, eta_sa[np.arange(S), policy])
        residual = float(np.abs(new - eta).max())
        eta = new
        if on_iteration is not None:
            start = (mdp.initial @ eta)[None]
            on_iteration(iteration, float(objective.value(start, atoms)[0]), residual)
        if residual <= tol:
            break
    return policy


def evaluate_base_policy(dp: AugmentedDP, policy: np.ndarray, tol: float, max_iterations: int) -> Solution:
    """The return distribution of a Markov policy of the MDP's states, from `dp`'s augmented MDP (built with
    initial stock 0, so that it follows the rewards exactly), and the objective's value of it."""
    eta = dp.evaluate(dp.lifted(policy), tol, max_iterations)
    j = dp.aug.initial_stocks.index(0.0)
    probs = sum(p * eta[i] for p, i in dp.aug.initial[j])
    return Solution(
        policy, np.asarray(probs), dp.atoms.copy(), float(dp.objective.value(np.asarray(probs), dp.atoms))
    )


def classic_policy(mdp: TabularMDP, tol: float, max_iterations: int) -> np.ndarray:
    """The greedy policy of Q* (classic value iteration): best in expectation."""
    return value_iteration(mdp, tol=tol, max_iterations=max_iterations).Q.argmax(1)
