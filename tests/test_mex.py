"""MEX-MF: the critic's optimism term by hand, η = 0 is TD3 exactly, the term trains the critics only, and the
config's bad values are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.buffers.base import Batch
from common.envs.base import EnvSpec
from common.errors import ConfigError
from papers.mex.agent import MEXAgent, optimism_term
from papers.td3.agent import TD3Agent
from tests.conftest import assert_kill_and_resume_identical

CPU = torch.device("cpu")
OBS, ACT = 3, 2
TD3_CFG = dict(
    lr=1e-3, hidden_dim=16, tau=0.1, policy_noise=0.2, noise_clip=0.5, policy_delay=2, expl_noise=0.1,
    num_expl_steps=0,
)  # fmt: skip
SPEC = EnvSpec((OBS,), np.dtype(np.float32), (OBS,), 1, (ACT,), 1, 1000, False)


class Linear:
    """A stand-in agent whose actor and critics are closed forms: π(s) = (s₀, −s₀), Q₁ = Σs + Σa,
    Q₂ = 2Σs − Σa."""

    def actor(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([obs[:, 0], -obs[:, 0]], dim=-1)

    def critic(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, a = obs.sum(-1, keepdim=True), action.sum(-1, keepdim=True)
        return s + a, 2 * s - a


def test_optimism_term_by_hand():
    obs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    next_obs = torch.tensor([[0.5, 0.0, 0.0], [3.0, 0.0, 0.0]])
    action = torch.tensor([[0.5, 0.5], [-1.0, 0.0]])
    agent = Linear()
    q1, q2 = agent.critic(obs, action)  # Q1(s, a) = [2, 1]; Q2(s, a) = [1, 5]
    torch.manual_seed(0)
    rand_sum = (torch.rand(2, 2) * 2 - 1).sum(-1)  # Σā of the random actions the term will draw
    # π(s) sums to 0, so Q1(s, π(s)) = Σs = [1, 2] and Q2(s, π(s)) = 2Σs = [2, 4]; π(s') too sums to 0.
    s = np.array([1.0, 2.0])
    r = rand_sum.numpy()
    lse1 = np.logaddexp.reduce(np.stack([[2.0, 1.0], s, s + r]), axis=0)
    lse2 = np.logaddexp.reduce(np.stack([[2.0, 1.0], 2 * s, 2 * s - r]), axis=0)  # starts from Q1(s, a)
    optimism = (s.mean() - lse1.mean()) + ((2 * s).mean() - lse2.mean())
    torch.manual_seed(0)
    term, scalars = optimism_term(0.005, baseline=True)(agent, obs, action, next_obs, q1, q2)  # type: ignore[arg-type]
    assert term.item() == pytest.approx(-0.005 * optimism, rel=1e-6)
    assert scalars["optimism"].item() == pytest.approx(optimism, rel=1e-6)
    # without the baseline: η · mean(Q1(s, a) + Q2(s, a)) = η · mean([3, 6]) = 4.5 η
    term, _ = optimism_term(0.1, baseline=False)(agent, obs, action, next_obs, q1, q2)  # type: ignore[arg-type]
    assert term.item() == pytest.approx(-0.45)


def batch(seed: int = 0, n: int = 8) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(
        obs=rng.normal(size=(n, OBS)).astype(np.float32),
        action=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        reward=rng.normal(size=(n, 1)).astype(np.float32),
        discount=np.full((n, 1), 0.99, np.float32),
        next_obs=rng.normal(size=(n, OBS)).astype(np.float32),
    )


def agents(eta: float) -> tuple[TD3Agent, TD3Agent]:
    torch.manual_seed(0)
    td3 = TD3Agent(OmegaConf.create(TD3_CFG), SPEC, CPU, "fp32")
    torch.manual_seed(0)
    mex = MEXAgent(OmegaConf.create({**TD3_CFG, "eta": eta, "baseline": True}), SPEC, CPU, "fp32")
    return td3, mex


def test_zero_eta_is_td3_and_positive_eta_changes_only_the_critic_step():
    td3, mex = agents(0.0)
    for step in range(4):
        torch.manual_seed(step)
        td3.update(batch(step), step)
        torch.manual_seed(step)
        out = mex.update(batch(step), step)
    assert out["optimism"] != 0.0  # the term is computed, with weight 0
    for a, b in zip(td3.critic.parameters(), mex.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    td3, mex = agents(10.0)
    torch.manual_seed(0)
    td3.update(batch(), 0)  # update 1 of policy_delay 2: critics only
    torch.manual_seed(0)
    out = mex.update(batch(), 0)
    assert out["critic_loss"] == pytest.approx(out["td_loss"] - 10.0 * out["optimism"], rel=1e-5)
    pairs = zip(td3.critic.parameters(), mex.critic.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)
    for a, b in zip(td3.actor.parameters(), mex.actor.parameters(), strict=True):
        assert torch.equal(a, b) and b.grad is None  # the term never trains (or leaves gradients on) π


def test_optimism_raises_the_greedy_value():
    """A large η (100): a few critic steps raise the optimism the term measures (π(s)'s value over the soft
    maximum of the data, next-policy and random actions' values) above what TD3's critic reaches."""
    td3, mex = agents(100.0)
    b = batch(n=64)
    for step in range(30):
        torch.manual_seed(step)
        td3.update(b, step)
        torch.manual_seed(step)
        mex.update(b, step)
    obs, action, next_obs = (torch.as_tensor(x) for x in (b.obs, b.action, b.next_obs))
    measured = []
    for agent in (td3, mex):
        torch.manual_seed(99)
        with torch.no_grad():
            q1, q2 = agent.critic(obs, action)
            measured.append(optimism_term(1.0, True)(agent, obs, action, next_obs, q1, q2)[1]["optimism"])
    assert measured[1] > measured[0] + 0.1  # a sign error in the term lowers it instead


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"eta": -1.0}, "eta=-1.0 must be >= 0"), ({"baseline": None, "eta": 0.1}, None)],
)
def test_bad_eta_is_refused(overrides, message):
    cfg = {**TD3_CFG, "eta": 0.005, "baseline": True, **overrides}
    if message is None:
        cfg.pop("baseline")
        message = "paper.agent.baseline is missing"
    with pytest.raises(ConfigError, match=message):
        MEXAgent(OmegaConf.create(cfg), SPEC, CPU, "fp32")


def test_kill_and_resume_is_exact_on_the_sparse_task(tmp_path):
    """MEX on hopper_sparse (a 1000-step episode: a checkpoint every 120 frames lands inside it), killed after
    its first checkpoint and resumed: the same rows and score as an uninterrupted run (the sparse wrapper's
    simulator state, the replay and the optimism term's random actions all restored)."""
    args = ("paper=mex", "env=hopper_sparse", "debug=smoke", "checkpoint.every_frames=120")
    assert_kill_and_resume_identical(args, tmp_path)
