"""A MiniGrid task (gymnasium's `MiniGrid-*` ids) as an `Enumerable` for `enumerate_mdp`, with sticky actions.

A state is MiniGrid's own: the unwrapped env's attributes (grid, agent position and direction, carried object,
the objects the task refers to), saved by pickling them together and restored by putting them back, keyed by
(agent position, direction, the grid's encoding, the carried object's encoding, the previous action).

As the effective-horizon papers' BRIDGE MiniGrid MDPs (cassidylaidlaw/effective-horizon @8ef4f4a
effective_horizon/envs/minigrid.py: `TimeInvariantWrapper`, `DeterministicWrapper`): the layout comes from one
fixed seed, the step counter is held at 0 (so MiniGrid's time limit never ends an episode: cut it with
`TabularMDP.with_time_limit`), and any positive reward is 1 (MiniGrid's 1 - 0.9 t / max_steps depends on the
step counter, which is not part of the state). Sticky actions (Machado et al. 2018; the stochastic paper
uses 0.25): with probability `sticky`, the previous executed action is executed instead of the chosen one; the
first step of an episode is never sticky. The previous action is therefore part of the state.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable
from typing import Any, cast

from common.mdp.enumerate import Outcome

FIRST = -1  # the "previous action" of an episode's first state


class MiniGridEnumerable:
    """`MiniGrid-*` id `env_id` with sticky-action probability `sticky` and the first `num_actions` actions
    (7: all of MiniGrid's; 3: left, right, forward)."""

    def __init__(
        self, env_id: str, sticky: float = 0.0, num_actions: int = 7, seed: int = 0, gamma: float = 1.0
    ) -> None:
        import gymnasium
        import minigrid  # noqa: F401  # registers the MiniGrid-* ids

        if not 0.0 <= sticky < 1.0:
            raise ValueError(f"sticky={sticky} must be in [0, 1)")
        self.env: Any = gymnasium.make(env_id).unwrapped
        self.env.reset(seed=seed)
        self.sticky, self.num_actions, self.gamma = float(sticky), int(num_actions), float(gamma)
        self._saved: dict[Hashable, bytes] = {}
        self._steps: dict[tuple[Hashable, int], tuple[Hashable, float, bool]] = {}  # (task, action) -> result

    def key(self) -> Hashable:
        """The current task state's key (without the previous action)."""
        e = self.env
        carrying = tuple(e.carrying.encode()) if e.carrying is not None else None
        return (tuple(int(x) for x in e.agent_pos), int(e.agent_dir), e.grid.encode().tobytes(), carrying)

    def save(self) -> Hashable:
        key = self.key()
        if key not in self._saved:
            task = {k: v for k, v in vars(self.env).items() if k not in ("window", "render_mode")}
            self._saved[key] = pickle.dumps(task)
        return key

    def restore(self, key: Hashable) -> None:
        vars(self.env).update(pickle.loads(self._saved[key]))

    def initial_states(self) -> list[tuple[float, Hashable]]:
        return [(1.0, (self.save(), FIRST))]

    def _execute(self, task: Hashable, action: int) -> tuple[Hashable, float, bool]:
        """(next task, reward, terminated) of executing `action` in `task` (simulated once, then cached)."""
        if (task, action) not in self._steps:
            self.restore(task)
            self.env.step_count = 0
            _, reward, terminated, _, _ = self.env.step(action)
            self._steps[task, action] = (self.save(), 1.0 if float(reward) > 0 else 0.0, bool(terminated))
        return self._steps[task, action]

    def outcomes(self, state: Hashable, action: int) -> list[Outcome]:
        task, previous = cast(tuple[Hashable, int], state)  # (task key, previous action)
        if previous in (FIRST, action) or self.sticky == 0.0:
            branches = [(1.0, action)]
        else:
            branches = [(1.0 - self.sticky, action), (self.sticky, previous)]
        out = []
        for prob, executed in branches:
            nxt, reward, terminated = self._execute(task, executed)
            out.append(Outcome(prob, (nxt, executed if self.sticky > 0 else FIRST), reward, terminated))
        return out
