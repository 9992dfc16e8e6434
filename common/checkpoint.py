"""Atomic checkpoints in `<run_dir>/checkpoints/`, loaded without unpickling arbitrary objects.

Layout: `frame_<N>/` holds `state.pt` (tensors, numbers, strings, lists and dicts only: agent, optimizers,
RNG states, counters, logger positions), `meta.json` (who wrote it) and `replay/` (plain .npy files: hard
links into `replay_segments/`, where each replay segment is written once; see `SavesSegments`).
The file `latest` names the newest complete checkpoint; it is replaced atomically after the directory
is complete and every file in it is on disk (fsync'd), so a run killed mid-save, or a machine that loses
power, resumes from the previous checkpoint. A write that fails (disk full, read-only file system) removes
what it wrote and leaves `latest` as it was.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from common.errors import CheckpointError, ConfigError, RunDirError
from common.runtime import storage_problem

if TYPE_CHECKING:
    from common.agent import Policy

FORMAT = "rlrepro-checkpoint-v1"


class SavesToDirectory(Protocol):
    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


SEGMENTS = "replay_segments"  # in checkpoints/: files written once and hard-linked into each checkpoint


@runtime_checkable
class SavesSegments(SavesToDirectory, Protocol):
    """A `SavesToDirectory` that writes only what is new (`common.buffers.NStepReplay`): the checkpointer
    points `segment_store` at `checkpoints/replay_segments/`, `save` adds its new files there once and
    hard-links those the checkpoint needs into its directory; files no kept checkpoint links are deleted."""

    segment_store: Path | None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` (and `root`) to disk."""
    for path in sorted(root.rglob("*"), reverse=True):  # children before their directory
        if path.is_dir():
            _fsync_dir(path)
        else:
            with path.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


class Checkpointer:
    def __init__(self, run_dir: Path, keep: int) -> None:
        self.dir = run_dir / "checkpoints"
        self.keep = max(1, keep)

    def save(
        self, frame: int, state: Mapping[str, Any], meta: Mapping[str, Any], replay: SavesToDirectory | None
    ) -> Path:
        """Write `state` (`state.pt`), `meta` (`meta.json`) and `replay` as the checkpoint of `frame`, then
        point `latest` at it and keep only the newest `keep`."""
        final = self.dir / f"frame_{frame:010d}"
        tmp = self.dir / f".tmp_frame_{frame:010d}"
        pointer = self.dir / ".latest.tmp"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob(".tmp_frame_*"):  # left by a process killed mid-save
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
            if isinstance(replay, SavesSegments):
                replay.segment_store = self.dir / SEGMENTS
            self._write(tmp, frame, state, meta, replay)
            _fsync_tree(tmp)  # every byte on disk before `latest` can name it
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            pointer.write_text(final.name)
            with pointer.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(pointer, self.dir / "latest")
            _fsync_dir(self.dir)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            pointer.unlink(missing_ok=True)
            previous = self.latest()
            kept = f"`latest` still names {previous.name}" if previous else "no earlier checkpoint exists"
            raise RunDirError(
                f"cannot write checkpoint {final.name} in {self.dir}: {storage_problem(e)} ({e.strerror}); "
                f"{kept}; free space or make the directory writable, then: "
                f"python run.py resume={self.dir.parent}"
            ) from e
        self._prune()
        return final

    @staticmethod
    def _write(
        directory: Path,
        frame: int,
        state: Mapping[str, Any],
        meta: Mapping[str, Any],
        replay: SavesToDirectory | None,
    ) -> None:
        """The checkpoint's files: `state.pt`, `replay/`, then `meta.json` (a checkpoint's last file)."""
        with (directory / "state.pt").open("wb") as f:  # a file object: a full disk raises OSError
            torch.save(dict(state), f)
        if replay is not None:
            replay.save(directory / "replay")
        (directory / "meta.json").write_text(json.dumps({"format": FORMAT, "frame": frame, **meta}, indent=1))

    def _prune(self) -> None:
        done = sorted(p for p in self.dir.glob("frame_*") if p.is_dir())
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        store = self.dir / SEGMENTS
        if store.is_dir():  # a segment file only the store links: no kept checkpoint references it
            for file in store.iterdir():
                if file.stat().st_nlink < 2:
                    file.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, else the newest complete one (e.g. after deleting a corrupt one)."""
        pointer = self.dir / "latest"
        if pointer.exists():
            path = self.dir / pointer.read_text().strip()
            if path.is_dir():
                return path
        done = sorted(p for p in self.dir.glob("frame_*") if (p / "meta.json").exists())
        return done[-1] if done else None

    def load(self, path: Path, expect: Mapping[str, Any], replay: SavesToDirectory | None) -> dict[str, Any]:
        """Load `state.pt` after checking `meta.json` matches `expect` (e.g. the paper); restore `replay`."""
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {path} has no readable meta.json ({e}); it is not an rlrepro checkpoint or is "
                f"corrupt: delete it or point `latest` at an earlier one"
            ) from e
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        for key, want in expect.items():
            if meta.get(key) != want:
                raise CheckpointError(
                    f"checkpoint {path} was written by {key}={meta.get(key)!r}, not {want!r}: "
                    f"resume it with its own config, or start a new run"
                )
        try:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for truncated or foreign files
            raise CheckpointError(
                f"checkpoint {path / 'state.pt'} cannot be read "
                f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                f"it is corrupt: delete {path.name} to fall back to an earlier checkpoint"
            ) from e
        if replay is not None:
            if not (path / "replay").is_dir():
                raise CheckpointError(
                    f"checkpoint {path} has no replay/ directory but the config expects one"
                )
            replay.load(path / "replay")
        return state


class Part(Protocol):
    """A piece of agent state: a network, an optimizer, a normaliser..."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


def parts_state(parts: Mapping[str, Part]) -> dict[str, Any]:
    """`state_dict()` of each named network and optimizer of an agent (weights_only-loadable)."""
    return {name: part.state_dict() for name, part in parts.items()}


def load_parts(
    parts: Mapping[str, Part], state: Mapping[str, Any], owner: str, extra: tuple[str, ...] = ()
) -> None:
    """Load each named part from `state`; a one-line CheckpointError names what is missing or does not fit.

    `extra` lists further keys the agent reads itself (e.g. counters), checked for presence only.
    """
    missing = [name for name in (*parts, *extra) if name not in state]
    if missing:
        raise CheckpointError(f"{owner} checkpoint lacks {', '.join(missing)}")
    for name, part in parts.items():
        try:
            part.load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{owner} checkpoint does not fit this agent ({name}): {first_line}"
            ) from err


def resume_agent(
    checkpointer: Checkpointer,
    run_dir: Path,
    expect: Mapping[str, Any],
    agent: Policy,
    replay: SavesToDirectory | None = None,
) -> dict[str, Any]:
    """Load the latest checkpoint of `run_dir` for a resume: check it against `expect`, restore `replay`,
    load the agent's weights, and return the whole state (counters, RNGs, logger positions) to the loop."""
    path = checkpointer.latest()
    if path is None:
        raise ConfigError(f"resume={run_dir}: no complete checkpoint in checkpoints/; start a new run")
    state = checkpointer.load(path, expect, replay)
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this agent ({str(e).splitlines()[0][:120]})"
        ) from e
    return state
