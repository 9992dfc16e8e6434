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
import os
import pathlib
import secrets
import shutil

import numpy as np

from common.buffers.base import Batch
from common.envs.base import EnvSpec
from common.errors import CheckpointError, ConfigError

_CONTINUES, _TRUNCATED, _TERMINATED = 0, 1, 2
_WHOLE = "rlrepro.NStepReplay/1"  # the filled ring as whole arrays
_SEGMENTS = "rlrepro.NStepReplay/2"  # a manifest of append-only segments
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
        # Checkpoints as append-only segments (see `save`): where they live, which hold which steps, up to
        # which step they reach, and steps whose end was changed after their segment was written.
        self.segment_store: pathlib.Path | None = None
        self._segments: list[dict] = []
        self._saved_upto = 0
        self._patched_ends: list[tuple[int, int]] = []
        self._source: pathlib.Path | None = None  # the directory loaded from: segments to link from

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
        if self._total <= self._saved_upto:  # that step is in a segment already: the manifest patches it
            self._patched_ends.append((self._total - 1, _TRUNCATED))

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
            "capacity": self.capacity,
            "frame_shape": list(self._frame_shape),
            "frame_stack": self._k,
            "obs_dtype": self._obs_dtype.str,
            "action_shape": list(self._action_shape),
        }

    def _state(self) -> dict:
        return {
            **self._meta(),
            "nstep": self.nstep,
            "discount": self.discount,
            "total": self._total,
            "current_start": self._current_start,
            "ended": self._ended,
            "num_ends": self._num_ends,
            "rng": self._rng.bit_generator.state,
        }

    def save(self, directory: pathlib.Path) -> None:
        """Write the ring into `directory` (plain .npy files and a JSON manifest, no pickle).

        Without a `segment_store`, the whole filled ring (`frame.npy`, ...: a self-contained copy). With one,
        only the steps added since the last save become a new segment in the store; `directory` gets hard
        links to every segment still in the ring and `replay.json` lists them."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.segment_store is None:
            stored = len(self)
            for name in _ARRAYS:
                np.save(directory / f"{name}.npy", getattr(self, f"_{name}")[:stored], allow_pickle=False)
            state = {"format": _WHOLE, **self._state()}
        else:
            segments = self._save_segments(directory, pathlib.Path(self.segment_store))
            oldest = self._total - len(self)
            patched = [(t, end) for t, end in self._patched_ends if t >= oldest]
            state = {"format": _SEGMENTS, **self._state(), "segments": segments, "patched_ends": patched}
            self._segments, self._saved_upto, self._patched_ends = segments, self._total, patched
        tmp = directory / "replay.json.tmp"  # written last: its presence marks a complete save
        tmp.write_text(json.dumps(state))
        tmp.replace(directory / "replay.json")

    def _save_segments(self, directory: pathlib.Path, store: pathlib.Path) -> list[dict]:
        """Link the segments saved before that the ring still holds; write the newer steps as one more."""
        store.mkdir(parents=True, exist_ok=True)
        oldest = self._total - len(self)
        segments = []
        for seg in self._segments:
            if seg["end"] <= oldest:
                continue  # overwritten in the ring: no longer referenced
            if self._link_segment(seg["name"], store, directory):
                segments.append(seg)
            else:  # its files are gone (a deleted store): write what the ring holds of it again
                segments.append(self._write_segment(max(seg["start"], oldest), seg["end"], store, directory))
        first_new = max(self._saved_upto, oldest)
        if first_new < self._total:
            segments.append(self._write_segment(first_new, self._total, store, directory))
        return segments

    def _link_segment(self, name: str, store: pathlib.Path, directory: pathlib.Path) -> bool:
        for array in _ARRAYS:
            file = f"{name}.{array}.npy"
            sources = [store / file] + ([self._source / file] if self._source is not None else [])
            source = next((path for path in sources if path.is_file()), None)
            if source is None:
                return False
            _link_or_copy(source, directory / file)
            if source.parent != store and not (store / file).exists():
                _link_or_copy(source, store / file)  # later saves link from the store
        return True

    def _write_segment(self, start: int, end: int, store: pathlib.Path, directory: pathlib.Path) -> dict:
        """Absolute steps [start, end) as one .npy file per array, written once into `store` (complete
        files only: written under a temporary name, flushed, renamed) and hard-linked into `directory`."""
        name = f"{start:012d}-{end:012d}-{secrets.token_hex(4)}"  # unique: a resume may redo these steps
        for array in _ARRAYS:
            data = getattr(self, f"_{array}")
            final, tmp = store / f"{name}.{array}.npy", store / f".{name}.{array}.npy.tmp"
            with tmp.open("wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(data.dtype), "fortran_order": False,
                          "shape": (end - start, *data.shape[1:])}  # fmt: skip
                np.lib.format.write_array_header_1_0(f, header)
                for _, slots in self._slot_runs(start, end):
                    data[slots].tofile(f)  # contiguous slices: written without a copy
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _link_or_copy(final, directory / final.name)
        return {"name": name, "start": start, "end": end}

    def _slot_runs(self, start: int, end: int) -> list[tuple[slice, slice]]:
        """Absolute steps [start, end) as (rows of a segment, slots of the ring): at most two runs."""
        runs, t = [], start
        while t < end:
            slot = t % self.capacity
            n = min(end - t, self.capacity - slot)
            runs.append((slice(t - start, t - start + n), slice(slot, slot + n)))
            t += n
        return runs

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
        if state.get("format") not in (_WHOLE, _SEGMENTS):
            raise CheckpointError(f"{meta_path} has format {state.get('format')!r}, not an rlrepro replay")
        for key, ours in self._meta().items():
            if state.get(key) != ours:
                raise CheckpointError(
                    f"saved replay at {directory} has {key}={state.get(key)!r} but this run needs {ours!r}; "
                    f"load it with the settings it was saved with or start with an empty replay"
                )
        total = int(state["total"])
        stored = min(total, self.capacity)
        # (file pattern, rows in the file, rows to copy, slots of the ring) for each piece of the ring;
        # every file is checked before anything is copied
        pieces: list[tuple[pathlib.Path, int, slice, slice]] = []
        if state["format"] == _WHOLE:
            pieces = [(directory / "{}.npy", stored, slice(0, stored), slice(0, stored))]
        else:
            oldest = total - stored
            for seg in state["segments"]:
                name, start, end = seg["name"], int(seg["start"]), int(seg["end"])
                for rows, slots in self._slot_runs(max(start, oldest), end):
                    skip = max(start, oldest) - start
                    piece_rows = slice(rows.start + skip, rows.stop + skip)
                    pieces.append((directory / f"{name}.{{}}.npy", end - start, piece_rows, slots))
        arrays = {}
        for pattern, length, _, _ in pieces:
            for name in _ARRAYS:
                path = pathlib.Path(str(pattern).format(name))
                if path in arrays:
                    continue
                mine = getattr(self, f"_{name}")
                try:
                    arr = np.load(path, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as e:
                    raise CheckpointError(
                        f"{path} is missing or corrupt ({e}); the saved replay is incomplete"
                    ) from e
                want = (length, *mine.shape[1:])
                if arr.shape != want or arr.dtype != mine.dtype:
                    raise CheckpointError(
                        f"{path} holds {arr.dtype}{list(arr.shape)} but replay.json implies "
                        f"{mine.dtype}{list(want)}; the saved replay is inconsistent, delete it"
                    )
                arrays[path] = arr
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{meta_path} has an invalid rng state ({e}); delete the saved replay"
            ) from e
        for pattern, _, rows, slots in pieces:  # copy from the memory maps: no second full copy in RAM
            for name in _ARRAYS:
                getattr(self, f"_{name}")[slots] = arrays[pathlib.Path(str(pattern).format(name))][rows]
        patched = [(int(t), int(end)) for t, end in state.get("patched_ends", [])]
        for t, end in patched:
            self._end[t % self.capacity] = end
        self._rng = rng
        self._total = total
        self._current_start = int(state["current_start"])
        self._ended = bool(state["ended"])
        self._num_ends = int(state["num_ends"])
        segmented = state["format"] == _SEGMENTS
        self._segments = list(state["segments"]) if segmented else []
        self._saved_upto = total if segmented else 0
        self._patched_ends = patched
        self._source = directory if segmented else None


def _link_or_copy(source: pathlib.Path, target: pathlib.Path) -> None:
    """A hard link to `source` at `target`; a copy where the file system has no hard links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
