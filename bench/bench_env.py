"""Throughput of `common.envs.make_env` against the raw dm_control env it wraps.

For each task, in state mode: raw `env.step` with random actions vs the wrapper at action_repeat 2, both in
frames (physics control steps) per second; in pixel mode (84x84, default render settings): raw
`2 x env.step + physics.render` vs the wrapper at action_repeat 2 with frame_stack 3, also in frames/s.
Resets are included. Raw and wrapped runs alternate in `--rounds` slices so that load from other processes
hits both alike. Prints one JSON object.

    python -m bench.bench_env --seconds 5 --tasks cheetah_run,dog_run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from common.envs import make_env  # first: selects the GL backend before dm_control is imported
from common.runtime import cpu_pressure

ACTION_REPEAT = 2
IMAGE_SIZE = 84
FRAME_STACK = 3
CHUNK = 16  # loop iterations between clock reads


def split_task(name: str) -> tuple[str, str]:
    from dm_control import suite

    for domain, task in suite.ALL_TASKS:
        if f"{domain}_{task}" == name:
            return domain, task
    raise SystemExit(f"error: unknown DMC task {name!r} (expected e.g. cheetah_run)")


def raw_loop(env: Any, pool: np.ndarray, pixels: bool, camera: int) -> Callable[[], int]:
    """One raw iteration: `ACTION_REPEAT` env steps (+ one render in pixel mode); returns frames done."""
    state = {"i": 0}
    physics = env.physics

    def run() -> int:
        action = pool[state["i"] % len(pool)]
        state["i"] += 1
        frames = 0
        for _ in range(ACTION_REPEAT):
            time_step = env.step(action)
            frames += 1
            if time_step.last():
                env.reset()
                break
        if pixels:
            physics.render(IMAGE_SIZE, IMAGE_SIZE, camera_id=camera)
        return frames

    return run


def wrapped_loop(env: Any, pool: np.ndarray) -> Callable[[], int]:
    """One wrapped iteration: one agent step, `ACTION_REPEAT` frames (exact: DMC episodes have 1000)."""
    state = {"i": 0}

    def run() -> int:
        step = env.step(pool[state["i"] % len(pool)])
        state["i"] += 1
        if step.done:
            env.reset()
        return ACTION_REPEAT

    return run


def timed(run: Callable[[], int], seconds: float) -> tuple[int, float]:
    frames = 0
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        for _ in range(CHUNK):
            frames += run()
        now = time.perf_counter()
    return frames, now - start


def compare(
    raw: Callable[[], int], wrapped: Callable[[], int], seconds: float, rounds: int
) -> dict[str, Any]:
    for run in (raw, wrapped):  # warm-up: caches, first render (GL context), branch predictors
        timed(run, min(1.0, seconds / 5))
    totals = {"raw": [0, 0.0], "wrapped": [0, 0.0]}
    for _ in range(rounds):
        for key, run in (("raw", raw), ("wrapped", wrapped)):
            frames, elapsed = timed(run, seconds / rounds)
            totals[key][0] += frames
            totals[key][1] += elapsed
    raw_fps = totals["raw"][0] / totals["raw"][1]
    wrapped_fps = totals["wrapped"][0] / totals["wrapped"][1]
    return {
        "raw_frames_per_s": round(raw_fps, 1),
        "wrapped_frames_per_s": round(wrapped_fps, 1),
        "ratio": round(wrapped_fps / raw_fps, 3),
    }


def bench_task(name: str, mode: str, seconds: float, rounds: int) -> dict[str, Any]:
    from dm_control import suite

    domain, task = split_task(name)
    camera = 2 if domain == "quadruped" else 0
    pixels = mode == "pixels"
    cfg = OmegaConf.create(
        dict(name=name, suite="dmc", domain=domain, task=task, camera=camera, max_episode_frames=None)
    )
    wrapped = make_env(
        cfg,
        pixels=pixels,
        action_repeat=ACTION_REPEAT,
        frame_stack=FRAME_STACK if pixels else 1,
        image_size=IMAGE_SIZE,
        seed=0,
    )
    raw = suite.load(domain, task, task_kwargs={"random": 0})
    try:
        pool = np.random.default_rng(0).uniform(-1, 1, (1024, *wrapped.spec.action_shape)).astype(np.float32)
        raw.reset()
        wrapped.reset()
        return compare(raw_loop(raw, pool, pixels, camera), wrapped_loop(wrapped, pool), seconds, rounds)
    finally:
        wrapped.close()
        raw.physics.free()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement (raw or wrapped)")
    parser.add_argument("--tasks", default="cheetah_run,dog_run", help="comma-separated DMC tasks")
    parser.add_argument("--modes", default="state,pixels", help="comma-separated: state, pixels")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating raw/wrapped slices per measurement"
    )
    args = parser.parse_args()

    pressure_before = cpu_pressure()
    results: dict[str, dict[str, Any]] = {}
    for name in args.tasks.split(","):
        results[name] = {}
        for mode in args.modes.split(","):
            results[name][mode] = bench_task(name, mode, args.seconds, args.rounds)
    report = {
        "bench": "env",
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "action_repeat": ACTION_REPEAT,
            "pixels": {
                "image_size": IMAGE_SIZE,
                "frame_stack": FRAME_STACK,
                "render": "default (not fast_render)",
            },
            "unit": "frames (physics control steps) per second, resets included",
        },
        "results": results,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "mujoco": version("mujoco"),
            "dm_control": version("dm_control"),
            "numpy": np.__version__,
            "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
            "cpu_pressure_some_avg10": {"before": pressure_before, "after": cpu_pressure()},
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
