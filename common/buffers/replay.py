"""An n-step replay ring that stores each frame once and rebuilds frame stacks when it samples.

DrQ-v2 stores every observation frame-stacked (9x84x84 uint8 per step, ~64 GB per 1M steps). Here a time
step keeps only its newest frame (3x84x84, a third of that) plus a few bytes of bookkeeping; the stack at step
t is frames t-k+1..t of the same episode, with the episode's first frame repeated before its start, which is
what the env's frame stack returns after a reset.

Steps are numbered by an absolute counter that never wraps; step `i` lives in slot ``i % capacity``. Each step
holds its frame, the action that led to it, the reward received with it, how it ends the episode (0 = it does
not, 1 = truncation, 2 = termination) and the absolute index of its episode's first step. A step that ends an
episode starts no transition. Transition t has

    obs = stack(t),  action = a_{t+1},  reward = sum_{i<m} gamma^i r_{t+1+i},  next_obs = stack(t+m),
    discount = gamma^m, or 0 when step t+m is a termination,

with m = n, or fewer when the episode ends first. Validity is computed from the counters, never stored, so
nothing has to be updated when the ring overwrites a step.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from common.buffers.base import Batch
from common.envs.base import EnvSpec
from common.errors import CheckpointError, ConfigError

_CONTINUES, _TRUNCATED, _TERMINATED = 0, 1, 2
_FORMAT = "rlrepro.NStepReplay/1"
_ARRAYS = ("frame", "action", "reward", "end", "episode_start")


class NStepReplay:
    """Uniform n-step replay over pixel or state observations; see the module docstring for the layout.

    `add_first` starts an episode with the env's reset observation, `add` appends one step's result. Only the
    newest frame of each observation (``obs[-C:]``, C = ``spec.frame_shape[0]``) is kept.
    """

    def __init__(self, spec: EnvSpec, capacity: int, nstep: int, discount: float, seed: int) -> None:
        if int(capacity) < 2:
            raise ConfigError(f"replay capacity must be >= 2 time steps, got {capacity}")
        if int(nstep) < 1:
            raise ConfigError(f"replay nstep must be >= 1, got {nstep}")
        if not 0.0 < float(discount) <= 1.0:
            raise ConfigError(f"discount must be in (0, 1], got {discount}")
        frame_shape, k = tuple(spec.frame_shape), int(spec.frame_stack)
        if k < 1 or tuple(spec.obs_shape) != (k * frame_shape[0], *frame_shape[1:]):
            raise ConfigError(
                f"EnvSpec obs_shape {tuple(spec.obs_shape)} is not frame_stack={k} x frame_shape "
                f"{frame_shape} stacked on the first axis; fix the env's spec"
            )
        self.spec = spec
        self.capacity = int(capacity)
        self.nstep = int(nstep)
        self.discount = float(discount)
        self._k = k
        self._channels = frame_shape[0]
        self._frame_shape = frame_shape
        self._obs_dtype = np.dtype(spec.obs_dtype)
        self._action_shape = tuple(spec.action_shape)
        # np.zeros maps fresh pages lazily: a 1M-step pixel ring costs memory only as it fills.
        self._frame = np.zeros((self.capacity, *frame_shape), self._obs_dtype)
        self._action = np.zeros((self.capacity, *self._action_shape), np.float32)
        self._reward = np.zeros(self.capacity, np.float32)
        self._end = np.zeros(self.capacity, np.int8)
        self._episode_start = np.zeros(self.capacity, np.int64)
        self._gammas = self.discount ** np.arange(self.nstep, dtype=np.float64)  # gamma^0..gamma^(n-1)
        self._rng = np.random.default_rng(seed)
        self._total = 0  # steps ever stored; the newest is _total - 1
        self._current_start = 0  # absolute index of the newest episode's first step
        self._ended = True  # whether the newest episode has ended (True before any episode)
        self._num_ends = 0  # episode-ending steps still in the ring

    # ------------------------------------------------------------------ adding

    def add_first(self, obs: np.ndarray) -> None:
        """Start an episode with its reset observation; an unfinished previous episode ends truncated."""
        self.end_episode()
        self._current_start = self._total
        self._ended = False
        self._write(obs, np.zeros(self._action_shape, np.float32), 0.0, _CONTINUES)

    def add(
        self, action: np.ndarray, reward: float, obs: np.ndarray, terminated: bool, truncated: bool
    ) -> None:
        """Append the result of taking `action`: its reward, the next obs and how the episode ended."""
        if self._ended:
            raise RuntimeError("NStepReplay.add() called outside an episode; call add_first(reset obs) first")
        end = _TERMINATED if terminated else _TRUNCATED if truncated else _CONTINUES
        self._write(obs, action, reward, end)
        self._ended = end != _CONTINUES

    def end_episode(self) -> None:
        """Mark the newest step as a truncation (a resumed run restarts the env); no-op if already ended."""
        if self._ended:
            return
        self._end[(self._total - 1) % self.capacity] = _TRUNCATED
        self._num_ends += 1
        self._ended = True

    def _write(self, obs: np.ndarray, action: np.ndarray, reward: float, end: int) -> None:
        obs = np.asarray(obs)
        if obs.shape != tuple(self.spec.obs_shape):
            raise ValueError(f"observation shape {obs.shape} != spec.obs_shape {tuple(self.spec.obs_shape)}")
        slot = self._total % self.capacity
        if self._total >= self.capacity and self._end[slot] != _CONTINUES:
            self._num_ends -= 1  # overwriting an episode end
        self._frame[slot] = obs[-self._channels :]
        self._action[slot] = action
        self._reward[slot] = reward
        self._end[slot] = end
        self._episode_start[slot] = self._current_start
        self._num_ends += int(end != _CONTINUES)
        self._total += 1

    def one_step_transitions(self, max_transitions: int | None = None) -> dict[str, np.ndarray]:
        """Every stored one-step transition in the order it was collected, oldest first (no frame stacks:
        state replays, ``frame_stack=1``). With `max_transitions`, only the first that many ever collected
        (one per env step), which must all still be in the ring.

        Returns arrays `observations`, `actions`, `rewards`, `next_observations`, `terminations`,
        `truncations` (the transition ends its episode at a terminal / a time limit or interruption).
        The newest episode's unfinished tail is included; its last transition ends neither way.
        """
        if self._k != 1:
            raise ConfigError("one_step_transitions exports state replays only (frame_stack=1)")
        oldest = self._total - len(self)
        if max_transitions is not None and oldest > 0:
            raise ConfigError(
                f"the replay ring has overwritten its first {oldest} steps; the first {max_transitions} "
                f"transitions are gone (raise paper.buffer.capacity to at least the training length)"
            )
        t = np.arange(oldest, max(oldest, self._total - 1))  # a transition t -> t + 1 needs both steps
        nxt = (t + 1) % self.capacity
        starts = self._end[t % self.capacity] == _CONTINUES
        starts &= self._episode_start[nxt] == self._episode_start[t % self.capacity]  # same episode
        t, nxt = t[starts], nxt[starts]
        if max_transitions is not None:
            t, nxt = t[: int(max_transitions)], nxt[: int(max_transitions)]
        ends = self._end[nxt]
        return {
            "observations": self._frame[t % self.capacity].copy(),
            "actions": self._action[nxt].copy(),
            "rewards": self._reward[nxt].copy(),
            "next_observations": self._frame[nxt].copy(),
            "terminations": ends == _TERMINATED,
            "truncations": ends == _TRUNCATED,
        }

    # ---------------------------------------------------------------- sampling

    def __len__(self) -> int:
        return min(self._total, self.capacity)

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the ring's arrays (virtual: untouched pages are not resident)."""
        return sum(getattr(self, f"_{name}").nbytes for name in _ARRAYS)

    def _valid(self, t: np.ndarray) -> np.ndarray:
        """Which stored absolute steps `t` start a sampleable transition."""
        oldest, newest = self._total - len(self), self._total - 1
        slot = t % self.capacity
        start = self._episode_start[slot]
        ok = self._end[slot] == _CONTINUES  # an episode's last step starts no transition
        ok &= np.maximum(start, t - (self._k - 1)) >= oldest  # every frame of stack(t) is still in the ring
        if not self._ended:  # in the running episode, the n-step window must be complete
            ok &= (start != self._current_start) | (t + self.nstep <= newest)
        return ok

    def num_transitions(self) -> int:
        """How many transitions `sample` can return now (0 means `sample` raises)."""
        stored = len(self)
        if stored == 0:
            return 0
        oldest, newest = self._total - stored, self._total - 1
        # Apart from episode ends, only the first k-1 steps (stack reaching past the ring) and the last n
        # steps (incomplete window) can be invalid.
        suspects = np.union1d(
            np.arange(oldest, min(oldest + self._k - 1, newest + 1)),
            np.arange(max(newest - self.nstep + 1, oldest), newest + 1),
        )
        not_end = self._end[suspects % self.capacity] == _CONTINUES
        return stored - self._num_ends - int(np.count_nonzero(not_end & ~self._valid(suspects)))

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` transitions drawn uniformly (with replacement) from the valid ones.

        Raises ConfigError when none is valid yet: updates started before the first n-step window completed.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        valid = self.num_transitions()
        if valid == 0:
            raise ConfigError(
                f"replay cannot sample: none of its {len(self)} stored steps starts a complete "
                f"{self.nstep}-step transition yet; start updates later (raise num_seed_frames) "
                "or lower nstep"
            )
        t = self._draw(batch_size, valid)
        return self._gather(t)

    def _draw(self, batch_size: int, valid: int) -> np.ndarray:
        """Rejection sampling: uniform draws over the stored steps, keeping the valid ones in order."""
        stored = len(self)
        oldest = self._total - stored
        kept: list[np.ndarray] = []
        need = batch_size
        while need > 0:
            draws = min(math.ceil(need * stored / valid * 1.1) + 8, 1 << 22)
            t = oldest + self._rng.integers(0, stored, size=draws)
            t = t[self._valid(t)][:need]
            kept.append(t)
            need -= t.size
        return np.concatenate(kept)

    def _gather(self, t: np.ndarray) -> Batch:
        n, cap = self.nstep, self.capacity
        ahead = t[:, None] + np.arange(1, n + 1)  # steps t+1..t+n (beyond the episode end: masked)
        end = self._end[ahead % cap]
        stops = end != _CONTINUES
        m = np.where(stops.any(axis=1), stops.argmax(axis=1) + 1, n)  # steps actually taken
        inside = np.arange(1, n + 1) <= m[:, None]
        reward = np.where(inside, self._reward[ahead % cap], 0.0) @ self._gammas
        terminal = end[np.arange(t.size), m - 1] == _TERMINATED
        discount = np.where(terminal, 0.0, self.discount**m)
        return Batch(
            obs=self._stack(t),
            action=self._action[(t + 1) % cap],
            reward=reward.astype(np.float32)[:, None],
            discount=discount.astype(np.float32)[:, None],
            next_obs=self._stack(t + m),
        )

    def _stack(self, t: np.ndarray) -> np.ndarray:
        """Frames t-k+1..t, clamped to each episode's first step, concatenated on the channel axis."""
        start = self._episode_start[t % self.capacity]
        steps = np.maximum(t[:, None] + np.arange(1 - self._k, 1), start[:, None])
        frames = self._frame[steps % self.capacity]  # (B, k, C, ...)
        return frames.reshape(t.size, *self.spec.obs_shape)

    # ------------------------------------------------------------- checkpoint

    def _meta(self) -> dict:
        return {
            "format": _FORMAT,
            "capacity": self.capacity,
            "frame_shape": list(self._frame_shape),
            "frame_stack": self._k,
            "obs_dtype": self._obs_dtype.str,
            "action_shape": list(self._action_shape),
        }

    def save(self, directory: pathlib.Path) -> None:
        """Write the filled part of the ring as .npy files plus `replay.json` (counters, RNG); no pickle."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stored = len(self)
        for name in _ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, f"_{name}")[:stored], allow_pickle=False)
        state = {
            **self._meta(),
            "nstep": self.nstep,
            "discount": self.discount,
            "total": self._total,
            "current_start": self._current_start,
            "ended": self._ended,
            "num_ends": self._num_ends,
            "rng": self._rng.bit_generator.state,
        }
        tmp = directory / "replay.json.tmp"  # written last: its presence marks a complete save
        tmp.write_text(json.dumps(state))
        tmp.replace(directory / "replay.json")

    def load(self, directory: pathlib.Path) -> None:
        """Restore a buffer written by `save` into this one; CheckpointError if it was built differently."""
        directory = pathlib.Path(directory)
        meta_path = directory / "replay.json"
        if not meta_path.is_file():
            raise CheckpointError(
                f"no saved replay at {directory} (replay.json missing); point to a saved buffer"
            )
        try:
            state = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"{meta_path} is unreadable ({e}); the save was interrupted, delete it"
            ) from e
        for key, ours in self._meta().items():
            if state.get(key) != ours:
                raise CheckpointError(
                    f"saved replay at {directory} has {key}={state.get(key)!r} but this run needs {ours!r}; "
                    f"load it with the settings it was saved with or start with an empty replay"
                )
        stored = min(int(state["total"]), self.capacity)
        arrays = {}
        for name in _ARRAYS:
            path = directory / f"{name}.npy"
            mine = getattr(self, f"_{name}")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise CheckpointError(
                    f"{path} is missing or corrupt ({e}); the saved replay is incomplete"
                ) from e
            want = (stored, *mine.shape[1:])
            if arr.shape != want or arr.dtype != mine.dtype:
                raise CheckpointError(
                    f"{path} holds {arr.dtype}{list(arr.shape)} but replay.json implies "
                    f"{mine.dtype}{list(want)}; the saved replay is inconsistent, delete it"
                )
            arrays[name] = arr
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{meta_path} has an invalid rng state ({e}); delete the saved replay"
            ) from e
        for name, arr in arrays.items():  # copy from the memory map: no second full-size copy in RAM
            getattr(self, f"_{name}")[:stored] = arr
        self._rng = rng
        self._total = int(state["total"])
        self._current_start = int(state["current_start"])
        self._ended = bool(state["ended"])
        self._num_ends = int(state["num_ends"])
