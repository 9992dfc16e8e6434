"""`enumerate_mdp`: the `TabularMDP` of a small simulator, built by breadth-first search over its reachable
states. The simulator is anything with the `Enumerable` methods: its initial states, and the outcomes of an
action from a state (a state is any hashable key; the simulator saves and restores its own state behind it,
e.g. `common.mdp.minigrid.MiniGridEnumerable`). The search stops with a one-line `ConfigError` as soon as
more than `max_states` states are found, before the dense arrays P and R (S x A x S float64 each: 2000 states
of 7 actions take 450 MB) are allocated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from common.errors import ConfigError
from common.mdp.tabular import TabularMDP


@dataclass(frozen=True)
class Outcome:
    prob: float
    state: Hashable
    reward: float
    terminal: bool  # the episode ends in `state` (it is then absorbing)


class Enumerable(Protocol):
    """A simulator whose states can be listed: `num_actions`, `gamma`, and the two methods below."""

    num_actions: int
    gamma: float

    def initial_states(self) -> list[tuple[float, Hashable]]:
        """(probability, state) of every initial state."""
        ...

    def outcomes(self, state: Hashable, action: int) -> list[Outcome]:
        """Every outcome of `action` in `state` (probabilities sum to 1; repeated states are summed)."""
        ...


@dataclass(frozen=True)
class EnumeratedMDP:
    mdp: TabularMDP
    states: list[Hashable]  # states[i] is the simulator's key of MDP state i
    index: dict[Hashable, int]


def enumerate_mdp(
    env_factory: Callable[[], Enumerable], max_states: int = 2_000, name: str = "env"
) -> EnumeratedMDP:
    """Enumerate every state reachable from the initial states of `env_factory()`; a `ConfigError` naming
    `max_states` when there are more."""
    env = env_factory()
    index: dict[Hashable, int] = {}
    states: list[Hashable] = []
    terminal: set[int] = set()
    rows: list[tuple[int, int, int, float, float]] = []  # (s, a, s', p, r)
    queue: deque[Hashable] = deque()

    def visit(state: Hashable) -> int:
        if state not in index:
            if len(states) >= max_states:
                raise ConfigError(
                    f"{name} has more than max_states={max_states} reachable states: it is too large to "
                    f"enumerate; choose a smaller env or raise the limit (env.max_states)"
                )
            index[state] = len(states)
            states.append(state)
            queue.append(state)
        return index[state]

    initial = [(p, visit(s)) for p, s in env.initial_states()]
    while queue:
        state = queue.popleft()
        i = index[state]
        if i in terminal:
            continue
        for a in range(env.num_actions):
            for o in env.outcomes(state, a):
                j = visit(o.state)
                if o.terminal:
                    terminal.add(j)
                rows.append((i, a, j, o.prob, o.reward))
    S, A = len(states), env.num_actions
    P = np.zeros((S, A, S))
    R = np.zeros((S, A, S))
    for i, a, j, p, r in rows:
        if P[i, a, j] > 0 and R[i, a, j] != r:
            raise ValueError(
                f"{name}: two outcomes of one (state, action) reach one state with different rewards"
            )
        P[i, a, j] += p
        R[i, a, j] = r
    for j in terminal:
        P[j] = 0.0
        P[j, :, j] = 1.0
        R[j] = 0.0
    mu = np.zeros(S)
    for p, i in initial:
        mu[i] += p
    term = np.zeros(S, bool)
    term[list(terminal)] = True
    mdp = TabularMDP(P, R, float(env.gamma), mu, term, tuple(str(s) for s in states))
    return EnumeratedMDP(mdp, states, index)
