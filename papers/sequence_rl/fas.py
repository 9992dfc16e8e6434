"""The Frequency-Averaged Score (FAS) of SRL (Patel & Siegelmann, ICLR 2025, Sec. 5), and its evaluation.

A trained policy is run at each action sequence length s (its decision interval: one decision every s env
steps) and its mean return R(s) recorded. FAS is the area under R over s, by the trapezoidal rule, divided by
the area of a policy that scores the task's maximum return at every length up to the largest one:

    FAS = trapz(R(s) + offset, s) / (max_return * s_max)

as dee0512/Sequence-Reinforcement-Learning @c2165d9 notebooks/table2.ipynb computes it (`np.trapz(avg_rewards,
steps_list) / (max_reward * 30)` with steps 1, 2, 4, ..., 30; Reacher's returns shifted by +65 and
Pendulum's by +1550 so they are non-negative). A run's FAS is averaged over seeds by the caller.

How each agent acts at length s (scripts/eval_sac.py `evaluate_policy`): SRL emits s actions from the state
and runs them open loop (its GRU unrolls to any length); a one-action agent (SAC, TD3: the baselines) acts
once and its action is held for s steps. Both run on the task's own env (no action repeat) wrapped in
`DecisionInterval(env, s)` (SRL: `loop.Decisions`, which also shows it its last action), with the
deterministic policy, `paper.fas.episodes` episodes per length, the env
seeded seed + `paper.fas.seed_offset`.

    python -m papers.sequence_rl.fas runs/sequence_rl/hopper/<time>_s1      # or a SAC / TD3 run directory
writes `fas.json` there: the intervals, the mean return at each, the normaliser and the FAS.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from common.errors import CheckpointError, ConfigError, RlreproError
from common.registry import CONF_DIR, import_entry

# (max_return, offset) per Gym task, from notebooks/table2.ipynb (`MAX_REWARDS`, the Reacher/Pendulum shifts);
# keyed by the task name before "-v" (the paper ran the v2 MuJoCo tasks; ours are v5: same reward scales).
TASK_NORMALISERS: dict[str, tuple[float, float]] = {
    "Pendulum": (1350.0, 1550.0),
    "LunarLanderContinuous": (300.0, 0.0),
    "Hopper": (3600.0, 0.0),
    "Walker2d": (5000.0, 0.0),
    "Ant": (6500.0, 0.0),
    "HalfCheetah": (17000.0, 0.0),
    "Humanoid": (10500.0, 0.0),
    "InvertedPendulum": (1000.0, 0.0),
    "InvertedDoublePendulum": (9400.0, 0.0),
    "Reacher": (60.0, 65.0),
    "Swimmer": (350.0, 0.0),
}
FAS_FILE = "fas.json"


def frequency_averaged_score(
    intervals: Sequence[int], returns: Sequence[float], max_return: float, offset: float = 0.0
) -> float:
    """FAS = trapz(returns + offset, intervals) / (max_return * max(intervals)) (see the module docstring)."""
    s = np.asarray(intervals, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64) + float(offset)
    if s.ndim != 1 or s.shape != r.shape or len(s) < 2:
        raise ConfigError(f"FAS needs >= 2 intervals and one return each, got {len(s)} and {len(r)}")
    if np.any(s < 1) or np.any(np.diff(s) <= 0):
        raise ConfigError(f"FAS intervals must be increasing integers >= 1, got {list(intervals)}")
    if not max_return > 0:
        raise ConfigError(f"FAS max_return must be positive, got {max_return}")
    area = float(np.sum((r[1:] + r[:-1]) * np.diff(s)) / 2.0)  # the trapezoidal rule (np.trapz)
    return area / (float(max_return) * float(s[-1]))


def task_normaliser(env_cfg: DictConfig, max_return: float | None) -> tuple[float, float] | None:
    """(max_return, offset) for the run's task: `max_return` when given (offset 0), else the paper's; None
    for a task the paper has no normaliser for (the returns are still written, the FAS is not)."""
    if max_return is not None:
        if not max_return > 0:
            raise ConfigError(f"paper.fas.max_return={max_return} must be positive (or null)")
        return float(max_return), 0.0
    task = str(env_cfg.get("id") or env_cfg.get("name")).split("-v")[0]
    return TASK_NORMALISERS.get(task)


def default_fas_config() -> DictConfig:
    """`paper.fas` of conf/paper/sequence_rl.yaml: the settings for runs of other papers (SAC, TD3)."""
    fas = OmegaConf.load(CONF_DIR / "paper" / "sequence_rl.yaml").fas
    assert isinstance(fas, DictConfig)
    return fas


def check_fas_config(cfg: DictConfig) -> None:
    """One-line ConfigErrors for `paper.fas` settings that cannot be evaluated."""
    fas = cfg.paper.fas
    intervals = list(fas.intervals)
    if len(intervals) < 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in intervals):
        raise ConfigError(f"paper.fas.intervals={intervals} must list at least two integers")
    frequency_averaged_score(intervals, [0.0] * len(intervals), 1.0)  # ordering checks
    if fas.episodes < 1:
        raise ConfigError(f"paper.fas.episodes={fas.episodes} must be at least 1")
    task_normaliser(cfg.env, fas.max_return)


def sequence_policy(agent: Any, length: int) -> Any:
    """obs -> `length` actions, flat: SRL's open-loop sequence, or a one-action agent's action held."""
    if hasattr(agent, "act_sequence"):
        return lambda obs: agent.act_sequence(obs, length, eval_mode=True)
    return lambda obs: np.tile(agent.act(obs, 2**62, eval_mode=True), length)  # past any random start


def evaluate_intervals(
    cfg: DictConfig, agent: Any, intervals: Sequence[int], episodes: int, seed: int
) -> list[float]:
    """Mean return of `agent` at each interval (module docstring), on the run's task."""
    from common.envs.decision_interval import DecisionInterval
    from common.loop import mean_return
    from papers.sequence_rl.loop import Decisions, primitive_env

    wrap = Decisions if hasattr(agent, "act_sequence") else DecisionInterval  # SRL sees its last action
    returns = []
    with torch.random.fork_rng(devices=[]):
        for s in intervals:
            torch.manual_seed(seed)
            env = wrap(primitive_env(cfg, seed, evaluation=True), int(s))
            try:
                returns.append(mean_return(env, sequence_policy(agent, int(s)), episodes))
            finally:
                env.close()
    return returns


def load_agent(run_dir: Path, cfg: DictConfig, frame: int | None, device: torch.device) -> tuple[Any, int]:
    """The run's agent from its latest checkpoint (or that of `frame`) and the checkpoint's frame."""
    from common.checkpoint import Checkpointer
    from papers.sequence_rl.loop import Decisions, primitive_env

    checkpointer = Checkpointer(run_dir, 1)
    path = checkpointer.latest() if frame is None else checkpointer.dir / f"frame_{int(frame):010d}"
    if path is None or not (path / "meta.json").exists():
        raise CheckpointError(f"{run_dir} has no checkpoint{'' if frame is None else f' of frame {frame}'}")
    state = checkpointer.load(path, {"paper": cfg.paper.name, "env": cfg.env.name}, None)
    env = primitive_env(cfg, cfg.seed)
    interval = cfg.paper.get("interval")  # SRL's decisions are J actions; SAC and TD3 act one at a time
    spec = env.spec if interval is None else Decisions(env, int(interval)).spec
    env.close()
    agent = import_entry(cfg.paper.entry)(cfg.paper.agent, spec, device, "fp32")
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit its agent ({e})") from e
    return agent, int(path.name.split("_")[1])


def evaluate_run(
    run_dir: Path,
    *,
    frame: int | None = None,
    intervals: Sequence[int] | None = None,
    episodes: int | None = None,
    max_return: float | None = None,
    only_if_finished: bool = False,
    device: torch.device | None = None,
) -> dict[str, Any] | None:
    """Evaluate a run directory's policy at each interval and write `fas.json` there; its content. With
    `only_if_finished`, nothing when the latest checkpoint is short of `paper.train.num_frames` (a stopped
    run)."""
    from common.launch import load_run_config

    cfg = load_run_config(run_dir)
    # the run's own settings over sequence_rl's defaults (a SAC/TD3 run has none, or debug=smoke's few)
    fas = OmegaConf.merge(default_fas_config(), cfg.paper.get("fas") or {})
    intervals = list(fas.intervals if intervals is None else intervals)
    episodes = int(fas.episodes if episodes is None else episodes)
    normaliser = task_normaliser(cfg.env, fas.max_return if max_return is None else max_return)
    frequency_averaged_score(intervals, [0.0] * len(intervals), 1.0)  # refuse bad intervals before work
    agent, at_frame = load_agent(run_dir, cfg, frame, device or torch.device("cpu"))
    if only_if_finished and at_frame < int(cfg.paper.train.num_frames):
        return None
    seed = int(cfg.seed) + int(fas.seed_offset)
    returns = evaluate_intervals(cfg, agent, intervals, episodes, seed)
    result = {
        "paper": str(cfg.paper.name),
        "env": str(cfg.env.name),
        "frame": at_frame,
        "train_interval": int(cfg.paper.get("interval", cfg.paper.action_repeat)),
        "intervals": [int(s) for s in intervals],
        "returns": returns,
        "episodes": episodes,
        "max_return": None if normaliser is None else normaliser[0],
        "offset": None if normaliser is None else normaliser[1],
        "fas": None if normaliser is None else frequency_averaged_score(intervals, returns, *normaliser),
    }
    (run_dir / FAS_FILE).write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory of sequence_rl, sac or td3")
    parser.add_argument("--frame", type=int, default=None, help="checkpoint frame (default: the latest)")
    parser.add_argument("--intervals", type=int, nargs="+", default=None, help="default: paper.fas.intervals")
    parser.add_argument("--episodes", type=int, default=None, help="default: paper.fas.episodes")
    parser.add_argument("--max-return", type=float, default=None, help="default: the paper's for the task")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        result = evaluate_run(
            args.run_dir,
            frame=args.frame,
            intervals=args.intervals,
            episodes=args.episodes,
            max_return=args.max_return,
        )
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    assert result is not None
    if result["fas"] is None:
        print(f"returns written to {args.run_dir / FAS_FILE}; no FAS: the paper has no normaliser for "
              f"env {result['env']} (pass --max-return)")  # fmt: skip
    else:
        print(f"FAS {result['fas']:.4f} ({args.run_dir / FAS_FILE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
