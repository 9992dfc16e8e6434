"""Generate the D4RL splits for one env: train a SAC behaviour policy, then roll out the split policies.

D4RL (Fu et al. 2020, arXiv 2004.07219), Sec. 5 and the appendix on the Gym-MuJoCo datasets, defines:
- `random`: 1M steps of a randomly initialised policy;
- `medium`: 1M steps of a policy trained online with SAC and stopped early, at about one third of the
  expert's performance;
- `medium-replay`: every sample in the replay buffer observed during training until the policy reaches the
  medium level;
- `expert`: 1M steps of a policy trained to completion with SAC;
- `medium-expert`: equal parts medium and expert data (the two splits concatenated);
and normalises scores as 100 * (score - random) / (expert - random) with the returns of a random and an
expert policy.

Phase 1 runs the shared online loop with SAC (`paper.agent`, `paper.train` come from conf/paper/sac.yaml) and
saves the actor-critic at every evaluation under `behaviour/`. Phase 2 picks the expert (the last snapshot)
and the medium policy (the snapshot whose evaluation return is nearest to random + medium_level *
(expert - random)), measures the reference returns (and stops, writing nothing, when the expert's is not
above the random policy's), and writes each split with `common.offline.minari_io`.
Both phases resume: phase 1 through the loop's checkpoints, phase 2 by skipping splits this run already
wrote.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from common.buffers import NStepReplay
from common.checkpoint import Checkpointer
from common.envs import Env
from common.errors import ConfigError, DatasetError
from common.evaluation.normalization import normalized_score
from common.logger import read_metrics
from common.loop import ReplayUpdates, build_env, mean_return, run_loop, train_online
from common.offline.data import OfflineData
from common.offline.minari_io import (
    SPLITS,
    check_split,
    dataset_dir,
    dataset_id,
    episode_starts,
    load_dataset,
    read_info,
    write_dataset,
)
from common.registry import import_entry, loop
from common.runtime import RunContext, write_json

SNAPSHOTS = "behaviour"
TRAINED = "trained.json"
Policy = Callable[[np.ndarray], np.ndarray]
FAR_STEP = 2**62  # a step count past SAC's uniform-exploration phase: `act` samples from the policy


def validate(cfg: DictConfig) -> None:
    """Impossible settings fail before training starts (hours may separate training from writing)."""
    train_online.validate(cfg)  # the SAC run's own checks
    g = cfg.paper.datasets
    for split in g.splits:
        check_split(split)
    checks = [
        (g.size >= 1, f"paper.datasets.size={g.size} must be positive"),
        (0.0 < g.medium_level < 1.0, f"paper.datasets.medium_level={g.medium_level} must be in (0, 1)"),
        (g.reference_episodes >= 1, f"paper.datasets.reference_episodes={g.reference_episodes} must be >= 1"),
        (
            cfg.paper.buffer.capacity >= cfg.paper.train.num_frames,
            f"paper.buffer.capacity={cfg.paper.buffer.capacity} is below paper.train.num_frames="
            f"{cfg.paper.train.num_frames}: medium-replay needs every training sample; raise the capacity",
        ),
        (cfg.checkpoint.replay, "checkpoint.replay=false: medium-replay is read from the final checkpoint"),
        (not cfg.paper.pixels, "D4RL datasets are state-based: set paper.pixels=false"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if not g.overwrite:
        for split in g.splits:
            info = read_info(cfg.env.name, split)
            if info is not None:
                raise DatasetError(
                    f"dataset {dataset_id(cfg.env.name, split)} already exists "
                    f"(made by {info.get('run_dir')}); "
                    f"delete {dataset_dir(cfg.env.name, split)} or pass paper.datasets.overwrite=true"
                )


def generate(cfg: DictConfig, ctx: RunContext) -> float:
    """Phase 1 (behaviour training) then phase 2 (splits); returns the expert's evaluation return."""
    snapshots = ctx.run_dir / SNAPSHOTS
    if not (snapshots / TRAINED).exists():
        snapshots.mkdir(exist_ok=True)

        def snapshot(frame: int, row: dict[str, Any], agent: Any) -> None:
            torch.save(agent.state_dict(), snapshots / f"frame_{frame:010d}.pt")

        run_loop(cfg, dataclasses.replace(ctx, on_eval=snapshot), ReplayUpdates)
        if ctx.stop:
            return math.nan
        write_json(snapshots / TRAINED, {"frames": cfg.paper.train.num_frames})
    return write_splits(cfg, ctx)


# ------------------------------------------------------------------------------------------ phase 2


def _snapshot_returns(run_dir: Path) -> list[tuple[int, float]]:
    """(frame, deterministic evaluation return) of every saved behaviour snapshot, in training order."""
    rows = read_metrics(run_dir / "eval.jsonl")
    out = [(int(r["frame"]), float(r["episode_return"])) for r in rows]
    return [(f, r) for f, r in out if (run_dir / SNAPSHOTS / f"frame_{f:010d}.pt").exists()]


def _load_policy(cfg: DictConfig, env: Env, ctx: RunContext, frame: int | None) -> Any:
    """The behaviour agent at `frame` (None: freshly initialised with the run's seed)."""
    agent = import_entry(cfg.paper.entry)(cfg.paper.agent, env.spec, ctx.device, cfg.precision)
    if frame is not None:
        path = ctx.run_dir / SNAPSHOTS / f"frame_{frame:010d}.pt"
        agent.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return agent


def _sampling(agent: Any) -> Policy:
    """Actions sampled from the policy, as when the data is collected (not its deterministic mean)."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return agent.act(obs, FAR_STEP, eval_mode=False)

    return act


def _uniform(shape: tuple[int, ...], seed: int) -> Policy:
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def rollout(env: Env, policy: Policy, steps: int, desc: str, stop: Any = False) -> OfflineData | None:
    """`steps` transitions of `policy` in `env` (the last episode is cut); None if a signal arrived."""
    obs_dim, act_shape = env.spec.obs_shape, env.spec.action_shape
    obs = np.empty((steps, *obs_dim), np.float32)
    nxt = np.empty((steps, *obs_dim), np.float32)
    actions = np.empty((steps, *act_shape), np.float32)
    rewards = np.empty(steps, np.float32)
    term, trunc = np.zeros(steps, bool), np.zeros(steps, bool)
    ts = env.reset()
    with tqdm(
        total=steps, desc=desc, unit="step", unit_scale=True, dynamic_ncols=True, mininterval=1.0
    ) as bar:
        for i in range(steps):
            action = policy(ts.obs)
            after = env.step(action)
            obs[i], actions[i], rewards[i], nxt[i] = ts.obs, action, after.reward, after.obs
            term[i], trunc[i] = after.terminated, after.truncated
            ts = env.reset() if after.done else after
            if i % 1000 == 999:
                bar.update(1000)
                if stop:
                    return None
        bar.update(steps % 1000)
    cut = trunc | (np.arange(steps) == steps - 1)  # the budget ends the last episode
    return OfflineData(obs, actions, rewards, nxt, term, trunc, episode_starts(term, cut))


def _replay_prefix(cfg: DictConfig, env: Env, ctx: RunContext, frames: int) -> OfflineData:
    """The first `frames` steps of the behaviour replay (D4RL medium-replay), from the last checkpoint."""
    p = cfg.paper
    replay = NStepReplay(env.spec, p.buffer.capacity, p.buffer.nstep, p.buffer.discount, seed=cfg.seed)
    checkpointer = Checkpointer(ctx.run_dir, cfg.checkpoint.keep)
    path = checkpointer.latest()
    if path is None:
        raise DatasetError(
            f"{ctx.run_dir}/checkpoints has no checkpoint with the behaviour replay; rerun phase 1"
        )
    checkpointer.load(path, {"paper": p.name, "env": cfg.env.name}, replay)
    t = replay.one_step_transitions(max_transitions=frames // p.action_repeat)  # one per env step
    return OfflineData(
        observations=t["observations"],
        actions=t["actions"],
        rewards=t["rewards"],
        next_observations=t["next_observations"],
        terminations=t["terminations"],
        truncations=t["truncations"],
        episode_starts=episode_starts(t["terminations"], t["truncations"]),
    )


def _references(cfg: DictConfig, env: Env, expert: Any) -> dict[str, float]:
    """Random and expert reference returns, measured once per run (a resume reuses them)."""
    g = cfg.paper.datasets
    return {
        "ref_min_score": mean_return(env, _uniform(env.spec.action_shape, cfg.seed), g.reference_episodes),
        "ref_max_score": mean_return(env, _sampling(expert), g.reference_episodes),
    }


def check_references(refs: dict[str, float], num_frames: int) -> None:
    """Normalised scores divide by (expert - random): an expert that does not beat the random policy makes
    every score of every learner meaningless (or sign-flipped), so no split is written."""
    ref_min, ref_max = refs["ref_min_score"], refs["ref_max_score"]
    if not ref_max > ref_min:  # also refuses NaN
        raise DatasetError(
            f"the expert's reference return ({ref_max:.4g}) is not above the random policy's "
            f"({ref_min:.4g}): normalised scores would be meaningless, so no dataset was written; train the "
            f"behaviour policy longer in a new run (paper.train.num_frames, now {num_frames})"
        )


def write_splits(cfg: DictConfig, ctx: RunContext) -> float:
    g, env_name = cfg.paper.datasets, cfg.env.name
    snaps = _snapshot_returns(ctx.run_dir)
    if len(snaps) < 3 or snaps[0][0] != 0:
        raise DatasetError(
            f"{ctx.run_dir}/{SNAPSHOTS} holds {len(snaps)} policy snapshot(s); D4RL needs the initial, a "
            f"medium and an expert policy: train longer (paper.train.num_frames) or evaluate more often "
            f"(paper.train.eval_every_frames)"
        )
    env = build_env(cfg, cfg.seed + 1)  # collection episodes differ from the training ones
    try:
        expert_frame, expert_eval = snaps[-1]
        expert = _load_policy(cfg, env, ctx, expert_frame)
        refs_file = ctx.run_dir / SNAPSHOTS / "references.json"
        refs = json.loads(refs_file.read_text()) if refs_file.exists() else _references(cfg, env, expert)
        # `.get`: configs saved before this key existed (a resumed run) keep the check
        if g.get("require_expert_above_random", True):
            check_references(refs, cfg.paper.train.num_frames)  # before anything is written
        elif not refs["ref_max_score"] > refs["ref_min_score"]:
            print(
                f"warning: the expert's reference return ({refs['ref_max_score']:.4g}) is not above the "
                f"random policy's ({refs['ref_min_score']:.4g}); writing anyway "
                f"(paper.datasets.require_expert_above_random=false)"
            )
        if not refs_file.exists():
            write_json(refs_file, refs)
        ref_min, ref_max = refs["ref_min_score"], refs["ref_max_score"]
        # D4RL "medium": about one third of the expert; chosen on the logged deterministic evaluations.
        target = ref_min + g.medium_level * (expert_eval - ref_min)
        # Candidates exclude frame 0 (the untrained policy) so that medium-replay holds some training.
        medium_frame, medium_eval = min(snaps[1:-1], key=lambda s: (abs(s[1] - target), s[0]))
        print(
            f"d4rl/{env_name}: random return {ref_min:.1f}, expert (frame {expert_frame}) {ref_max:.1f}; "
            f"medium = frame {medium_frame} (eval {medium_eval:.1f}, target {target:.1f})"
        )
        behaviour = {"random": None, "medium": medium_frame, "expert": expert_frame}
        base_info = {
            "algorithm": "SAC behaviour policy (rlrepro papers/sac), D4RL protocol",
            "run_dir": str(ctx.run_dir.resolve()),
            "run_id": ctx.info.get("wandb_id"),
            "config_hash": ctx.info.get("config_hash"),
            "seed": int(cfg.seed),
            "env_config": OmegaConf.to_container(cfg.env, resolve=True),
            "reference": {
                "ref_min_score": "uniform random actions in [-1, 1], mean over reference_episodes",
                "ref_max_score": "the expert policy (sampling), mean over reference_episodes",
                "episodes": int(g.reference_episodes),
            },
        }
        gym_id = cfg.env.get("id") if cfg.env.suite == "gym" else None
        wanted = set(g.splits) | ({"medium", "expert"} if "medium-expert" in g.splits else set())
        collected: dict[str, OfflineData] = {}
        summary: dict[str, Any] = {}
        for split in [s for s in SPLITS if s in wanted]:  # medium and expert come before medium-expert
            info = read_info(env_name, split)
            if info is not None and info.get("run_id") == base_info["run_id"]:  # written before a resume
                summary[split] = info
                if split in ("medium", "expert") and "medium-expert" in wanted:
                    collected[split] = load_dataset(env_name, split, env.spec)
                continue
            if split in behaviour:
                frame = behaviour[split]
                agent = _load_policy(cfg, env, ctx, frame)
                data = rollout(env, _sampling(agent), g.size, f"d4rl/{env_name}/{split}", ctx.stop)
                if data is None:
                    return math.nan
                source: dict[str, Any] = {
                    "kind": "randomly initialised SAC actor" if frame is None else "SAC snapshot",
                    "frame": frame,
                    "eval_return": dict(snaps).get(frame) if frame is not None else None,
                    "actions": "sampled from the squashed Gaussian (not its mean)",
                    "weights": None if frame is None else "policy.pt (this directory)",
                }
            elif split == "medium-replay":
                data = _replay_prefix(cfg, env, ctx, medium_frame)
                source = {"kind": "SAC training replay up to the medium snapshot", "frames": medium_frame}
            else:  # medium-expert: D4RL mixes equal amounts of medium and expert data
                data = collected["medium"].concat(collected["expert"])
                source = {"kind": "the medium split followed by the expert split"}
            collected[split] = data
            if split not in g.splits:
                continue  # collected only to build medium-expert
            data.metadata.update(refs)
            if info is not None and not g.overwrite:  # made by another run since this one started
                raise DatasetError(
                    f"dataset {dataset_id(env_name, split)} was written by another run "
                    f"({info.get('run_dir')}) while this one trained; delete it, then resume this run"
                )
            path = write_dataset(
                env_name, split, data, {**base_info, "policy": source}, overwrite=True, gym_id=gym_id
            )
            if behaviour.get(split) is not None:
                shutil.copy(ctx.run_dir / SNAPSHOTS / f"frame_{behaviour[split]:010d}.pt", path / "policy.pt")
            summary[split] = read_info(env_name, split)
        table = {}
        for split, info in summary.items():
            data_returns = collected[split].episode_returns() if split in collected else None
            table[split] = {
                "id": dataset_id(env_name, split),
                "path": str(dataset_dir(env_name, split)),
                "transitions": info["transitions"],
                "episodes": info["episodes"],
                "normalized_return_mean": None
                if data_returns is None
                else float(normalized_score(float(data_returns.mean()), ref_min, ref_max)),
            }
        write_json(ctx.run_dir / "datasets.json", {**refs, "splits": table})
        for split, row in table.items():
            print(f"  {split:<14} {row['transitions']:>9} transitions  {row['id']}")
        return float(expert_eval)
    finally:
        env.close()


generate = loop(validate=validate)(generate)  # common.launch validates once, before the run dir
