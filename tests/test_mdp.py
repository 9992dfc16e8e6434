"""The exact-MDP toolkit (common/mdp): dynamic programming against closed forms and hand-solved MDPs, the
time limit, the effective horizon of hand-built MDPs, and the enumerated MiniGrid MDP against the
simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import ConfigError
from common.mdp import (
    finite_horizon_q,
    greedy_policy,
    one_hot,
    policy_evaluation,
    q_of_policy,
    random_policy_q,
    value_iteration,
)
from common.mdp.catalog import chain, gridworld, make_mdp
from common.mdp.effective_horizon import effective_horizon_bound, greedy_returns, min_k_qvi_solvable
from common.mdp.enumerate import enumerate_mdp
from common.mdp.minigrid import FIRST, MiniGridEnumerable
from common.mdp.tabular import TabularMDP


def slip_stay_value(d: np.ndarray, gamma: float, slip: float, reward: float = 1.0) -> np.ndarray:
    """V* at d steps from the goal when a move fails (stays) with probability `slip`: entering the goal pays
    `reward`, so V(1) = (1-slip) r / (1 - slip γ) and V(d) = q V(d-1), q = (1-slip) γ / (1 - slip γ)."""
    q = (1 - slip) * gamma / (1 - slip * gamma)
    return np.where(d > 0, reward * (1 - slip) / (1 - slip * gamma) * q ** (d - 1.0), 0.0)


@pytest.mark.parametrize("slip", [0.0, 0.3])
def test_value_iteration_on_a_chain_matches_the_closed_form(slip):
    mdp = chain(n=6, gamma=0.9, reward=2.0, slip=slip)
    result = value_iteration(mdp, tol=1e-13)
    d = np.arange(5, -1, -1)  # steps to the goal from states 0 .. 5
    np.testing.assert_allclose(result.V, slip_stay_value(d, 0.9, slip, 2.0), atol=1e-10)
    assert result.converged and (greedy_policy(result.Q)[:-1] == 1).all()  # always right
    # the exact linear solve of the greedy policy gives the same values
    np.testing.assert_allclose(
        policy_evaluation(mdp, one_hot(greedy_policy(result.Q), 2)), result.V, atol=1e-10
    )


def test_value_iteration_on_a_gridworld_matches_the_closed_form():
    # an open 4x5 grid (no walls, no cliff): V* depends only on the Manhattan distance to G
    layout = ["S....", ".....", ".....", "....G"]
    mdp = gridworld(layout, gamma=0.8, slip=0.25, slip_to="stay")
    V = value_iteration(mdp, tol=1e-13).V
    cells = [(i, j) for i in range(4) for j in range(5)]
    d = np.array([abs(3 - i) + abs(4 - j) for i, j in cells])
    np.testing.assert_allclose(V, slip_stay_value(d, 0.8, 0.25), atol=1e-10)


def test_random_policy_q_matches_a_hand_solved_chain():
    # chain 0 - 1 - G, γ = 1/2: V(0) = γ(V(0) + V(1))/2 and V(1) = (1 + γ V(0))/2 give V = (2/11, 6/11)
    mdp = chain(n=3, gamma=0.5)
    Q = random_policy_q(mdp)
    np.testing.assert_allclose(Q[:2], [[0.5 * 2 / 11, 0.5 * 6 / 11], [0.5 * 2 / 11, 1.0]], atol=1e-12)
    # the Bellman equation of the random policy holds everywhere, terminal state included
    np.testing.assert_allclose(Q, q_of_policy(mdp, np.full((3, 2), 0.5)), atol=1e-12)


def test_policy_evaluation_refuses_a_policy_that_never_ends_without_discount():
    mdp = chain(n=4, gamma=1.0)
    with pytest.raises(ValueError, match="must reach a terminal state"):
        policy_evaluation(mdp, one_hot(np.zeros(4, int), 2))  # always left: never reaches G


def test_time_limit_cuts_the_episode_and_keeps_rewards():
    mdp = chain(n=5, gamma=1.0)  # G is 4 steps away
    for horizon, reachable in ((3, 0.0), (4, 1.0), (6, 1.0)):
        timed = mdp.with_time_limit(horizon)
        assert float(timed.initial @ value_iteration(timed).V) == pytest.approx(reachable)
    # the time-indexed backward induction of the original MDP agrees with the cut MDP's values
    timed = mdp.with_time_limit(4)
    Q = finite_horizon_q(mdp, 4, "optimal")
    np.testing.assert_allclose(value_iteration(timed).V[: 4 * 5].reshape(4, 5), Q.max(-1), atol=1e-12)


# ------------------------------------------------------------------------------------- effective horizon


def combination_lock(T: int) -> TabularMDP:
    """T steps; action 0 advances, action 1 falls into a dead end; 1 for finishing."""
    S, dead, done = T + 2, T, T + 1
    P, R = np.zeros((S, 2, S)), np.zeros((S, 2, S))
    for s in range(T):
        nxt = s + 1 if s + 1 < T else done
        P[s, 0, nxt] = 1.0
        R[s, 0, nxt] = 1.0 if nxt == done else 0.0
        P[s, 1, dead] = 1.0
    P[dead, :, dead] = P[done, :, done] = 1.0
    initial, terminal = np.eye(S)[0], np.eye(S, dtype=bool)[done]
    return TabularMDP(P, R, 1.0, initial, terminal)


def trap() -> TabularMDP:
    """T = 2: action 0 leads to X (then 1 or 0), action 1 to Y (0.6 either way). The random policy prefers
    Y (0.6 > 0.5), but X is optimal (1 > 0.6): one step of search is not enough, two are."""
    S = 4  # start, X, Y, end
    P, R = np.zeros((S, 2, S)), np.zeros((S, 2, S))
    P[0, 0, 1] = P[0, 1, 2] = 1.0
    P[1:3, :, 3] = 1.0
    R[1, 0, 3], R[2, :, 3] = 1.0, 0.6
    P[3, :, 3] = 1.0
    return TabularMDP(P, R, 1.0, np.eye(S)[0], np.eye(S, dtype=bool)[3])


def test_effective_horizon_of_a_combination_lock():
    bound = effective_horizon_bound(combination_lock(3), horizon=3)
    assert min_k_qvi_solvable(combination_lock(3), 3) == 1
    # k = 1: at t = 0, Q_rand = 1/4 for the right action, 0 for the wrong one, variance bound 1/4 and gap 1/4:
    # m = ceil(16 (1/4) / (1/4)^2 ln(2 T A)) = ceil(64 ln 12) = 160 (t = 1, 2 need 80 and 40)
    assert bound.m[1] == 160 == math.ceil(64 * math.log(12))
    assert bound.H[1] == pytest.approx(1 + math.log2(160))
    # k = 2: variance bound 1/2 (the leaves one step deeper), gap 1/2: m = ceil(32 ln 24) = 102
    assert bound.m[2] == 102 and bound.H[2] == pytest.approx(2 + math.log2(102))
    assert bound.effective_horizon == 3.0  # both exceed T: the bound is T


def test_effective_horizon_of_a_trap_needs_two_steps_of_search():
    mdp = trap()
    assert min_k_qvi_solvable(mdp, 2, max_k=1) is None
    assert min_k_qvi_solvable(mdp, 2) == 2
    bound = effective_horizon_bound(mdp, horizon=2)
    assert greedy_returns(mdp, 2, max_k=2) == pytest.approx({1: 0.6, 2: 1.0})  # greedy on Q^1 is trapped
    # Q^1's greedy action is the trap, and k = 2 = T cannot improve on the cap T (the authors stop there too)
    assert bound.H[1] == math.inf and len(bound.H) == 1 and bound.effective_horizon == 2.0


def test_effective_horizon_bound_refuses_a_stochastic_mdp():
    with pytest.raises(ValueError, match="deterministic"):
        effective_horizon_bound(chain(n=4, gamma=1.0, slip=0.1), horizon=5)


# --------------------------------------------------------------------------------------- enumeration


@pytest.fixture(scope="module")
def sticky_empty():
    env_id, sticky = "MiniGrid-Empty-5x5-v0", 0.25
    return env_id, sticky, enumerate_mdp(lambda: MiniGridEnumerable(env_id, sticky=sticky, num_actions=3))


def test_enumerated_minigrid_reproduces_the_simulator(sticky_empty):
    env_id, sticky, enumerated = sticky_empty
    mdp, index = enumerated.mdp, enumerated.index
    # 3 free cells x 3 free cells x 4 directions, each after one of 3 previous actions or none, + the goal
    assert mdp.num_states > 3 * 3 * 4
    sim = MiniGridEnumerable(env_id, sticky=sticky, num_actions=3)  # its own gymnasium env
    rng = np.random.default_rng(0)
    steps = 0
    for _ in range(15):
        sim.env.reset(seed=0)
        previous, s = FIRST, index[(sim.key(), FIRST)]
        for _ in range(25):
            a = int(rng.integers(3))
            executed = previous if previous != FIRST and rng.random() < sticky else a
            sim.env.step_count = 0
            _, reward, terminated, _, _ = sim.env.step(executed)
            s2 = index[(sim.key(), executed)]
            chance = 1.0 if previous in (FIRST, a) else (1 - sticky if executed == a else sticky)
            assert mdp.P[s, a, s2] == pytest.approx(chance)  # the simulator's outcome, with its probability
            assert mdp.R[s, a, s2] == (1.0 if reward > 0 else 0.0)
            assert bool(mdp.terminal[s2]) == terminated
            steps += 1
            if terminated:
                break
            previous, s = executed, s2
    assert steps > 100


def test_enumeration_refuses_an_env_over_the_state_limit():
    with pytest.raises(ConfigError, match=r"more than max_states=10 reachable states") as e:
        enumerate_mdp(lambda: MiniGridEnumerable("MiniGrid-Empty-5x5-v0", num_actions=3), max_states=10)
    assert "\n" not in str(e.value)


def test_make_mdp_builds_a_configured_mdp_and_names_bad_kinds():
    mdp = make_mdp({"mdp": {"kind": "chain", "n": 4, "gamma": 1.0}, "horizon": 5})
    assert mdp.num_states == 6 * 4 and float(mdp.initial @ value_iteration(mdp).V) == 1.0
    with pytest.raises(ConfigError, match="did you mean gamble"):
        make_mdp({"mdp": {"kind": "gambel"}})
