"""A finite MDP as arrays: `TabularMDP` (P[s, a, s'], R[s, a, s'], γ, initial distribution, terminal states).

Rewards are stored per transition, R[s, a, s'], so that the reward of a step is a fixed number once its next
state is known (what distributional methods need); `TabularMDP.from_expected` accepts R[s, a]. Terminal states
are absorbing and pay nothing: the constructor checks it, and every solver in `common.mdp` relies on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ATOL = 1e-9  # tolerance of the probability checks


@dataclass(frozen=True)
class TabularMDP:
    """P[s, a, s'] (rows sum to 1), R[s, a, s'] (the reward of that transition), γ in [0, 1], `initial[s]`
    (a distribution) and `terminal[s]` (absorbing, zero reward). `state_names[s]` label states for humans."""

    P: np.ndarray
    R: np.ndarray
    gamma: float
    initial: np.ndarray
    terminal: np.ndarray
    state_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        S, A = self.P.shape[:2]
        if self.P.shape != (S, A, S) or self.R.shape != (S, A, S):
            raise ValueError(f"P and R must both have shape (S, A, S); got {self.P.shape} and {self.R.shape}")
        if self.initial.shape != (S,) or self.terminal.shape != (S,):
            raise ValueError(f"initial and terminal must have shape ({S},)")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma={self.gamma} must be in [0, 1]")
        if (self.P < -ATOL).any() or not np.allclose(self.P.sum(-1), 1.0, atol=1e-7):
            raise ValueError("every P[s, a, :] must be a probability distribution")
        if (self.initial < -ATOL).any() or not np.isclose(self.initial.sum(), 1.0, atol=1e-7):
            raise ValueError("initial must be a probability distribution")
        term = np.flatnonzero(self.terminal)
        if len(term) and (
            not np.allclose(self.P[term, :, term], 1.0) or np.abs(self.R[term]).max(initial=0.0) > 0.0
        ):
            raise ValueError("terminal states must be absorbing and pay no reward")
        if self.state_names and len(self.state_names) != S:
            raise ValueError(f"state_names has {len(self.state_names)} names for {S} states")

    @classmethod
    def from_expected(
        cls, P: np.ndarray, R: np.ndarray, gamma: float, initial: np.ndarray, terminal: np.ndarray
    ) -> TabularMDP:
        """An MDP whose reward depends on (s, a) only: R[s, a] is copied to every next state."""
        R3 = np.broadcast_to(np.asarray(R, np.float64)[:, :, None], P.shape).copy()
        return cls(np.asarray(P, np.float64), R3, float(gamma), np.asarray(initial, np.float64), terminal)

    @property
    def num_states(self) -> int:
        return int(self.P.shape[0])

    @property
    def num_actions(self) -> int:
        return int(self.P.shape[1])

    @property
    def expected_reward(self) -> np.ndarray:
        """r[s, a] = E[R | s, a] = sum_s' P[s, a, s'] R[s, a, s']."""
        return np.einsum("ijk,ijk->ij", self.P, self.R)

    @property
    def is_deterministic(self) -> bool:
        """Every (s, a) has one next state."""
        return bool(np.all(np.isclose(self.P.max(-1), 1.0)))

    def step(self, s: int, a: int, rng: np.random.Generator) -> tuple[int, float]:
        """Sample (s', reward) from state `s` under action `a`."""
        s2 = int(rng.choice(self.num_states, p=self.P[s, a]))
        return s2, float(self.R[s, a, s2])

    def with_time_limit(self, horizon: int) -> TabularMDP:
        """The same task cut after `horizon` steps, as a stationary MDP on time-indexed states.

        State (t, s), t < horizon, has index ``t * S + s``; index ``horizon * S + s`` is "ended in s": an
        absorbing terminal copy of s, entered by a step into a terminal state s or by the last allowed step.
        Rewards are unchanged. (t, s) for a terminal s is never entered (it is marked terminal, absorbing).
        """
        if horizon < 1:
            raise ValueError(f"horizon={horizon} must be >= 1")
        S, A = self.num_states, self.num_actions
        n = (horizon + 1) * S
        P = np.zeros((n, A, n))
        R = np.zeros((n, A, n))
        term = self.terminal.astype(bool)
        for t in range(horizon):
            if t + 1 < horizon:
                cont = np.where(term, horizon * S, (t + 1) * S) + np.arange(S)  # next index of each s'
            else:
                cont = horizon * S + np.arange(S)
            for s2 in range(S):
                P[t * S : (t + 1) * S, :, cont[s2]] += self.P[:, :, s2]
                R[t * S : (t + 1) * S, :, cont[s2]] = self.R[:, :, s2]
            for s in np.flatnonzero(term):  # never entered: absorbing, terminal
                P[t * S + s] = 0.0
                P[t * S + s, :, t * S + s] = 1.0
                R[t * S + s] = 0.0
        ends = np.arange(horizon * S, n)
        P[ends, :, ends] = 1.0
        initial = np.zeros(n)
        initial[:S] = np.where(term, 0.0, self.initial)
        initial[horizon * S :] = np.where(term, self.initial, 0.0)
        terminal = np.zeros(n, bool)
        terminal[horizon * S :] = True
        for t in range(horizon):
            terminal[t * S + np.flatnonzero(term)] = True
        names = tuple(f"t{t}:{self.name(s)}" for t in range(horizon) for s in range(S))
        names += tuple(f"end:{self.name(s)}" for s in range(S))
        return TabularMDP(P, R, self.gamma, initial, terminal, names)

    def name(self, s: int) -> str:
        return self.state_names[s] if self.state_names else str(s)
