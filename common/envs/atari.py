"""Atari 2600 games (ale-py; the ROMs ship in its wheel) as an `Env` with discrete actions and the DQN
preprocessing.

One agent step is `action_repeat` emulator frames with the same action (frame skip; 4 in every cited setup):

- Sticky actions: on each frame, with probability `env.sticky_action_prob`, the emulator keeps the previous
  frame's action (Machado et al. 2018, JAIR 61, §5). ALE draws this per frame and starts every game from
  NOOP (Farama-Foundation/Arcade-Learning-Environment@4209504 stella_environment.cpp `act`, `softReset`);
  `AtariEnv` does the same with the env's numpy Generator, so that the RNG state is JSON-safe (ALE's own
  probability is set to 0).
- Observation: ALE's grayscale screen of the last two frames of the step, max-pooled (Mnih et al. 2015,
  Nature 518, Methods "Preprocessing": sprites flicker), downscaled to ``image_size``² by pixel-area
  averaging (google/dopamine@00a5b32 atari_lib.py `_pool_and_resize`: cv2 INTER_AREA; `AreaResize` computes
  it in numpy: OpenCV is no dependency, so it is not checked bit for bit against cv2), uint8 ``(1, S, S)``.
  Frame stacking is `common.envs.FrameStack`: ``(frame_stack, S, S)``; the replay stores each frame once.
- New game: ALE's reset, then U{1..noop_max} NOOP frames (Mnih et al. 2015 Extended Data Table 1 "no-op
  max 30"; openai/baselines atari_wrappers.py `NoopResetEnv` draws 1..30 frames), then, with
  `env.fire_on_reset`, one step of FIRE in games whose action set has it (baselines `FireResetEnv`).
- Episode end: game over → terminated; `env.max_episode_frames` emulator frames since the game's reset
  (108,000 = 30 minutes at 60 Hz: Dopamine's atari_lib.py `create_atari_environment`) → truncated.
- Training only (`make_env(..., evaluation=False)`): losing a life ends the agent's episode as terminated
  (`env.terminal_on_life_loss`; Mnih et al. 2015 Methods) and the next `reset()` continues the same game
  from the current screen, without a new game or no-ops (Dopamine run_experiment.py `_run_one_episode`);
  `Step.reward` is sign(r) (`env.clip_rewards`; Mnih et al. 2015 Methods). The evaluation env plays whole
  games with the raw score. In both, `episode_return` is the raw game score and `episode_length` counts the
  game's agent steps so far: a training episode cut by a life loss reports the running score of its game,
  and `Step.info["game_over"]` tells the last life of a game from the others.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np
import torch

from common.envs import as_jsonable
from common.envs.base import EnvSpec, Step
from common.envs.discrete import DiscreteEnvSpec
from common.errors import CheckpointError, ConfigError, EnvError

NOOP, FIRE = 0, 1  # ale_py.Action values


def check_atari_config(cfg: Mapping, *, pixels: bool, action_repeat: int, image_size: int) -> str:
    """The ALE ROM id of a `suite: atari` env section; one-line errors for anything impossible."""
    if not pixels:
        raise ConfigError("Atari serves pixels only (84x84 grayscale frames); set paper.pixels=true")
    for key, value, low in (("action_repeat", action_repeat, 1), ("image_size", image_size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low} for Atari, got {value!r}")
    for key, low in (("noop_max", 0), ("max_episode_frames", 1)):
        setting = cfg.get(key)
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < low:
            raise ConfigError(f"env.{key} must be an integer >= {low}, got {setting!r}")
    sticky = cfg.get("sticky_action_prob")
    if isinstance(sticky, bool) or not isinstance(sticky, (int, float)) or not 0.0 <= sticky < 1.0:
        raise ConfigError(f"env.sticky_action_prob must be in [0, 1), got {sticky!r}")
    for key in ("terminal_on_life_loss", "clip_rewards", "fire_on_reset", "full_action_space"):
        if not isinstance(cfg.get(key), bool):
            raise ConfigError(f"env.{key} must be true or false, got {cfg.get(key)!r}")
    game = cfg.get("game")
    games = rom_ids()
    if game not in games:
        close = difflib.get_close_matches(str(game).lower(), games, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"one of {len(games)} ALE ROM ids, e.g. pong"
        raise EnvError(f"unknown Atari game {game!r} (env.game is an ALE ROM id in snake_case): {hint}")
    return str(game)


@cache
def rom_ids() -> tuple[str, ...]:
    """The games whose ROMs ship with the installed ale-py."""
    from ale_py import roms

    return tuple(roms.get_all_rom_ids())


def make_atari(
    cfg: Mapping, *, pixels: bool, action_repeat: int, image_size: int, seed: int, evaluation: bool
) -> AtariEnv:
    """Build the `env` section with `suite: atari` (keys: see conf/env/atari.yaml)."""
    game = check_atari_config(cfg, pixels=pixels, action_repeat=action_repeat, image_size=image_size)
    return AtariEnv(
        game,
        action_repeat=action_repeat,
        image_size=image_size,
        max_frames=int(cfg["max_episode_frames"]),
        noop_max=int(cfg["noop_max"]),
        sticky_action_prob=float(cfg["sticky_action_prob"]),
        terminal_on_life_loss=bool(cfg["terminal_on_life_loss"]) and not evaluation,
        clip_rewards=bool(cfg["clip_rewards"]) and not evaluation,
        fire_on_reset=bool(cfg["fire_on_reset"]),
        full_action_space=bool(cfg["full_action_space"]),
        seed=seed,
    )


class AreaResize:
    """Downscale a 2-D uint8 image by pixel-area averaging (OpenCV's INTER_AREA), as two matrix products.

    Output cell i along an axis of n_in → n_out averages the input cells it overlaps, weighted by overlap:
    the span ``[i s, (i + 1) s)`` with s = n_in / n_out. The weights repeat every a = n_in / g inputs and
    b = n_out / g outputs (g = gcd), so each axis is g independent (b x a) blocks: 210 → 84 is 42 blocks of
    5 → 2 rows, 160 → 84 is 4 blocks of 40 → 21 columns.
    """

    def __init__(self, in_shape: tuple[int, int], out_shape: tuple[int, int]) -> None:
        self._out = out_shape
        self._rows = self._block(in_shape[0], out_shape[0])
        groups, size, weights = self._block(in_shape[1], out_shape[1])
        self._cols = (groups, size, np.ascontiguousarray(weights.T))

    @staticmethod
    def _block(n_in: int, n_out: int) -> tuple[int, int, np.ndarray]:
        """(g, a, the (b, a) weights of one block)."""
        g = math.gcd(n_in, n_out)
        a, b, scale = n_in // g, n_out // g, n_in / n_out
        lo = np.arange(b)[:, None] * scale
        j = np.arange(a)[None, :]
        overlap = np.minimum(lo + scale, j + 1) - np.maximum(lo, j)
        return g, a, (np.clip(overlap, 0.0, None) / scale).astype(np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        (row_groups, row_size, row_weights), (col_groups, col_size, col_weights) = self._rows, self._cols
        height, width = self._out
        x = image.astype(np.float32).reshape(row_groups, row_size, -1)
        tall = np.matmul(row_weights, x).reshape(height, col_groups, col_size)
        out = np.matmul(tall, col_weights).reshape(height, width)
        return np.rint(out, out=out).astype(np.uint8)


class AtariEnv:
    """One Atari game behind the `Env` protocol; see the module docstring. `step` takes an integer index into
    the game's minimal action set (or ALE's 18 actions with `full_action_space`)."""

    def __init__(
        self,
        game: str,
        *,
        action_repeat: int,
        image_size: int,
        max_frames: int,
        noop_max: int,
        sticky_action_prob: float,
        terminal_on_life_loss: bool,
        clip_rewards: bool,
        fire_on_reset: bool,
        full_action_space: bool,
        seed: int,
    ) -> None:
        from ale_py import ALEInterface, LoggerMode, roms

        ALEInterface.setLoggerMode(LoggerMode.Error)
        self._ale = ale = ALEInterface()
        ale.setInt("random_seed", seed % 2**31)  # ALE's RNG drives only its sticky actions, which are off
        ale.setFloat("repeat_action_probability", 0.0)
        ale.setInt("max_num_frames_per_episode", 0)  # the limit is ours (truncation, not game over)
        rom = roms.get_rom_path(game)
        if rom is None:  # check_atari_config listed it: an ale-py install without its ROMs
            raise EnvError(f"ale-py has no ROM for {game!r}; reinstall ale-py==0.12.1 (its wheel ships them)")
        ale.loadROM(rom)
        actions = ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet()
        self._actions = [int(a.value) for a in actions]  # agent action index -> ALE action value
        self.num_actions = len(self._actions)
        self._can_fire = fire_on_reset and FIRE in self._actions
        self._repeat, self._max_frames, self._noop_max = action_repeat, max_frames, noop_max
        self._life_loss, self._clip = terminal_on_life_loss, clip_rewards
        self._rng = np.random.default_rng(seed)  # no-op counts and sticky actions
        self._sticky_prob = sticky_action_prob
        self._previous = NOOP  # the action of the last emulated frame (sticky actions repeat it)

        h, w = ale.getScreenDims()
        self._screens = np.zeros((2, h, w), np.uint8)  # the step's last two frames, for the max-pool
        self._resize = AreaResize((h, w), (image_size, image_size))
        frame = (1, image_size, image_size)
        self.spec: EnvSpec = DiscreteEnvSpec.of_frames(
            frame,
            np.uint8,
            num_actions=self.num_actions,
            action_repeat=action_repeat,
            max_frames=max_frames,
            pixels=True,
        )
        self._frame = np.zeros(frame, np.uint8)  # the last observation
        self._lives = 0
        self._return, self._length = 0.0, 0
        self._needs_reset, self._continue_game = True, False

    # ---- emulator

    def _stuck(self, frames: int) -> list[bool]:
        """Per frame, whether sticky actions keep the previous frame's action (one draw per frame)."""
        if self._sticky_prob == 0.0:
            return [False] * frames
        return (self._rng.random(frames) < self._sticky_prob).tolist()

    def _play(self, action: int, frames: int) -> None:
        """`frames` emulator frames of `action` (an ALE action value) outside an agent step: no-ops, FIRE."""
        for stuck in self._stuck(frames):
            if not stuck:
                self._previous = action
            self._ale.act(self._previous)

    def _observe(self, pooled: bool) -> np.ndarray:
        screen = self._screens[1]
        if pooled:
            np.maximum(self._screens[0], self._screens[1], out=self._screens[0])
            screen = self._screens[0]
        else:
            self._ale.getScreenGrayscale(screen)
        self._frame = self._resize(screen)[None]
        return self._frame

    # ---- Env

    def reset(self) -> Step:
        if self._continue_game:  # training after a life loss: the same game goes on
            self._continue_game, self._needs_reset = False, False
            if self._can_fire:
                self._fire()
            return Step(obs=self._frame.copy(), episode_return=self._return, episode_length=self._length)
        self._new_game()
        self._return, self._length, self._needs_reset = 0.0, 0, False
        return Step(obs=self._observe(pooled=False).copy())

    def _new_game(self) -> None:
        ale = self._ale
        ale.reset_game()
        self._previous = NOOP  # as ALE's softReset
        noops = int(self._rng.integers(1, self._noop_max + 1)) if self._noop_max > 0 else 0
        self._play(NOOP, noops)
        if ale.game_over(with_truncation=False):  # over within the no-ops: start again without (baselines)
            ale.reset_game()
            self._previous = NOOP
        if self._can_fire:
            self._fire()
        self._lives = ale.lives()

    def _fire(self) -> None:
        self._play(FIRE, self._repeat)
        self._observe(pooled=False)

    def step(self, action: Any) -> Step:
        if self._needs_reset:
            raise EnvError("step() called before reset() or after the episode ended; call reset()")
        a = int(action)
        if not 0 <= a < self.num_actions:
            raise EnvError(f"action {a} is outside [0, {self.num_actions})")
        ale, chosen, previous = self._ale, self._actions[a], self._previous
        reward, game_over, life_lost, frames = 0.0, False, False, 0
        for i, stuck in enumerate(self._stuck(self._repeat)):
            if not stuck:
                previous = chosen
            reward += ale.act(previous)
            frames = i + 1
            game_over = ale.game_over(with_truncation=False)
            if self._life_loss and not game_over:
                lives = ale.lives()
                life_lost, self._lives = lives < self._lives, lives
            if game_over or life_lost:
                break
            if self._repeat > 1 and i >= self._repeat - 2:  # the last two frames, for the max-pool
                ale.getScreenGrayscale(self._screens[i - self._repeat + 2])
        self._previous = previous
        if frames == self._repeat and self._repeat > 1:
            obs = self._observe(pooled=True)
        else:  # ended early (or no frame skip): the current screen alone
            obs = self._observe(pooled=False)
        out_of_time = ale.getEpisodeFrameNumber() >= self._max_frames
        terminated = game_over or life_lost
        truncated = out_of_time and not terminated
        self._needs_reset = terminated or truncated
        self._continue_game = life_lost and not out_of_time
        self._return += reward
        self._length += 1
        info = {"game_over": not self._continue_game} if self._needs_reset else {}
        clipped = float((reward > 0) - (reward < 0)) if self._clip else reward
        return Step(obs.copy(), clipped, terminated, truncated, self._return, self._length, info)

    def get_rng_state(self) -> dict[str, Any]:
        return {"suite": "atari", "rng": as_jsonable(self._rng.bit_generator.state)}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore the RNG; the next `reset()` starts a new game (a restored env has no game to continue)."""
        try:
            if state["suite"] != "atari":
                raise ValueError(f"state of suite {state['suite']!r}")
            self._rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not an atari env RNG state ({type(exc).__name__}: {exc})") from exc
        self._continue_game = False

    def get_state(self) -> dict[str, Any]:
        """The emulator (ALE `cloneState(include_rng=True)`), the RNG and the game's counters."""
        emulator = bytearray(self._ale.cloneState(include_rng=True).serialize())
        return {
            **self.get_rng_state(),
            "emulator": torch.frombuffer(emulator, dtype=torch.uint8),
            "frame": torch.from_numpy(self._frame.copy()),
            "previous_action": self._previous,
            "lives": self._lives,
            "return": self._return,
            "length": self._length,
            "needs_reset": self._needs_reset,
            "continue_game": self._continue_game,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        from ale_py import ALEState

        try:
            self.set_rng_state(state)
            self._ale.restoreState(ALEState(state["emulator"].numpy().tobytes()))
            self._frame = state["frame"].numpy().copy()
            self._previous = int(state["previous_action"])
            self._lives = int(state["lives"])
            self._return, self._length = float(state["return"]), int(state["length"])
            self._needs_reset = bool(state["needs_reset"])
            self._continue_game = bool(state["continue_game"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"not an atari env state ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        pass  # ALEInterface frees itself when collected
