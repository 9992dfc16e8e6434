"""Atomic checkpoints in `<run_dir>/checkpoints/`, loaded without unpickling arbitrary objects.

Layout: `frame_<N>/` holds `state.pt` (tensors, numbers, strings, lists and dicts only: agent, optimizers,
RNG states, counters, logger positions), `meta.json` (who wrote it) and `replay/` (plain .npy files).
The file `latest` names the newest complete checkpoint; it is replaced atomically after the directory
is complete, so a run killed mid-save resumes from the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from common.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from common.agent import Policy

FORMAT = "rlrepro-checkpoint-v1"


class SavesToDirectory(Protocol):
    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpointer:
    def __init__(self, run_dir: Path, keep: int) -> None:
        self.dir = run_dir / "checkpoints"
        self.keep = max(1, keep)

    def save(
        self, frame: int, state: Mapping[str, Any], meta: Mapping[str, Any], replay: SavesToDirectory | None
    ) -> Path:
        """Write `state` (`state.pt`), `meta` (`meta.json`) and `replay` as the checkpoint of `frame`, then
        point `latest` at it and keep only the newest `keep`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.dir / f"frame_{frame:010d}"
        tmp = self.dir / f".tmp_frame_{frame:010d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        torch.save(dict(state), tmp / "state.pt")
        if replay is not None:
            replay.save(tmp / "replay")
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "frame": frame, **meta}, indent=1))
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        pointer = self.dir / ".latest.tmp"
        pointer.write_text(final.name)
        os.replace(pointer, self.dir / "latest")
        _fsync_dir(self.dir)
        self._prune()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.dir.glob("frame_*") if p.is_dir())
        for old in done[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

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
