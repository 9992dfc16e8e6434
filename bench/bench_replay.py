"""Memory and sampling speed of NStepReplay; prints one JSON object.

    python bench/bench_replay.py [--steps 100000] [--batch 256] [--iters 200]

Memory compares bytes per stored transition with DrQ-v2's layout (9x84x84 uint8 stacked obs + float32 action,
reward and discount per step). Speed is measured after filling the buffer with synthetic 500-step episodes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from common.buffers import NStepReplay  # noqa: E402
from common.envs.base import EnvSpec  # noqa: E402

EPISODE = 500


def pixel_spec(action_dim: int) -> EnvSpec:
    return EnvSpec((9, 84, 84), np.dtype(np.uint8), (3, 84, 84), 3, (action_dim,), 2, EPISODE, True)


def state_spec(dim: int, action_dim: int) -> EnvSpec:
    return EnvSpec((dim,), np.dtype(np.float32), (dim,), 1, (action_dim,), 2, EPISODE, False)


def resident_mb() -> float:
    return int(pathlib.Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def memory(action_dim: int, capacity: int = 1_000_000) -> dict:
    before = resident_mb()
    buf = NStepReplay(pixel_spec(action_dim), capacity=capacity, nstep=3, discount=0.99, seed=0)
    per_step = buf.nbytes / capacity
    stacked = 9 * 84 * 84 + 4 * action_dim + 4 + 4
    return {
        "action_dim": action_dim,
        "bytes_per_transition": per_step,
        "drqv2_stacked_bytes_per_transition": stacked,
        "ratio": round(per_step / stacked, 4),
        "gb_per_1m": round(per_step * 1e6 / 1e9, 2),
        "drqv2_gb_per_1m": round(stacked * 1e6 / 1e9, 2),
        "resident_mb_after_allocating_1m_empty": round(resident_mb() - before, 1),
    }


def fill(buf: NStepReplay, steps: int, make_obs, rng: np.random.Generator) -> float:
    """Add `steps` time steps in 500-step episodes; returns adds per second."""
    pool = [make_obs(rng) for _ in range(16)]
    action = np.zeros(buf.spec.action_shape, np.float32)
    start = time.perf_counter()
    for i in range(steps):
        obs = pool[i % len(pool)]
        if i % (EPISODE + 1) == 0:
            buf.add_first(obs)
        else:
            buf.add(action, float(i % 7), obs, False, i % (EPISODE + 1) == EPISODE)
    return steps / (time.perf_counter() - start)


def timing(buf: NStepReplay, batch: int, iters: int) -> dict:
    for _ in range(5):
        buf.sample(batch)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        buf.sample(batch)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {
        "batch": batch,
        "mean_ms": round(float(ms.mean()), 3),
        "p50_ms": round(float(np.median(ms)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "transitions_per_s": round(batch / float(ms.mean()) * 1e3),
    }


def stacked_gather(steps: int, batch: int, iters: int, rng: np.random.Generator) -> dict:
    """Lower bound for DrQ-v2's layout in a numpy ring: gather obs and next_obs already stacked."""
    obs = np.zeros((steps, 9, 84, 84), np.uint8)
    obs[:] = rng.integers(0, 256, (1, 9, 84, 84), dtype=np.uint8)
    times = []
    for _ in range(iters + 5):
        start = time.perf_counter()
        t = rng.integers(0, steps - 3, size=batch)
        obs[t], obs[t + 3]
        times.append(time.perf_counter() - start)
    ms = np.array(times[5:]) * 1e3
    return {"steps": steps, "batch": batch, "mean_ms": round(float(ms.mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    out: dict = {"memory": [memory(6), memory(38)]}

    pixels = NStepReplay(pixel_spec(6), capacity=args.steps, nstep=3, discount=0.99, seed=0)
    adds = fill(pixels, args.steps, lambda r: r.integers(0, 256, (9, 84, 84), dtype=np.uint8), rng)
    out["pixels"] = {
        "stored_steps": len(pixels),
        "transitions": pixels.num_transitions(),
        "adds_per_s": round(adds),
        "sample": timing(pixels, args.batch, args.iters),
    }
    del pixels

    states = NStepReplay(state_spec(223, 38), capacity=args.steps, nstep=3, discount=0.99, seed=0)
    adds = fill(states, args.steps, lambda r: r.normal(size=223).astype(np.float32), rng)
    out["states"] = {
        "dim": 223,
        "stored_steps": len(states),
        "adds_per_s": round(adds),
        "sample": timing(states, args.batch, args.iters),
    }
    out["drqv2_layout_numpy_gather_reference"] = stacked_gather(20_000, args.batch, args.iters, rng)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
