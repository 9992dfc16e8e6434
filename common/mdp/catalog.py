"""Small hand-written MDPs (a chain, a gridworld with slip, a gambling MDP, a risky-shortcut gridworld) and
`make_mdp`, which builds the MDP an env config describes (`suite: tabular`, conf/env/mdp_*.yaml):

    mdp: {kind: chain | gridworld | gamble | risky_shortcut | minigrid, <that builder's arguments>}
    horizon: null          # or T: the episode is cut after T steps (`TabularMDP.with_time_limit`)
    max_states: 2000       # enumeration limit (minigrid) and state limit of every MDP

Grid layouts are strings, one per row: `.` free, `#` wall, `S` start, `G` goal, `C` cliff (G and C end the
episode). Actions: 0 up, 1 right, 2 down, 3 left; a move into a wall or off the grid stays in place.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from common.errors import ConfigError
from common.mdp.tabular import TabularMDP

MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left as (row, col) steps
SLIP_TO = ("stay", "down", "random")


def chain(n: int = 5, gamma: float = 0.9, reward: float = 1.0, slip: float = 0.0) -> TabularMDP:
    """States 0 .. n-1 in a row, start 0, actions 0 left / 1 right; entering n-1 (terminal) pays `reward`.
    With probability `slip` a move leaves the agent where it is. V*(s) = reward * q^(d-1) (1-slip)/(1-slip γ)
    with q = (1-slip) γ / (1-slip γ) and d = n-1-s steps to go."""
    return gridworld(
        ["S" + "." * (n - 2) + "G"],
        gamma=gamma,
        goal_reward=reward,
        slip=slip,
        slip_to="stay",
        actions=(3, 1),
    )


def gridworld(
    layout: Sequence[str],
    gamma: float = 0.9,
    step_reward: float = 0.0,
    goal_reward: float = 1.0,
    cliff_reward: float = -1.0,
    slip: float = 0.0,
    slip_to: str = "stay",
    actions: Sequence[int] = (0, 1, 2, 3),
) -> TabularMDP:
    """A gridworld from `layout`. Each step pays `step_reward`, plus `goal_reward` / `cliff_reward` when it
    enters G / C. With probability `slip` the move is replaced: `stay` (no move), `down` (pushed one cell
    down), `random` (a uniformly random one of the four moves). `actions` picks moves by index (a chain uses
    left and right only)."""
    if slip_to not in SLIP_TO:
        raise ConfigError(f"slip_to={slip_to!r} must be one of {', '.join(SLIP_TO)}")
    if not 0.0 <= slip <= 1.0:
        raise ConfigError(f"slip={slip} must be in [0, 1]")
    rows = [list(r) for r in layout]
    if len({len(r) for r in rows}) != 1 or not set("".join(layout)) <= set(".#SGC"):
        raise ConfigError("a layout is rows of equal length over the characters . # S G C")
    cells = [(i, j) for i, r in enumerate(rows) for j, ch in enumerate(r) if ch != "#"]
    index = {c: k for k, c in enumerate(cells)}
    starts = [c for c in cells if rows[c[0]][c[1]] == "S"]
    if len(starts) != 1:
        raise ConfigError(f"a layout needs exactly one start S, found {len(starts)}")

    def move(c: tuple[int, int], m: int | None) -> tuple[int, int]:
        if m is None:
            return c
        nxt = (c[0] + MOVES[m][0], c[1] + MOVES[m][1])
        return nxt if nxt in index else c

    S, A = len(cells), len(actions)
    P, R = np.zeros((S, A, S)), np.zeros((S, A, S))
    terminal = np.array([rows[i][j] in "GC" for i, j in cells])
    for c in cells:
        s = index[c]
        if terminal[s]:
            P[s, :, s] = 1.0
            continue
        for a, m in enumerate(actions):
            slips: dict[str, list[tuple[float, int | None]]] = {
                "stay": [(1.0, None)],
                "down": [(1.0, 2)],
                "random": [(0.25, k) for k in range(4)],
            }
            slipped = slips[slip_to]
            for prob, executed in [(1.0 - slip, m)] + [(slip * p, k) for p, k in slipped]:
                if prob == 0.0:
                    continue
                nxt = move(c, executed)
                s2 = index[nxt]
                ch = rows[nxt[0]][nxt[1]]
                P[s, a, s2] += prob
                R[s, a, s2] = step_reward + (goal_reward if ch == "G" else cliff_reward if ch == "C" else 0.0)
    initial = np.zeros(S)
    initial[index[starts[0]]] = 1.0
    names = tuple(f"{rows[i][j]}({i},{j})" for i, j in cells)
    return TabularMDP(P, R, float(gamma), initial, terminal, names)


def gamble(
    rounds: int = 3,
    safe: float = 1.0,
    win: float = 5.0,
    loss: float = -2.0,
    win_prob: float = 0.5,
    gamma: float = 1.0,
) -> TabularMDP:
    """`rounds` rounds; in each, action 0 takes the sure `safe` reward, action 1 gambles: `win` with
    probability `win_prob`, else `loss`. A state is (round, how the last round went: start / safe / win /
    loss), so that each transition has one reward; the MDP state does not show the money made so far."""
    outcomes = ("safe", "win", "loss")
    names = ["r0:start"] + [f"r{t}:{o}" for t in range(1, rounds + 1) for o in outcomes]
    S = len(names)
    P, R = np.zeros((S, 2, S)), np.zeros((S, 2, S))

    def idx(t: int, o: str) -> int:
        return 0 if t == 0 else 1 + 3 * (t - 1) + outcomes.index(o)

    terminal = np.zeros(S, bool)
    for t in range(rounds + 1):
        for o in ("start",) if t == 0 else outcomes:
            s = idx(t, o)
            if t == rounds:
                terminal[s] = True
                P[s, :, s] = 1.0
                continue
            P[s, 0, idx(t + 1, "safe")] = 1.0
            R[s, 0, idx(t + 1, "safe")] = safe
            P[s, 1, idx(t + 1, "win")] = win_prob
            R[s, 1, idx(t + 1, "win")] = win
            P[s, 1, idx(t + 1, "loss")] = 1.0 - win_prob
            R[s, 1, idx(t + 1, "loss")] = loss
    initial = np.zeros(S)
    initial[0] = 1.0
    return TabularMDP(P, R, float(gamma), initial, terminal, tuple(names))


RISKY_LAYOUT = ("....", "....", "SCCG")


def risky_shortcut(
    slip: float = 0.1,
    step_reward: float = -1.0,
    cliff_reward: float = -10.0,
    gamma: float = 1.0,
    layout: Sequence[str] = RISKY_LAYOUT,
) -> TabularMDP:
    """A cliff walk: the short way to G runs along the cliff C, where a slip (probability `slip`, pushing the
    agent down) ends the episode with `cliff_reward`; the long way keeps a row away from the cliff."""
    return gridworld(
        layout,
        gamma=gamma,
        step_reward=step_reward,
        goal_reward=0.0,
        cliff_reward=cliff_reward,
        slip=slip,
        slip_to="down",
    )


BUILDERS: dict[str, Callable[..., TabularMDP]] = {
    "chain": chain,
    "gridworld": gridworld,
    "gamble": gamble,
    "risky_shortcut": risky_shortcut,
}
KINDS = (*BUILDERS, "minigrid")


def _check_minigrid_id(env_id: Any) -> None:
    import gymnasium
    import minigrid  # noqa: F401  # registers the MiniGrid-* ids

    ids = sorted(i for i in gymnasium.registry if i.startswith("MiniGrid-"))
    if env_id not in ids:
        near = difflib.get_close_matches(str(env_id), ids, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(near)}?" if near else "e.g. MiniGrid-Empty-5x5-v0"
        raise ConfigError(f"env.mdp.id={env_id!r} is not a MiniGrid id: {hint}")


def make_mdp(env_cfg: Mapping[str, Any]) -> TabularMDP:
    """The `TabularMDP` of an env config section with `suite: tabular` (see the module docstring); one-line
    `ConfigError`s for an unknown kind or argument and for an MDP over `max_states`."""
    spec = dict(env_cfg.get("mdp") or {})
    kind = spec.pop("kind", None)
    limit = int(env_cfg.get("max_states", 2000))
    if kind not in KINDS:
        near = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise ConfigError(
            f"env.mdp.kind={kind!r} is not a tabular MDP: {hint}choose one of {', '.join(KINDS)}"
        )
    if kind == "minigrid":
        from common.mdp.enumerate import enumerate_mdp
        from common.mdp.minigrid import MiniGridEnumerable

        env_id = spec.pop("id", None)
        _check_minigrid_id(env_id)
        mdp = enumerate_mdp(lambda: MiniGridEnumerable(str(env_id), **spec), limit, name=str(env_id)).mdp
    else:
        try:
            mdp = BUILDERS[kind](**spec)
        except TypeError as e:
            raise ConfigError(f"env.mdp for kind {kind}: {e}") from e
    horizon = env_cfg.get("horizon")
    if horizon is not None:
        if (horizon + 1) * mdp.num_states > limit:
            raise ConfigError(
                f"env.horizon={horizon} makes {(horizon + 1) * mdp.num_states} time-indexed states, over "
                f"max_states={limit}; lower the horizon or raise env.max_states"
            )
        mdp = mdp.with_time_limit(int(horizon))
    if mdp.num_states > limit:
        raise ConfigError(
            f"the MDP has {mdp.num_states} states, over max_states={limit}; raise env.max_states"
        )
    return mdp
