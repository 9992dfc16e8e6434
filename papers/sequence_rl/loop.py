"""SRL's run loop: the shared replay loop (`common.loop.run_envs`) on J-action decisions.

The training and evaluation envs are the task's own (no action repeat) wrapped in `Decisions`: a
`DecisionInterval(env, J)` whose observation also holds the last executed action, and whose step reports
the observation after each executed action. The agent
acts once per decision; `PrimitiveUpdates` stores each executed env step as its own transition (the critic
and the model learn from primitive steps: sac.py `SACGRU.update_parameters`) and makes
`paper.train.updates_per_step` updates before each decision once `paper.train.seed_frames` have passed.
The loop counts frames as decisions x `paper.action_repeat` (= J). When the run finishes, `paper.fas.at_end`
evaluates the final policy at every interval of `paper.fas.intervals` (fas.py) into `fas.json`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from omegaconf import DictConfig

from common import loop as replay_loop
from common.agent import Agent
from common.buffers import NStepReplay
from common.checkpoint import SavesToDirectory
from common.envs import Env, make_env
from common.envs.base import Step
from common.envs.decision_interval import DecisionInterval
from common.errors import ConfigError
from common.registry import loop
from common.runtime import RunContext


def check_interval(cfg: DictConfig) -> int:
    """`paper.interval` (J) as an int >= 1 that the loop's frame count (`paper.action_repeat`) agrees with;
    else a one-line ConfigError."""
    p = cfg.paper
    j = p.get("interval")
    if isinstance(j, bool) or not isinstance(j, int) or j < 1:
        raise ConfigError(f"paper.interval={j!r}: the decision interval J must be an integer >= 1")
    if p.action_repeat != j:
        raise ConfigError(
            f"paper.action_repeat={p.action_repeat} must equal paper.interval={j} (frames per decision); "
            f"set paper.interval instead"
        )
    if p.pixels:
        raise ConfigError("sequence_rl learns from states: set paper.pixels=false")
    return j


def validate(cfg: DictConfig) -> None:
    check_interval(cfg)
    replay_loop.validate_run(cfg)
    replay_loop.ReplayUpdates.validate(cfg)
    if "fas" in cfg.paper:
        from papers.sequence_rl.fas import check_fas_config

        check_fas_config(cfg)


def primitive_env(cfg: DictConfig, seed: int, evaluation: bool = False) -> Env:
    """The task's env, one env step per action (whatever `paper.action_repeat` says)."""
    p = cfg.paper
    return make_env(
        cfg.env,
        pixels=False,
        action_repeat=1,
        frame_stack=1,
        image_size=p.image_size,
        seed=seed,
        evaluation=evaluation,
    )


class Decisions:
    """`DecisionInterval(env, interval)` whose observation also carries the previous action: the agent sees
    ``concat(state, last executed action)`` (zeros after a reset), as SRL's GRU takes the action executed
    before the state as its first input (sac.py `SACGRU.select_action(state, previous_action, ...)`, the
    replay's `previous_action_batch`). `info["observations"]` holds the observation after each executed
    action (the last is the step's own `obs`), so the replay can store primitive transitions.
    `primitive_spec` is the spec of one such step: one action, the same observation."""

    def __init__(self, env: Env, interval: int) -> None:
        self._decisions = DecisionInterval(env, interval)
        self.interval, self.action_dim = interval, env.spec.action_shape[0]
        (state_dim,) = env.spec.obs_shape
        obs_shape = (state_dim + self.action_dim,)
        self.primitive_spec = replace(env.spec, obs_shape=obs_shape, frame_shape=obs_shape)
        self.spec = replace(self._decisions.spec, obs_shape=obs_shape, frame_shape=obs_shape)

    def _with_action(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, action]).astype(self.spec.obs_dtype, copy=False)

    def reset(self) -> Step:
        ts = self._decisions.reset()
        return replace(ts, obs=self._with_action(ts.obs, np.zeros(self.action_dim, np.float32)))

    def step(self, action: np.ndarray) -> Step:
        ts = self._decisions.step(action)
        actions = np.asarray(action, np.float32).reshape(self.interval, self.action_dim)
        executed = zip(ts.info["observations"], actions[: ts.info["executed"]], strict=True)
        observations = [self._with_action(o, a) for o, a in executed]
        return replace(ts, obs=observations[-1], info={**ts.info, "observations": observations})

    def get_rng_state(self) -> dict[str, Any]:
        return self._decisions.get_rng_state()

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._decisions.set_rng_state(state)

    def close(self) -> None:
        self._decisions.close()


class PrimitiveUpdates:
    """A `common.loop.Learning`: one-step transitions of single actions in an `NStepReplay`; updates as
    `common.loop.ReplayUpdates` does, counted in decisions (seed frames / J)."""

    def __init__(self, cfg: DictConfig, agent: Agent, env: Decisions) -> None:
        p = cfg.paper
        self.agent, self.action_dim = agent, env.primitive_spec.action_shape[0]
        self.replay = NStepReplay(
            env.primitive_spec, p.buffer.capacity, p.buffer.nstep, p.buffer.discount, seed=cfg.seed
        )
        self.batch_size = p.buffer.batch_size
        self.seed_steps = p.train.seed_frames // p.action_repeat
        self.every, self.repeats = p.train.update_every_steps, p.train.updates_per_step
        self.saved: SavesToDirectory | None = self.replay if cfg.checkpoint.replay else None

    def begin_episode(self, first: Step) -> None:
        self.replay.add_first(first.obs)

    def before_env_step(self, step: int) -> list[dict[str, float]]:
        if step >= self.seed_steps and step % self.every == 0 and self.replay.num_transitions() > 0:
            return [self.agent.update(self.replay.sample(self.batch_size), step) for _ in range(self.repeats)]
        return []

    def after_env_step(
        self, step: int, obs: np.ndarray, action: np.ndarray, ts: Step
    ) -> list[dict[str, float]]:
        actions = np.asarray(action).reshape(-1, self.action_dim)
        rewards, observations = ts.info["rewards"], ts.info["observations"]
        last = len(rewards) - 1  # only the last executed step can end the episode
        for k, (reward, next_obs) in enumerate(zip(rewards, observations, strict=True)):
            ends = k == last
            self.replay.add(actions[k], reward, next_obs, ends and ts.terminated, ends and ts.truncated)
        return []

    def interrupt_episode(self) -> None:
        self.replay.end_episode()

    def stored(self) -> int:
        return len(self.replay)


@loop(validate=validate)
def train_sequence(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `paper.entry` (SRL) deciding every `paper.interval` env steps; the final evaluation return."""
    j = int(cfg.paper.interval)
    env = Decisions(primitive_env(cfg, cfg.seed), j)
    eval_env = Decisions(primitive_env(cfg, cfg.seed, evaluation=True), j)  # the loop evaluates at J
    try:
        score = replay_loop.run_envs(cfg, ctx, env, eval_env, PrimitiveUpdates)  # type: ignore[arg-type]
    finally:
        env.close()
        eval_env.close()
    fas = cfg.paper.get("fas")
    if fas is not None and fas.at_end:
        from papers.sequence_rl.fas import evaluate_run

        evaluate_run(ctx.run_dir, only_if_finished=True, device=ctx.device)
    return score
