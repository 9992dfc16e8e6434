"""Bytes written and seconds per checkpoint of a full replay: append-only segments against whole-buffer saves.

    python bench/bench_checkpoint.py [--sizes 100000 1000000] [--every 50000] [--obs state|pixels]

Fills an `NStepReplay` of capacity N with N synthetic steps (500-step episodes), then takes three
checkpoints through `common.checkpoint.Checkpointer` (keep=2, every file fsync'd), `--every` new steps apart,
each twice: once as today's layout did (the whole filled ring rewritten: `replay.save` without a segment
store) and once as segments (only the steps added since the last checkpoint are written; the rest are hard
links). `--every 50000` is DrQ-v2's default interval (`checkpoint.every_frames=100000` at action repeat 2).
Bytes written are the sizes of the files a checkpoint created (new inodes; a hard link writes no data).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from common.buffers import NStepReplay  # noqa: E402
from common.checkpoint import Checkpointer  # noqa: E402
from common.envs.base import EnvSpec  # noqa: E402

EPISODE = 500


def spec(obs: str) -> EnvSpec:
    if obs == "pixels":  # DrQ-v2: 3x84x84 frames stacked 3, action dim 6
        return EnvSpec((9, 84, 84), np.dtype(np.uint8), (3, 84, 84), 3, (6,), 2, EPISODE, True)
    return EnvSpec((17,), np.dtype(np.float32), (17,), 1, (6,), 1, EPISODE, False)  # HalfCheetah-sized


class WholeBuffer:
    """Today's checkpoint of a replay: `save` rewrites the whole filled ring (no segment store)."""

    def __init__(self, replay: NStepReplay) -> None:
        self.replay = replay

    def save(self, directory: pathlib.Path) -> None:
        store, self.replay.segment_store = self.replay.segment_store, None
        try:
            self.replay.save(directory)
        finally:
            self.replay.segment_store = store

    def load(self, directory: pathlib.Path) -> None:
        self.replay.load(directory)


def add_steps(replay: NStepReplay, n: int, rng: np.random.Generator) -> None:
    shape, step = replay.spec.obs_shape, replay._total
    obs = rng.integers(0, 255, shape).astype(replay.spec.obs_dtype)
    action = np.zeros(replay.spec.action_shape, np.float32)
    for _ in range(n):
        if step % EPISODE == 0:
            replay.add_first(obs)
        else:
            replay.add(action, 1.0, obs, False, step % EPISODE == EPISODE - 1)
        step += 1


def inodes(root: pathlib.Path) -> dict[int, int]:
    """inode -> size of every file under `root`."""
    return {p.stat().st_ino: p.stat().st_size for p in root.rglob("*") if p.is_file()}


def timed_save(checkpointer: Checkpointer, frame: int, saved: object) -> dict:
    before = inodes(checkpointer.dir) if checkpointer.dir.exists() else {}
    t0 = time.perf_counter()
    checkpointer.save(frame, {}, {}, saved)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    after = inodes(checkpointer.dir)
    written = sum(size for ino, size in after.items() if ino not in before)
    return {"seconds": round(seconds, 3), "bytes_written": written, "bytes_on_disk": sum(after.values())}


def measure(size: int, every: int, obs: str, root: pathlib.Path) -> dict:
    rng = np.random.default_rng(0)
    replay = NStepReplay(spec(obs), size, nstep=3, discount=0.99, seed=0)
    add_steps(replay, size, rng)
    whole = Checkpointer(root / f"whole_{size}", keep=2)
    segments = Checkpointer(root / f"segments_{size}", keep=2)
    rows: dict[str, list[dict]] = {"whole": [], "segments": []}
    for i in range(3):
        if i:
            add_steps(replay, every, rng)
        frame = replay._total
        rows["whole"].append(timed_save(whole, frame, WholeBuffer(replay)))
        rows["segments"].append(timed_save(segments, frame, replay))
    check = NStepReplay(spec(obs), size, nstep=3, discount=0.99, seed=1)
    latest = segments.latest()
    assert latest is not None
    segments.load(latest, {}, check)  # the segments restore the identical ring
    assert all(np.array_equal(getattr(check, a), getattr(replay, a)) for a in ("_frame", "_end", "_reward"))
    later = {k: v[1:] for k, v in rows.items()}  # after the first: what a running job pays each time
    return {
        "transitions": size,
        "every": every,
        "bytes_per_transition": replay.nbytes // size,
        "checkpoints": rows,
        "later_checkpoint_mean": {
            k: {
                "bytes_written": int(np.mean([r["bytes_written"] for r in v])),
                "seconds": round(float(np.mean([r["seconds"] for r in v])), 3),
            }
            for k, v in later.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--every", type=int, default=50_000)
    parser.add_argument("--obs", choices=["state", "pixels"], default="state")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = [measure(n, args.every, args.obs, pathlib.Path(tmp)) for n in args.sizes]
    print(json.dumps({"obs": args.obs, "results": results}, indent=1))


if __name__ == "__main__":
    main()
