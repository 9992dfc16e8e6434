"""MinAtar (Young & Tian, 2019, arXiv 1903.03176; PyPI `minatar`) as an `Env` with discrete actions.

Five miniature Atari games on a 10x10 grid. Observations are MinAtar's boolean state channels, moved
channels-first and stored as uint8 0/1: shape ``(C, 10, 10)`` with C = 4 (breakout), 4 (asterix),
7 (freeway), 10 (seaquest), 6 (space_invaders). Actions: MinAtar's full set of 6 for every game
(`Environment.num_actions`). Sticky actions with probability 0.1 and difficulty ramping, as MinAtar's
`Environment` defaults (kenjyoung/MinAtar@4241f24 minatar/environment.py), drawn from the game's own
`numpy.random.RandomState`, which also drives the game's randomness once seeded.

MinAtar has no time limit (only Freeway ends itself, after 2500 frames); `env.max_episode_frames` truncates
longer episodes (see conf/env/minatar.yaml). One MinAtar frame is one agent step: no frame skip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from common.envs import as_jsonable
from common.envs.base import EnvSpec, Step
from common.envs.discrete import DiscreteEnvSpec
from common.errors import CheckpointError, ConfigError, EnvError

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def check_minatar_config(cfg: Mapping, *, pixels: bool, action_repeat: int) -> tuple[str, int]:
    """The game and episode cap of a `suite: minatar` env section; one-line ConfigErrors otherwise."""
    game = cfg.get("game")
    if game not in GAMES:
        raise ConfigError(f"unknown MinAtar game {game!r}; env.game must be one of {', '.join(GAMES)}")
    if pixels:
        raise ConfigError(
            "MinAtar serves its symbolic 10x10 channels only, not pixels; set paper.pixels=false"
        )
    if isinstance(action_repeat, bool) or not isinstance(action_repeat, int) or action_repeat < 1:
        raise ConfigError(f"action_repeat must be an integer >= 1, got {action_repeat!r}")
    limit = cfg.get("max_episode_frames")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"env.max_episode_frames must be an integer >= 1 for MinAtar, got {limit!r}")
    sticky = cfg.get("sticky_action_prob", 0.1)
    if isinstance(sticky, bool) or not isinstance(sticky, (int, float)) or not 0.0 <= sticky < 1.0:
        raise ConfigError(f"env.sticky_action_prob must be in [0, 1), got {sticky!r}")
    return str(game), int(limit)


def make_minatar(cfg: Mapping, *, pixels: bool, action_repeat: int, seed: int) -> MinAtarEnv:
    """Build the `env` section with `suite: minatar` (keys: `game`, `max_episode_frames`,
    `sticky_action_prob`, `difficulty_ramping`)."""
    game, limit = check_minatar_config(cfg, pixels=pixels, action_repeat=action_repeat)
    return MinAtarEnv(
        game,
        action_repeat=action_repeat,
        max_frames=limit,
        sticky_action_prob=float(cfg.get("sticky_action_prob", 0.1)),
        difficulty_ramping=bool(cfg.get("difficulty_ramping", True)),
        seed=seed,
    )


class MinAtarEnv:
    """One MinAtar game; `step` takes an integer action in ``[0, 6)``."""

    def __init__(
        self,
        game: str,
        *,
        action_repeat: int,
        max_frames: int,
        sticky_action_prob: float,
        difficulty_ramping: bool,
        seed: int,
    ) -> None:
        try:
            from minatar import Environment
        except ImportError as exc:  # pragma: no cover - minatar is a pinned dependency
            raise EnvError(f"MinAtar is not installed ({exc}); pip install minatar==1.0.15") from exc
        self._game = Environment(
            game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping
        )
        self._game.seed(seed)  # one RandomState for sticky actions and the game's own randomness
        self._repeat = action_repeat
        self._max_frames = max_frames
        self.num_actions = int(self._game.num_actions())
        h, w, c = self._game.state_shape()
        shape = (int(c), int(h), int(w))
        self.spec: EnvSpec = DiscreteEnvSpec.of_frames(
            shape, np.uint8, num_actions=self.num_actions, action_repeat=action_repeat, max_frames=max_frames
        )
        self._frames, self._return, self._length, self._needs_reset = 0, 0.0, 0, True

    def _obs(self) -> np.ndarray:
        # the game's (H, W, C) booleans as (C, H, W) uint8 0/1 (a view as uint8, then one contiguous copy)
        return self._game.env.state().view(np.uint8).transpose(2, 0, 1).copy()

    def reset(self) -> Step:
        # As MinAtar's Environment.reset: the sticky `last_action` carries over from the previous episode.
        self._game.reset()
        self._frames, self._return, self._length, self._needs_reset = 0, 0.0, 0, False
        return Step(obs=self._obs())

    def step(self, action: Any) -> Step:
        if self._needs_reset:
            raise EnvError("step() called before reset() or after the episode ended; call reset()")
        a = int(action)
        if not 0 <= a < self.num_actions:
            raise EnvError(f"action {a} is outside [0, {self.num_actions})")
        if self._repeat == 1:  # the common case, without the loop (a raw MinAtar step is only ~10 µs)
            r, terminated = self._game.act(a)
            reward = float(r)  # some games return numpy scalars
            self._frames += 1
        else:
            reward = 0.0
            for _ in range(self._repeat):
                r, terminated = self._game.act(a)
                reward += float(r)
                self._frames += 1
                if terminated or self._frames >= self._max_frames:
                    break
        terminated = bool(terminated)
        truncated = not terminated and self._frames >= self._max_frames
        self._needs_reset = terminated or truncated
        self._return += reward
        self._length += 1
        return Step(self._obs(), reward, terminated, truncated, self._return, self._length)

    def get_rng_state(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = self._game.random.get_state()
        return {
            "suite": "minatar",
            "random_state": [kind, as_jsonable(keys), int(pos), int(has_gauss), float(cached)],
            "last_action": int(self._game.last_action),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            if state["suite"] != "minatar":
                raise ValueError(f"state of suite {state['suite']!r}")
            kind, keys, pos, has_gauss, cached = state["random_state"]
            self._game.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, cached))
            self._game.last_action = int(state["last_action"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a minatar env RNG state ({type(exc).__name__}: {exc})") from exc

    def get_state(self) -> dict[str, Any]:
        """The game's variables (positions, timers, maps), its RNG and the episode's counters: everything a
        mid-episode checkpoint needs to continue exactly (`common.envs.base.SavesState`)."""
        game = {k: _plain(v) for k, v in vars(self._game.env).items() if k not in _FIXED}
        episode = [self._frames, self._return, self._length, self._needs_reset]
        return {**self.get_rng_state(), "game": game, "episode": episode}

    def set_state(self, state: dict[str, Any]) -> None:
        try:
            for key, value in state["game"].items():
                setattr(self._game.env, key, _restored(value))
            frames, ret, length, needs_reset = state["episode"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a minatar env state ({type(exc).__name__}: {exc})") from exc
        self.set_rng_state(state)
        self._frames, self._return, self._length = int(frames), float(ret), int(length)
        self._needs_reset = bool(needs_reset)

    def close(self) -> None:
        pass


_FIXED = ("random", "channels", "action_map")  # set at construction (the RNG is saved on its own)


def _plain(value: Any) -> Any:
    """A game variable as lists and Python numbers (checkpoints load with weights_only=True)."""
    if isinstance(value, np.ndarray):
        return {"ndarray": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _restored(value: Any) -> Any:
    if isinstance(value, dict) and "ndarray" in value:
        return np.asarray(value["ndarray"], dtype=np.dtype(value["dtype"]))
    if isinstance(value, list):
        return [_restored(v) for v in value]
    return value
