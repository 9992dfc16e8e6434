"""D4RL-protocol datasets stored in Minari format, named ``rlrepro/<env>/<split>-v0``.

Minari (the maintained successor of D4RL's format) keeps each dataset under
``$MINARI_DATASETS_PATH/<namespace>/<env>/<split>-v0/data/`` (default root ``~/.minari/datasets``). Next to
`data/` we write ``rlrepro.json``: the env config it was made with, the split, its size, the reference
returns D4RL normalisation needs (also in Minari's own metadata as ``ref_min_score``/``ref_max_score``) and
the policy that produced it. Datasets are written by `papers/d4rl` and read by every offline plugin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from common.envs.base import EnvSpec
from common.errors import ConfigError, DatasetError
from common.offline.data import OfflineData

NAMESPACE = "rlrepro"
VERSION = 0
SPLITS = ("random", "medium", "medium-replay", "expert", "medium-expert")
SIDECAR = "rlrepro.json"
FORMAT = "rlrepro.d4rl/1"


DERIVED_SEP = "_"  # a derived split is <D4RL split>_<tag>, e.g. medium-replay_labelled10-lowest50-s0


# the tag of a derived split, as common.offline.transforms names it (action-free, pool); nothing looser, so a
# typo such as `medium_replay` is still reported as "not a D4RL split"
DERIVED_TAG = r"(labelled[0-9p]+-(lowest[0-9p]+|random)|pool[0-9]+)-s[0-9]+"  # also: a ReCOIL pool


def check_split(split: Any) -> str:
    """A D4RL split, or one derived from it (``<split>_<tag>``: common.offline.transforms writes those)."""
    base, _, tag = str(split).partition(DERIVED_SEP)
    if base not in SPLITS or (DERIVED_SEP in str(split) and not re.fullmatch(DERIVED_TAG, tag)):
        raise ConfigError(f"dataset={split} is not a D4RL split; choose one of {', '.join(SPLITS)}")
    return str(split)


def datasets_root() -> Path:
    """Where Minari keeps datasets: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".minari" / "datasets"


def dataset_id(env_name: str, split: str) -> str:
    return f"{NAMESPACE}/{env_name}/{split}-v{VERSION}"


def dataset_dir(env_name: str, split: str) -> Path:
    return datasets_root() / NAMESPACE / env_name / f"{split}-v{VERSION}"


def read_info(env_name: str, split: str) -> dict[str, Any] | None:
    """The dataset's ``rlrepro.json``, or None when the dataset does not exist (or is half-written)."""
    path = dataset_dir(env_name, split) / SIDECAR
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(
            f"{path} is unreadable ({e}); delete {path.parent} and generate the dataset again"
        ) from e


def episode_starts(terminations: np.ndarray, truncations: np.ndarray) -> np.ndarray:
    """First row of every episode of a flat transition array (an episode ends at a terminal/truncation)."""
    ends = np.flatnonzero(np.asarray(terminations) | np.asarray(truncations))
    starts = np.concatenate([[0], ends + 1])
    return starts[starts < len(terminations)].astype(np.int64)


def write_dataset(
    env_name: str,
    split: str,
    data: OfflineData,
    info: dict[str, Any],
    overwrite: bool = False,
    gym_id: str | None = None,
) -> Path:
    """Write `data` as the Minari dataset ``rlrepro/<env>/<split>-v0`` (atomically: the sidecar comes last).

    `data.metadata` must hold ``ref_min_score`` and ``ref_max_score``; `info` (env config, policy, run) goes
    into the sidecar. An existing dataset is replaced only with `overwrite`. With `gym_id` (a Gymnasium env),
    Minari's own metadata also records the env and the reference scores (it only stores them with an env).
    """
    import warnings

    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    check_split(split)
    target = dataset_dir(env_name, split)
    if target.exists():
        if not overwrite:
            raise DatasetError(
                f"dataset {dataset_id(env_name, split)} already exists at {target}; "
                f"delete it or pass paper.datasets.overwrite=true"
            )
        shutil.rmtree(target)
    n = len(data)
    if n == 0:
        raise DatasetError(f"dataset {dataset_id(env_name, split)} would be empty; collect some steps")
    terminations = data.terminations.astype(bool)
    truncations = data.truncations.astype(bool).copy()
    truncations[-1] |= not terminations[-1]  # the collection budget cut the last episode
    starts = episode_starts(terminations, truncations)
    stops = np.append(starts[1:], n)
    buffers = []
    for i, (a, b) in enumerate(zip(starts, stops, strict=True)):
        if not np.array_equal(data.observations[a + 1 : b], data.next_observations[a : b - 1]):
            raise DatasetError(
                f"episode {i} of {dataset_id(env_name, split)} is not contiguous (s' != next s)"
            )
        obs = np.concatenate([data.observations[a:b], data.next_observations[b - 1 : b]])
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=obs,
                actions=data.actions[a:b],
                rewards=data.rewards[a:b].astype(np.float64).tolist(),
                terminations=terminations[a:b].tolist(),
                truncations=truncations[a:b].tolist(),
                infos={},
            )
        )
    obs_dim, act_dim = data.observations.shape[1:], data.actions.shape[1:]
    ref_min, ref_max = float(data.metadata["ref_min_score"]), float(data.metadata["ref_max_score"])
    with warnings.catch_warnings():  # Minari warns about every optional field it does not get
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id(env_name, split),
            buffer=buffers,
            env=gym_id,
            eval_env=gym_id,
            observation_space=gym.spaces.Box(-np.inf, np.inf, obs_dim, np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, act_dim, np.float32),
            algorithm_name=str(info.get("algorithm", "rlrepro d4rl")),
            author="rlrepro",
            code_permalink="papers/d4rl (rlrepro)",
            description=f"D4RL-protocol '{split}' split for {env_name}, generated by rlrepro papers/d4rl",
            ref_min_score=ref_min if gym_id else None,
            ref_max_score=ref_max if gym_id else None,
        )
    sidecar = {
        "format": FORMAT,
        "env": env_name,
        "split": split,
        "transitions": n,
        "episodes": len(buffers),
        "obs_shape": list(obs_dim),
        "action_shape": list(act_dim),
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        **info,
    }
    tmp = target / (SIDECAR + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=1, default=str))
    os.replace(tmp, target / SIDECAR)
    return target


def load_dataset(
    env_name: str, split: str, spec: EnvSpec | None = None, allow_action_free: bool = False
) -> OfflineData:
    """Load ``rlrepro/<env>/<split>-v0`` as flat transitions, checked against the env's `spec`.

    Raises `DatasetError` (one line, with the fix) when the dataset is missing, unreadable, or was made for
    another env or with other shapes, or when it holds action-free trajectories (NaN actions, written by
    common.offline.transforms) and the caller did not ask for them with `allow_action_free`.
    """
    check_split(split)
    name = dataset_id(env_name, split)
    make = f"python run.py paper=d4rl env={env_name}"
    info = read_info(env_name, split)
    if info is None:
        raise DatasetError(
            f"dataset {name} not found under {datasets_root()} (MINARI_DATASETS_PATH); "
            f"generate it with: {make}"
        )
    if info.get("format") != FORMAT or info.get("env") != env_name or info.get("split") != split:
        raise DatasetError(
            f"{dataset_dir(env_name, split)} holds a dataset for env={info.get('env')} "
            f"split={info.get('split')} (format {info.get('format')}), not env={env_name} split={split}; "
            f"regenerate it with: {make}"
        )
    import minari

    try:
        dataset = minari.load_dataset(name)
        episodes = list(dataset.iterate_episodes())
    except Exception as e:  # h5py/minari raise many types for a damaged file
        raise DatasetError(
            f"dataset {name} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:100]}); "
            f"delete {dataset_dir(env_name, split)} and regenerate it with: {make}"
        ) from e
    if not episodes:
        raise DatasetError(f"dataset {name} has no episodes; regenerate it with: {make}")
    obs = [np.asarray(ep.observations, np.float32) for ep in episodes]
    data = OfflineData(
        observations=np.concatenate([o[:-1] for o in obs]),
        actions=np.concatenate([np.asarray(ep.actions, np.float32) for ep in episodes]),
        rewards=np.concatenate([np.asarray(ep.rewards, np.float32) for ep in episodes]),
        next_observations=np.concatenate([o[1:] for o in obs]),
        terminations=np.concatenate([np.asarray(ep.terminations, bool) for ep in episodes]),
        truncations=np.concatenate([np.asarray(ep.truncations, bool) for ep in episodes]),
        episode_starts=np.cumsum([0] + [len(ep.rewards) for ep in episodes[:-1]]).astype(np.int64),
        metadata=dict(info),  # the sidecar's reference scores (Minari keeps them too for Gymnasium envs)
    )
    if len(data) != info.get("transitions"):
        raise DatasetError(
            f"dataset {name} holds {len(data)} transitions, its rlrepro.json says {info.get('transitions')}: "
            f"it is truncated or was edited; regenerate it with: {make}"
        )
    if not allow_action_free and np.isnan(data.actions).any():
        raise DatasetError(
            f"dataset {name} holds action-free trajectories (NaN actions); only a semi-supervised learner "
            f"reads it (paper=ssorl proxy-labels them first)"
        )
    if spec is not None:
        want_obs, want_act = tuple(spec.obs_shape), tuple(spec.action_shape)
        got_obs, got_act = data.observations.shape[1:], data.actions.shape[1:]
        if got_obs != want_obs or got_act != want_act:
            raise DatasetError(
                f"dataset {name} has observations {got_obs} and actions {got_act}, but env={env_name} "
                f"as this paper sees it gives {want_obs} and {want_act}; it was made for another env or "
                f"observation setup (regenerate it with: {make})"
            )
    return data


# ------------------------------------------------------------------------ discrete-action datasets
# Additive (papers/dataset_perspective): datasets of integer actions in [0, num_actions) under any name (not
# only a D4RL split), e.g. ``rlrepro/cartpole/dataset-perspective-replay-s1-v0``. Same layout as above
# (Minari's data/ plus the ``rlrepro.json`` sidecar, written last); Minari records a `Discrete` action space.
DISCRETE_FORMAT = "rlrepro.discrete/1"


def write_discrete_dataset(
    env_name: str,
    name: str,
    data: OfflineData,
    info: dict[str, Any],
    num_actions: int,
    overwrite: bool = False,
) -> Path:
    """Write `data` (actions: integers, shape (N,)) as ``rlrepro/<env>/<name>-v0``; `info` goes into the
    sidecar. Episodes end at a termination or truncation; the last row ends one (the budget cut)."""
    import warnings

    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    target = dataset_dir(env_name, name)
    if target.exists():
        if not overwrite:
            raise DatasetError(f"dataset {dataset_id(env_name, name)} already exists at {target}; delete it")
        shutil.rmtree(target)
    n = len(data)
    if n == 0:
        raise DatasetError(f"dataset {dataset_id(env_name, name)} would be empty; collect some steps")
    actions = np.asarray(data.actions).reshape(n).astype(np.int64)
    if actions.min() < 0 or actions.max() >= num_actions:
        raise DatasetError(f"dataset {dataset_id(env_name, name)} has actions outside [0, {num_actions})")
    terminations = data.terminations.astype(bool)
    truncations = data.truncations.astype(bool).copy()
    truncations[-1] |= not terminations[-1]
    starts = episode_starts(terminations, truncations)
    stops = np.append(starts[1:], n)
    buffers = []
    for i, (a, b) in enumerate(zip(starts, stops, strict=True)):
        if not np.array_equal(data.observations[a + 1 : b], data.next_observations[a : b - 1]):
            raise DatasetError(
                f"episode {i} of {dataset_id(env_name, name)} is not contiguous (s' != next s)"
            )
        obs = np.concatenate([data.observations[a:b], data.next_observations[b - 1 : b]])
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=obs,
                actions=actions[a:b],
                rewards=data.rewards[a:b].astype(np.float64).tolist(),
                terminations=terminations[a:b].tolist(),
                truncations=truncations[a:b].tolist(),
                infos={},
            )
        )
    obs_shape = tuple(data.observations.shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id(env_name, name),
            buffer=buffers,
            observation_space=gym.spaces.Box(-np.inf, np.inf, obs_shape, np.float32),
            action_space=gym.spaces.Discrete(int(num_actions)),
            algorithm_name=str(info.get("algorithm", "rlrepro")),
            author="rlrepro",
            code_permalink="rlrepro",
            description=f"discrete-action dataset '{name}' for {env_name}, generated by rlrepro",
        )
    sidecar = {
        "format": DISCRETE_FORMAT,
        "env": env_name,
        "name": name,
        "transitions": n,
        "episodes": len(buffers),
        "obs_shape": list(obs_shape),
        "num_actions": int(num_actions),
        **info,
    }
    tmp = target / (SIDECAR + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=1, default=str))
    os.replace(tmp, target / SIDECAR)
    return target


def load_discrete_dataset(env_name: str, name: str, num_actions: int | None = None) -> OfflineData:
    """Load ``rlrepro/<env>/<name>-v0`` written by `write_discrete_dataset` (actions int64, shape (N,));
    one-line `DatasetError`s when it is missing, damaged or made for another action count."""
    ident = dataset_id(env_name, name)
    info = read_info(env_name, name)
    if info is None or info.get("format") != DISCRETE_FORMAT or info.get("env") != env_name:
        raise DatasetError(
            f"discrete dataset {ident} not found under {datasets_root()} (MINARI_DATASETS_PATH)"
        )
    if num_actions is not None and info.get("num_actions") != num_actions:
        raise DatasetError(f"dataset {ident} has {info.get('num_actions')} actions, the env {num_actions}")
    import minari

    try:
        episodes = list(minari.load_dataset(ident).iterate_episodes())
    except Exception as e:  # h5py/minari raise many types for a damaged file
        raise DatasetError(
            f"dataset {ident} is unreadable ({type(e).__name__}); delete {dataset_dir(env_name, name)}"
        ) from e
    obs = [np.asarray(ep.observations, np.float32) for ep in episodes]
    data = OfflineData(
        observations=np.concatenate([o[:-1] for o in obs]),
        actions=np.concatenate([np.asarray(ep.actions, np.int64).reshape(-1) for ep in episodes]),
        rewards=np.concatenate([np.asarray(ep.rewards, np.float32) for ep in episodes]),
        next_observations=np.concatenate([o[1:] for o in obs]),
        terminations=np.concatenate([np.asarray(ep.terminations, bool) for ep in episodes]),
        truncations=np.concatenate([np.asarray(ep.truncations, bool) for ep in episodes]),
        episode_starts=np.cumsum([0] + [len(ep.rewards) for ep in episodes[:-1]]).astype(np.int64),
        metadata=dict(info),
    )
    if len(data) != info.get("transitions"):
        raise DatasetError(
            f"dataset {ident} holds {len(data)} transitions, its sidecar says {info['transitions']}"
        )
    return data
