"""MBTL (papers/mbtl) and the contextual tasks (common/envs/context.py): the acquisition and gap model on
hand-made matrices, the physics each context changes, bad contexts refused, a debug=smoke run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from common.envs import make_env
from common.envs.context import gym_env
from common.errors import ConfigError
from papers.mbtl import selection as sel

CARTPOLE = {"name": "cartpole_context", "suite": "gym_discrete", "id": "CartPole-v1"}
PENDULUM = {"name": "pendulum_context", "suite": "gym", "id": "Pendulum-v1"}
HOPPER = {"name": "hopper_context", "suite": "gym", "id": "Hopper-v5"}


def build(cfg: dict, seed: int = 0):
    return make_env(cfg, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=seed)


# ------------------------------------------------------------------------------------------ selection


def test_acquisition_picks_the_analytic_best_context():
    # 11 contexts, one source trained at x=0 whose transfer falls 0.1 per step (J0(j) = 1 - 0.1 j); μ = 1,
    # σ = 0, θ = 0.1. Training i gains 0.1 (j - |i - j|)^+ on target j: summed, 0.1 [i (11 - i) +
    # Σ_{i/2 < j < i} (2j - i)] = 3.4, 3.6, 3.7, 3.6 for i = 5, 6, 7, 8: the best is i = 7, a = 3.7 / 11.
    x = np.arange(11.0)
    scores = sel.acquisition(np.ones(11), np.zeros(11), 1.0, x, 1.0 - 0.1 * x, 0.1)
    assert int(scores.argmax()) == 7
    assert scores[7] == pytest.approx(3.7 / 11) and scores[6] == pytest.approx(3.6 / 11)
    assert scores[0] == pytest.approx(0.0)  # training the trained context again gains nothing
    # σ counts with weight β: a context the GP is unsure of scores higher
    sigma = np.zeros(11)
    sigma[3] = 1.0
    assert int(sel.acquisition(np.ones(11), sigma, 1.0, x, 1.0 - 0.1 * x, 0.1).argmax()) == 3


def linear_gap_matrix(diagonal: np.ndarray, slope: float) -> np.ndarray:
    x = np.arange(len(diagonal), dtype=float)
    return np.maximum(diagonal[:, None] - slope * np.abs(x[:, None] - x[None, :]), 0.0)


def test_gap_model_fits_a_known_slope_and_predicts_the_matrix():
    diagonal = np.array([0.9, 0.95, 1.0, 0.97, 0.92, 0.99, 0.93, 0.96])
    V = linear_gap_matrix(diagonal, 0.02)
    x = np.arange(8.0)
    assert sel.fit_gap_slope(V, x) == pytest.approx(0.02)
    assert sel.fit_gap_slope(V, x, rows=[2]) == pytest.approx(0.02)
    np.testing.assert_allclose(sel.gap_estimate(diagonal, x, 0.02), V)
    assert sel.gap_estimate(np.array([0.1, 0.1]), np.array([0.0, 10.0]), 0.02)[0, 1] == 0.0  # clipped at 0


def test_mbtl_selection_starts_in_the_middle_is_deterministic_and_beats_random():
    # a peaked set point (training works best near x = 12) and a steep gap: where to train matters
    x = np.arange(25.0)
    V = linear_gap_matrix(np.exp(-(((x - 12.0) / 8.0) ** 2)), 0.08)
    kw = dict(slope=0.08, noise_std=0.1, n_restarts=0, seed=0)
    a, b = sel.mbtl(V, x, 6, **kw), sel.mbtl(V, x, 6, **kw)
    assert a.sources == b.sources and a.curve == b.curve
    assert a.sources[0] == 12 and len(set(a.sources)) == 6
    assert a.curve == pytest.approx(sel.generalised_curve(V, a.sources))
    assert all(np.diff(a.curve) >= -1e-12)  # Eq. 1: more sources never lower the max
    rnd = sel.random_selection(V, 6, 100, 0)
    assert np.mean(a.curve) > np.mean(rnd.curve)
    oracle = sel.oracle_transfer(V, 6).curve[0]
    full = sel.mbtl(V, x, 25, **kw)
    assert full.curve[-1] == pytest.approx(oracle) and sorted(full.sources) == list(range(25))


def test_baselines_match_their_definitions():
    V = np.array([[0.5, 0.4, 0.1], [0.3, 0.9, 0.2], [0.0, 0.6, 0.7]])
    x = np.arange(3.0)
    assert sel.independent(V, 2).curve == pytest.approx([0.7, 0.7])  # mean diagonal
    assert sel.oracle_transfer(V, 2).curve == pytest.approx([(0.5 + 0.9 + 0.7) / 3] * 2)
    seq = sel.sequential_oracle(V, 2)  # row means 1/3, 7/15, 13/30: source 1 first, then 2 (0.7 > 0.6)
    assert seq.sources == [1, 2] and seq.curve == pytest.approx([1.4 / 3, 1.9 / 3])
    assert sel.greedy(x, V, 1).sources == [1]
    assert sel.equidistant(x, V, 3).sources == [2, 1, 0]
    assert sel.multitask(np.array([0.2, 0.4]), 2).curve == pytest.approx([0.3, 0.3])
    with pytest.raises(ConfigError, match="square"):
        sel.check_matrix(np.zeros((2, 3)))


def test_official_csv_matrix_loads(tmp_path: Path):
    from papers.mbtl.loop import load_matrix

    path = tmp_path / "cartpole_lenpole_0_transfer_result.csv"
    np.savetxt(path, [[500, 200], [100, 400]], delimiter=",")
    raw, multi, values, positions = load_matrix(path)
    assert raw.tolist() == [[500, 200], [100, 400]] and multi is None and values is None
    assert positions.tolist() == [0.0, 1.0]
    np.testing.assert_allclose(sel.normalise(raw, 0, 500), [[1.0, 0.4], [0.2, 0.8]])


# ------------------------------------------------------------------------------------------ physics


def cartpole_one_step(context: dict, theta: float = 0.1, action: int = 1) -> tuple[float, float]:
    """(θ̇, ẋ) after one push (1: right, 0: left) from rest at angle θ: tau times the accelerations."""
    env = build({**CARTPOLE, "context": context})
    env.reset()
    inner = gym_env(env)
    inner.state = np.array([0.0, 0.0, theta, 0.0])
    env.step(action)
    _, x_dot, _, theta_dot = inner.state
    env.close()
    return float(theta_dot), float(x_dot)


def expected_cartpole(
    length: float, mp: float, mc: float, theta: float = 0.1, force: float = 10.0
) -> tuple[float, float]:
    """The cart-pole equations (Florian 2005, Gymnasium's reference), from rest, tau 0.02."""
    g, tau, total = 9.8, 0.02, mp + mc
    temp = force / total
    theta_acc = (g * math.sin(theta) - math.cos(theta) * temp) / (
        length * (4.0 / 3.0 - mp * math.cos(theta) ** 2 / total)
    )
    x_acc = temp - mp * length * theta_acc * math.cos(theta) / total
    return tau * theta_acc, tau * x_acc


@pytest.mark.parametrize(
    "context",
    [
        {"pole_length": 0.5, "masspole": 0.1, "masscart": 1.0},
        {"pole_length": 2.0, "masspole": 0.1, "masscart": 1.0},
        {"pole_length": 0.5, "masspole": 1.0, "masscart": 1.0},
        {"pole_length": 0.5, "masspole": 0.1, "masscart": 5.0},
    ],
)
def test_cartpole_context_follows_the_equations_of_motion(context):
    got = cartpole_one_step(context)
    assert got == pytest.approx(
        expected_cartpole(context["pole_length"], context["masspole"], context["masscart"])
    )


def test_cartpole_longer_pole_falls_slower():
    # tipping right (θ > 0) while the cart is pushed left: both terms tip the pole further, θ̈ ~ 1 / length
    short, _ = cartpole_one_step({"pole_length": 0.25}, action=0)
    long, _ = cartpole_one_step({"pole_length": 2.0}, action=0)
    assert 0 < long < short
    assert long / short == pytest.approx(
        expected_cartpole(2.0, 0.1, 1.0, force=-10.0)[0] / expected_cartpole(0.25, 0.1, 1.0, force=-10.0)[0]
    )


def pendulum_period_steps(context: dict) -> float:
    """Steps per swing (twice the mean gap between crossings of the hanging position), small swings, no
    torque, over one 200-step episode."""
    env = build({**PENDULUM, "context": context})
    env.reset()
    inner = gym_env(env)
    inner.state = np.array([np.pi + 0.05, 0.0])  # θ = π hangs down
    crossings, prev = [], 0.05
    for t in range(200):
        env.step(np.zeros(1, np.float32))
        now = float(inner.state[0] - np.pi)
        if (prev < 0) != (now < 0):
            crossings.append(t)
        prev = now
    env.close()
    assert len(crossings) >= 3
    return 2.0 * float(np.mean(np.diff(crossings)))


def test_pendulum_period_follows_length_and_time_step():
    # θ̈ = (3g / 2l) sin θ (+ torque): small swings about the bottom have period 2π sqrt(2l / 3g)
    for l_, dt in ((1.0, 0.05), (4.0, 0.05), (1.0, 0.02)):
        period_s = 2 * math.pi * math.sqrt(2 * l_ / (3 * 10.0))
        assert pendulum_period_steps({"l": l_, "dt": dt}) * dt == pytest.approx(period_s, rel=0.05)
    # the mass scales only the torque's effect: the free swing is the same
    assert pendulum_period_steps({"m": 5.0}) == pendulum_period_steps({"m": 1.0})


def test_hopper_gravity_and_friction_reach_the_mujoco_model():
    env = build({**HOPPER, "context": {"gravity": 4.9, "friction": 2.0}})
    default = build({**HOPPER, "context": {}})
    env.reset(), default.reset()
    import mujoco

    fall = []
    for e, g in ((env, 4.9), (default, 9.81)):
        inner = gym_env(e)
        assert inner.model.opt.gravity.tolist() == [0.0, 0.0, -g]
        inner.data.qpos[1] += 2.0  # lifted clear of the floor, at rest, no torque: free fall
        inner.data.qvel[:] = 0.0
        inner.data.ctrl[:] = 0.0
        mujoco.mj_forward(inner.model, inner.data)
        fall.append(inner.data.qacc[1])  # rootz's acceleration: affine in g (same seed: the same pose)
    assert fall[0] - fall[1] == pytest.approx(9.81 - 4.9, rel=1e-6)  # one m/s^2 of fall per m/s^2 of g
    np.testing.assert_allclose(
        gym_env(env).model.geom_friction[:, 0], 2.0 * gym_env(default).model.geom_friction[:, 0]
    )
    env.close(), default.close()


def test_context_env_resumes_exactly_including_the_multi_task_draws():
    cfg = {**CARTPOLE, "context": {"masscart": 2.0}, "multi_context": {"pole_length": [0.25, 0.5, 2.0]}}
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, 400)

    def play(env, acts):
        out = []
        for a in acts:
            ts = env.step(int(a))
            out.append((ts.obs.copy(), ts.reward, env.context["pole_length"]))
            if ts.done:
                env.reset()
        return out

    env = build(cfg, seed=3)
    env.reset()
    play(env, actions[:150])
    state = env.get_state()
    expected = play(env, actions[150:])
    again = build(cfg, seed=3)
    again.set_state(state)
    got = play(again, actions[150:])
    assert len({c for _, _, c in expected}) > 1  # episodes drew different contexts
    for (o1, r1, c1), (o2, r2, c2) in zip(expected, got, strict=True):
        np.testing.assert_array_equal(o1, o2)
        assert (r1, c1) == (r2, c2)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({**CARTPOLE, "context": {"pole_length": 20.0}}, r"pole_length=20.0 is outside its valid range"),
        ({**CARTPOLE, "context": {"gravity": 1.0}}, r"has no context parameter 'gravity'"),
        ({**PENDULUM, "context": {"l": "long"}}, r"must be a finite number"),
        ({**HOPPER, "multi_context": {"gravity": [9.81, 500.0]}}, r"multi_context.gravity=500.0 is outside"),
        ({"name": "x", "suite": "gym", "id": "Walker2d-v5", "context": {}}, r"has no context parameters"),
    ],
)
def test_bad_context_is_one_line(cfg, match):
    with pytest.raises(ConfigError, match=match) as err:
        build(cfg)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ command line


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("paper=ppo", "env=cartpole_context", "env.context.pole_length=20"), "outside its valid range"),
        (("paper=mbtl", "env=pendulum_context", "paper.context.factors=[0.5,20]"), "outside its valid range"),
        (("paper=mbtl", "env=hopper"), "needs a contextual env"),
    ],
)
def test_bad_context_on_the_command_line_exits_2_writing_nothing(cli, tmp_path, args, match):
    run_dir = tmp_path / "run"
    proc = cli(*args, "debug=smoke", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0], proc.stderr
    assert not run_dir.exists()


def test_mbtl_smoke_run_end_to_end(cli, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("paper=mbtl", "env=cartpole_context", "debug=smoke", f"hydra.run.dir={run_dir}", check=True)
    assert proc.returncode == 0
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    r = json.loads((run_dir / "results.json").read_text())
    assert r["values"] == [0.25, 1.0, 1.5]  # debug=smoke: the first, middle and last of the grid
    V = np.array(r["normalised"])
    assert V.shape == (3, 3) and np.allclose(V, np.array(r["matrix"]) / 500.0)
    assert len(r["multitask"]) == 3
    curves = {k: s["curve"] for k, s in r["strategies"].items()}
    assert set(curves) == {
        "mbtl", "random", "greedy", "equidistant", "independent", "sequential_oracle", "oracle_transfer",
        "multitask",
    }  # fmt: skip
    for k, c in curves.items():
        assert len(c) == 3 and all(v <= curves["oracle_transfer"][0] + 1e-9 for v in c), k
    assert curves["independent"][0] == pytest.approx(np.trace(V) / 3)
    assert r["strategies"]["mbtl"]["sources"][0] == 1  # the middle of the range first
    assert (run_dir / "mbtl.png").stat().st_size > 0
    for v in ("0.25", "1.0", "1.5"):
        assert json.loads((run_dir / "sources" / v / "status.json").read_text())["state"] == "finished"
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [1, 2, 3]
    # the matrix again, from the file, without training
    again = tmp_path / "again"
    matrix = f"paper.transfer_matrix={run_dir / 'results.json'}"
    cli("paper=mbtl", "env=cartpole_context", "debug=smoke", matrix, f"hydra.run.dir={again}", check=True)
    assert json.loads((again / "results.json").read_text())["strategies"] == r["strategies"]
