"""MiniGrid gridworlds (Chevalier-Boisvert et al. 2023, PyPI `minigrid`) as an `Env` with discrete actions.

Observations are fully observable and symbolic: MiniGrid's `FullyObsWrapper` encoding of the whole grid,
one (object, colour, state) triple of small integers per cell (minigrid/core/constants.py `OBJECT_TO_IDX`,
`COLOR_TO_IDX`, `STATE_TO_IDX`), the agent's cell holding (agent, red, direction). They are moved
channels-first and stored as uint8, shape ``(3, height, width)`` (row-major like an image), like MinAtar's
channels (common/envs/minatar.py); the mission string is dropped (it is fixed by the layout in the ids
configured here). Actions: MiniGrid's 7 (left, right, forward, pickup, drop, toggle, done).

Episodes end as MiniGrid ends them: reaching the goal (or the task's success) is terminated, the env's own
`max_steps` is truncated; `env.max_episode_frames` may cap them earlier. Optional sticky actions
(`env.sticky_action_prob`, Machado et al. 2018) repeat the previous action with that probability, drawn from
a Generator seeded with the env's seed; the first step of an episode always executes its own action.

Three options give the MDPs of the Effective Horizon papers (Laidlaw et al.; cassidylaidlaw/effective-horizon
@1a83eb7 effective_horizon/envs/minigrid.py and deterministic_registration.py), off by default:
`env.reward: success` pays 1 for reaching the goal instead of MiniGrid's 1 − 0.9 · steps / max_steps;
`env.num_actions: n` keeps MiniGrid's first n actions (3 = left, right, forward; 6 = all but done; `bridge`
picks the authors' set per task: 3 in Empty-*, 6 elsewhere);
`env.layout_seed: k` resets every episode with seed k, so the layout never changes.
"""

from __future__ import annotations

import difflib
import pickle
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch

from common.envs import as_jsonable
from common.envs.base import EnvSpec, Step
from common.envs.discrete import DiscreteEnvSpec
from common.errors import CheckpointError, ConfigError, EnvError


class StickyActions:
    """Machado et al. (2018) sticky actions: each call returns the previously executed action with probability
    `prob`, else `action` (which becomes the previous one). After `reset()` the first call executes its own
    action: there is nothing to repeat."""

    def __init__(self, prob: float, rng: np.random.Generator) -> None:
        self.prob, self._rng = prob, rng
        self.previous: int | None = None

    def reset(self) -> None:
        self.previous = None

    def __call__(self, action: int) -> int:
        if self.prob > 0.0 and self.previous is not None and self._rng.random() < self.prob:
            return self.previous
        self.previous = action
        return action


def bridge_actions(env_id: str) -> int:
    """The action set of the authors' MiniGrid MDPs: left/right/forward in Empty, all but `done` elsewhere
    (effective_horizon/envs/minigrid.py @1a83eb7 `build_env_maker`, `NavigationOnlyWrapper`)."""
    return 3 if "Empty" in env_id else 6


def check_minigrid_config(cfg: Mapping, *, pixels: bool, action_repeat: int) -> str:
    """The MiniGrid id of a `suite: minigrid` env section; one-line errors for anything impossible."""
    import gymnasium
    import minigrid  # noqa: F401  # registers the MiniGrid-* ids

    if pixels:
        raise ConfigError(
            "MiniGrid serves symbolic grid observations only, not pixels; set paper.pixels=false"
        )
    if isinstance(action_repeat, bool) or not isinstance(action_repeat, int) or action_repeat < 1:
        raise ConfigError(f"action_repeat must be an integer >= 1, got {action_repeat!r}")
    sticky = cfg.get("sticky_action_prob", 0.0)
    if isinstance(sticky, bool) or not isinstance(sticky, (int, float)) or not 0.0 <= sticky < 1.0:
        raise ConfigError(f"env.sticky_action_prob must be in [0, 1), got {sticky!r}")
    if cfg.get("reward", "default") not in ("default", "success"):
        raise ConfigError(f"env.reward must be default or success, got {cfg.get('reward')!r}")
    n = cfg.get("num_actions")
    if n != "bridge" and n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 7):
        raise ConfigError(
            f"env.num_actions must be null, bridge or an integer in [1, 7] (MiniGrid has 7), got {n!r}"
        )
    layout = cfg.get("layout_seed")
    if layout is not None and (isinstance(layout, bool) or not isinstance(layout, int) or layout < 0):
        raise ConfigError(f"env.layout_seed must be null or an integer >= 0, got {layout!r}")
    limit = cfg.get("max_episode_frames")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"env.max_episode_frames must be null or an integer >= 1, got {limit!r}")
    env_id = cfg.get("id")
    ids = sorted(i for i in gymnasium.registry if i.startswith("MiniGrid-"))
    if env_id not in ids:
        close = difflib.get_close_matches(str(env_id), ids, n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. MiniGrid-Empty-8x8-v0"
        raise EnvError(f"unknown MiniGrid id {env_id!r}: {hint}")
    return str(env_id)


def make_minigrid(cfg: Mapping, *, pixels: bool, action_repeat: int, seed: int) -> MiniGridEnv:
    """Build the `env` section with `suite: minigrid` (keys: `id`, `sticky_action_prob`,
    `max_episode_frames`, `reward`, `num_actions`, `layout_seed`)."""
    env_id = check_minigrid_config(cfg, pixels=pixels, action_repeat=action_repeat)
    return MiniGridEnv(
        env_id,
        action_repeat=action_repeat,
        sticky_action_prob=float(cfg.get("sticky_action_prob", 0.0)),
        max_frames=cfg.get("max_episode_frames"),
        seed=seed,
        success_reward=cfg.get("reward", "default") == "success",
        num_actions=bridge_actions(env_id) if cfg.get("num_actions") == "bridge" else cfg.get("num_actions"),
        layout_seed=cfg.get("layout_seed"),
    )


class MiniGridEnv:
    """One MiniGrid task behind the `Env` protocol; `step` takes an integer action in ``[0, num_actions)``
    (7 unless `num_actions` keeps fewer)."""

    def __init__(
        self,
        env_id: str,
        *,
        action_repeat: int,
        sticky_action_prob: float,
        max_frames: int | None,
        seed: int,
        success_reward: bool = False,
        num_actions: int | None = None,
        layout_seed: int | None = None,
    ) -> None:
        import gymnasium
        from minigrid.wrappers import FullyObsWrapper

        self._env = FullyObsWrapper(gymnasium.make(env_id))
        self._grid = cast(Any, self._env.unwrapped)  # a minigrid MiniGridEnv
        own_limit = int(self._grid.max_steps)
        self._max_frames = own_limit if max_frames is None else min(own_limit, int(max_frames))
        self._repeat = action_repeat
        every = len(self._grid.actions)  # left, right, forward, pickup, drop, toggle, done
        self.num_actions = every if num_actions is None else min(int(num_actions), every)
        self._success_reward, self._layout_seed = success_reward, layout_seed
        self._sticky_rng = np.random.default_rng(seed)
        self._sticky = StickyActions(sticky_action_prob, self._sticky_rng)
        self._pending_seed: int | None = seed  # the first reset seeds the layouts, later ones continue
        shape = (3, int(self._grid.height), int(self._grid.width))
        self.spec: EnvSpec = DiscreteEnvSpec.of_frames(
            shape,
            np.uint8,
            num_actions=self.num_actions,
            action_repeat=action_repeat,
            max_frames=self._max_frames,
        )
        self._frames, self._return, self._length, self._needs_reset = 0, 0.0, 0, True

    @staticmethod
    def _obs(obs: dict[str, Any]) -> np.ndarray:
        # FullyObsWrapper's image is indexed [x, y, channel]; ours is [channel, y, x]
        return np.ascontiguousarray(obs["image"].transpose(2, 1, 0), dtype=np.uint8)

    def reset(self) -> Step:
        # a fixed layout: every episode from `layout_seed`; else the first reset seeds the layouts
        seed = self._layout_seed if self._layout_seed is not None else self._pending_seed
        obs, _ = self._env.reset(seed=seed)
        self._pending_seed = None
        self._sticky.reset()
        self._frames, self._return, self._length, self._needs_reset = 0, 0.0, 0, False
        return Step(obs=self._obs(obs))

    def step(self, action: Any) -> Step:
        if self._needs_reset:
            raise EnvError("step() called before reset() or after the episode ended; call reset()")
        a = int(action)
        if not 0 <= a < self.num_actions:
            raise EnvError(f"action {a} is outside [0, {self.num_actions})")
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self._repeat):
            obs, r, terminated, truncated, _ = self._env.step(self._sticky(a))
            reward += (1.0 if float(r) > 0 else 0.0) if self._success_reward else float(r)
            self._frames += 1
            if terminated or truncated or self._frames >= self._max_frames:
                break
        terminated = bool(terminated)
        truncated = not terminated and (bool(truncated) or self._frames >= self._max_frames)
        self._needs_reset = terminated or truncated
        self._return += reward
        self._length += 1
        return Step(self._obs(obs), reward, terminated, truncated, self._return, self._length)

    def get_rng_state(self) -> dict[str, Any]:
        return {
            "suite": "minigrid",
            "pending_seed": self._pending_seed,
            "np_random": as_jsonable(self._grid.np_random.bit_generator.state),
            "sticky_rng": as_jsonable(self._sticky_rng.bit_generator.state),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            if state["suite"] != "minigrid":
                raise ValueError(f"state of suite {state['suite']!r}")
            self._grid.np_random.bit_generator.state = state["np_random"]
            self._sticky_rng.bit_generator.state = state["sticky_rng"]
            self._pending_seed = state["pending_seed"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a minigrid env RNG state ({type(exc).__name__}: {exc})") from exc

    def get_state(self) -> dict[str, Any]:
        """The whole task (grid, agent, carried object, step count and the objects the task refers to, e.g.
        Unlock's door, pickled together so that their references stay shared), the RNGs and the counters."""
        task = {k: v for k, v in vars(self._grid).items() if k not in ("window", "render_mode")}
        return {
            **self.get_rng_state(),
            "task": torch.frombuffer(bytearray(pickle.dumps(task)), dtype=torch.uint8),
            "sticky_previous": self._sticky.previous,
            "frames": self._frames,
            "return": self._return,
            "length": self._length,
            "needs_reset": self._needs_reset,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        try:
            task = pickle.loads(state["task"].numpy().tobytes())
            self._env.reset()  # Gymnasium's order checks want one; everything it sets is overwritten next
            vars(self._grid).update(task)
            self.set_rng_state(state)  # after the task: its pickled Generator is replaced by this state
            self._sticky.previous = state["sticky_previous"]
            self._frames = int(state["frames"])
            self._return, self._length = float(state["return"]), int(state["length"])
            self._needs_reset = bool(state["needs_reset"])
        except (KeyError, TypeError, ValueError, pickle.UnpicklingError) as exc:
            raise CheckpointError(f"not a minigrid env state ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        self._env.close()
