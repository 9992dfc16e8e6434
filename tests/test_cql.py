"""CQL: the importance-sampled log-sum-exp and the critic loss by hand, the tanh-Gaussian policy, CORL's init,
reward normalisation, the Lagrange and BC warm-up paths, checkpoints, learning on a tiny dataset, the CLI."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.errors import ConfigError
from common.offline.data import OfflineData
from common.registry import CONF_DIR
from papers.cql.agent import CQLAgent, cql_logsumexp, q_many
from tests.conftest import assert_kill_and_resume_identical
from tests.test_td3bc import as_tensors, cli_smoke, make_batch, make_spec, pendulum_score, toy_data

torch.set_num_threads(1)
CPU = torch.device("cpu")
OBS, ACT = 5, 2


def make_cfg(**overrides: object) -> OmegaConf:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose(config_name="config", overrides=["paper=cql", "env=hopper"]).paper.agent
    cfg = OmegaConf.to_container(base, resolve=True)
    cfg.update(hidden_dim=32, policy_lr=1e-3, qf_lr=1e-3, alpha_lr=1e-3, tau=0.1, cql_n_actions=4)
    cfg.update(overrides)
    out = OmegaConf.create(cfg)
    OmegaConf.set_readonly(out, True)
    return out


def make_agent(seed: int = 0, data: OfflineData | None = None, spec=None, **cfg: object) -> CQLAgent:
    torch.manual_seed(seed)
    agent = CQLAgent(make_cfg(**cfg), spec or make_spec(), CPU, "fp32")
    agent.prepare(toy_data() if data is None else data)
    return agent


# --- the conservative term by hand ------------------------------------------------------------------------
def test_importance_sampled_logsumexp_by_hand() -> None:
    t = lambda *v: torch.tensor([list(v)])  # noqa: E731  one state, N = len(v) actions
    q_rand, q_next, q_curr, q_data = t(1.0), t(2.0), t(0.0), torch.tensor([0.5])
    lp_next, lp_curr = t(-1.0), t(0.5)
    # importance-sampled (A = 1): Q_rand - log 0.5, Q_next - log pi_next, Q_curr - log pi_curr
    want = math.log(math.exp(1.0 + math.log(2.0)) + math.exp(3.0) + math.exp(-0.5))
    got = cql_logsumexp(q_rand, q_data, q_next, q_curr, lp_next, lp_curr, 1, 1.0, True)
    assert got.item() == pytest.approx(want, rel=1e-6)  # = log(2e + e^3 + e^-0.5) = 3.2630
    assert want == pytest.approx(3.26302, abs=1e-4)
    # A = 2: log U = 2 log 0.5; temperature 2: 2 * logsumexp(x / 2)
    want2 = 2.0 * math.log(sum(math.exp(x / 2) for x in (1.0 + 2 * math.log(2.0), 3.0, -0.5)))
    got2 = cql_logsumexp(q_rand, q_data, q_next, q_curr, lp_next, lp_curr, 2, 2.0, True)
    assert got2.item() == pytest.approx(want2, rel=1e-6)
    # without importance sampling the dataset action's Q joins the raw Qs
    want3 = math.log(math.exp(1.0) + math.exp(0.5) + math.exp(2.0) + math.exp(0.0))
    got3 = cql_logsumexp(q_rand, q_data, q_next, q_curr, lp_next, lp_curr, 1, 1.0, False)
    assert got3.item() == pytest.approx(want3, rel=1e-6)


def test_critic_loss_equals_the_hand_built_cql_h_objective() -> None:
    agent = make_agent(normalize_reward=True)
    before = copy.deepcopy(agent)
    batch = make_batch(n=6)
    torch.manual_seed(7)
    metrics = agent.update(batch, step=0)

    b = as_tensors(batch)
    obs, next_obs = before.normalize(b["obs"]), before.normalize(b["next_obs"])
    a, n = b["action"], 4
    torch.manual_seed(7)  # the same draws in the same order as `update`
    with torch.no_grad():
        _, log_pi = before.actor(obs)
        next_a, _ = before.actor(next_obs)
        target_q = torch.min(*before.critic_target(next_obs, next_a))[:, 0]
        y = b["reward"][:, 0] * before.reward_scale + b["discount"][:, 0] * target_q
        rand = torch.empty(6, n, ACT).uniform_(-1, 1)
        curr, lp_curr = before.actor(obs, repeat=n)
        nxt, lp_next = before.actor(next_obs, repeat=n)
        q1, q2 = (q[:, 0] for q in before.critic(obs, a))
        loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        for head, q in ((0, q1), (1, q2)):
            qs = [q_many(before.critic, obs, acts)[head] for acts in (rand, nxt, curr)]
            cat = torch.cat([qs[0] - ACT * math.log(0.5), qs[1] - lp_next, qs[2] - lp_curr], 1)  # (6, 3N)
            diff = (torch.logsumexp(cat, 1) - q).mean()
            loss = loss + 10.0 * diff
            if head == 0:
                diff1 = diff
        alpha_loss = -(0.0 * (log_pi - ACT)).mean()  # log alpha starts at 0

    assert (b["discount"] == 0).any() and before.reward_scale != 1.0
    approx = dict(rel=1e-4, abs=1e-5)
    assert metrics["target_q"] == pytest.approx(target_q.mean().item(), **approx)
    assert metrics["cql_diff"] == pytest.approx(diff1.item(), **approx)
    assert metrics["critic_loss"] == pytest.approx(loss.item(), **approx)
    assert metrics["alpha"] == pytest.approx(1.0) and metrics["alpha_loss"] == pytest.approx(
        alpha_loss.item()
    )
    assert metrics["log_pi"] == pytest.approx(log_pi.mean().item(), **approx)


def test_tanh_gaussian_log_prob_matches_torch_and_log_std_is_learned() -> None:
    agent = make_agent()
    obs = torch.randn(7, OBS)
    mean, log_std = agent.actor._dist(obs)
    torch.manual_seed(0)
    action, log_pi = agent.actor(obs)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.transforms.TanhTransform()
    )
    torch.testing.assert_close(log_pi, dist.log_prob(action).sum(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(agent.actor.log_prob(obs, action), log_pi, rtol=1e-3, atol=1e-3)
    det, _ = agent.actor(obs, deterministic=True)
    torch.testing.assert_close(det, torch.tanh(mean))
    names = {n for n, _ in agent.actor.named_parameters()}
    assert {"log_std_multiplier", "log_std_offset"} <= names  # cql.py Scalar(): trained with the policy
    assert agent.actor.log_std_offset.item() == -1.0
    o = np.ones(OBS, np.float32)
    np.testing.assert_allclose(agent.act(o, 0, True), agent.act(o, 0, True))
    assert np.abs(agent.act(o, 0, False)).max() <= 1


def test_networks_use_corls_initialisation() -> None:
    agent = make_agent(hidden_dim=16)
    first = agent.critic.q1[0].weight  # (16, 7): orthonormal columns x sqrt(2)
    torch.testing.assert_close(first.T @ first, 2.0 * torch.eye(OBS + ACT), rtol=0, atol=1e-5)
    assert agent.critic.q2[-1].weight.norm().item() == pytest.approx(1e-2, rel=1e-4)  # last layer gain 1e-2
    assert len([m for m in agent.critic.q1 if isinstance(m, torch.nn.Linear)]) == 4  # 3 hidden + output
    last = agent.actor.net[-1]  # the policy: Xavier-uniform gain 1e-2 output, zero bias
    assert last.weight.abs().max().item() <= 1e-2 * math.sqrt(6.0 / (16 + 2 * ACT)) + 1e-9
    assert torch.equal(last.bias, torch.zeros_like(last.bias))


def test_reward_normalisation_and_state_statistics() -> None:
    data = toy_data()
    data.rewards[:] = 0.0
    data.rewards[[0, 10, 20, 30]] = [10.0, 30.0, 50.0, 20.0]  # returns spread 40
    agent = make_agent(data=data, normalize_reward=True, reward_scale=2.0, reward_bias=-1.0)
    assert agent.reward_scale == pytest.approx(1000.0 / 40.0 * 2.0) and agent.reward_bias == -1.0
    assert make_agent(data=data).reward_scale == 1.0  # the default (hopper medium-replay, expert, ...)
    obs = torch.from_numpy(data.observations)
    np.testing.assert_allclose(agent.normalize(obs).mean(0).numpy(), 0.0, atol=1e-5)
    data.rewards[:] = 1.0
    with pytest.raises(ConfigError, match="normalize_reward=false"):
        make_agent(data=data, normalize_reward=True)


def test_lagrange_moves_alpha_prime_and_bc_warmup_clones_the_data() -> None:
    agent = make_agent(cql_lagrange=True, cql_target_action_gap=5.0)
    before = agent.log_alpha_prime.item()
    m = agent.update(make_batch(), step=0)
    assert m["alpha_prime"] == pytest.approx(math.e, rel=1e-5)  # exp(1) before its step
    assert agent.log_alpha_prime.item() != before
    bc = make_agent(bc_steps=2)
    batch = make_batch()
    b = as_tensors(batch)
    ref = copy.deepcopy(bc)
    torch.manual_seed(3)
    m1 = bc.update(batch, step=0)
    torch.manual_seed(3)
    with torch.no_grad():
        obs = ref.normalize(b["obs"])
        _, log_pi = ref.actor(obs)
        want = (log_pi - ref.actor.log_prob(obs, b["action"])).mean()
    assert m1["policy_loss"] == pytest.approx(want.item(), rel=1e-4, abs=1e-5)


def test_state_dict_round_trip_is_bit_identical_after_further_updates() -> None:
    agent = make_agent(seed=0, normalize_reward=True)
    for i in range(3):
        agent.update(make_batch(seed=i), step=i)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = make_agent(seed=5, data=toy_data(seed=9), normalize_reward=True)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.total_it == 3 and restored.log_alpha.item() == agent.log_alpha.item()
    torch.manual_seed(99)
    m1 = [agent.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    torch.manual_seed(99)
    m2 = [restored.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    assert m1 == m2


def test_bad_config_raises_config_error() -> None:
    for bad, match in [(dict(cql_n_actions=0), "cql_n_actions"), (dict(cql_temp=0.0), "cql_temp")]:
        with pytest.raises(ConfigError, match=match):
            CQLAgent(make_cfg(**bad), make_spec(), CPU, "fp32")


def test_paper_config_holds_corls_hopper_values() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["paper=cql", "env=hopper", "dataset=medium-replay"])
    p = OmegaConf.to_container(cfg.paper, resolve=True)
    a = p["agent"]
    assert (p["buffer"]["batch_size"], p["train"]["num_steps"], p["train"]["eval_every_steps"]) == (
        256,
        10**6,
        5000,
    )
    assert (a["policy_lr"], a["qf_lr"], a["alpha_lr"], a["cql_alpha"], a["cql_n_actions"]) == (
        3e-5,
        3e-4,
        3e-5,
        10.0,
        10,
    )
    assert (a["cql_lagrange"], a["cql_importance_sample"], a["bc_steps"], a["critic_layers"]) == (
        False,
        True,
        0,
        3,
    )
    assert a["orthogonal_init"] and a["normalize_states"] and not a["normalize_reward"]
    assert a["cql_clip_diff_min"] == -math.inf and a["target_entropy"] is None


# --- learning from a tiny expert dataset -----------------------------------------------------------------
def test_learns_from_a_tiny_expert_dataset() -> None:
    # The TD3+BC test's data (InvertedPendulum-v5, noisy stabiliser + random episodes, ~1,750 transitions);
    # 64-unit nets (2 hidden layers), lr 1e-3 for speed: CORL's 3e-5 policy lr needs ~1e5 updates.
    score = pendulum_score(
        lambda data, spec: make_agent(
            data=data,
            spec=spec,
            hidden_dim=64,
            actor_layers=2,
            critic_layers=2,
            tau=0.005,
            policy_lr=1e-3,
            qf_lr=1e-3,
            alpha_lr=1e-3,
            cql_n_actions=4,
        ),  # fmt: skip
        updates=1500,
    )
    assert score > 60, score


# --- the CLI on a D4RL-protocol dataset ------------------------------------------------------------------
@pytest.mark.slow  # tests/test_smoke.py runs paper=cql debug=smoke in CI
def test_cli_smoke_run_on_a_tiny_d4rl_dataset(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    _, train = cli_smoke("cql", tiny_d4rl, tmp_path / "run")
    assert all({"critic_loss", "cql_diff", "policy_loss", "alpha"} <= set(row) for row in train)


@pytest.mark.slow  # the shared offline loop's exact resume: test_exact_resume.py
def test_killed_run_resumes_to_identical_metrics(
    tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_d4rl["root"]))
    args = (
        "paper=cql",
        "env=hopper",
        "dataset=medium-replay",
        "debug=smoke",
        "paper.train.eval_every_steps=50",
    )
    assert_kill_and_resume_identical(args, tmp_path)
