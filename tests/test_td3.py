"""TD3 agent: the smoothed clipped double-Q target by hand, the delayed actor/target updates, acting,
checkpoints, and (slow) learning on Pendulum."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.buffers.base import Batch
from common.envs.base import EnvSpec
from common.envs.discrete import DiscreteEnvSpec
from common.errors import ConfigError
from common.logger import read_metrics
from papers.td3.agent import TD3Agent
from tests.conftest import run_cli

CPU = torch.device("cpu")
OBS, ACT = 5, 2


def make_agent(seed: int = 0, **overrides: object) -> TD3Agent:
    cfg = dict(
        lr=1e-3,
        hidden_dim=32,
        tau=0.1,
        policy_noise=0.2,
        noise_clip=0.5,
        policy_delay=2,
        expl_noise=0.1,
        num_expl_steps=10,
    )
    cfg.update(overrides)
    spec = EnvSpec((OBS,), np.dtype(np.float32), (OBS,), 1, (ACT,), 1, 1000, False)
    torch.manual_seed(seed)
    return TD3Agent(OmegaConf.create(cfg), spec, CPU, "fp32")


def make_batch(seed: int = 0, n: int = 8) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(
        obs=rng.normal(size=(n, OBS)).astype(np.float32),
        action=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        reward=rng.normal(size=(n, 1)).astype(np.float32),
        discount=rng.choice([0.0, 0.99], size=(n, 1)).astype(np.float32),
        next_obs=rng.normal(size=(n, OBS)).astype(np.float32),
    )


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_target_is_the_min_of_target_critics_at_the_smoothed_clipped_target_action() -> None:
    agent = make_agent(policy_noise=0.7, noise_clip=0.3)
    b = {k: torch.from_numpy(v) for k, v in vars(make_batch()).items()}
    torch.manual_seed(5)
    got = agent.target_q(b["next_obs"], b["reward"], b["discount"])

    # by hand, with the same noise draw: eps ~ N(0, 0.7) clipped to [-0.3, 0.3], action clipped to [-1, 1]
    torch.manual_seed(5)
    with torch.no_grad():
        mu = agent.actor_target(b["next_obs"])
        eps = (torch.randn(mu.shape) * 0.7).clamp(-0.3, 0.3)
        assert (eps.abs() == 0.3).any(), "the draw must exercise the clip"
        a2 = (mu + eps).clamp(-1.0, 1.0)
        q1 = agent.critic_target.q1(torch.cat([b["next_obs"], a2], -1))
        q2 = agent.critic_target.q2(torch.cat([b["next_obs"], a2], -1))
        want = b["reward"] + b["discount"] * torch.minimum(q1, q2)
    torch.testing.assert_close(got, want)
    # a terminal (discount 0) is the reward alone
    terminal = b["discount"][:, 0] == 0
    torch.testing.assert_close(got[terminal], b["reward"][terminal])


def test_zero_noise_clip_gives_the_unsmoothed_target() -> None:
    agent = make_agent(policy_noise=5.0, noise_clip=0.0)
    b = {k: torch.from_numpy(v) for k, v in vars(make_batch()).items()}
    got = agent.target_q(b["next_obs"], b["reward"], b["discount"])
    with torch.no_grad():
        q1, q2 = agent.critic_target(b["next_obs"], agent.actor_target(b["next_obs"]))
    torch.testing.assert_close(got, b["reward"] + b["discount"] * torch.minimum(q1, q2))


@pytest.mark.parametrize("delay", [2, 3])
def test_actor_and_targets_move_only_every_policy_delay_updates(delay: int) -> None:
    agent = make_agent(policy_delay=delay)
    for i in range(1, 2 * delay + 1):
        nets = {"actor": agent.actor, "critic": agent.critic}
        nets.update(actor_t=agent.actor_target, critic_t=agent.critic_target)
        before = {name: params(net) for name, net in nets.items()}
        metrics = agent.update(make_batch(seed=i), step=100 + i)
        due = i % delay == 0  # TD3.py: total_it counted from 1
        assert not same(before["critic"], params(agent.critic)), "the critics learn on every update"
        assert same(before["actor"], params(agent.actor)) is not due, i
        assert same(before["actor_t"], params(agent.actor_target)) is not due, i
        assert same(before["critic_t"], params(agent.critic_target)) is not due, i
        assert ("actor_loss" in metrics) is due


def test_soft_target_update_is_polyak_with_tau() -> None:
    agent = make_agent(policy_delay=1, tau=0.25)
    target_before, _ = params(agent.critic_target), agent.update(make_batch(), step=0)
    for t0, t1, s in zip(target_before, params(agent.critic_target), params(agent.critic), strict=True):
        torch.testing.assert_close(t1, 0.75 * t0 + 0.25 * s)


def test_acting_random_then_noisy_then_deterministic() -> None:
    agent = make_agent(expl_noise=0.1, num_expl_steps=10)
    obs = np.zeros(OBS, np.float32)
    random = np.stack([agent.act(obs, step=3, eval_mode=False) for _ in range(200)])
    assert random.min() < -0.8 and random.max() > 0.8  # U(-1, 1) before num_expl_steps
    mean = agent.act(obs, step=50, eval_mode=True)
    np.testing.assert_array_equal(mean, agent.act(obs, step=50, eval_mode=True))
    noisy = np.stack([agent.act(obs, step=50, eval_mode=False) for _ in range(2000)])
    assert np.all(np.abs(noisy) <= 1.0)
    np.testing.assert_allclose(noisy.std(0), 0.1, rtol=0.1)  # Gaussian exploration std expl_noise
    np.testing.assert_allclose(noisy.mean(0), mean, atol=0.01)


def test_checkpoint_round_trip_continues_identically() -> None:
    a, b = make_agent(seed=0), make_agent(seed=1)
    for i in range(3):
        a.update(make_batch(seed=i), step=i)
    buffer = io.BytesIO()  # through bytes, as a checkpoint: loaded optimizer state must not alias `a`'s
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    torch.manual_seed(9)
    ma = a.update(make_batch(seed=7), step=3)
    torch.manual_seed(9)
    mb = b.update(make_batch(seed=7), step=3)
    assert ma == mb and "actor_loss" in ma  # the 4th update is a delayed one: num_updates was restored


def test_refuses_discrete_actions_and_bad_delay() -> None:
    spec = DiscreteEnvSpec((4,), np.dtype(np.float32), (4,), 1, (), 1, 500, False, num_actions=2)
    cfg = OmegaConf.create(dict(lr=1e-3, hidden_dim=8, tau=0.1, policy_noise=0.2, noise_clip=0.5,
                                policy_delay=2, expl_noise=0.1, num_expl_steps=0))  # fmt: skip
    with pytest.raises(ConfigError, match="continuous"):
        TD3Agent(cfg, spec, CPU, "fp32")
    with pytest.raises(ConfigError, match="policy_delay"):
        make_agent(policy_delay=0)


@pytest.mark.slow
def test_td3_learns_pendulum(tmp_path: Path) -> None:
    """TD3 at small sizes lifts Pendulum from a random policy's ~-1200 to above -400 in 8k steps."""
    run = tmp_path / "run"
    run_cli(
        "paper=td3",
        "env=pendulum",
        "device=cpu",
        "logger=none",
        "paper.train.num_frames=8000",
        "paper.train.seed_frames=1000",
        "paper.train.eval_every_frames=4000",
        "paper.train.eval_episodes=5",
        "paper.agent.hidden_dim=64",
        "paper.buffer.batch_size=128",
        f"hydra.run.dir={run}",
        check=True,
        timeout=600,
    )
    evals = read_metrics(run / "eval.jsonl")
    assert evals[-1]["episode_return"] > -400, evals
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
