"""The run loop every online agent shares, replay-based (DrQ-v2, DrM, SAC, ...) or streaming (stream-x).

Order per agent step, as facebookresearch/drqv2 `train.py`: (episode end → checkpoint, reset), evaluate when
due, act, [replay: update when due], step the env, [store the transition | stream: learn from it], and log
the episode's row when it ends. Frames = agent steps × action_repeat; budgets and intervals in the config
count frames, schedules count agent steps. How the agent learns is a small strategy class (a `Learning`):
`ReplayUpdates` (`paper.loop: common.loop.train_online`) or `StreamUpdates` (`common.loop.train_stream`).
Resuming, evaluating, logging, checkpointing and stopping on a signal are `common.session.RunSession`'s,
shared with the offline loop. A stop inside an episode (SIGTERM, SIGUSR2, Ctrl-C; an evaluation included)
checkpoints the env's simulator (`Env.get_state`) with the episode so far, and the resume continues that
episode: its rows equal an uninterrupted run's. An env without `get_state` keeps its last checkpoint.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from common.agent import Agent, StreamAgent
from common.buffers import NStepReplay
from common.checkpoint import SavesToDirectory
from common.envs import Env, check_env_config, make_env
from common.envs.base import Step, env_state
from common.errors import ConfigError
from common.logger import Averager
from common.registry import loop
from common.runtime import RunContext
from common.session import RunSession, make_agent
from common.session import evaluate as evaluate  # re-exported: loops and plugins import it from here


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def validate_run(cfg: DictConfig) -> None:
    """Checks every loop needs; impossible sizes fail before anything is built or written."""
    p, t = cfg.paper, cfg.paper.train
    check_env_config(cfg.env, pixels=p.pixels, action_repeat=p.action_repeat, image_size=p.image_size)
    _check(
        [
            (t.num_frames > 0, f"paper.train.num_frames={t.num_frames} must be positive"),
            (p.action_repeat >= 1, f"paper.action_repeat={p.action_repeat} must be at least 1"),
            (
                t.eval_every_frames > 0,
                f"paper.train.eval_every_frames={t.eval_every_frames} must be positive",
            ),
            (t.eval_episodes >= 1, f"paper.train.eval_episodes={t.eval_episodes} must be at least 1"),
            (
                cfg.checkpoint.every_frames > 0,
                f"checkpoint.every_frames={cfg.checkpoint.every_frames} must be positive",
            ),
        ]
    )


def build_env(cfg: DictConfig, seed: int, evaluation: bool = False) -> Env:
    """The env of `cfg.env` as the paper sees it (pixels or states, repeat, frame stack, time feature);
    `evaluation`: without training-only preprocessing (`make_env`)."""
    p = cfg.paper
    env = make_env(
        cfg.env,
        pixels=p.pixels,
        action_repeat=p.action_repeat,
        frame_stack=p.frame_stack,
        image_size=p.image_size,
        seed=seed,
        evaluation=evaluation,
    )
    if p.get("time_feature", False):
        if p.pixels:
            raise ConfigError("paper.time_feature appends to state observations: it needs pixels=false")
        from common.envs.time_feature import TimeFeature

        env = TimeFeature(env)
    return env


# ------------------------------------------------------------------------------------- how agents learn


class Learning(Protocol):
    """How the loop feeds the agent, built as ``Strategy(cfg, agent, env)`` after the agent.

    `saved` is what checkpoints hold besides `state.pt` (the replay; None: nothing). The hooks return the
    metrics of each update they made (the loop counts them as updates)."""

    saved: SavesToDirectory | None

    def begin_episode(self, first: Step) -> None: ...

    def before_env_step(self, step: int) -> list[dict[str, float]]: ...

    def after_env_step(
        self, step: int, obs: np.ndarray, action: np.ndarray, ts: Step
    ) -> list[dict[str, float]]: ...

    def interrupt_episode(self) -> None:
        """A resume from a mid-episode checkpoint that could not save the env: the episode ends here."""
        ...

    def stored(self) -> int:
        """Transitions held (the train rows' `buffer_size`)."""
        ...


# The agent comes from a dotted path (`paper.entry`): each strategy names the protocol it drives.
LearningFactory = Callable[[DictConfig, Any, Env], Learning]


class ReplayUpdates:
    """Store every transition in an n-step replay; `paper.train.updates_per_step` calls of
    `agent.update(batch, step)` (each on a fresh batch) every `paper.train.update_every_steps` agent steps
    once `paper.train.seed_frames` have passed, before the env step (drqv2 `train.py` order). The
    update-to-data ratio is updates_per_step / update_every_steps."""

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        t, b = cfg.paper.train, cfg.paper.buffer
        _check(
            [
                (t.seed_frames >= 0, f"paper.train.seed_frames={t.seed_frames} must be >= 0"),
                (
                    t.update_every_steps >= 1,
                    f"paper.train.update_every_steps={t.update_every_steps} must be >= 1",
                ),
                (t.updates_per_step >= 1, f"paper.train.updates_per_step={t.updates_per_step} must be >= 1"),
                (b.batch_size >= 1, f"paper.buffer.batch_size={b.batch_size} must be positive"),
                (
                    b.batch_size <= b.capacity,
                    f"paper.buffer.batch_size={b.batch_size} exceeds paper.buffer.capacity="
                    f"{b.capacity}; lower the batch or raise the capacity",
                ),
            ]
        )

    def __init__(self, cfg: DictConfig, agent: Agent, env: Env) -> None:
        p = cfg.paper
        self.agent = agent
        self.replay = NStepReplay(
            env.spec, p.buffer.capacity, p.buffer.nstep, p.buffer.discount, seed=cfg.seed
        )
        self.batch_size = p.buffer.batch_size
        self.seed_steps = p.train.seed_frames // p.action_repeat
        self.every = p.train.update_every_steps
        self.repeats = p.train.updates_per_step
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
        self.replay.add(action, ts.reward, ts.obs, ts.terminated, ts.truncated)
        return []

    def interrupt_episode(self) -> None:
        self.replay.end_episode()  # the interrupted episode ends here as a truncation

    def stored(self) -> int:
        return len(self.replay)


class StreamUpdates:
    """No replay: one `agent.learn(transition)` per env step, from that step's transition only."""

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        pass

    def __init__(self, cfg: DictConfig, agent: StreamAgent, env: Env) -> None:
        self.agent = agent
        self.saved: SavesToDirectory | None = None

    def begin_episode(self, first: Step) -> None:
        pass

    def before_env_step(self, step: int) -> list[dict[str, float]]:
        return []

    def after_env_step(
        self, step: int, obs: np.ndarray, action: np.ndarray, ts: Step
    ) -> list[dict[str, float]]:
        return [self.agent.learn(obs, action, ts.reward, ts.obs, ts.terminated, ts.truncated)]

    def interrupt_episode(self) -> None:
        self.agent.end_episode()  # forget traces: the interrupted episode ends without a last update

    def stored(self) -> int:
        return 0


# ------------------------------------------------------------------------------------------ evaluation


def mean_return(env: Env, policy: Callable[[np.ndarray], np.ndarray], episodes: int) -> float:
    """Average undiscounted return of `episodes` full episodes of `policy` (observation -> action)."""
    returns = []
    for _ in range(episodes):
        ts = env.reset()
        while not ts.done:
            ts = env.step(policy(ts.obs))
        returns.append(ts.episode_return)
    return float(np.mean(returns))


# ------------------------------------------------------------------------------ stopping mid-episode


def _save_mid_episode(run: RunSession, env: Env, ts: Step, metrics: Averager, name: str) -> None:
    """Checkpoint a run stopped inside an episode so that its resume continues that episode exactly: the
    env's simulator (`Env.get_state`), the current observation and the update metrics not yet logged; the
    replay holds the episode so far. An env that cannot capture its state keeps the last (exact, episode
    boundary) checkpoint instead; only a run without any checkpoint saves one that ends the episode early."""
    state = env_state(env)
    if state is not None:
        episode = {
            "env": state,
            "obs": torch.from_numpy(np.array(ts.obs)),
            "return": ts.episode_return,
            "length": ts.episode_length,
            "metrics": metrics.state_dict(),
        }
        run.save(mid_episode=True, episode=episode)
        return
    latest = run.checkpointer.latest()
    if latest is not None:
        print(f"env {name} cannot save its state mid-episode: the resume starts from the last "
              f"checkpoint ({latest.name}) and repeats the steps since", file=sys.stderr)  # fmt: skip
        return
    print(f"env {name} cannot save its state mid-episode and the run has no checkpoint yet: saved one "
          f"that ends this episode early (the resumed run will differ from an uninterrupted one)",
          file=sys.stderr)  # fmt: skip
    run.save(mid_episode=True)


def _continue_episode(env: Env, learner: Learning, metrics: Averager, state: dict[str, Any]) -> Step | None:
    """The interrupted episode's current step, with the env and the metrics put back as they were; None
    (start a new episode) for a checkpoint that holds no episode: the learner ends the cut one."""
    episode = state.get("episode")
    if episode is None:
        learner.interrupt_episode()
        return None
    env.set_state(episode["env"])  # type: ignore[attr-defined]  # it wrote the state with get_state
    metrics.load_state_dict(episode["metrics"])
    return Step(
        obs=episode["obs"].numpy(),
        episode_return=float(episode["return"]),
        episode_length=int(episode["length"]),
    )


# ------------------------------------------------------------------------------------------- the loop


def _validator(learning: type[ReplayUpdates] | type[StreamUpdates]) -> Callable[[DictConfig], None]:
    def validate(cfg: DictConfig) -> None:
        validate_run(cfg)
        learning.validate(cfg)

    return validate


@loop(validate=_validator(ReplayUpdates))
def train_online(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (an `Agent`) with a replay; returns the final evaluation return."""
    return run_loop(cfg, ctx, ReplayUpdates)


@loop(validate=_validator(StreamUpdates))
def train_stream(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (a `StreamAgent`) from each transition once; returns the final eval return."""
    return run_loop(cfg, ctx, StreamUpdates)


def run_loop(cfg: DictConfig, ctx: RunContext, learning: LearningFactory) -> float:
    """The online loop with the strategy `learning`, on a config its `Loop` has validated (`common.launch`
    does, once, before the run directory is written)."""
    env, eval_env = build_env(cfg, cfg.seed), build_env(cfg, cfg.seed, evaluation=True)  # drqv2: same seed
    try:
        return run_envs(cfg, ctx, env, eval_env, learning)
    finally:
        env.close()
        eval_env.close()


def game_over(ts: Step) -> bool:
    """Whether an ended episode ends the game: Atari's training env ends an episode at each lost life
    (`info["game_over"]` False) and its next `reset()` continues the game, whose return and length the
    episode statistics keep counting; every other env ends the game with the episode."""
    return bool(ts.info.get("game_over", True))


def run_envs(cfg: DictConfig, ctx: RunContext, env: Env, eval_env: Env, learning: LearningFactory) -> float:
    """The loop on envs the caller built (and closes): `train_online`'s body, for papers whose loop wraps
    the training or evaluation env (Snapshot RL's starts, Sequence RL's decisions); the final evaluation
    return."""
    p, t = cfg.paper, cfg.paper.train
    agent = make_agent(cfg, env.spec, ctx.device)
    learner = learning(cfg, agent, env)

    repeat = p.action_repeat
    total_steps = math.ceil(t.num_frames / repeat)
    eval_every = max(1, t.eval_every_frames // repeat)
    ckpt_every = max(1, cfg.checkpoint.every_frames // repeat)

    c: dict[str, Any] = {
        "step": 0,
        "episode": 0,
        "updates": 0,
        "last_eval_step": -1,
        "next_ckpt_step": ckpt_every,
        "elapsed": 0.0,
        "last_eval_return": float("nan"),
    }
    run = RunSession(
        cfg,
        ctx,
        agent,
        c,
        total_steps=total_steps,
        frames_per_step=repeat,
        expect={"paper": p.name, "env": cfg.env.name},
        rngs={"env_rng": env, "eval_env_rng": eval_env},
        saved=learner.saved,
    )
    metrics, ts = Averager(), None
    if run.resumed is not None and run.resumed["mid_episode"]:
        ts = _continue_episode(env, learner, metrics, run.resumed)

    def evaluate_and_log(step: int) -> bool:
        """Evaluate and log a row; False if a signal cut it (eval env RNG rewound: it repeats on resume)."""
        result = run.evaluate(eval_env, step, t.eval_episodes)
        if result is None:
            return False
        if hasattr(agent, "diagnostics"):  # optional agent state shown next to returns (e.g. dormant ratio)
            result.update(agent.diagnostics())
        c["last_eval_step"], c["last_eval_return"] = step, result["episode_return"]
        row = {"frame": step * repeat, "step": step, "episode": c["episode"], **result, "time": run.elapsed()}
        run.log_eval(step, row)
        return True

    def stop_here(ts: Step | None) -> float:
        if ts is None or ts.done:
            run.save(mid_episode=False)
        else:
            _save_mid_episode(run, env, ts, metrics, cfg.env.name)
        run.close()
        return float(c["last_eval_return"])

    episode_clock = run.clock
    while c["step"] < total_steps and not run.reached:
        step = c["step"]
        if ts is None or ts.done:
            if ts is not None and game_over(ts) and step >= c["next_ckpt_step"]:  # an episode just ended
                c["next_ckpt_step"] = (step // ckpt_every + 1) * ckpt_every
                run.save(mid_episode=False)
            if ts is None or game_over(ts):
                episode_clock = time.perf_counter()
            ts = env.reset()  # after a lost life (Atari's training terminal) this continues the game
            learner.begin_episode(ts)

        if step % eval_every == 0 and c["last_eval_step"] != step and not evaluate_and_log(step):
            return stop_here(ts)
        if run.reached:  # stop_at_return: this evaluation reached it
            break

        obs = ts.obs
        with torch.no_grad():
            action = agent.act(obs, step, eval_mode=False)
        updates = learner.before_env_step(step)  # metrics of each update, or []
        ts = env.step(action)
        updates += learner.after_env_step(step, obs, action, ts)
        for m in updates:
            metrics.add(m)
        c["updates"] += len(updates)
        run.advance()

        if ts.done and game_over(ts):  # one row per game, not per life
            c["episode"] += 1
            now = time.perf_counter()
            run.log_train(
                {
                    "frame": c["step"] * repeat,
                    "step": c["step"],
                    "episode": c["episode"],
                    "episode_return": ts.episode_return,
                    "episode_length": ts.episode_length,
                    "buffer_size": learner.stored(),
                    "updates": c["updates"],
                    **metrics.pop(),
                    "time": run.elapsed(now),
                    "fps": ts.episode_length * repeat / max(1e-9, now - episode_clock),
                },
            )
        if run.stopped:
            return stop_here(ts)

    if c["last_eval_step"] != c["step"]:
        evaluate_and_log(c["step"])
    run.save(mid_episode=False)
    score = float(c["last_eval_return"])
    run.close({"final_eval_return": score})
    return score
