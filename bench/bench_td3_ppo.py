"""TD3 updates/s and PPO env steps/s with learning at HalfCheetah-v5 sizes, against Stable-Baselines3.

Run from the repository root (Stable-Baselines3 is the `bench` extra: `pip install -e .[bench]`):

    python bench/bench_td3_ppo.py --rounds 3

Prints one JSON object. Both implementations run in this process on one torch thread, timed alternately
(`--rounds` times, which one goes first alternating) so that both see the same load; each figure is the
median over rounds, and each ratio (ours / SB3) the median of the per-round ratios.

- TD3 (obs 17, action 6, 256x256 MLPs, batch 256, policy delay 2, the settings of conf/paper/td3.yaml): a
  replay of `--replay` random transitions, then `--updates` timed gradient updates, each on a freshly
  sampled batch. Ours: `NStepReplay.sample` + `TD3Agent.update`; SB3: `TD3.train(gradient_steps=...)` with
  `net_arch=[256, 256]` (which samples its replay the same way).
- PPO (conf/paper/ppo.yaml: 64x64 tanh, 2048-step rollouts of one HalfCheetah-v5 env, 10 epochs of 32
  minibatches, observation and reward normalisation, clipped value loss): `--rollouts` full
  collect-and-learn iterations, timed as env steps per second. Ours: the per-step work of
  `common.onpolicy.train_onpolicy` (`explore`, `Env.step`, `observe`, `learn`) without its logging and
  checkpoints; SB3: `PPO.learn` on `VecNormalize(DummyVecEnv([HalfCheetah-v5]))` with `clip_range_vf=0.2`,
  `n_steps=2048`, `batch_size=64`, `n_epochs=10`, without its logger output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from common.buffers import NStepReplay
from common.envs import make_env
from common.envs.base import EnvSpec
from common.runtime import cpu_name, cpu_pressure
from papers.ppo.agent import PPOAgent
from papers.td3.agent import TD3Agent

ROOT = Path(__file__).resolve().parent.parent
OBS, ACT = 17, 6  # HalfCheetah-v5


def paper_cfg(name: str) -> DictConfig:
    """`conf/paper/<name>.yaml` under a `paper` root, so its `${paper.train...}` interpolations resolve."""
    return OmegaConf.create({"paper": OmegaConf.load(ROOT / "conf" / "paper" / f"{name}.yaml")}).paper


def halfcheetah(seed: int) -> Any:
    env_cfg = OmegaConf.load(ROOT / "conf" / "env" / "halfcheetah.yaml")
    return make_env(env_cfg, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=seed)


# ------------------------------------------------------------------------------------------------- TD3


def ours_td3(replay_size: int, updates: int) -> Callable[[], float]:
    cfg = paper_cfg("td3")
    spec = EnvSpec((OBS,), np.dtype(np.float32), (OBS,), 1, (ACT,), 1, 1000, False)
    agent = TD3Agent(cfg.agent, spec, torch.device("cpu"), "fp32")
    replay = NStepReplay(spec, replay_size, 1, float(cfg.buffer.discount), seed=0)
    rng = np.random.default_rng(0)
    replay.add_first(rng.normal(size=OBS).astype(np.float32))
    for i in range(replay_size - 1):
        done = (i + 1) % 1000 == 0
        obs = rng.normal(size=OBS).astype(np.float32)
        replay.add(rng.uniform(-1, 1, ACT).astype(np.float32), float(rng.normal()), obs, False, done)
        if done:
            replay.add_first(obs)
    batch_size = int(cfg.buffer.batch_size)

    def run() -> float:
        start = time.perf_counter()
        for i in range(updates):
            agent.update(replay.sample(batch_size), step=i)
        return updates / (time.perf_counter() - start)

    run()  # warm up (allocator, Adam state)
    return run


def sb3_td3(replay_size: int, updates: int) -> Callable[[], float]:
    import gymnasium
    from stable_baselines3 import TD3

    cfg = paper_cfg("td3")
    a = cfg.agent
    env = gymnasium.make("HalfCheetah-v5")
    model = TD3(
        "MlpPolicy",
        env,
        learning_rate=float(a.lr),
        buffer_size=replay_size,
        batch_size=int(cfg.buffer.batch_size),
        tau=float(a.tau),
        gamma=float(cfg.buffer.discount),
        policy_delay=int(a.policy_delay),
        target_policy_noise=float(a.policy_noise),
        target_noise_clip=float(a.noise_clip),
        policy_kwargs={"net_arch": [int(a.hidden_dim)] * 2},
        device="cpu",
        seed=0,
    )
    rng = np.random.default_rng(0)
    for i in range(replay_size):
        model.replay_buffer.add(
            rng.normal(size=(1, OBS)),
            rng.normal(size=(1, OBS)),
            rng.uniform(-1, 1, (1, ACT)),
            rng.normal(size=1),
            np.array([(i + 1) % 1000 == 0]),
            [{}],
        )
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))  # no output

    def run() -> float:
        start = time.perf_counter()
        model.train(gradient_steps=updates, batch_size=int(cfg.buffer.batch_size))
        return updates / (time.perf_counter() - start)

    run()
    return run


# ------------------------------------------------------------------------------------------------- PPO


def ours_ppo(rollouts: int) -> Callable[[], float]:
    cfg = paper_cfg("ppo")
    env = halfcheetah(seed=0)
    agent = PPOAgent(cfg.agent, env.spec, torch.device("cpu"), "fp32")
    steps = int(cfg.train.rollout_steps)
    state = {"ts": env.reset(), "step": 0}

    def run() -> float:
        start = time.perf_counter()
        for _ in range(rollouts):
            for _ in range(steps):
                action = agent.explore(state["ts"].obs[None], state["step"])
                ts = env.step(action[0])
                agent.observe(np.array([ts.reward]), np.array([ts.terminated]), np.array([ts.truncated]),
                              ts.obs[None])  # fmt: skip
                state["step"] += 1
                state["ts"] = env.reset() if ts.done else ts
            agent.learn(state["ts"].obs[None], state["step"])
        return rollouts * steps / (time.perf_counter() - start)

    return run


def sb3_ppo(rollouts: int) -> Callable[[], float]:
    import gymnasium
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    cfg = paper_cfg("ppo")
    a, steps = cfg.agent, int(cfg.train.rollout_steps)
    env = VecNormalize(
        DummyVecEnv([lambda: gymnasium.make("HalfCheetah-v5")]),
        gamma=float(a.gamma),
        clip_obs=float(a.obs_clip),
        clip_reward=float(a.reward_clip),
    )
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=float(a.lr),
        n_steps=steps,
        batch_size=steps // int(a.minibatches),
        n_epochs=int(a.epochs),
        gamma=float(a.gamma),
        gae_lambda=float(a.gae_lambda),
        clip_range=float(a.clip_coef),
        clip_range_vf=float(a.clip_coef),
        ent_coef=float(a.ent_coef),
        vf_coef=float(a.vf_coef),
        max_grad_norm=float(a.max_grad_norm),
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh},
        device="cpu",
        seed=0,
    )
    model.set_logger(configure(None, []))

    def run() -> float:
        start = time.perf_counter()
        model.learn(total_timesteps=rollouts * steps, reset_num_timesteps=False)
        return rollouts * steps / (time.perf_counter() - start)

    return run


# ------------------------------------------------------------------------------------------------ main


def alternate(ours: Callable[[], float], peer: Callable[[], float] | None, rounds: int) -> dict[str, Any]:
    if peer is None:  # no Stable-Baselines3: our figures alone
        mine = [ours() for _ in range(rounds)]
        return {"ours": statistics.median(mine), "rounds_ours": mine}
    mine, theirs = [], []
    for r in range(rounds):
        if r % 2 == 0:
            mine.append(ours())
            theirs.append(peer())
        else:
            theirs.append(peer())
            mine.append(ours())
    return {
        "ours": statistics.median(mine),
        "sb3": statistics.median(theirs),
        "ratio": statistics.median(m / t for m, t in zip(mine, theirs, strict=True)),
        "rounds_ours": mine,
        "rounds_sb3": theirs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=300, help="TD3 updates timed per round")
    parser.add_argument("--replay", type=int, default=20000, help="random transitions in each TD3 replay")
    parser.add_argument("--rollouts", type=int, default=2, help="PPO 2048-step rollouts timed per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import stable_baselines3

        peer = stable_baselines3.__version__
    except ImportError:
        peer = None
        print(
            "stable-baselines3 is not installed (pip install -e '.[bench]'): timing ours alone",
            file=sys.stderr,
        )

    out: dict[str, Any] = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "stable_baselines3": peer,
        "threads": torch.get_num_threads(),
        "cpu_pressure_start": cpu_pressure(),
    }
    out["td3_updates_per_s"] = alternate(
        ours_td3(args.replay, args.updates), sb3_td3(args.replay, args.updates) if peer else None, args.rounds
    )
    out["ppo_env_steps_per_s"] = alternate(
        ours_ppo(args.rollouts), sb3_ppo(args.rollouts) if peer else None, args.rounds
    )
    out["cpu_pressure_end"] = cpu_pressure()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
