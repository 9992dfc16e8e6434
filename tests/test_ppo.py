"""PPO and the on-policy loop: GAE by hand (truncation bootstraps, termination does not), the clipped
surrogate's gradient on both sides of the clip, running normalisation statistics against numpy, the agent's
rollout and checkpoints, exact kill-and-resume, and learning CartPole."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.envs.base import EnvSpec
from common.envs.discrete import DiscreteEnvSpec
from common.errors import ConfigError
from common.logger import read_metrics
from common.onpolicy import ObservationNormalizer, RewardNormalizer, RunningMeanStd, clipped_surrogate, gae
from papers.ppo.agent import PPOAgent, next_values
from tests.conftest import assert_kill_and_resume_identical, run_cli

CPU = torch.device("cpu")
OBS, ACT = 3, 2


# --- GAE ------------------------------------------------------------------------------------------------
def rollout_gae(r, v, term, trunc, final, last, g, lam):  # noqa: ANN001, ANN202
    """PPO's advantages: the shared GAE with the rollout's next values (time limits bootstrap)."""
    return gae(r, v, next_values(v, trunc, final, last), term.float(), (term | trunc).float(), g, lam)


def test_gae_matches_hand_computed_advantages_with_truncation_and_termination() -> None:
    g, lam = 0.9, 0.5
    # two envs, three steps. env 0: the episode goes on throughout (bootstrap from last_value).
    # env 1: truncated after step 0 (bootstrap from V(final obs) = 10); the next episode terminates at step 2
    r = torch.tensor([[1.0, 2.0], [0.0, 1.0], [2.0, 3.0]])
    v = torch.tensor([[0.5, 1.0], [1.0, 2.0], [1.5, 0.5]])
    term = torch.tensor([[False, False], [False, False], [False, True]])
    trunc = torch.tensor([[False, True], [False, False], [False, False]])
    final = torch.tensor([[0.0, 10.0], [0.0, 0.0], [0.0, 0.0]])
    last = torch.tensor([4.0, 99.0])  # env 1's last value is after a terminal: unused

    # env 0: d2 = 2 + .9*4 - 1.5 = 4.1; d1 = 0 + .9*1.5 - 1 = .35; d0 = 1 + .9*1 - .5 = 1.4
    a02 = 4.1
    a01 = 0.35 + 0.45 * a02
    a00 = 1.4 + 0.45 * a01
    # env 1: d2 = 3 - .5 = 2.5 (terminal); d1 = 1 + .9*.5 - 2 = -.55; d0 = 2 + .9*10 - 1 = 10 (truncated: cut)
    a12 = 2.5
    a11 = -0.55 + 0.45 * a12
    a10 = 10.0
    want = torch.tensor([[a00, a10], [a01, a11], [a02, a12]])
    torch.testing.assert_close(rollout_gae(r, v, term, trunc, final, last, g, lam), want)


def test_truncation_bootstraps_and_termination_does_not() -> None:
    r, v = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    final, last, no = torch.tensor([[5.0]]), torch.tensor([7.0]), torch.tensor([[False]])
    yes = torch.tensor([[True]])
    truncated = rollout_gae(r, v, no, yes, final, last, 0.9, 0.95)
    terminated = rollout_gae(r, v, yes, no, final, last, 0.9, 0.95)
    going_on = rollout_gae(r, v, no, no, final, last, 0.9, 0.95)
    torch.testing.assert_close(truncated, torch.tensor([[1.0 + 0.9 * 5.0 - 2.0]]))  # V(final obs)
    torch.testing.assert_close(terminated, torch.tensor([[1.0 - 2.0]]))  # nothing after a terminal
    torch.testing.assert_close(going_on, torch.tensor([[1.0 + 0.9 * 7.0 - 2.0]]))  # next value


# --- the clipped objective -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("advantage", "ratio", "moves"),
    [
        (1.0, 1.3, False),  # A > 0 above 1 + eps: clipped, no gradient
        (1.0, 1.1, True),
        (1.0, 0.7, True),  # A > 0 below 1 - eps: the min keeps the unclipped term
        (-1.0, 0.7, False),  # A < 0 below 1 - eps: clipped
        (-1.0, 0.9, True),
        (-1.0, 1.3, True),  # A < 0 above 1 + eps: unclipped (pessimistic bound)
    ],
)
def test_clipped_surrogate_gradient(advantage: float, ratio: float, moves: bool) -> None:
    r = torch.tensor([ratio], requires_grad=True)
    clipped_surrogate(r, torch.tensor([advantage]), clip=0.2).backward()
    assert r.grad is not None
    assert float(r.grad[0]) == (-advantage if moves else 0.0)


# --- normalisation statistics ----------------------------------------------------------------------------
def test_running_mean_std_matches_numpy_over_a_stream_of_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(int(n), 4)) for n in rng.integers(1, 9, size=40)]
    stats = RunningMeanStd((4,))
    for b in batches:
        stats.update(b)
    data = np.concatenate(batches)
    n, prior = len(data), 1e-4
    # exactly: the data pooled with the prior (mean 0, variance 1, weight 1e-4)
    mean = data.sum(0) / (n + prior)
    m2 = prior * 1.0 + ((data - data.mean(0)) ** 2).sum(0) + data.mean(0) ** 2 * prior * n / (n + prior)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(stats.var, m2 / (n + prior), rtol=1e-10)
    np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-5)  # ... which is numpy's, nearly
    np.testing.assert_allclose(stats.var, data.var(0), rtol=1e-4)
    assert stats.count == pytest.approx(n + prior)


def test_observation_normalizer_updates_then_normalises_and_clips() -> None:
    norm = ObservationNormalizer((2,), enabled=True, clip=1.5)
    seen = []
    for x in np.random.default_rng(1).normal(size=(30, 1, 2)) * [1.0, 50.0]:
        out = norm(x, update=True)
        seen.append(x[0])
    data = np.array(seen)
    z = (x[0] - norm.stats.mean) / np.sqrt(norm.stats.var + 1e-8)
    np.testing.assert_allclose(out[0], np.clip(z, -1.5, 1.5), rtol=1e-6)
    np.testing.assert_allclose(norm.stats.var, data.var(0), rtol=1e-3)
    frozen = norm.stats.count
    norm(np.full((1, 2), 1e6), update=False)
    assert norm.stats.count == frozen
    assert np.all(np.abs(norm(np.full((1, 2), 1e6), update=False)) == 1.5)


def test_reward_normalizer_scales_by_the_std_of_the_discounted_return() -> None:
    norm = RewardNormalizer(num_envs=1, gamma=0.5, enabled=True, clip=10.0)
    rewards, terminal = [1.0, 2.0, 3.0, 4.0], [False, True, False, False]
    returns, out = [], []
    u = 0.0
    for r, t in zip(rewards, terminal, strict=True):
        out.append(float(norm(np.array([r]), np.array([t]))[0]))
        u = u * 0.5 * (1.0 - t) + r
        returns.append(u)
    # Gymnasium's order: a terminal step's flag cuts the trace before its own reward is added
    assert returns == [1.0, 2.0, 4.0, 6.0]
    expected = RunningMeanStd(())
    for u in returns:
        expected.update(np.array([u]))
    np.testing.assert_allclose(out[-1], 4.0 / np.sqrt(expected.var + 1e-8), rtol=1e-6)
    np.testing.assert_allclose(norm.stats.var, expected.var)


# --- the agent -------------------------------------------------------------------------------------------
def make_cfg(**overrides: object) -> OmegaConf:
    cfg = dict(
        lr=3e-3, anneal_lr=True, anneal_steps=64, adam_eps=1e-5, hidden_dim=16, num_envs=2, rollout_steps=8,
        epochs=2, minibatches=4, gamma=0.99, gae_lambda=0.95, clip_coef=0.2, clip_value_loss=True,
        norm_adv=True, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, target_kl=None, normalize_obs=True,
        normalize_reward=True, obs_clip=10.0, reward_clip=10.0,
    )  # fmt: skip
    cfg.update(overrides)
    return OmegaConf.create(cfg)


def continuous_spec() -> EnvSpec:
    return EnvSpec((OBS,), np.dtype(np.float32), (OBS,), 1, (ACT,), 1, 100, False)


def fill(agent: PPOAgent, seed: int, discrete: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    for t in range(agent.rollout_steps):
        actions = agent.explore(rng.normal(size=(2, OBS)), step=t)
        assert actions.shape == ((2,) if discrete else (2, ACT))
        if not discrete:
            assert np.all(np.abs(actions) <= 1.0)
        agent.observe(rng.normal(size=2), np.array([t == 3, False]), np.array([False, t == 5]),
                      rng.normal(size=(2, OBS)))  # fmt: skip
    return rng.normal(size=(2, OBS))


def test_learn_updates_the_networks_and_anneals_the_lr() -> None:
    torch.manual_seed(0)
    agent = PPOAgent(make_cfg(), continuous_spec(), CPU, "fp32")  # 64 / (2 * 8) = 4 iterations
    before = [p.detach().clone() for p in agent.net.parameters()]
    lrs = []
    for i in range(3):
        metrics = agent.learn(fill(agent, i), step=16 * (i + 1))
        lrs.append(metrics["lr"])
        assert {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"} <= set(metrics)
    assert lrs == pytest.approx([3e-3, 3e-3 * 0.75, 3e-3 * 0.5])  # CleanRL: 1 - (iteration - 1) / n
    assert not all(torch.equal(a, b) for a, b in zip(before, agent.net.parameters(), strict=True))
    with pytest.raises(RuntimeError, match="rollout"):
        agent.learn(np.zeros((2, OBS)), step=0)  # empty rollout


def test_discrete_actions_and_refusals() -> None:
    spec = DiscreteEnvSpec((OBS,), np.dtype(np.float32), (OBS,), 1, (), 1, 100, False, num_actions=3)
    torch.manual_seed(0)
    agent = PPOAgent(make_cfg(), spec, CPU, "fp32")
    metrics = agent.learn(fill(agent, 0, discrete=True), step=16)
    assert "log_std" not in metrics and np.isfinite(metrics["policy_loss"])
    action = agent.act(np.zeros(OBS, np.float32), step=0, eval_mode=True)
    assert action.shape == () and 0 <= int(action) < 3
    with pytest.raises(ConfigError, match="minibatches"):
        PPOAgent(make_cfg(minibatches=17), spec, CPU, "fp32")  # more than the 16 samples of a rollout
    with pytest.raises(ConfigError, match="fp32"):
        PPOAgent(make_cfg(), spec, CPU, "bf16")


def test_a_symbolic_grid_is_flattened_and_pixels_are_refused() -> None:
    """MiniGrid's (3, H, W) codes are a state: PPO acts on them flattened; pixel observations are refused."""
    grid = DiscreteEnvSpec((3, 5, 5), np.dtype(np.uint8), (3, 5, 5), 1, (), 1, 100, False, num_actions=6)
    torch.manual_seed(0)
    agent = PPOAgent(make_cfg(), grid, CPU, "fp32")
    assert agent.net.actor[0].in_features == 75  # 3 x 5 x 5 codes
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 11, (2, 3, 5, 5)).astype(np.uint8)
    for t in range(agent.rollout_steps):
        actions = agent.explore(obs, step=t)
        assert actions.shape == (2,) and np.all((actions >= 0) & (actions < 6))
        agent.observe(np.ones(2), np.array([False, False]), np.array([False, False]), obs)
    assert np.isfinite(agent.learn(obs, step=16)["policy_loss"])
    assert 0 <= int(agent.act(obs[0], step=0, eval_mode=True)) < 6
    pixels = DiscreteEnvSpec((3, 84, 84), np.dtype(np.uint8), (3, 84, 84), 1, (), 1, 100, True, num_actions=6)
    with pytest.raises(ConfigError, match="pixels"):
        PPOAgent(make_cfg(), pixels, CPU, "fp32")


def test_checkpoint_holds_the_partial_rollout_and_the_statistics() -> None:
    torch.manual_seed(0)
    a = PPOAgent(make_cfg(), continuous_spec(), CPU, "fp32")
    a.learn(fill(a, 0), step=16)
    rng = np.random.default_rng(5)
    for t in range(3):  # a partial rollout
        a.explore(rng.normal(size=(2, OBS)), step=t)
        a.observe(rng.normal(size=2), np.zeros(2, bool), np.zeros(2, bool), rng.normal(size=(2, OBS)))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    b = PPOAgent(make_cfg(), continuous_spec(), CPU, "fp32")
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert b.rollout.t == 3 and b.obs_norm.stats.count == a.obs_norm.stats.count
    np.testing.assert_array_equal(b.reward_norm.returns, a.reward_norm.returns)
    outs = []
    for agent in (a, b):
        torch.manual_seed(7)
        rng = np.random.default_rng(6)
        for t in range(5):
            agent.explore(rng.normal(size=(2, OBS)), step=t)
            agent.observe(rng.normal(size=2), np.zeros(2, bool), np.zeros(2, bool), rng.normal(size=(2, OBS)))
        outs.append(agent.learn(rng.normal(size=(2, OBS)), step=32))
    assert outs[0] == outs[1]


# --- the loop --------------------------------------------------------------------------------------------
def test_kill_and_resume_is_exact(tmp_path: Path) -> None:
    """Pendulum (100-step episodes under debug=smoke), 64-step rollouts, a checkpoint due every 120 frames:
    each is written at the next rollout boundary (128, 256, ...), inside an episode, so the env's simulator
    state, the normaliser statistics, the reward trace and the unlogged metrics must all be restored."""
    args = ("paper=ppo", "env=pendulum", "debug=smoke", "paper.train.num_frames=400", "paper.agent.epochs=2",
            "checkpoint.every_frames=120")  # fmt: skip
    assert_kill_and_resume_identical(args, tmp_path)


def test_learns_cartpole(tmp_path: Path) -> None:
    """CleanRL's CartPole settings (4 envs x 128 steps) take the greedy policy from ~20-40 to over 150 steps
    within 10k env steps (~20 s on a CPU core)."""
    run = tmp_path / "run"
    run_cli(
        "paper=ppo",
        "env=cartpole",
        "device=cpu",
        "logger=none",
        "paper.train.num_frames=10240",
        "paper.train.eval_every_frames=5120",
        "paper.train.eval_episodes=5",
        f"hydra.run.dir={run}",
        check=True,
        timeout=300,
    )
    evals = read_metrics(run / "eval.jsonl")
    assert evals[0]["episode_return"] < 100 and evals[-1]["episode_return"] > 150, evals
    # one update per full rollout of 4 x 128 steps; a row logged at a rollout's last step precedes its update
    assert all(r["updates"] == (r["step"] - 1) // 512 for r in read_metrics(run / "train.jsonl"))
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
