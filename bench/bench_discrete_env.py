"""Throughput of the discrete-action envs of `common.envs.make_env` against the raw simulators they wrap.

Agent steps per second with uniformly random actions, resets included; raw and wrapped runs alternate in
`--rounds` slices so that load from other processes hits both alike. Prints one JSON object.

- Atari (`env=atari` defaults: frame skip 4, sticky actions 0.25, no-op starts, frame stack 4, training
  mode: life loss and reward clipping). Two raw peers on `ale_py.ALEInterface`: `raw_emulator` does only
  the emulation (4 `act` calls with ALE's own sticky actions, one grayscale screen); `raw_preprocessed`
  (the fair peer, and the `ratio` of the issue's 0.9 bar) also does the preprocessing with plain numpy, as
  the wrapper does: max-pool of the last two grayscale frames, the same area resize to 84x84, a 4-frame
  stack, life-loss check and sign of the reward. `ratio_to_emulator` shows what the preprocessing costs.
- MiniGrid: raw `FullyObsWrapper(gymnasium.make(id)).step` plus the channels-first uint8 copy, against
  `env=minigrid`.
- MinAtar: raw `minatar.Environment.act` plus `state()` as channels-first uint8, against `env=minatar`
  (both with MinAtar's sticky actions 0.1).

    python -m bench.bench_discrete_env --seconds 5 --games pong,breakout
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

from common.envs import make_env
from common.envs.atari import AreaResize
from common.registry import CONF_DIR
from common.runtime import cpu_pressure

CHUNK = 16  # loop iterations between clock reads
FRAME_SKIP, STACK, SIZE = 4, 4, 84


def timed(run: Callable[[], None], seconds: float) -> tuple[int, float]:
    steps = 0
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        for _ in range(CHUNK):
            run()
        steps += CHUNK
        now = time.perf_counter()
    return steps, now - start


def compare(loops: dict[str, Callable[[], None]], seconds: float, rounds: int) -> dict[str, Any]:
    """Steps/s of each loop, measured in alternating slices; ratios of `wrapped` to each raw peer."""
    for run in loops.values():  # warm-up
        timed(run, min(1.0, seconds / 5))
    totals = {key: [0, 0.0] for key in loops}
    for _ in range(rounds):
        for key, run in loops.items():
            steps, elapsed = timed(run, seconds / rounds)
            totals[key][0] += steps
            totals[key][1] += elapsed
    rates = {key: steps / elapsed for key, (steps, elapsed) in totals.items()}
    out: dict[str, Any] = {f"{key}_steps_per_s": round(rate, 1) for key, rate in rates.items()}
    raws = [key for key in loops if key != "wrapped"]
    out["ratio"] = round(rates["wrapped"] / rates[raws[-1]], 3)  # the fair peer is listed last
    if len(raws) > 1:
        out["ratio_to_emulator"] = round(rates["wrapped"] / rates[raws[0]], 3)
    return out


def wrapped_loop(env: Any, actions: np.ndarray) -> Callable[[], None]:
    state = {"i": 0}
    env.reset()

    def run() -> None:
        ts = env.step(actions[state["i"] % len(actions)])
        state["i"] += 1
        if ts.done:
            env.reset()

    return run


# ---- Atari


def atari_raw(game: str, preprocess: bool, seed: int) -> Callable[[], None]:
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.25)
    ale.loadROM(roms.get_rom_path(game))
    actions = ale.getMinimalActionSet()
    pool = np.random.default_rng(seed).integers(0, len(actions), 4096)
    rng = np.random.default_rng(seed + 1)
    h, w = ale.getScreenDims()
    screens = np.zeros((2, h, w), np.uint8)
    resize = AreaResize((h, w), (SIZE, SIZE))
    stack = np.zeros((STACK, SIZE, SIZE), np.uint8)
    state = {"i": 0, "lives": ale.lives()}

    def new_game() -> None:
        ale.reset_game()
        for _ in range(int(rng.integers(1, 31))):
            ale.act(actions[0])
        ale.getScreenGrayscale(screens[1])
        stack[:] = resize(screens[1])
        state["lives"] = ale.lives()

    def run() -> None:
        action = actions[pool[state["i"] % len(pool)]]
        state["i"] += 1
        reward = 0.0
        if not preprocess:
            for _ in range(FRAME_SKIP):
                reward += ale.act(action)
            ale.getScreenGrayscale(screens[1])
            if ale.game_over():
                ale.reset_game()
            return
        life_lost = False
        for i in range(FRAME_SKIP):
            reward += ale.act(action)
            if ale.game_over() or ale.lives() < state["lives"]:
                life_lost = True
                break
            if i >= FRAME_SKIP - 2:
                ale.getScreenGrayscale(screens[i - FRAME_SKIP + 2])
        frame = resize(np.maximum(screens[0], screens[1], out=screens[0]))
        stack[:-1] = stack[1:]  # the observation is `stack` itself: no copy handed out
        stack[-1] = frame
        _ = np.sign(reward)
        if ale.game_over():
            new_game()
        elif life_lost:
            state["lives"] = ale.lives()
            stack[:] = frame

    if preprocess:
        new_game()
    return run


def bench_atari(game: str, seconds: float, rounds: int) -> dict[str, Any]:
    cfg = OmegaConf.load(CONF_DIR / "env" / "atari.yaml")
    cfg.game = game
    env = make_env(cfg, pixels=True, action_repeat=FRAME_SKIP, frame_stack=STACK, image_size=SIZE, seed=0)
    actions = np.random.default_rng(0).integers(0, env.spec.num_actions, 4096)  # type: ignore[attr-defined]
    loops = {
        "raw_emulator": atari_raw(game, preprocess=False, seed=0),
        "raw_preprocessed": atari_raw(game, preprocess=True, seed=0),
        "wrapped": wrapped_loop(env, actions),
    }
    result = compare(loops, seconds, rounds)
    env.close()
    return result


# ---- MiniGrid


def bench_minigrid(env_id: str, seconds: float, rounds: int) -> dict[str, Any]:
    import gymnasium
    from minigrid.wrappers import FullyObsWrapper

    raw = FullyObsWrapper(gymnasium.make(env_id))
    raw.reset(seed=0)
    cfg = OmegaConf.load(CONF_DIR / "env" / "minigrid.yaml")
    cfg.id = env_id
    env = make_env(cfg, pixels=False, action_repeat=1, frame_stack=1, image_size=SIZE, seed=0)
    actions = np.random.default_rng(0).integers(0, 7, 4096)
    state = {"i": 0}

    def raw_run() -> None:
        obs, _, terminated, truncated, _ = raw.step(int(actions[state["i"] % len(actions)]))
        state["i"] += 1
        _ = np.ascontiguousarray(obs["image"].transpose(2, 1, 0), dtype=np.uint8)
        if terminated or truncated:
            raw.reset()

    result = compare({"raw": raw_run, "wrapped": wrapped_loop(env, actions)}, seconds, rounds)
    env.close()
    raw.close()
    return result


# ---- MinAtar


def bench_minatar(game: str, seconds: float, rounds: int) -> dict[str, Any]:
    from minatar import Environment

    raw = Environment(game, sticky_action_prob=0.1)
    raw.seed(0)
    raw.reset()
    cfg = OmegaConf.load(CONF_DIR / "env" / "minatar.yaml")
    cfg.game = game
    env = make_env(cfg, pixels=False, action_repeat=1, frame_stack=1, image_size=SIZE, seed=0)
    actions = np.random.default_rng(0).integers(0, raw.num_actions(), 4096)
    state = {"i": 0}

    def raw_run() -> None:
        _, terminated = raw.act(int(actions[state["i"] % len(actions)]))
        state["i"] += 1
        _ = np.ascontiguousarray(raw.state().transpose(2, 0, 1), dtype=np.uint8)
        if terminated:
            raw.reset()

    result = compare({"raw": raw_run, "wrapped": wrapped_loop(env, actions)}, seconds, rounds)
    env.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time per loop and measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating slices per measurement")
    parser.add_argument("--games", default="pong,breakout", help="comma-separated ALE ROM ids")
    parser.add_argument("--minigrid", default="MiniGrid-DoorKey-8x8-v0", help="comma-separated MiniGrid ids")
    parser.add_argument("--minatar", default="breakout,seaquest", help="comma-separated MinAtar games")
    args = parser.parse_args()

    pressure_before = cpu_pressure()
    results: dict[str, dict[str, Any]] = {"atari": {}, "minigrid": {}, "minatar": {}}
    for game in filter(None, args.games.split(",")):
        results["atari"][game] = bench_atari(game, args.seconds, args.rounds)
    for env_id in filter(None, args.minigrid.split(",")):
        results["minigrid"][env_id] = bench_minigrid(env_id, args.seconds, args.rounds)
    for game in filter(None, args.minatar.split(",")):
        results["minatar"][game] = bench_minatar(game, args.seconds, args.rounds)
    report = {
        "bench": "discrete_env",
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "atari": {"frame_skip": FRAME_SKIP, "frame_stack": STACK, "image_size": SIZE},
            "unit": "agent steps per second (Atari: 4 emulator frames each), resets included",
            "fair_peer": "raw_preprocessed (Atari), raw (MiniGrid, MinAtar): `ratio` is wrapped / fair peer",
        },
        "results": results,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "ale_py": version("ale-py"),
            "minigrid": version("minigrid"),
            "minatar": version("minatar"),
            "numpy": np.__version__,
            "cpu_pressure_some_avg10": {"before": pressure_before, "after": cpu_pressure()},
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
