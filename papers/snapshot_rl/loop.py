"""The student's own run loop, unchanged, with S3RL's snapshot starts on its training envs.

`train_online` is `common.loop.train_online` (TD3, SAC: replay) and `train_onpolicy` is
`common.onpolicy.train_onpolicy` (PPO); each builds the envs as those do, wraps every training env in
`SnapshotStarts` (papers/snapshot_rl/teacher.py) and leaves the evaluation env as the task's own. Their
`validate` adds the teacher's checks to the student loop's, so a bad teacher is refused before anything is
written.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from common import loop as replay_loop
from common import onpolicy
from common.envs import Env
from common.registry import loop
from common.runtime import RunContext
from papers.snapshot_rl.teacher import check_snapshot_config, find_teacher, snapshot_starts


def _validator(student: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
    def validate(cfg: DictConfig) -> None:
        student(cfg)
        check_snapshot_config(cfg)
        find_teacher(cfg)

    return validate


@loop(validate=_validator(replay_loop.train_online.validate))
def train_online(cfg: DictConfig, ctx: RunContext) -> float:
    """A replay student (`paper.entry`: TD3, SAC) on snapshot starts; the final evaluation return."""
    env = snapshot_starts(replay_loop.build_env(cfg, cfg.seed), cfg, cfg.seed)
    eval_env = replay_loop.build_env(cfg, cfg.seed, evaluation=True)
    try:
        return replay_loop.run_envs(cfg, ctx, env, eval_env, replay_loop.ReplayUpdates)
    finally:
        env.close()
        eval_env.close()


@loop(validate=_validator(onpolicy.train_onpolicy.validate))
def train_onpolicy(cfg: DictConfig, ctx: RunContext) -> float:
    """An on-policy student (`paper.entry`: PPO) on snapshot starts; the final evaluation return."""
    n = int(cfg.paper.train.num_envs)
    seeds = [cfg.seed + i for i in range(n)]  # env i seeded seed + i, as common.onpolicy
    envs: list[Env] = [snapshot_starts(replay_loop.build_env(cfg, s), cfg, s) for s in seeds]
    eval_env = replay_loop.build_env(cfg, cfg.seed, evaluation=True)
    try:
        return onpolicy.run_envs(cfg, ctx, envs, eval_env)
    finally:
        for env in (*envs, eval_env):
            env.close()
