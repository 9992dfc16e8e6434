"""The stochastic effective horizon and SQIRL (papers/effective_horizon): the exact analysis on hand-built
MDPs, SQIRL and GORP with exact estimates, the sample-complexity search and reader, the Spearman analysis,
and runs through run.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.errors import ConfigError
from common.mdp.catalog import gridworld
from common.mdp.solve import finite_horizon_q, qvi_sequence
from common.mdp.tabular import TabularMDP
from papers.effective_horizon.agents import (
    NeuralRegressor,
    Simulator,
    TabularRegressor,
    gorp,
    policy_return,
    search_m,
    sqirl,
)
from papers.effective_horizon.analysis import first_solved_frame, main, spearman_table
from papers.effective_horizon.horizon import analyze, gap


def decoy(lure: float = 0.8, coin: float = 0.0) -> TabularMDP:
    """Two actions. In s0, action 0 ends the episode with `lure`; action 1 goes to s1, where action 0 pays 1
    and action 1 pays 0 (both end it). With probability `coin` action 1 in s0 is replaced by action 0.
    The random policy's Q^1(s0, 1) = 0.5 < lure: greedy on Q^1 takes the lure; Q^2(s0, 1) = 1 (optimal)."""
    S, A = 3, 2  # s0, s1, end
    P, R = np.zeros((S, A, S)), np.zeros((S, A, S))
    P[0, 0, 2], R[0, 0, 2] = 1.0, lure
    P[0, 1, 1], P[0, 1, 2], R[0, 1, 2] = 1.0 - coin, coin, lure
    P[1, :, 2], R[1, 0, 2] = 1.0, 1.0
    P[2, :, 2] = 1.0
    return TabularMDP(P, R, 1.0, np.array([1.0, 0, 0]), np.array([False, False, True]))


def test_effective_horizon_of_the_decoy_is_hand_computed():
    a = analyze(decoy(0.8), horizon=2, max_k=3)
    assert (a.optimal_return, a.worst_return, a.min_k) == (1.0, 0.0, 2)
    assert a.random_return == pytest.approx(0.5 * 0.8 + 0.5 * 0.5)
    assert a.greedy_returns[1] == pytest.approx(0.8) and a.greedy_returns[2] == pytest.approx(1.0)
    # Q^2: s0 (0.8 vs 1.0) and s1 (1 vs 0) -> Δ_2 = 0.2; H̄_2 = 2 + log2(1 / 0.04); k = 1 is not solvable
    assert a.gaps[2] == pytest.approx(0.2)
    assert a.bounds[1] == math.inf
    assert a.bounds[2] == pytest.approx(2 + math.log2(25))
    assert a.effective_horizon == pytest.approx(2 + math.log2(25))


def test_gap_looks_only_where_greedy_actions_lead():
    mdp = decoy(0.8)
    Q1 = qvi_sequence(mdp, 2, 1)[0]
    # greedy on Q^1 takes the lure and never reaches s1: only s0's margin 0.8 - 0.5 counts
    delta, solvable = gap(mdp, Q1)
    assert delta == pytest.approx(0.3) and solvable  # no optimal actions given: nothing to violate
    q_star = np.array([[[0.8, 1.0], [1.0, 0.0], [0.0, 0.0]], [[0.8, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    assert gap(mdp, Q1, q_star >= q_star.max(-1, keepdims=True))[1] is False  # the lure is not optimal


def test_stochastic_mdp_min_k_and_bound():
    a = analyze(decoy(0.6, coin=0.5), horizon=2, max_k=2)  # the way to s1 fails half the time
    # Q*(s0, 1) = 0.5 * 0.6 + 0.5 * 1 = 0.8 > 0.6; Q^1(s0, 1) = 0.5 * 0.6 + 0.5 * 0.5 = 0.55 < 0.6
    assert a.optimal_return == pytest.approx(0.8) and a.min_k == 2
    assert a.gaps[2] == pytest.approx(0.2)


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(decoy(0.8))


@pytest.mark.parametrize("stationary", [False, True])
def test_sqirl_with_the_exact_regressor_needs_k_2(sim, stationary):
    results = {}
    for k in (1, 2):
        regressor = TabularRegressor(2, 3, 2, stationary)
        learned = sqirl(sim, 2, k, 200, regressor, np.random.default_rng(0))
        results[k] = policy_return(sim, 2, learned.policy)
        assert 200 <= learned.steps <= 2 * 2 * 200  # two iterations of 200 episodes of 1 or 2 steps
    assert results == {1: pytest.approx(0.8), 2: pytest.approx(1.0)}


def test_neural_regressor_fits_the_random_policys_q(sim):
    regressor = NeuralRegressor(np.eye(3), 2, 2, lr=1e-2, min_updates=300, seed=0)
    learned = sqirl(sim, 2, 2, 200, regressor, np.random.default_rng(0))
    assert policy_return(sim, 2, learned.policy) == pytest.approx(1.0)
    q1 = regressor.fit(
        np.zeros(4, int), np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.r_[0.8, 0.5, 1, 0], 9
    )
    assert q1(np.zeros(2, int), np.array([0, 1])) == pytest.approx(
        np.array([[0.8, 0.5], [1.0, 0.0]]), abs=0.05
    )


def test_policy_return_matches_dense_policy_evaluation():
    mdp = gridworld(["S..", ".#.", "..G"], slip=0.3, slip_to="random")  # up to 4 next states per action
    policy = np.random.default_rng(0).integers(4, size=(6, mdp.num_states))
    pi = np.eye(4)[policy]  # (T, S, A) one-hot
    expected = mdp.initial @ (pi[0] * finite_horizon_q(mdp, 6, pi)[0]).sum(-1)
    assert policy_return(Simulator(mdp), 6, policy) == pytest.approx(expected)


def test_gorp_needs_k_2_too(sim):
    for k, expected in ((1, 0.8), (2, 1.0)):
        learned = gorp(sim, 2, k, 200, np.random.default_rng(0))
        assert policy_return(sim, 2, learned.policy) == pytest.approx(expected)


def test_search_finds_the_smallest_budget_that_succeeds():
    calls = []

    def learn(m, rng):  # succeeds from m = 5 on, using 10 steps per episode
        from papers.effective_horizon.agents import Learned

        calls.append(m)
        return Learned(np.full((1, 1), int(m >= 5)), 10 * m)

    result = search_m(learn, lambda p: float(p[0, 0]), 1.0, 1, 3, 0, 0.0, 10_000, 10)
    assert (result.m, result.sample_complexity) == (5, 50.0)
    assert set(calls) == {1, 2, 4, 8, 6, 5}  # doubling to 8, then bisecting 4..8
    failing = search_m(learn, lambda p: 0.0, 1.0, 1, 1, 0, 0.0, 100, 10)  # budget allows m <= 10
    assert failing.m is None and math.isinf(failing.sample_complexity) and max(failing.tried) == 8


def test_sample_complexity_reader(tmp_path, capsys):
    rows = [{"frame": 1000, "episode_return": 0.2}, {"frame": 3000, "episode_return": 0.96},
            {"frame": 2000, "episode_return": 0.5}, {"frame": 4000, "episode_return": 0.99}]  # fmt: skip
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert first_solved_frame(tmp_path, 0.95) == 3000
    assert first_solved_frame(tmp_path, 0.99) == 4000
    assert math.isinf(first_solved_frame(tmp_path, 1.0))
    env_run = tmp_path / "eh"
    env_run.mkdir()
    (env_run / "results.json").write_text(json.dumps({"threshold": 0.9}))
    assert main(["steps", str(tmp_path), "--env-run", str(env_run)]) == 0
    assert capsys.readouterr().out.strip() == "3000.0"
    with pytest.raises(ConfigError, match="eval.jsonl does not exist"):
        first_solved_frame(tmp_path / "missing", 1.0)


def test_spearman_table_on_known_numbers(tmp_path, capsys):
    table = {
        "a": {"bound": 1.0, "sqirl": 10.0, "ppo": 100.0, "dqn": 5.0},
        "b": {"bound": 2.0, "sqirl": 20.0, "ppo": 300.0, "dqn": 4.0},
        "c": {"bound": 3.0, "sqirl": 30.0, "ppo": 200.0, "dqn": 3.0},
        "d": {"bound": 4.0, "sqirl": math.inf, "ppo": math.inf, "dqn": None},
    }
    out = spearman_table(table)
    assert out["bound~sqirl"] == {"rho": pytest.approx(1.0), "envs": 4}
    assert out["bound~dqn"] == {"rho": pytest.approx(-1.0), "envs": 3}
    assert out["bound~ppo"]["rho"] == pytest.approx(0.8)  # ranks 1 3 2 4: 1 - 6 * 2 / (4 * 15)
    as_file = {env: {**row, "sqirl": "inf" if env == "d" else row["sqirl"]} for env, row in table.items()}
    (tmp_path / "t.json").write_text(json.dumps(as_file, allow_nan=True))
    assert main(["correlate", str(tmp_path / "t.json")]) == 0
    assert json.loads(capsys.readouterr().out)["bound~sqirl"]["rho"] == pytest.approx(1.0)


def _fake_run(path, env, files):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"env:\n  name: {env}\n")
    for name, text in files.items():
        (path / name).write_text(text)


def test_table_reads_bounds_and_median_solved_frames_from_run_dirs(tmp_path, capsys):
    def results(h, sqirl, threshold=0.95):
        eh = {"effective_horizon": h, "num_actions": 3, "min_k": 1}
        return json.dumps({"analysis": eh, "sqirl_sample_complexity": sqirl, "threshold": threshold})

    _fake_run(tmp_path / "eh/0", "easy", {"results.json": results(2.0, 500)})
    _fake_run(tmp_path / "eh/1", "hard", {"results.json": results(math.inf, math.inf)})  # json: Infinity

    def evals(*returns):
        return "".join(
            json.dumps({"frame": 1000 * (i + 1), "episode_return": r}) + "\n" for i, r in enumerate(returns)
        )

    _fake_run(tmp_path / "ppo/0", "easy", {"eval.jsonl": evals(0.0, 1.0)})  # solved at 2000
    _fake_run(tmp_path / "ppo/1", "easy", {"eval.jsonl": evals(1.0)})  # 1000
    _fake_run(tmp_path / "ppo/2", "easy", {"eval.jsonl": evals(0.9, 0.9, 0.9)})  # never: inf
    _fake_run(tmp_path / "ppo/3", "hard", {"eval.jsonl": evals(0.0)})
    _fake_run(tmp_path / "ppo/4", "other", {"eval.jsonl": evals(1.0)})  # an env the analysis lacks: ignored
    out = tmp_path / "page/table.json"
    argv = ["table", "--analysis", str(tmp_path / "eh"), "--ppo", str(tmp_path / "ppo"), "--out", str(out)]
    assert main(argv) == 0
    table = json.loads(out.read_text())
    assert set(table) == {"easy", "hard"}
    assert table["easy"]["bound"] == pytest.approx(9.0)  # A^H = 3^2
    assert table["easy"]["sqirl"] == 500 and table["easy"]["ppo"] == 2000  # median of 1000, 2000, inf
    assert table["easy"]["ppo_runs"] == [1000, 2000, "inf"]
    assert table["hard"] == {**table["hard"], "bound": "inf", "sqirl": "inf", "ppo": "inf"}
    assert "dqn" not in table["easy"]
    capsys.readouterr()
    assert main(["table", "--analysis", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_too_large_env_is_a_one_line_error_and_writes_nothing(cli, tmp_path):
    proc = cli(
        "paper=effective_horizon", "env=minigrid", "env.id=MiniGrid-DoorKey-5x5-v0", "paper.max_states=100",
        f"hydra.run.dir={tmp_path}/run",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "more than max_states=100 reachable states" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_bad_regressor_is_refused(cli, tmp_path):
    proc = cli("paper=effective_horizon", "env=minigrid", "paper.regressor=nn", f"hydra.run.dir={tmp_path}/r")
    assert proc.returncode == 2 and "paper.regressor='nn' must be one of neural, tabular" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_smoke_run_writes_results(cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(
        "paper=effective_horizon", "env=minigrid", "env.id=MiniGrid-Empty-5x5-v0", "debug=smoke",
        "env.max_episode_frames=12", "paper.max_k=2", "paper.runs=1", "paper.regressor=tabular",
        "paper.train.num_frames=20000", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    analysis = results["analysis"]
    assert results["horizon"] == 12 and results["num_actions"] == 3 and results["sticky"] == 0.25
    assert 0.0 < analysis["random_return"] < analysis["optimal_return"] <= 1.0
    assert analysis["min_k"] is not None and math.isfinite(analysis["effective_horizon"])
    assert set(results["sqirl"]) == {"1", "2"}
    eval_row = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])
    assert eval_row["episode_return"] == analysis["optimal_return"]
    assert len((run_dir / "train.jsonl").read_text().splitlines()) >= 2  # a row per tried budget


def test_a_tabular_env_runs_too(cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(
        "paper=effective_horizon", "env=mdp_chain", "debug=smoke", "paper.regressor=tabular", "paper.max_k=1",
        "paper.runs=1", "paper.gorp.enabled=true", "paper.gorp.max_k=1", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    # the 6-state chain with slip 0.2, T = 10: optimal = P(5 moves succeed within 10 tries), min k = 1
    assert results["horizon"] == 10 and results["analysis"]["min_k"] == 1
    p_done = sum(math.comb(t - 1, 4) * 0.8**5 * 0.2 ** (t - 5) for t in range(5, 11))
    assert results["analysis"]["optimal_return"] == pytest.approx(p_done)
    assert set(results) >= {"sqirl_sample_complexity", "gorp_sample_complexity", "threshold"}
