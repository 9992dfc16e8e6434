"""The nine discrete offline learners of the paper (ex_01.py `agent_types`), one file each.

`make_learner(cfg, name, obs_dim, num_actions, discount, seed, device)` builds one by its `paper.learner`
name. Upstream: kschweig/OfflineRL @478661f source/utils/utils.py `get_agent`.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from common.errors import ConfigError
from papers.dataset_perspective.learners.base import DiscreteLearner
from papers.dataset_perspective.learners.bc import BC
from papers.dataset_perspective.learners.bcq import BCQ
from papers.dataset_perspective.learners.bve import BVE
from papers.dataset_perspective.learners.cql import CQL
from papers.dataset_perspective.learners.crr import CRR
from papers.dataset_perspective.learners.dqn import DQN
from papers.dataset_perspective.learners.mce import MCE
from papers.dataset_perspective.learners.qrdqn import QRDQN
from papers.dataset_perspective.learners.rem import REM

LEARNERS: dict[str, type[DiscreteLearner]] = {
    "bc": BC,
    "bve": BVE,
    "mce": MCE,
    "dqn": DQN,
    "qrdqn": QRDQN,
    "rem": REM,
    "bcq": BCQ,
    "cql": CQL,
    "crr": CRR,
}


def check_learner(name: object) -> str:
    if name not in LEARNERS:
        raise ConfigError(
            f"paper.learner={name} is not a learner; choose all or one of {', '.join(LEARNERS)}"
        )
    return str(name)


def make_learner(
    cfg: DictConfig,
    name: str,
    obs_dim: int,
    num_actions: int,
    discount: float,
    seed: int,
    device: torch.device,
) -> DiscreteLearner:
    """The learner `name` with the settings `cfg` (`paper.agent`)."""
    return LEARNERS[check_learner(name)](cfg, obs_dim, num_actions, discount, seed, device)
