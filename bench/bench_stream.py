"""Stream AC(λ) end-to-end throughput: env steps/s with one streaming update per step (no replay).

Run from the repository root:

    python bench/bench_stream.py --steps 3000 --threads 1

Prints one JSON object. Per task (dog_run from states, Gymnasium Hopper-v5): the paper's agent
(`conf/paper/stream_ac.yaml`), the time feature, `--warmup` untimed steps, then `--steps` timed steps of
act → env.step → learn, resets included; `env_only_steps_per_s` times the same env with random actions, so
the ratio shows the agent's share. Wall time counts; `cpu_s` (process CPU time) helps on a shared host.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from common.envs import make_env
from common.envs.time_feature import TimeFeature
from common.registry import CONF_DIR
from common.runtime import cpu_name, cpu_pressure
from papers.stream_ac.agent import StreamACAgent

TASKS = {
    "dog_run": {"name": "dog_run", "suite": "dmc", "domain": "dog", "task": "run"},
    "hopper": {"name": "hopper", "suite": "gym", "id": "Hopper-v5"},
}


def _env(env_cfg: dict):
    return TimeFeature(make_env(env_cfg, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=0))


def time_stream(env_cfg: dict, warmup: int, steps: int) -> dict[str, float | int]:
    torch.manual_seed(0)
    env = _env(env_cfg)
    cfg = OmegaConf.load(CONF_DIR / "paper" / "stream_ac.yaml").agent
    cfg.time_feature = True
    agent = StreamACAgent(cfg, env.spec, torch.device("cpu"), "fp32")
    ts = env.reset()

    def run(n: int) -> None:
        nonlocal ts
        for t in range(n):
            with torch.no_grad():
                action = agent.act(ts.obs, t, eval_mode=False)
            obs, ts = ts.obs, env.step(action)
            agent.learn(obs, action, ts.reward, ts.obs, ts.terminated, ts.truncated)
            if ts.done:
                ts = env.reset()

    run(warmup)
    wall, cpu = time.perf_counter(), time.process_time()
    run(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    rng = np.random.default_rng(0)
    ts = env.reset()
    env_wall = time.perf_counter()
    for _ in range(steps):
        ts = env.step(rng.uniform(-1, 1, env.spec.action_shape).astype(np.float32))
        if ts.done:
            ts = env.reset()
    env_wall = time.perf_counter() - env_wall
    env.close()
    return {
        "obs_dim": env.spec.obs_shape[0],
        "action_dim": env.spec.action_shape[0],
        "steps": steps,
        "steps_per_s": round(steps / wall, 1),
        "cpu_s": round(cpu, 2),
        "env_only_steps_per_s": round(steps / env_wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pressure = cpu_pressure()
    result = {
        "bench": "stream_ac_end_to_end",
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": cpu_name(),
        "cpu_pressure_avg10": pressure,
        "tasks": {name: time_stream(TASKS[name], args.warmup, args.steps) for name in args.tasks},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
