"""S3RL's snapshots: a teacher run of ours rolled out, its states valued and clustered (Zhao et al., 2024,
"Snapshot Reinforcement Learning: Leveraging Prior Trajectories for Efficiency", arXiv 2403.00673).

Every fact cites sdpkjc/snapshotrl @0f0d192 src/snapshot_td3_mujoco.py (the SAC and PPO scripts share the
procedure): the teacher plays `teacher_episodes` episodes; every `save_every`-th step its simulator state is
kept with the teacher's value of it, Q1(s, pi(s)); the `best_episodes` episodes of highest return are kept;
k-means on the values (a scalar per state: "status classification") splits their states into
`num_clusters` clusters. `SnapshotStarts` (common/envs/snapshot.py) then draws a cluster, then a state.

The teacher is a TD3 or SAC run directory of ours (`paper.teacher`), read from its latest checkpoint or the
one of frame `paper.teacher_frame`; nothing is downloaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from common.checkpoint import Checkpointer
from common.envs.base import Env
from common.envs.reset_state import snapshot
from common.envs.snapshot import SnapshotSet, SnapshotStarts
from common.errors import CheckpointError, ConfigError, EnvError
from common.registry import import_entry

# The agents a teacher may be, and whether it acts with its deterministic policy (TD3: snapshotrl's teacher
# rollout drops the exploration noise) or samples (SAC: the teacher calls actor.get_action, a sample).
TEACHERS = {"papers.td3.agent.TD3Agent": True, "papers.sac.agent.SACAgent": False}
_PAST_EXPLORATION = 2**62  # an acting step after any agent's uniform random start steps


@dataclass(frozen=True)
class Teacher:
    """A checked teacher run: its directory, saved config, the checkpoint to read and its frame."""

    run_dir: Path
    cfg: DictConfig
    checkpoint: Path
    frame: int


def _make_one(cfg: DictConfig) -> str:
    return (
        f"make one with `python run.py paper=td3 env={cfg.env.name}` (or paper=sac), then pass "
        f"paper.teacher=runs/td3/{cfg.env.name}/<time>_s<seed>"
    )


def find_teacher(cfg: DictConfig) -> Teacher:
    """`paper.teacher` checked against the student's config: a TD3/SAC run directory of the same env with the
    checkpoint asked for; else a one-line ConfigError or CheckpointError naming the fix. Reads no weights."""
    from common.launch import load_run_config  # launch imports the loops: keep it out of import time

    given = cfg.paper.get("teacher")
    if not given:
        raise ConfigError(f"snapshot_rl needs a teacher run (paper.teacher=<run_dir>): {_make_one(cfg)}")
    run_dir = Path(str(given)).expanduser()
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"paper.teacher={given} is not a run directory (no config.yaml): {_make_one(cfg)}")
    tcfg = load_run_config(run_dir)
    entry = str(tcfg.paper.get("entry"))
    if entry not in TEACHERS:
        raise ConfigError(
            f"paper.teacher={given} is a run of paper {tcfg.paper.get('name')} ({entry}); the teacher "
            f"must be a TD3 or SAC run: {_make_one(cfg)}"
        )
    if tcfg.env.get("name") != cfg.env.name or tcfg.env.get("id") != cfg.env.get("id"):
        raise ConfigError(
            f"paper.teacher={given} was trained on env {tcfg.env.get('name')}, not {cfg.env.name}: its "
            f"states do not fit; {_make_one(cfg)}"
        )
    checkpointer = Checkpointer(run_dir, 1)
    frame = cfg.paper.get("teacher_frame")
    if frame is None:
        path = checkpointer.latest()
        if path is None:
            raise CheckpointError(
                f"paper.teacher={given} has no checkpoint yet: let it run past checkpoint.every_frames "
                f"(or resume it: python run.py resume={given})"
            )
    else:
        path = checkpointer.dir / f"frame_{int(frame):010d}"
        if not (path / "meta.json").exists():
            done = checkpointer.dir.glob("frame_*/meta.json")
            kept = sorted(int(p.parent.name.split("_")[1]) for p in done)
            raise CheckpointError(
                f"paper.teacher_frame={frame}: {given} has no checkpoint of that frame; it keeps frames "
                f"{kept or 'none'} (null = the latest)"
            )
    return Teacher(run_dir, tcfg, path, int(path.name.split("_")[1]))


@dataclass(frozen=True)
class Rollout:
    """The teacher's kept states: simulator state, value Q1(s, pi(s)) and episode of each; each episode's
    return."""

    qpos: np.ndarray  # (N, nq)
    qvel: np.ndarray  # (N, nv)
    value: np.ndarray  # (N,)
    episode: np.ndarray  # (N,)
    returns: np.ndarray  # (episodes,)


def load_agent(teacher: Teacher, env: Env) -> Any:
    """The teacher's agent with the weights of `teacher.checkpoint`, on the CPU."""
    tcfg = teacher.cfg
    state = Checkpointer(teacher.run_dir, 1).load(
        teacher.checkpoint, {"paper": tcfg.paper.name, "env": tcfg.env.name}, None
    )
    agent = import_entry(tcfg.paper.entry)(tcfg.paper.agent, env.spec, torch.device("cpu"), "fp32")
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"teacher checkpoint {teacher.checkpoint} does not fit its agent ({e})") from e
    return agent


def roll_out(teacher: Teacher, episodes: int, save_every: int, seed: int) -> Rollout:
    """`episodes` teacher episodes from the env's own starts (env and torch seeded by `seed`, the caller's
    torch RNG untouched), keeping the state before every `save_every`-th step (counted over all episodes,
    from the first state: snapshotrl's `teacher_step % teacher_env_save_frequency == 0`)."""
    from common.loop import build_env  # the loop imports the envs: keep it out of import time

    env = build_env(teacher.cfg, seed, evaluation=True)
    try:
        agent = load_agent(teacher, env)
        deterministic = TEACHERS[str(teacher.cfg.paper.entry)]
        qpos, qvel, values, owner, returns = [], [], [], [], []
        step = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for episode in range(episodes):
                ts = env.reset()
                while not ts.done:
                    with torch.no_grad():
                        action = agent.act(ts.obs, _PAST_EXPLORATION, eval_mode=deterministic)
                    if step % save_every == 0:
                        snap = snapshot(env)
                        qpos.append(snap.qpos)
                        qvel.append(snap.qvel)
                        values.append(_q1(agent, ts.obs, action))
                        owner.append(episode)
                    ts = env.step(action)
                    step += 1
                returns.append(ts.episode_return)
    finally:
        env.close()
    return Rollout(np.stack(qpos), np.stack(qvel), np.array(values), np.array(owner), np.array(returns))


def _q1(agent: Any, obs: np.ndarray, action: np.ndarray) -> float:
    """The teacher's first critic at (s, a): the value snapshotrl clusters on (`teacher_model_qf`)."""
    x = torch.as_tensor(np.concatenate([obs, action]), dtype=torch.float32).unsqueeze(0)
    with torch.no_grad():
        return float(agent.critic.q1(x)[0, 0])


def best_episodes(rollout: Rollout, keep: int) -> np.ndarray:
    """Indices of the states of the `keep` episodes of highest return (ties: the earlier episode)."""
    order = np.argsort(-rollout.returns, kind="stable")[:keep]
    return np.flatnonzero(np.isin(rollout.episode, order))


def cluster_values(values: np.ndarray, num_clusters: int) -> np.ndarray:
    """K-means labels of scalar values: snapshotrl's `KMeans(n_clusters=min(k, n), random_state=0,
    n_init="auto")` on the values as an (n, 1) array. Deterministic: the seed is fixed, as upstream."""
    from sklearn.cluster import KMeans

    x = np.asarray(values, np.float64).reshape(-1, 1)
    k = min(num_clusters, len(x))
    return KMeans(n_clusters=k, random_state=0, n_init="auto").fit(x).labels_.astype(np.int64)


@functools.lru_cache(maxsize=4)  # on-policy students wrap several envs with the same set
def _snapshot_set(run_dir: Path, checkpoint: Path, s: tuple[int, int, int, int], seed: int) -> SnapshotSet:
    episodes, save_every, best, clusters = s
    from common.launch import load_run_config

    teacher = Teacher(run_dir, load_run_config(run_dir), checkpoint, int(checkpoint.name.split("_")[1]))
    rollout = roll_out(teacher, episodes, save_every, seed)
    kept = best_episodes(rollout, best)
    labels = cluster_values(rollout.value[kept], clusters)
    return SnapshotSet(rollout.qpos[kept], rollout.qvel[kept], labels)


def snapshot_set(cfg: DictConfig) -> SnapshotSet:
    """The clustered teacher states of the run `cfg` (teacher rolled out with seed `cfg.seed`)."""
    s = cfg.paper.snapshot
    teacher = find_teacher(cfg)
    sizes = (int(s.teacher_episodes), int(s.save_every), int(s.best_episodes), int(s.num_clusters))
    return _snapshot_set(teacher.run_dir.resolve(), teacher.checkpoint.resolve(), sizes, int(cfg.seed))


def check_snapshot_config(cfg: DictConfig) -> None:
    """`paper.snapshot` sizes and the student's env (a Gymnasium MuJoCo task from states): one-line
    ConfigErrors and EnvErrors."""
    s = cfg.paper.snapshot
    for key, low in (
        ("teacher_episodes", 1),
        ("save_every", 1),
        ("best_episodes", 1),
        ("num_clusters", 1),
        ("truncate_steps", 1),
        ("snapshot_steps", 0),
    ):
        value = s.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"paper.snapshot.{key}={value!r} must be an integer >= {low}")
    from common.loop import build_env

    env = build_env(cfg, int(cfg.seed))  # snapshot starts restore MuJoCo states: an EnvError otherwise
    try:
        env.reset()
        snapshot(env)
    except EnvError as e:
        raise EnvError(f"snapshot_rl on env {cfg.env.name}: {e} (e.g. env=hopper)") from e
    finally:
        env.close()


def snapshot_starts(env: Env, cfg: DictConfig, seed: int) -> SnapshotStarts:
    """`env` (a training env of the student, seeded `seed`) with S3RL's starts; the teacher is rolled out at
    the first snapshot start, not here (a resumed run restores the set from its checkpoint)."""
    s = cfg.paper.snapshot
    # Students step num_envs envs in lockstep: the phase of `snapshot_steps` total steps is shared out.
    num_envs = int(cfg.paper.train.get("num_envs", 1))
    return SnapshotStarts(
        env,
        lambda: snapshot_set(cfg),
        truncate_steps=int(s.truncate_steps),
        snapshot_steps=-(-int(s.snapshot_steps) // num_envs),
        seed=seed,
    )
