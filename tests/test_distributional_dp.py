"""Distributional DP with stock augmentation (papers/distributional_dp): the stock update, the expected-return
objective against classic value iteration, CVaR and threshold objectives against brute force over every
history-dependent policy (and against classic DP), and bad input refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from common.errors import ConfigError
from common.mdp import value_iteration
from common.mdp.catalog import chain, gamble, gridworld, risky_shortcut
from common.mdp.tabular import TabularMDP
from papers.distributional_dp.brute_force import brute_force_optimum
from papers.distributional_dp.deep import AugmentedSimulator, DeepSettings, train_deep
from papers.distributional_dp.dp import (
    AugmentedDP,
    Solution,
    base_distributional_vi,
    classic_policy,
    evaluate_base_policy,
    grid,
    projection,
)
from papers.distributional_dp.objectives import Objective, cvar
from papers.distributional_dp.stock import augment, return_bounds

TOL, ITERATIONS = 1e-12, 500
RISKY = risky_shortcut().with_time_limit(8)


def solve(mdp: TabularMDP, objective: Objective, step: float = 1.0) -> tuple[AugmentedDP, Solution, Solution]:
    """The stock-augmented solver (with stock 0 also built, to evaluate other policies), its VI and PI."""
    choose = objective.initial_stocks(grid(*return_bounds(mdp), step))
    dp = AugmentedDP(augment(mdp, sorted({*choose.tolist(), 0.0}), step), objective, choose)
    return dp, dp.value_iteration(TOL, ITERATIONS), dp.policy_iteration(TOL, ITERATIONS)


def test_projection_splits_mass_between_neighbouring_atoms():
    atoms = np.array([-1.0, 0.0, 1.0, 2.0])
    M = projection(np.array([0.25, 2.0, 5.0, -3.0, 1.0]), atoms)
    np.testing.assert_allclose(
        M, [[0, 0.75, 0.25, 0], [0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]], atol=1e-12
    )
    # a projected distribution keeps its mean inside the atoms' range (the Cramér projection)
    mean = float(np.array([0.5, 0.5]) @ projection(np.array([0.3, 1.6]), atoms) @ atoms)
    assert mean == pytest.approx(0.95)


def test_cvar_of_a_categorical_distribution():
    atoms, probs = np.array([-2.0, 5.0]), np.array([0.5, 0.5])
    assert cvar(probs, atoms, 0.25) == pytest.approx(-2.0)
    assert cvar(probs, atoms, 0.75) == pytest.approx((0.5 * -2 + 0.25 * 5) / 0.75)  # part of the 5
    assert cvar(probs, atoms, 1.0) == pytest.approx(1.5)  # the mean


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_the_stock_is_updated_exactly(gamma):
    # every transition (s, c) -> (s', c') of the augmented MDP has c' = (c + r(s, a, s')) / γ; with γ = 1/2
    # and rewards on the 1/4 grid, the doubled stocks stay on the grid: nothing is rounded
    mdp = gamble(rounds=3, safe=0.25, win=1.25, loss=-0.5, gamma=gamma)
    aug = augment(mdp, [0.0, -0.75], step=0.25)
    A, c = aug.num_actions, aug.stock_value()
    i, a, j = aug.src // A, aug.src % A, aug.dst
    r = mdp.R[aug.base[i], a, aug.base[j]]
    np.testing.assert_allclose(c[j], (c[i] + r) / gamma, atol=1e-12)
    assert np.isclose(aug.prob.sum(), aug.num_actions * (~aug.terminal).sum())  # every (x, a) row is complete
    if gamma == 1.0:  # the stock is the initial stock plus the rewards so far: after 3 safe rounds, c0 + 0.75
        ends = aug.stock_value()[aug.terminal & (aug.base == mdp.state_names.index("r3:safe"))]
        assert set(np.round(ends, 9)) >= {0.75, 0.0}  # c0 = 0 then 3 safes; c0 = -0.75 then 3 safes


@pytest.mark.parametrize(
    "mdp",
    [
        gamble(),
        RISKY,
        chain(n=6, gamma=1.0, slip=0.2).with_time_limit(9),
        gridworld(
            ["S..", ".#.", "..G"], gamma=1.0, step_reward=-1.0, goal_reward=2.0, slip=0.2, slip_to="random"
        ).with_time_limit(6),
    ],
    ids=["gamble", "risky_shortcut", "chain", "gridworld"],
)
def test_expected_return_objective_equals_classic_value_iteration(mdp):
    _, vi, pi = solve(mdp, Objective("expected"))
    v_star = float(mdp.initial @ value_iteration(mdp, tol=TOL).V)
    assert vi.value == pytest.approx(v_star, abs=1e-9)
    assert pi.value == pytest.approx(v_star, abs=1e-9)
    assert float(vi.probs @ vi.returns) == pytest.approx(v_star, abs=1e-9)  # the distribution's mean


CASES = [
    ("gamble", gamble(), Objective("cvar", alpha=0.25)),
    ("gamble", gamble(), Objective("cvar", alpha=0.9)),
    ("gamble", gamble(), Objective("threshold", tau=6.0)),
    ("risky", RISKY, Objective("cvar", alpha=0.25)),
    ("risky", RISKY, Objective("threshold", tau=-7.0)),
]


@pytest.mark.parametrize(
    ("name", "mdp", "objective"), CASES, ids=[f"{c[0]}-{c[2].name}-{i}" for i, c in enumerate(CASES)]
)
def test_cvar_and_threshold_reach_the_brute_force_optimum_and_beat_classic_dp(name, mdp, objective):
    dp, vi, pi = solve(mdp, objective)
    best, _ = brute_force_optimum(mdp, objective)
    assert vi.value == pytest.approx(best, abs=1e-9)
    assert pi.value == pytest.approx(best, abs=1e-9)
    classic = evaluate_base_policy(dp, classic_policy(mdp, TOL, ITERATIONS), TOL, ITERATIONS)
    assert vi.value > classic.value + 1e-3
    # without the stock, distributional DP cannot do better than the optimum
    naive = evaluate_base_policy(
        dp, base_distributional_vi(mdp, objective, 1.0, TOL, ITERATIONS), TOL, ITERATIONS
    )
    assert naive.value <= vi.value + 1e-9


def test_the_stock_matters_where_the_state_does_not_show_the_money():
    # gamble, P(G >= 6): gamble once; after a win play safe (7), after a loss gamble twice (8 or worse):
    # 1/2 + 1/2 * 1/4 = 0.625. Markov policies of the MDP state reach 1/2 at best.
    dp, vi, _ = solve(gamble(), Objective("threshold", tau=6.0))
    assert vi.value == pytest.approx(0.625)
    naive = base_distributional_vi(gamble(), Objective("threshold", tau=6.0), 1.0, TOL, ITERATIONS)
    assert evaluate_base_policy(dp, naive, TOL, ITERATIONS).value == pytest.approx(0.5)
    assert vi.initial_stock == -6.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="median"), "paper.objective='median' does not exist"),
        (dict(name="cvar", alpha=0.0), "paper.alpha=0.0 must be in (0, 1]"),
        (dict(name="cvar", alpha=1.5), "paper.alpha=1.5 must be in (0, 1]"),
    ],
)
def test_bad_objectives_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError) as e:
        Objective(**kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_augmented_mdp_over_the_limit_is_refused():
    with pytest.raises(ConfigError, match=r"paper.stock.max_states=50"):
        augment(RISKY, [0.0, 3.0], step=1.0, max_states=50)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paper.alpha=0"], "paper.alpha=0.0 must be in (0, 1]"),
        (["env=mdp_minigrid", "env.max_states=20"], "more than max_states=20 reachable states"),
        (["paper.deep.enabled=true", "paper.deep.batch_size=0"], "paper.deep.batch_size=0 must be >= 1"),
        (
            ["env=mdp_chain", "env.mdp.gamma=0.9", "paper.deep.enabled=true"],
            "paper.deep needs an undiscounted MDP",
        ),
    ],
)
def test_refused_commands_write_nothing(cli, tmp_path, args, message):
    args = ["env=mdp_gamble", *args] if not any(a.startswith("env=") for a in args) else args
    proc = cli("paper=distributional_dp", *args, f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


# --- the deep variant ------------------------------------------------------------------------------------
DEEP = dict(
    num_steps=3000, hidden_dim=64, lr=1e-3, batch_size=64, replay_size=10000, learning_starts=300,
    epsilon_start=1.0, epsilon_end=0.05, epsilon_steps=1500, target_every=100,
)  # fmt: skip


def test_the_simulator_samples_the_augmented_mdp():
    """Transition frequencies match P, and each reward is the stock's change (γ = 1)."""
    mdp = gamble()
    dp, _, _ = solve(mdp, Objective("threshold", tau=6.0))
    sim = AugmentedSimulator(dp, np.random.default_rng(0))
    i = sim.start()
    assert dp.aug.stock[i] * dp.aug.step == -6.0  # the threshold's c_0 = -τ
    counts: dict[int, int] = {}
    for _ in range(4000):
        r, j, _ = sim.step(i, 1)  # the coin flip: +5 or -2 with probability 1/2
        counts[j] = counts.get(j, 0) + 1
        assert r == (dp.aug.stock[j] - dp.aug.stock[i]) * dp.aug.step and r in (5.0, -2.0)
    assert sorted(counts) == sorted(dp.aug.dst[dp.aug.src == i * dp.aug.num_actions + 1].tolist())
    assert all(abs(n / 4000 - 0.5) < 0.03 for n in counts.values())


@pytest.mark.parametrize(("name", "kwargs"), [("threshold", {"tau": 6.0}), ("cvar", {"alpha": 0.25})])
def test_the_deep_variant_reaches_the_tabular_optimum_on_the_gamble(name, kwargs):
    """A categorical DQN on (s, c) features, trained from 3000 sampled steps, acts as well as stock-augmented
    value iteration — better than classic DP's greedy policy, which gambles on every round."""
    mdp, objective = gamble(), Objective(name, **kwargs)
    dp, exact, _ = solve(mdp, objective)
    deep = train_deep(dp, DeepSettings.from_config(OmegaConf.create(DEEP)), 1, TOL, ITERATIONS)
    classic = evaluate_base_policy(dp, classic_policy(mdp, TOL, ITERATIONS), TOL, ITERATIONS)
    assert deep.value == pytest.approx(exact.value)
    assert deep.value > classic.value + 0.1
