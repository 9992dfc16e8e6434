"""The on-policy run loop (PPO, A2C, ...): collect a rollout of `paper.train.rollout_steps` steps in each
of `paper.train.num_envs` envs, then let the agent learn from it once (`paper.loop:
common.onpolicy.train_onpolicy`).

Also the plumbing on-policy agents share: running mean/variance statistics, the observation and
return-based reward normalisers of Gymnasium's `NormalizeObservation` / `NormalizeReward` wrappers (as
CleanRL's PPO uses them), and a fixed-size `Rollout` store.

Order per loop iteration: reset the envs that need it, evaluate when due, `agent.explore(obs)` for all envs
at once, step each env, `agent.observe(...)`, log a train row per finished episode, `agent.learn(next_obs)`
when the rollout is full, then checkpoint when due. Steps count agent steps summed over the envs (frames =
steps × action_repeat), as `common.loop` counts them for one env.

Exact resume: once `checkpoint.every_frames` have passed, a checkpoint is written at the next rollout
boundary, holding each env's episode in progress (`Env.get_state`: the simulator, the time-limit counter,
the current observation), the agent (networks, optimiser, normaliser statistics and reward traces, and the
rollout so far: empty at a boundary) and the update metrics not yet logged, so training continues as if
never stopped. An env that cannot save its state postpones the checkpoint to the next moment at which every
env is between episodes. A stop signal checkpoints where the run is, the same way; if an env cannot save its
state, the resume starts from the last checkpoint instead (or, when there is none, ends the cut episodes and
discards the partial rollout: `agent.discard_rollout()`).

Resuming, evaluating, logging, checkpointing and stopping on a signal are `common.session.RunSession`'s.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import DictConfig

from common.agent import Policy
from common.envs import Env
from common.envs.base import Step, env_state
from common.errors import ConfigError
from common.logger import Averager
from common.loop import build_env, validate_run
from common.registry import loop
from common.runtime import RunContext
from common.session import RunSession, make_agent

# ------------------------------------------------------------------------------------------- the agent


# ---------------------------------------------------------------------------------------------------
# The two formulas every PPO-style learner here shares (papers/ppo, papers/uni_o4).
# ---------------------------------------------------------------------------------------------------
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminal: torch.Tensor,
    episode_end: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 11-12) over a rollout, time first:
    δ_t = r_t + γ (1 − terminal_t) V'_t − V_t, with V'_t the value of the observation after step t, and
    Â_t = δ_t + γλ (1 − end_t) Â_{t+1}, zero after the last step. `terminal` (float 0/1) marks true terminals,
    which do not bootstrap; `episode_end` marks every end (a terminal or a time limit), where the sum stops
    although a time limit still bootstraps from V'_t."""
    deltas = rewards + gamma * (1.0 - terminal) * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * (1.0 - episode_end[t]) * running
        advantages[t] = running
    return advantages


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped objective (Schulman et al. 2017, Eq. 7) as a loss:
    −E[min(r Â, clip(r, 1 − ε, 1 + ε) Â)]."""
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)).mean()


class OnPolicyAgent(Policy, Protocol):
    """An agent for `train_onpolicy`, built like every agent: ``Entry(cfg.paper.agent, spec, device,
    precision)``. Batched over envs: `obs` is ``(num_envs, *obs_shape)``, raw from the envs. It keeps its own
    rollout (and normaliser statistics) in `state_dict()`."""

    def explore(self, obs: np.ndarray, step: int) -> np.ndarray:
        """Actions ``(num_envs, *action_shape)`` for the envs (continuous: in [-1, 1]); records what the
        update needs (observations, actions, log-probabilities, values) as the rollout's next step."""
        ...

    def observe(
        self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, final_obs: np.ndarray
    ) -> None:
        """The envs' answer to the last `explore`: rewards, true terminals, time-limit ends, and each env's
        observation after the step (before any reset; a truncated episode bootstraps from it)."""
        ...

    def learn(self, next_obs: np.ndarray, step: int) -> dict[str, float]:
        """The rollout is full: update from it (`next_obs`: the envs' current observations, after resets, to
        bootstrap the last step), empty it, and return scalar metrics."""
        ...

    def discard_rollout(self) -> None:
        """Forget the partial rollout (a resume from a mid-episode checkpoint)."""
        ...


# ------------------------------------------------------------------------------------------ statistics


class RunningMeanStd:
    """Mean and population variance of a stream of batches, merged with the parallel algorithm (Chan et al.),
    starting from a prior of mean 0 and variance 1 weighted by `prior_count` (1e-4): Gymnasium's
    `wrappers.utils.RunningMeanStd`, float64."""

    def __init__(self, shape: tuple[int, ...], prior_count: float = 1e-4) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = float(prior_count)

    def update(self, batch: np.ndarray) -> None:
        """Merge a batch ``(B, *shape)``."""
        batch = np.asarray(batch, np.float64)
        n = batch.shape[0]
        batch_mean, batch_var = batch.mean(axis=0), batch.var(axis=0)
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean = np.asarray(self.mean + delta * n / total)
        self.var = np.asarray(m2 / total)
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": torch.from_numpy(np.array(self.mean, np.float64)),
            "var": torch.from_numpy(np.array(self.var, np.float64)),
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state["mean"].numpy().astype(np.float64)
        self.var = state["var"].numpy().astype(np.float64)
        self.count = float(state["count"])


class ObservationNormalizer:
    """``clip((x − μ) / √(σ² + ε), −clip, clip)`` with running statistics of the observations (Gymnasium
    `NormalizeObservation`, ε = 1e-8, then CleanRL's clip at 10). `enabled=False` passes observations
    through unchanged (as float32)."""

    def __init__(self, shape: tuple[int, ...], enabled: bool, clip: float, eps: float = 1e-8) -> None:
        self.stats = RunningMeanStd(shape)
        self.enabled, self.clip, self.eps = enabled, clip, eps

    def __call__(self, obs: np.ndarray, update: bool) -> np.ndarray:
        """Normalise a batch ``(B, *shape)``; `update` first merges it into the statistics."""
        if not self.enabled:
            return np.asarray(obs, np.float32)
        if update:
            self.stats.update(obs)
        out = (np.asarray(obs, np.float64) - self.stats.mean) / np.sqrt(self.stats.var + self.eps)
        return np.clip(out, -self.clip, self.clip).astype(np.float32)


class RewardNormalizer:
    """Gymnasium `NormalizeReward` per env, then CleanRL's clip: the discounted return
    u ← γ u (1 − terminated) + r is accumulated for each env (not cut at a time-limit end, as Gymnasium),
    its running variance (shared by the envs) updated, and ``clip(r / √(σ²_u + ε), −clip, clip)``
    returned (no centring)."""

    def __init__(self, num_envs: int, gamma: float, enabled: bool, clip: float, eps: float = 1e-8) -> None:
        self.stats = RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)
        self.gamma, self.enabled, self.clip, self.eps = gamma, enabled, clip, eps

    def __call__(self, reward: np.ndarray, terminated: np.ndarray) -> np.ndarray:
        reward = np.asarray(reward, np.float64)
        if not self.enabled:
            return reward.astype(np.float32)
        self.returns = self.returns * self.gamma * (1.0 - np.asarray(terminated, np.float64)) + reward
        self.stats.update(self.returns)
        scaled = reward / np.sqrt(self.stats.var + self.eps)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.state_dict(), "returns": torch.from_numpy(self.returns.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state["stats"])
        self.returns = state["returns"].numpy().astype(np.float64)


class Rollout:
    """Fixed-size on-policy storage: named tensors of shape ``(steps, num_envs, *field_shape)`` filled one
    step at a time (`add`), read whole when `full`, then `clear`ed. Checkpointed whole (one rollout)."""

    def __init__(
        self, steps: int, num_envs: int, fields: dict[str, tuple[tuple[int, ...], torch.dtype]]
    ) -> None:
        self.steps, self.num_envs = steps, num_envs
        self.data = {k: torch.zeros((steps, num_envs, *shape), dtype=dt) for k, (shape, dt) in fields.items()}
        self.t = 0

    @property
    def full(self) -> bool:
        return self.t == self.steps

    def add(self, **values: Any) -> None:
        """Write the given fields of the current step; `advance` moves to the next one."""
        if self.full:
            raise RuntimeError("Rollout.add on a full rollout: learn from it and clear it first")
        for key, value in values.items():
            self.data[key][self.t] = torch.as_tensor(value, dtype=self.data[key].dtype).cpu()

    def advance(self) -> None:
        self.t += 1

    def last(self, key: str) -> torch.Tensor:
        """The current step's row of `key` (a view: writes go into the rollout)."""
        return self.data[key][self.t]

    def clear(self) -> None:
        self.t = 0

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, **{k: v.clone() for k, v in self.data.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in self.data.items():
            if state[key].shape != value.shape:
                raise ValueError(
                    f"rollout field {key}: shape {tuple(state[key].shape)} != {tuple(value.shape)}"
                )
            value.copy_(state[key])
        self.t = int(state["t"])


# ------------------------------------------------------------------------------------------- the loop


def _episodes(envs: list[Env], current: list[Step | None]) -> list[dict[str, Any] | None] | None:
    """For a checkpoint: each env's episode in progress (its `Env.get_state` and current observation), None
    for an env between episodes; None overall when an env in an episode cannot save its state."""
    out: list[dict[str, Any] | None] = []
    for env, ts in zip(envs, current, strict=True):
        if ts is None:
            out.append(None)
            continue
        state = env_state(env)
        if state is None:
            return None
        out.append({"env": state, "obs": torch.from_numpy(np.array(ts.obs))})
    return out


def _resume_episodes(
    envs: list[Env], agent: OnPolicyAgent, metrics: Averager, c: dict[str, Any], resumed: dict[str, Any]
) -> list[Step | None]:
    """Put the envs' episodes and the unlogged metrics back as checkpointed; a checkpoint without them (a stop
    signal in an env that cannot save its state) ends the cut episodes and discards the partial rollout."""
    episodes = resumed.get("episodes")
    metrics.load_state_dict(resumed["metrics"])
    if episodes is None:
        agent.discard_rollout()
        c["rollout_t"] = 0
        return [None] * len(envs)
    current: list[Step | None] = []
    for env, episode in zip(envs, episodes, strict=True):
        if episode is None:
            current.append(None)
            continue
        env.set_state(episode["env"])  # type: ignore[attr-defined]  # it wrote the state with get_state
        current.append(Step(obs=episode["obs"].numpy()))
    return current


def validate(cfg: DictConfig) -> None:
    """`common.loop.validate_run`'s checks plus the rollout's sizes."""
    validate_run(cfg)
    t = cfg.paper.train
    for key in ("num_envs", "rollout_steps"):
        value = t.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"paper.train.{key}={value!r} must be an integer >= 1")


@loop(validate=validate)
def train_onpolicy(cfg: DictConfig, ctx: RunContext) -> float:
    """Train `cfg.paper.entry` (an `OnPolicyAgent`) from rollouts; returns the final evaluation return."""
    n = int(cfg.paper.train.num_envs)
    envs = [build_env(cfg, cfg.seed + i) for i in range(n)]  # env i seeded seed + i (CleanRL: seed + i)
    eval_env = build_env(cfg, cfg.seed, evaluation=True)  # the whole game, raw score (Atari)
    try:
        return run_envs(cfg, ctx, envs, eval_env)
    finally:
        for env in (*envs, eval_env):
            env.close()


def run_envs(cfg: DictConfig, ctx: RunContext, envs: list[Env], eval_env: Env) -> float:
    """The on-policy loop on envs the caller built (and closes), e.g. Snapshot RL's wrapped ones."""
    p, t = cfg.paper, cfg.paper.train
    agent: OnPolicyAgent = make_agent(cfg, envs[0].spec, ctx.device)
    n, repeat, rollout_steps = len(envs), p.action_repeat, int(t.rollout_steps)
    total_steps = math.ceil(t.num_frames / repeat)
    eval_every = max(1, t.eval_every_frames // repeat)
    ckpt_every = max(1, cfg.checkpoint.every_frames // repeat)
    c: dict[str, Any] = {
        "step": 0,
        "episode": 0,
        "updates": 0,  # rollouts learned from
        "rollout_t": 0,  # steps of the current rollout collected
        "next_eval_step": 0,
        "last_eval_step": -1,
        "next_ckpt_step": ckpt_every,
        "elapsed": 0.0,
        "last_eval_return": float("nan"),
    }
    rngs = {("env_rng" if i == 0 else f"env_rng_{i}"): env for i, env in enumerate(envs)}
    run = RunSession(
        cfg,
        ctx,
        agent,
        c,
        total_steps=total_steps,
        frames_per_step=repeat,
        expect={"paper": p.name, "env": cfg.env.name, "num_envs": n},
        rngs={**rngs, "eval_env_rng": eval_env},
    )
    metrics = Averager()
    current: list[Step | None] = [None] * n  # each env's latest step; None: it needs a reset
    if run.resumed is not None:
        current = _resume_episodes(envs, agent, metrics, c, run.resumed)

    def checkpoint() -> bool:
        """Save the run if every env is between episodes or can save its episode; False if not saved."""
        episodes = _episodes(envs, current)
        if episodes is None:
            return False
        run.save(episodes=episodes, metrics=metrics.state_dict())
        return True

    def evaluate_and_log(step: int) -> bool:
        result = run.evaluate(eval_env, step, t.eval_episodes)
        if result is None:  # a signal cut it: the eval env's RNG was rewound, it repeats on resume
            return False
        c["last_eval_step"], c["last_eval_return"] = step, result["episode_return"]
        c["next_eval_step"] = (step // eval_every + 1) * eval_every
        row = {"frame": step * repeat, "step": step, "episode": c["episode"], **result, "time": run.elapsed()}
        run.log_eval(step, row)
        return True

    def stop_here() -> float:
        if not checkpoint():
            if run.checkpointer.latest() is None:  # no exact checkpoint to fall back to: an inexact one
                run.save(episodes=None, metrics=metrics.state_dict())
            else:
                print("an env cannot save its state mid-episode: the resume starts from the last checkpoint "
                      "and repeats the steps since", file=sys.stderr)  # fmt: skip
        run.close()
        return float(c["last_eval_return"])

    clocks = [run.clock] * n
    while c["step"] < total_steps and not run.reached:
        step = c["step"]
        for i, env in enumerate(envs):
            if current[i] is None:
                current[i] = env.reset()
                clocks[i] = time.perf_counter()

        if step >= c["next_eval_step"] and c["last_eval_step"] != step and not evaluate_and_log(step):
            return stop_here()
        if run.reached:  # stop_at_return: this evaluation reached it
            break

        obs = np.stack([ts.obs for ts in current if ts is not None])
        with torch.no_grad():
            actions = agent.explore(obs, step)
        results = [env.step(a) for env, a in zip(envs, actions, strict=True)]
        agent.observe(
            np.array([r.reward for r in results], np.float32),
            np.array([r.terminated for r in results]),
            np.array([r.truncated for r in results]),
            np.stack([r.obs for r in results]),
        )
        for _ in range(n):
            run.advance()
        c["rollout_t"] += 1

        now = time.perf_counter()
        for i, ts in enumerate(results):
            current[i] = None if ts.done else ts
            if not ts.done:
                continue
            c["episode"] += 1
            run.log_train(
                {
                    "frame": c["step"] * repeat,
                    "step": c["step"],
                    "episode": c["episode"],
                    "episode_return": ts.episode_return,
                    "episode_length": ts.episode_length,
                    "buffer_size": c["rollout_t"] * n,
                    "updates": c["updates"],
                    **metrics.pop(),
                    "time": run.elapsed(now),
                    "fps": ts.episode_length * repeat / max(1e-9, now - clocks[i]),
                }
            )

        if c["rollout_t"] == rollout_steps:
            # An env whose episode just ended passes its final observation: its last step is an end, so
            # the agent bootstraps it from `final_obs` (truncated) or not at all (terminated), not from this.
            next_obs = np.stack([r.obs for r in results])
            metrics.add(agent.learn(next_obs, c["step"]))
            c["updates"] += 1
            c["rollout_t"] = 0
        # Periodic checkpoints: once due, at the first rollout boundary (or moment with every env between
        # episodes) at which every env in an episode can save its state.
        between = all(ts is None for ts in current)
        if c["step"] >= c["next_ckpt_step"] and (c["rollout_t"] == 0 or between) and checkpoint():
            c["next_ckpt_step"] = (c["step"] // ckpt_every + 1) * ckpt_every
        if run.stopped:
            return stop_here()

    if c["last_eval_step"] != c["step"]:
        evaluate_and_log(c["step"])
    run.save(episodes=[None] * n, metrics={"sum": {}, "n": {}})  # finished: nothing left to continue
    score = float(c["last_eval_return"])
    run.close({"final_eval_return": score})
    return score
