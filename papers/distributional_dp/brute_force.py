"""The exact optimum over every deterministic history-dependent policy, by enumeration: the set of return
distributions some such policy reaches from each state, built backwards over an MDP whose episodes always end
(acyclic apart from terminal self-loops: a gamble, or any MDP cut with `with_time_limit`).

From a state, a policy picks an action, and then (since it sees the whole history) any reachable policy from
each next state independently: the set at s is the union over actions of every mixture
sum_{s'} P(s' | s, a) · (r(s, a, s') + γ X_{s'}) with X_{s'} from the set at s'. Identical distributions are
merged; for objectives that never prefer less return (expected, CVaR, threshold), distributions
first-order stochastically dominated by another in the same set are dropped too (they cannot be the unique
optimum). Nothing here uses the stock or dynamic programming on the objective: it checks them.
"""

from __future__ import annotations

import itertools
from typing import cast

import numpy as np

from common.mdp.tabular import TabularMDP
from papers.distributional_dp.objectives import Objective

Dist = tuple[tuple[float, float], ...]  # ((return, probability), ...) sorted by return
DECIMALS = 9


def _mix(parts: list[tuple[float, float, Dist]], gamma: float) -> Dist:
    out: dict[float, float] = {}
    for p, r, dist in parts:
        for g, q in dist:
            key = round(r + gamma * g, DECIMALS)
            out[key] = out.get(key, 0.0) + p * q
    return tuple(sorted((g, round(q, DECIMALS)) for g, q in out.items() if q > 0))


def _dominated(a: Dist, b: Dist) -> bool:
    """b first-order stochastically dominates a (P_b(G >= x) >= P_a(G >= x) for all x), b != a."""
    if a == b:
        return False
    xs = sorted({g for g, _ in a} | {g for g, _ in b})
    ca = np.array([sum(q for g, q in a if g >= x) for x in xs])
    cb = np.array([sum(q for g, q in b if g >= x) for x in xs])
    return bool(np.all(cb >= ca - 1e-9))


def _prune(dists: set[Dist]) -> set[Dist]:
    items = list(dists)
    return {a for a in items if not any(_dominated(a, b) for b in items)}


def topological_order(mdp: TabularMDP) -> list[int]:
    """States with every successor before them; a ValueError when a non-terminal state lies on a cycle."""
    live = (mdp.P > 0).any(1) & ~np.eye(mdp.num_states, dtype=bool)
    live[mdp.terminal] = False
    order, state = [], np.zeros(mdp.num_states, np.int8)  # 0 new, 1 on the stack, 2 done

    def visit(s: int) -> None:
        stack = [(s, iter(np.flatnonzero(live[s])))]
        state[s] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif state[child] == 1:
                raise ValueError(
                    "brute force needs episodes that always end: the MDP has a cycle (add a horizon)"
                )
            elif state[child] == 0:
                state[child] = 1
                stack.append((int(child), iter(np.flatnonzero(live[child]))))

    for s in range(mdp.num_states):
        if state[s] == 0:
            visit(s)
    return order


def achievable_distributions(mdp: TabularMDP, monotone: bool, limit: int = 200_000) -> set[Dist]:
    """Every return distribution from the start that a deterministic history-dependent policy reaches
    (dominated ones dropped when `monotone`); a ValueError past `limit` candidates at one state."""
    sets: dict[int, set[Dist]] = {}
    reachable = _reachable(mdp)
    for s in topological_order(mdp):
        if not reachable[s]:
            continue
        if mdp.terminal[s]:
            sets[s] = {((0.0, 1.0),)}
            continue
        found: set[Dist] = set()
        for a in range(mdp.num_actions):
            nxt = np.flatnonzero(mdp.P[s, a] > 0)
            choices = [sets[int(s2)] for s2 in nxt]
            if np.prod([len(c) for c in choices], dtype=float) > limit:
                raise ValueError(f"brute force: over {limit} policies to compare at one state")
            for pick in itertools.product(*choices):
                parts = [
                    (float(mdp.P[s, a, s2]), float(mdp.R[s, a, s2]), d)
                    for s2, d in zip(nxt, pick, strict=True)
                ]
                found.add(_mix(parts, mdp.gamma))
        sets[s] = _prune(found) if monotone else found
    starts = np.flatnonzero(mdp.initial > 0)
    out: set[Dist] = set()
    for pick in itertools.product(*(sets[int(s)] for s in starts)):
        out.add(_mix([(float(mdp.initial[s]), 0.0, d) for s, d in zip(starts, pick, strict=True)], 1.0))
    return out


def _reachable(mdp: TabularMDP) -> np.ndarray:
    seen = mdp.initial > 0
    while True:
        more = seen | ((mdp.P > 0).any(1) & seen[:, None]).any(0)
        if (more == seen).all():
            return seen
        seen = more


def brute_force_optimum(mdp: TabularMDP, objective: Objective) -> tuple[float, Dist]:
    """The best objective value over every deterministic history-dependent policy, and its distribution."""
    monotone = objective.name != "homeostatic"
    best, arg = -np.inf, cast(Dist, ())
    for dist in achievable_distributions(mdp, monotone):
        g = np.array([x for x, _ in dist])
        p = np.array([q for _, q in dist])
        v = float(objective.value(p, g))
        if v > best:
            best, arg = v, dist
    return best, arg
