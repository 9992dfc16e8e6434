"""The five datasets of one online DQN run (Sec. 4 "Datasets"), as kschweig/OfflineRL @478661f
source/train_online.py makes them, and their TQ and SACo.

1. Online: a DQN (learners/dqn.py, the paper's behavioural policy) learns for `num_frames` env steps with a
   replay of `capacity` rows, batch 32, lr 1e-4, an update every step once more than 32 steps were taken,
   epsilon from 1 to 0.01 over the first 1000 updates; every `eval_every_frames` steps 10 greedy episodes
   are scored. Every transition it sees is kept: the **replay** dataset ("er").
2. **expert** ("fully"): `num_frames` steps of the final policy, greedy (eval_eps 0).
3. **noisy**: `num_frames` steps of the final policy with eval_eps = 0.2.
4. **random**: `num_frames` steps of uniform actions (numpy Generator seeded with the run's seed).
5. **mixed**: the first 80 % of the random rows followed by the last 20 % of the expert rows
   (`ReplayBuffer.mix(p_orig=0.8)`).
All collection continues in the training env (upstream resets it at the start of each). The datasets are
stored as Minari datasets ``rlrepro/<env>/dataset-perspective-<type>-s<seed>-v0`` with TQ and SACo in their
sidecar; a later run with the same generation settings reuses them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from common.envs import Env
from common.envs.base import EnvSpec
from common.envs.discrete import DiscreteEnvSpec
from common.errors import ConfigError
from common.loop import build_env
from common.offline.data import OfflineData
from common.offline.minari_io import (
    dataset_id,
    episode_starts,
    load_discrete_dataset,
    read_info,
    write_discrete_dataset,
)
from papers.dataset_perspective import metrics
from papers.dataset_perspective.learners.base import DiscreteBatch, DiscreteLearner
from papers.dataset_perspective.learners.dqn import DQN

TYPES = ("random", "mixed", "replay", "noisy", "expert")
EVAL_SEED = 0  # utils/evaluation.py: env.seed(0..9) at every evaluation -> the same 10 starts each time
Policy = Callable[[np.ndarray], int]


def dataset_name(kind: str, seed: int) -> str:
    return f"dataset-perspective-{kind}-s{seed}"


def generation_key(cfg: DictConfig) -> str:
    """A hash of everything the datasets depend on: a run with an equal key may reuse them."""
    p = cfg.paper
    keep = {
        "env": OmegaConf.to_container(cfg.env, resolve=True),
        "seed": int(cfg.seed),
        "discount": float(p.discount),
        "frames": int(p.train.num_frames),
        "eval": [int(p.train.eval_every_frames), int(p.train.eval_episodes)],
        "capacity": int(p.buffer.capacity),
        "online": OmegaConf.to_container(p.online, resolve=True),
        "agent": OmegaConf.to_container(p.agent, resolve=True),
        "metrics": OmegaConf.to_container(p.metrics, resolve=True),
    }
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ online run


class OnlineReplay:
    """train_online.py `buffer`: a ring of `capacity` rows sampled uniformly without replacement."""

    def __init__(self, obs_dim: int, capacity: int, seed: int) -> None:
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.not_done = np.zeros(capacity, np.float32)
        self.idx, self.size, self.capacity = 0, 0, capacity
        self.rng = np.random.default_rng(seed)

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, done: bool) -> None:
        i = self.idx
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i] = obs, action, reward, next_obs
        self.not_done[i] = 0.0 if done else 1.0
        self.idx, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: torch.device) -> DiscreteBatch:
        ind = self.rng.choice(self.size, size=batch_size, replace=False)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x[ind], device=device)

        zeros = torch.zeros(batch_size, device=device)
        return DiscreteBatch(
            t(self.obs),
            t(self.action),
            t(self.reward),
            t(self.next_obs),
            t(self.not_done),
            torch.zeros(batch_size, dtype=torch.long, device=device),
            zeros,
        )


def evaluate(cfg: DictConfig, policy: Policy, episodes: int) -> float:
    """Mean return of `episodes` episodes from the fixed evaluation starts (`evaluate`)."""
    env = build_env(cfg, EVAL_SEED, evaluation=True)
    try:
        total = 0.0
        for _ in range(episodes):
            ts = env.reset()
            while True:
                ts = env.step(np.asarray(policy(ts.obs)))  # a 0-d integer action (common.envs.discrete)
                if ts.done:
                    total += ts.episode_return
                    break
        return total / episodes
    finally:
        env.close()


def action_count(spec: EnvSpec) -> int:
    """The action count of a discrete env (`loop.validate` admits only discrete suites)."""
    if not isinstance(spec, DiscreteEnvSpec):
        raise ConfigError(
            f"paper=dataset_perspective needs a discrete-action env, got spec {type(spec).__name__}"
        )
    return int(spec.num_actions)


def greedy(agent: DiscreteLearner) -> Policy:
    """The learner's evaluation policy (eval_mode: its `eval_eps`)."""
    return lambda obs: int(agent.act(obs, eval_mode=True))


def rollout(env: Env, policy: Policy, steps: int, desc: str) -> tuple[OfflineData, np.ndarray]:
    """`steps` transitions of `policy` from a reset; returns them and the env's done flags."""
    d = env.spec.obs_shape
    obs, nxt = np.empty((steps, *d), np.float32), np.empty((steps, *d), np.float32)
    actions, rewards = np.empty(steps, np.int64), np.empty(steps, np.float32)
    term, trunc = np.zeros(steps, bool), np.zeros(steps, bool)
    ts = env.reset()
    for i in tqdm(range(steps), desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0):
        a = policy(ts.obs)
        after = env.step(np.asarray(a))
        obs[i], actions[i], rewards[i], nxt[i] = ts.obs, a, after.reward, after.obs
        term[i], trunc[i] = after.terminated, after.truncated
        ts = env.reset() if after.done else after
    return make_data(obs, actions, rewards, nxt, term, trunc), term | trunc


def make_data(obs, actions, rewards, nxt, term, trunc) -> OfflineData:  # noqa: ANN001
    cut = trunc | (np.arange(len(rewards)) == len(rewards) - 1)
    return OfflineData(obs, actions, rewards, nxt, term, trunc, episode_starts(term, cut))


def rows(data: OfflineData, a: int, b: int) -> OfflineData:
    """Rows a:b as a dataset (row a starts an episode, row b - 1 ends one)."""
    return make_data(
        data.observations[a:b],
        data.actions[a:b],
        data.rewards[a:b],
        data.next_observations[a:b],
        data.terminations[a:b],
        data.truncations[a:b],
    )


def online_run(
    cfg: DictConfig, env: Env, device: torch.device
) -> tuple[DQN, OfflineData, np.ndarray, list[float]]:
    """train_online.py's training loop; returns the agent, the replay dataset, its done flags and the
    evaluation returns."""
    p, o = cfg.paper, cfg.paper.online
    spec = env.spec
    obs_dim, steps = int(np.prod(spec.obs_shape)), int(p.train.num_frames)
    agent_cfg = OmegaConf.merge(p.agent, {"lr": o.lr})  # a new config: the online learning rate
    agent = DQN(agent_cfg, obs_dim, action_count(spec), p.discount, cfg.seed, device)
    buffer = OnlineReplay(obs_dim, int(p.buffer.capacity), cfg.seed)
    obs, nxt = np.empty((steps, obs_dim), np.float32), np.empty((steps, obs_dim), np.float32)
    actions, rewards = np.empty(steps, np.int64), np.empty(steps, np.float32)
    term, trunc = np.zeros(steps, bool), np.zeros(steps, bool)
    returns: list[float] = []
    ts = env.reset()
    bar = tqdm(
        range(steps),
        desc=f"behavioural DQN ({cfg.env.name})",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    for it in bar:
        a = int(agent.act(ts.obs, eval_mode=False))
        after = env.step(np.asarray(a))
        buffer.add(ts.obs.reshape(-1), a, after.reward, after.obs.reshape(-1), after.done)
        obs[it], actions[it], rewards[it], nxt[it] = (
            ts.obs.reshape(-1),
            a,
            after.reward,
            after.obs.reshape(-1),
        )
        term[it], trunc[it] = after.terminated, after.truncated
        ts = env.reset() if after.done else after
        if it > int(o.train_start):  # train_every = 1, once iteration > train_start_iter
            agent.update(buffer.sample(int(o.batch_size), device))
        if (it + 1) % int(p.train.eval_every_frames) == 0:
            returns.append(evaluate(cfg, greedy(agent), int(p.train.eval_episodes)))
            bar.set_postfix(eval_return=f"{returns[-1]:.1f}")
    shape = spec.obs_shape
    replay = make_data(obs.reshape(-1, *shape), actions, rewards, nxt.reshape(-1, *shape), term, trunc)
    return agent, replay, term | trunc, returns


# ------------------------------------------------------------------------------------ the five datasets


def collect(
    cfg: DictConfig, device: torch.device
) -> tuple[dict[str, OfflineData], dict[str, np.ndarray], list[float]]:
    """Run the online DQN and collect the five datasets in upstream's order; the env dones of each."""
    p = cfg.paper
    steps = int(p.train.num_frames)
    env = build_env(cfg, cfg.seed)
    try:
        agent, replay, replay_dones, returns = online_run(cfg, env, device)
        expert, expert_dones = rollout(env, greedy(agent), steps, "expert (final policy, greedy)")
        agent.eval_eps = float(p.online.noisy_epsilon)  # "make agent noisy"
        noisy, noisy_dones = rollout(env, greedy(agent), steps, f"noisy (final policy, eps={agent.eval_eps})")
        rng = np.random.default_rng(cfg.seed)
        n = action_count(env.spec)
        random, random_dones = rollout(
            env, lambda obs: int(rng.integers(n)), steps, "random (uniform actions)"
        )
    finally:
        env.close()
    k = int(steps * float(p.online.mixed_random_fraction))  # mix(p_orig=0.8)
    mixed = rows(random, 0, k).concat(rows(expert, k, steps)) if 0 < k < steps else (random if k else expert)
    # Upstream's mix leaves no `done` at the seam: the pieces on either side count as one episode in TQ.
    mixed_dones = np.concatenate([random_dones[:k], expert_dones[k:]])
    data = {"random": random, "mixed": mixed, "replay": replay, "noisy": noisy, "expert": expert}
    dones = {
        "random": random_dones,
        "mixed": mixed_dones,
        "replay": replay_dones,
        "noisy": noisy_dones,
        "expert": expert_dones,
    }
    return data, dones, returns


def measure(
    cfg: DictConfig, data: dict[str, OfflineData], dones: dict[str, np.ndarray], online_returns: list[float]
) -> dict[str, dict[str, Any]]:
    """TQ and SACo of every dataset (metrics.py), with the numbers they come from."""
    m = cfg.paper.metrics
    bins = int(m.saco_bins)
    random_return = float(metrics.episode_returns(data["random"].rewards, dones["random"]).mean())
    online_best = float(max(online_returns))
    if online_best == random_return:
        print(
            f"warning: the online DQN's best evaluation ({online_best:g}) equals the random dataset's mean "
            f"return: TQ and the normalised returns are undefined (NaN); raise paper.train.num_frames",
            file=sys.stderr,
        )
    replay = data["replay"]
    limits = metrics.sa_limits(replay.observations, replay.actions) if m.saco_limits == "replay" else None
    counts = {
        k: metrics.unique_state_actions(d.observations, d.actions, limits, bins) for k, d in data.items()
    }
    out = {}
    for kind, d in data.items():
        rets = metrics.episode_returns(d.rewards, dones[kind])
        mean = float(rets.mean()) if rets.size else float("nan")
        out[kind] = {
            "tq": metrics.trajectory_quality(mean, random_return, online_best),
            "saco": metrics.saco(counts[kind], counts["replay"]),
            "unique_state_actions": counts[kind],
            "mean_return": mean,
            "episodes": int(rets.size),
            "transitions": len(d),
            "random_return": random_return,
            "online_best_return": online_best,
        }
    return out


def stored(cfg: DictConfig) -> dict[str, dict[str, Any] | None]:
    return {k: read_info(cfg.env.name, dataset_name(k, cfg.seed)) for k in TYPES}


def generate_or_load(
    cfg: DictConfig, run_dir: Any, device: torch.device
) -> tuple[dict[str, OfflineData], dict[str, dict[str, Any]]]:
    """This seed's five datasets: reused when stored with this generation key, else generated and written."""
    key, env_name = generation_key(cfg), cfg.env.name
    infos = stored(cfg)
    if all(i is not None and i.get("generation") == key for i in infos.values()):
        data = {k: load_discrete_dataset(env_name, dataset_name(k, cfg.seed)) for k in TYPES}
        return data, {k: infos[k]["measures"] for k in TYPES}  # type: ignore[index]
    data, dones, returns = collect(cfg, device)
    measures = measure(cfg, data, dones, returns)
    num_actions = _num_actions(cfg)
    for kind in TYPES:
        d = data[kind]
        d.metadata.update(
            ref_min_score=measures[kind]["random_return"], ref_max_score=measures[kind]["online_best_return"]
        )
        info = {
            "algorithm": "A Dataset Perspective on Offline RL (rlrepro papers/dataset_perspective)",
            "kind": kind,
            "generation": key,
            "seed": int(cfg.seed),
            "run_dir": str(run_dir),
            "ref_min_score": measures[kind]["random_return"],
            "ref_max_score": measures[kind]["online_best_return"],
            "measures": measures[kind],
            "online_eval_returns": returns,
        }
        write_discrete_dataset(env_name, dataset_name(kind, cfg.seed), d, info, num_actions, overwrite=True)
    return data, measures


def _num_actions(cfg: DictConfig) -> int:
    env = build_env(cfg, cfg.seed)
    try:
        return action_count(env.spec)
    finally:
        env.close()


def dataset_ids(cfg: DictConfig) -> dict[str, str]:
    return {k: dataset_id(cfg.env.name, dataset_name(k, cfg.seed)) for k in TYPES}
