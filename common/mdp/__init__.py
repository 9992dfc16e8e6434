"""Exact tabular MDPs (numpy): `TabularMDP`, dynamic programming (`solve`), the effective horizon
(`effective_horizon`), MDPs built by enumerating a simulator's states (`enumerate`, `minigrid`) and small
hand-written MDPs selectable from an env config (`catalog`, conf/env/mdp_*.yaml)."""

from common.mdp.solve import (
    finite_horizon_q,
    greedy_actions,
    greedy_policy,
    one_hot,
    policy_evaluation,
    q_of_policy,
    qvi_iterates,
    qvi_sequence,
    random_policy_q,
    uniform_policy,
    value_iteration,
)
from common.mdp.tabular import TabularMDP

__all__ = [
    "TabularMDP",
    "finite_horizon_q",
    "greedy_actions",
    "greedy_policy",
    "one_hot",
    "policy_evaluation",
    "q_of_policy",
    "qvi_iterates",
    "qvi_sequence",
    "random_policy_q",
    "uniform_policy",
    "value_iteration",
]
