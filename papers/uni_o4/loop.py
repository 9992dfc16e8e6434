"""Uni-O4's run: the offline stages, then online PPO in the dataset's simulator (`paper.loop:
papers.uni_o4.loop.train`).

One step counter runs through every stage (Lei-Kun/Uni-O4 @1eecc45 main.py, then ppo_finetune/main.py):
`stages.iql` IQL updates, `stages.dynamics` dynamics-ensemble updates, `stages.bc` ensemble BC updates,
`stages.critic` updates of the online critic on Monte-Carlo returns, `offline_steps` offline PPO updates
(OPE every `ope_every` of them), then `online_steps` env steps of online PPO. `frame` = that step;
`env_steps` counts the online phase alone. Evaluations: the ensemble when the offline PPO stage starts and
every `train.eval_every_steps` of it; at the switch the `select_budget` best members by OPE are evaluated
and the best is handed over (a row with `handover: 1`); online, every `train.switch_eval_every` env steps
for the first `train.switch_window`, then every `train.online_eval_every`. A checkpoint follows every
evaluation and stage end, and comes every `checkpoint.every_frames` steps (online: with the episode in
progress, `Env.get_state`), so a resume continues exactly.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.envs.base import Step, env_state
from common.errors import ConfigError, DatasetError
from common.evaluation.normalization import normalized_score
from common.logger import Averager
from common.loop import build_env
from common.offline import switch as switch_summary
from common.offline.loop import record_dataset
from common.offline.minari_io import check_split, dataset_id, datasets_root, load_dataset, read_info
from common.registry import loop
from common.runtime import RunContext
from common.session import RunSession, make_agent
from papers.uni_o4.agent import UniO4Agent

STAGES = ("iql", "dynamics", "bc", "critic")
SIMULATED = ("gym", "dmc")  # suites whose tasks run in a simulator Uni-O4 can fine-tune in


def _int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} must be an integer >= {low}")
    return value


def validate(cfg: DictConfig) -> None:
    """Every check before the run directory is written: stage sizes, cadences, the dataset, a simulator."""
    p, t = cfg.paper, cfg.paper.train
    if cfg.get("dataset") is None:
        raise ConfigError("paper=uni_o4 starts offline: choose a dataset, e.g. dataset=medium")
    check_split(cfg.dataset)
    for key in STAGES:
        _int(p.stages[key], f"paper.stages.{key}", 0)
    _int(p.offline_steps, "paper.offline_steps", 0)
    online = _int(p.online_steps, "paper.online_steps", 0)
    for key in ("eval_every_steps", "eval_episodes", "log_every_steps", "ope_every", "online_eval_every"):
        _int(t[key], f"paper.train.{key}", 1)
    _int(t.switch_eval_every, "paper.train.switch_eval_every", 1)
    _int(t.switch_window, "paper.train.switch_window", 0)
    if p.pixels:
        raise ConfigError("Uni-O4 reads state datasets: set paper.pixels=false")
    suite = cfg.env.get("suite")
    if online > 0 and suite not in SIMULATED:
        raise ConfigError(
            f"Uni-O4's online phase fine-tunes in the dataset's simulator, and env={cfg.env.name} (suite "
            f"{suite}) cannot be stepped: set paper.online_steps=0 (offline only) or pick a gym/dmc env"
        )
    if read_info(cfg.env.name, cfg.dataset) is None:
        raise DatasetError(
            f"dataset {dataset_id(cfg.env.name, cfg.dataset)} not found under {datasets_root()} "
            f"(MINARI_DATASETS_PATH); generate it with: python run.py paper=d4rl env={cfg.env.name}"
        )


@loop(validate=validate)
def train(cfg: DictConfig, ctx: RunContext) -> float:
    """All of Uni-O4 on `cfg.dataset`; returns the last evaluation's return."""
    env = build_env(cfg, cfg.seed)  # evaluations
    train_env = build_env(cfg, cfg.seed + 1) if int(cfg.paper.online_steps) > 0 else None
    try:
        data = load_dataset(cfg.env.name, cfg.dataset, env.spec)
        return run(cfg, ctx, env, train_env, data)
    finally:
        for e in (env, train_env):
            if e is not None:
                e.close()


def run(cfg: DictConfig, ctx: RunContext, env: Any, train_env: Any, data: Any) -> float:
    p, t = cfg.paper, cfg.paper.train
    ref_min, ref_max = float(data.metadata["ref_min_score"]), float(data.metadata["ref_max_score"])
    record_dataset(ctx, cfg, data)
    agent: UniO4Agent = make_agent(cfg, env.spec, ctx.device)
    agent.prepare(data)
    ends = np.cumsum([int(p.stages[k]) for k in STAGES] + [int(p.offline_steps)])
    dyn_end, bc_end, switch = int(ends[1]), int(ends[2]), int(ends[4])
    bppo_start, total = int(ends[3]), switch + int(p.online_steps)
    ckpt_every = int(cfg.checkpoint.every_frames)
    c: dict[str, Any] = {"step": 0, "elapsed": 0.0, "last_eval_step": -1, "last_return": float("nan"),
                         "last_score": float("nan"), "done_events": 0, "next_ckpt": ckpt_every,
                         "switch": switch_summary.new_state()}  # fmt: skip
    rngs = {"env_rng": env, **({"train_env_rng": train_env} if train_env is not None else {})}
    session = RunSession(
        cfg, ctx, agent, c, total_steps=total, unit="step", rngs=rngs,
        expect={"paper": p.name, "env": cfg.env.name, "dataset": cfg.dataset},
    )  # fmt: skip
    metrics = Averager()
    current: Step | None = None
    if session.resumed is not None:
        metrics.load_state_dict(session.resumed["metrics"])
        episode = session.resumed.get("episode")
        if episode is not None and train_env is not None:
            train_env.set_state(episode["env"])
            current = Step(obs=episode["obs"].numpy())

    def save() -> bool:
        """Checkpoint here; online, with the episode in progress (False: the env cannot save it)."""
        episode = None
        if current is not None:
            state = env_state(train_env)
            if state is None:
                return False
            episode = {"env": state, "obs": torch.from_numpy(np.array(current.obs))}
        session.save(metrics=metrics.state_dict(), episode=episode)
        return True

    def evaluate(step: int, **extra: float) -> dict[str, float] | None:
        result = session.evaluate(env, step, int(t.eval_episodes))
        if result is None:
            return None
        score = float(normalized_score(result["episode_return"], ref_min, ref_max))
        c["last_eval_step"], c["last_return"], c["last_score"] = step, result["episode_return"], score
        online = max(0, step - switch)
        switch_summary.note_online(c["switch"], step - switch, score, int(t.switch_window))
        row = {"frame": step, "step": step, "env_steps": online, "online": float(step > switch),
               **result, "normalized_score": score, **extra, "time": session.elapsed()}  # fmt: skip
        session.log_eval(step, row)
        return row

    def event(index: int, action: Any) -> bool:
        """Run the stage-end action `index` once (a resume past it does not repeat it); False: a signal."""
        if c["done_events"] > index:
            return True
        if action() is False:
            return False
        c["done_events"] = index + 1
        return save()

    def ope_and_eval() -> bool:
        metrics.add(agent.ope_round())
        return evaluate(c["step"], ope_mean=float(agent.last_ope.mean())) is not None

    def handover() -> bool:
        """ppo_finetune/ppo.py `load_pi_value`: of the best members by OPE, the best in the env."""
        best_row, best_k = None, -1
        for k in agent.candidates():
            agent.select(k)
            result = session.evaluate(env, c["step"], int(t.eval_episodes))
            if result is None:
                agent.c["selected"] = -1
                return False
            if best_row is None or result["episode_return"] > best_row["episode_return"]:
                best_row, best_k = result, k
        agent.select(best_k)
        score = float(normalized_score(best_row["episode_return"], ref_min, ref_max))  # type: ignore[index]
        c["last_return"], c["last_score"] = best_row["episode_return"], score  # type: ignore[index]
        c["switch"]["start_score"] = score
        session.log_eval(c["step"], {"frame": c["step"], "step": c["step"], "env_steps": 0, "online": 0.0,
                                     **best_row, "normalized_score": score, "handover": 1.0,  # type: ignore[dict-item]
                                     "member": float(best_k), "time": session.elapsed()})  # fmt: skip
        return True

    def offline_result(row: dict[str, float] | None) -> bool:
        """The ensemble's evaluation at the switch is the offline result (False: a signal cut it)."""
        if row is not None:
            c["switch"]["offline_score"] = row["normalized_score"]
        return row is not None

    def online_eval_due(o: int) -> bool:
        dense = o <= int(t.switch_window) and o % int(t.switch_eval_every) == 0
        return o > 0 and (dense or o % int(t.online_eval_every) == 0 or o == int(p.online_steps))

    log_clock, log_step = session.clock, c["step"]
    stopped = False
    while True:
        step = c["step"]
        # stage ends, in order (each once)
        if step >= dyn_end and not event(0, lambda: metrics.add(agent.dynamics_finish())):
            break
        if step >= bc_end and not event(1, agent.bc_finish):
            break
        if step >= bppo_start and not event(2, ope_and_eval):
            break
        ensemble_eval = lambda at=step: offline_result(evaluate(at, ope_mean=float(agent.last_ope.mean())))  # noqa: E731
        if step >= switch and int(p.offline_steps) > 0 and not event(3, ensemble_eval):
            break
        if step >= switch and int(p.online_steps) > 0 and not event(4, handover):
            break
        if step >= total or session.stopped:
            stopped = session.stopped
            break

        if step < int(ends[0]):
            metrics.add(agent.iql_update())
        elif step < dyn_end:
            metrics.add(agent.dynamics_update())
        elif step < bc_end:
            metrics.add(agent.bc_update())
        elif step < bppo_start:
            metrics.add(agent.critic_pretrain_update())
        elif step < switch:
            k = step - bppo_start
            metrics.add(agent.bppo_update(k))
            if (k + 1) % int(t.ope_every) == 0:
                metrics.add(agent.ope_round())
        else:
            if current is None:
                current = train_env.reset()
            action = agent.explore(current.obs)
            ts = train_env.step(action)
            agent.observe(float(ts.reward), bool(ts.terminated), bool(ts.truncated), ts.obs)
            if ts.done:
                metrics.add({"episode_return": ts.episode_return, "episode_length": ts.episode_length})
            current = None if ts.done else ts
            if agent.rollout.full:
                metrics.add(agent.learn())
        session.advance()
        step = c["step"]

        if step % int(t.log_every_steps) == 0:
            now = time.perf_counter()
            row = {"frame": step, "step": step, **metrics.pop(), "time": session.elapsed(now)}
            session.log_train({**row, "updates_per_s": (step - log_step) / max(1e-9, now - log_clock)})
            log_clock, log_step = now, step
        in_bppo = bppo_start < step < switch and (step - bppo_start) % int(t.eval_every_steps) == 0
        in_online = step > switch and online_eval_due(step - switch)
        if in_bppo or in_online:
            extra = {"ope_mean": float(agent.last_ope.mean())} if in_bppo else {}
            if evaluate(step, **extra) is None:
                stopped = True
                break
            save()
            c["next_ckpt"] = (step // ckpt_every + 1) * ckpt_every
        elif step >= c["next_ckpt"] and (step <= switch or agent.rollout.t == 0) and save():
            c["next_ckpt"] = (step // ckpt_every + 1) * ckpt_every

    if stopped or session.stopped:
        save() or session.checkpointer.latest() or session.save(metrics=metrics.state_dict(), episode=None)
        session.close()
        return float(c["last_return"])
    done = c["step"] >= total
    if done and int(p.online_steps) > 0:
        switch_summary.write(ctx.run_dir, c["switch"], c["last_score"], int(t.switch_window))
    summary = {"final_return": c["last_return"], "final_normalized_score": c["last_score"]}
    session.close(summary if done else None)
    return float(c["last_return"])
