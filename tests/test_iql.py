"""IQL: expectile loss and advantage weights by hand, the V -> actor -> Q update order, reward scaling, the
cosine actor schedule, checkpoints, learning from a tiny expert dataset, and the CLI."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.envs.base import EnvSpec
from common.envs.discrete import DiscreteEnvSpec
from common.errors import CheckpointError, ConfigError
from common.offline.awr import advantage_weights, cosine_lr, gaussian_log_prob
from common.offline.data import OfflineData
from common.registry import CONF_DIR
from papers.iql.agent import IQLAgent, expectile_loss
from tests.conftest import assert_kill_and_resume_identical
from tests.test_td3bc import (  # the offline test fixtures both plugins share
    as_tensors,
    cli_smoke,
    make_batch,
    make_spec,
    params,
    pendulum_score,
    toy_data,
)

torch.set_num_threads(1)
CPU = torch.device("cpu")
OBS, ACT = 5, 2


def make_cfg(**overrides: object) -> OmegaConf:
    cfg = dict(
        actor_lr=1e-3,
        value_lr=1e-3,
        critic_lr=1e-3,
        hidden_dim=32,
        tau=0.1,
        expectile=0.7,
        temperature=3.0,
        adv_weight_max=100.0,
        dropout_rate=None,
        policy="gaussian",
        log_std_min=-5.0,
        log_std_max=2.0,
        actor_lr_schedule="cosine",
        max_steps=100,
        reward_scaling="locomotion",  # the toy tests scale as on hopper; the config's default is none
        reward_span=1000.0,
        normalize_states=False,
        state_norm_eps=1e-3,
    )
    cfg.update(overrides)
    out = OmegaConf.create(cfg)
    OmegaConf.set_readonly(out, True)
    return out


def make_agent(
    seed: int = 0,
    precision: str = "fp32",
    data: OfflineData | None = None,
    spec: EnvSpec | None = None,
    **cfg: object,
) -> IQLAgent:
    torch.manual_seed(seed)
    agent = IQLAgent(make_cfg(**cfg), spec or make_spec(), CPU, precision)
    agent.prepare(toy_data() if data is None else data)
    return agent


# --- the novel pieces by hand ----------------------------------------------------------------------------
def test_expectile_loss_is_asymmetric_by_hand() -> None:
    # tau = 0.7: positive errors (Q above V) weigh 0.7, negative ones 0.3
    diff = torch.tensor([2.0, -2.0, 0.5, -0.5, 0.0])
    torch.testing.assert_close(expectile_loss(diff, 0.7), torch.tensor([2.8, 1.2, 0.175, 0.075, 0.0]))
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff**2)  # tau 0.5: half the MSE
    # minimising it gives the 0.7-expectile: tau E[(x - m)+] = (1 - tau) E[(m - x)+], above the mean
    x = torch.tensor([0.0, 0.0, 0.0, 1.0])  # mean 0.25; 0.7-expectile m: 0.7 (1 - m) = 0.3 * 3m -> m = 0.4375
    m = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([m], lr=0.5)
    for _ in range(500):
        opt.zero_grad()
        expectile_loss(x - m, 0.7).mean().backward()
        opt.step()
    assert m.item() == pytest.approx(0.4375, abs=1e-4)


def test_advantage_weights_are_exp_beta_a_clipped_at_100() -> None:
    adv = torch.tensor([0.0, 1.0, -1.0, 2.0, 10.0])
    want = torch.tensor([1.0, math.exp(3.0), math.exp(-3.0), 100.0, 100.0])  # exp(6) = 403 -> 100
    torch.testing.assert_close(advantage_weights(adv, 3.0, 100.0), want)


def test_gaussian_log_prob_matches_torch_and_the_actor_has_a_state_independent_std() -> None:
    torch.manual_seed(0)
    mean, log_std, action = torch.randn(7, 3), torch.randn(7, 3) * 0.3, torch.rand(7, 3) * 2 - 1
    want = torch.distributions.Normal(mean, log_std.exp()).log_prob(action).sum(-1, keepdim=True)
    torch.testing.assert_close(gaussian_log_prob(action, mean, log_std), want)
    agent = make_agent()
    obs = torch.randn(4, OBS) * 100  # huge inputs: the mean is still tanh-bounded
    mean, log_std = agent.actor(obs)
    torch.testing.assert_close(mean, torch.tanh(agent.actor.mean[:-1](obs)))
    assert mean.abs().max() <= 1 and torch.equal(log_std, torch.zeros(4, ACT))  # log std starts at 0
    with torch.no_grad():
        agent.actor.log_std.fill_(-9.0)
    assert torch.equal(agent.actor(obs)[1], torch.full((4, ACT), -5.0))  # clipped at log_std_min
    # evaluation acts with the mean (evaluation.py: temperature 0); training samples around it
    o = np.ones(OBS, np.float32)
    with torch.no_grad():
        m = agent.actor(torch.from_numpy(o)[None])[0][0].numpy()
    np.testing.assert_allclose(agent.act(o, 0, eval_mode=True), m, atol=1e-6)
    with torch.no_grad():
        agent.actor.log_std.fill_(0.0)
    samples = np.stack([agent.act(o, 0, eval_mode=False) for _ in range(300)])
    assert np.abs(samples).max() <= 1 and samples.std(0).min() > 0.3  # std 1, clipped to [-1, 1]


def test_networks_use_orthogonal_init_with_gain_sqrt2() -> None:
    agent = make_agent(hidden_dim=16)
    first = agent.value[0].weight  # (16, 5): orthonormal rows scaled by sqrt(2)
    torch.testing.assert_close(first.T @ first, 2.0 * torch.eye(OBS), rtol=0, atol=1e-5)
    last = agent.critic.q1[-1].weight  # (1, 16) output layer: gain sqrt(2) too (common.py default_init)
    assert last.norm().item() == pytest.approx(math.sqrt(2.0), rel=1e-5)
    assert all(
        torch.equal(m.bias, torch.zeros_like(m.bias)) for m in agent.actor.modules() if hasattr(m, "bias")
    )


# --- dataset statistics ----------------------------------------------------------------------------------
def test_reward_scale_is_1000_over_the_spread_of_episode_returns() -> None:
    data = toy_data()  # four episodes of 10 steps
    data.rewards[:] = 0.0
    data.rewards[[0, 10, 20, 30]] = [10.0, 30.0, 50.0, 20.0]  # returns 10, 30, 50, 20: spread 40
    agent = make_agent(data=data)
    assert agent.reward_scale == pytest.approx(1000.0 / 40.0)
    batch = make_batch()
    metrics = agent.update(batch, step=0)
    assert metrics["batch_reward"] == pytest.approx(25.0 * batch.reward.mean(), rel=1e-5)
    assert make_agent(data=data, reward_scaling="none").reward_scale == 1.0
    data.rewards[:] = 1.0  # every episode returns 10: no spread to scale by
    with pytest.raises(ConfigError, match="reward_scaling=none"):
        make_agent(data=data)


def test_reward_scaling_none_and_antmaze_leave_the_scale_at_one_and_antmaze_subtracts_one() -> None:
    batch = make_batch()
    for scaling, shift in (("none", 0.0), ("antmaze", -1.0)):  # train_offline.py: antmaze r - 1
        agent = make_agent(reward_scaling=scaling)
        assert agent.reward_scale == 1.0
        metrics = agent.update(batch, step=0)
        assert metrics["batch_reward"] == pytest.approx(batch.reward.mean() + shift, rel=1e-5)
    with pytest.raises(ConfigError, match="reward_scaling='d4rl' must be one of none, locomotion, antmaze"):
        make_agent(reward_scaling="d4rl")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize(
    ("env", "scaling"),
    [
        ("hopper", "locomotion"),  # train_offline.py: env names with hopper, halfcheetah or walker2d
        ("halfcheetah", "locomotion"),
        ("walker2d", "locomotion"),
        ("ant", "none"),  # Gymnasium Ant: not in the official list
        ("pendulum", "none"),
        ("cheetah_run", "none"),  # DMC: no official IQL setting, rewards as stored
    ],
)
def test_reward_scaling_is_set_per_env_as_the_official_code_does(env: str, scaling: str) -> None:
    agent_cfg = _compose("paper=iql", f"env={env}").paper.agent
    assert agent_cfg.reward_scaling == scaling
    data = toy_data()  # episode returns differ: the locomotion scale is 1000 / spread, not 1
    returns = data.episode_returns()
    agent = IQLAgent(agent_cfg, make_spec(), CPU, "fp32")
    agent.prepare(data)
    want = 1000.0 / float(returns.max() - returns.min()) if scaling == "locomotion" else 1.0
    assert agent.reward_scale == pytest.approx(want, rel=1e-6)


def test_state_normalisation_round_trip_when_enabled() -> None:
    data = toy_data()
    raw = make_agent(data=data)  # the official default: raw states
    obs = torch.from_numpy(data.observations)
    assert torch.equal(raw.normalize(obs), obs)
    agent = make_agent(data=data, normalize_states=True)
    normed = agent.normalize(obs)
    sigma = data.observations.astype(np.float64).std(0)
    np.testing.assert_allclose(normed.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(normed.std(0, unbiased=False).numpy(), sigma / (sigma + 1e-3), rtol=1e-5)
    torch.testing.assert_close(normed * agent.obs_std + agent.obs_mean, obs)


# --- the update: V from the target critic, then the actor and Q with the new V ---------------------------
def test_update_order_and_losses_equal_the_hand_built_formulas() -> None:
    agent = make_agent(normalize_states=True)
    before = copy.deepcopy(agent)
    batch = make_batch()
    metrics = agent.update(batch, step=0)

    b = as_tensors(batch)
    obs, next_obs = before.normalize(b["obs"]), before.normalize(b["next_obs"])
    with torch.no_grad():
        q_target = torch.min(*before.critic_target(obs, b["action"]))
        v_new = agent.value(obs)  # V after its own step: the actor and Q use it (learner.py order)
        adv = q_target - v_new
        w = torch.exp(3.0 * adv).clamp(max=100.0)
        mean, log_std = before.actor(obs)
        actor_loss = -(w * gaussian_log_prob(b["action"], mean, log_std)).mean()
        y = b["reward"] * before.reward_scale + b["discount"] * agent.value(next_obs)
        q1, q2 = before.critic(obs, b["action"])
        critic_loss = ((q1 - y) ** 2 + (q2 - y) ** 2).mean()
        value_loss = (
            torch.where(q_target > before.value(obs), 0.7, 0.3) * (q_target - before.value(obs)) ** 2
        ).mean()

    approx = dict(rel=1e-4, abs=1e-5)
    assert metrics["value_loss"] == pytest.approx(value_loss.item(), **approx)
    assert metrics["adv"] == pytest.approx(adv.mean().item(), **approx)
    assert metrics["adv_weight"] == pytest.approx(w.mean().item(), **approx)
    assert metrics["actor_loss"] == pytest.approx(actor_loss.item(), **approx)
    assert metrics["critic_loss"] == pytest.approx(critic_loss.item(), **approx)
    assert not torch.equal(agent.value(obs), before.value(obs))  # V did move before the others used it


def test_deterministic_policy_uses_the_weighted_squared_error() -> None:
    agent = make_agent(policy="deterministic")
    before = copy.deepcopy(agent)
    batch = make_batch()
    metrics = agent.update(batch, step=0)
    b = as_tensors(batch)
    with torch.no_grad():
        adv = torch.min(*before.critic_target(b["obs"], b["action"])) - agent.value(b["obs"])
        w = torch.exp(3.0 * adv).clamp(max=100.0)
        want = (w * ((before.actor(b["obs"])[0] - b["action"]) ** 2).sum(-1, keepdim=True)).mean()
    assert metrics["actor_loss"] == pytest.approx(want.item(), rel=1e-4, abs=1e-5)
    o = np.ones(OBS, np.float32)
    np.testing.assert_array_equal(agent.act(o, 0, eval_mode=False), agent.act(o, 0, eval_mode=True))


def test_actor_lr_follows_the_cosine_schedule_to_zero() -> None:
    agent = make_agent(actor_lr=1e-3, max_steps=4)
    lrs = [agent.update(make_batch(seed=i), step=i)["actor_lr"] for i in range(6)]
    want = [1e-3 * (1 + math.cos(math.pi * min(k, 4) / 4)) / 2 for k in range(6)]  # optax count from 0
    assert lrs == pytest.approx(want) and lrs[0] == 1e-3 and lrs[4] == lrs[5] == 0.0
    assert cosine_lr(3e-4, 500_000, 1_000_000) == pytest.approx(1.5e-4)
    value_lr = agent.value_opt.param_groups[0]["lr"]
    assert value_lr == 1e-3  # only the actor is scheduled
    flat = make_agent(actor_lr=1e-3, actor_lr_schedule="constant", max_steps=4)
    assert [flat.update(make_batch(seed=i), step=i)["actor_lr"] for i in range(6)] == [1e-3] * 6


def test_update_moves_the_target_critic_by_a_polyak_step() -> None:
    agent = make_agent(tau=0.05)
    target = params(agent.critic_target)
    assert all(
        torch.equal(c, t) for c, t in zip(params(agent.critic), target, strict=True)
    )  # a copy at first
    agent.update(make_batch(), step=0)
    for old, new, src in zip(
        target, agent.critic_target.parameters(), agent.critic.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.05 * src + 0.95 * old, rtol=0, atol=1e-7)


# --- checkpoints, precision, config ----------------------------------------------------------------------
def test_state_dict_round_trip_is_bit_identical_after_further_updates() -> None:
    agent = make_agent(seed=0, normalize_states=True)
    for i in range(3):
        agent.update(make_batch(seed=i), step=i)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    other = toy_data(seed=9)
    other.rewards *= 3  # another reward scale and other statistics: overwritten by the checkpoint
    restored = make_agent(seed=123, data=other, normalize_states=True)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.reward_scale == agent.reward_scale and restored.num_updates == 3
    assert torch.equal(restored.obs_mean, agent.obs_mean) and torch.equal(restored.obs_std, agent.obs_std)

    torch.manual_seed(99)
    m1 = [agent.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    a1 = agent.act(toy_data().observations[0], 0, eval_mode=False)
    torch.manual_seed(99)
    m2 = [restored.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    a2 = restored.act(toy_data().observations[0], 0, eval_mode=False)
    assert m1 == m2
    np.testing.assert_array_equal(a1, a2)
    s1, s2 = agent.state_dict(), restored.state_dict()
    for name in ("actor", "critic", "critic_target", "value"):
        for key in s1[name]:
            assert torch.equal(s1[name][key], s2[name][key]), f"{name}.{key}"


def test_checkpoint_of_another_shape_raises_checkpoint_error() -> None:
    with pytest.raises(CheckpointError, match="does not fit"):
        make_agent().load_state_dict(make_agent(hidden_dim=16).state_dict())
    state = make_agent().state_dict()
    del state["reward_scale"]
    with pytest.raises(CheckpointError, match="reward_scale"):
        make_agent().load_state_dict(state)


def test_bf16_path_runs() -> None:
    agent = make_agent(precision="bf16")
    metrics = agent.update(make_batch(), step=0)
    assert all(np.isfinite(v) for v in metrics.values())
    action = agent.act(toy_data().observations[0], 0, eval_mode=True)
    assert action.dtype == np.float32 and np.abs(action).max() <= 1


def test_bad_config_or_env_raises_config_error() -> None:
    cfg = make_cfg()
    discrete = DiscreteEnvSpec((4,), np.dtype(np.float32), (4,), 1, (), 1, 500, False, num_actions=2)
    with pytest.raises(ConfigError, match="continuous actions"):
        IQLAgent(cfg, discrete, CPU, "fp32")
    pixels = EnvSpec((9, 84, 84), np.dtype(np.uint8), (3, 84, 84), 3, (ACT,), 2, 500, True)
    with pytest.raises(ConfigError, match="pixels=false"):
        IQLAgent(cfg, pixels, CPU, "fp32")
    for bad, match in [
        (dict(policy="beta"), "policy"),
        (dict(actor_lr_schedule="linear"), "actor_lr_schedule"),
        (dict(expectile=1.0), "expectile"),
        (dict(max_steps=0), "max_steps"),
    ]:
        with pytest.raises(ConfigError, match=match):
            IQLAgent(make_cfg(**bad), make_spec(), CPU, "fp32")
    snapshot = OmegaConf.to_container(cfg)
    with pytest.raises(ConfigError, match="expectile"):
        IQLAgent(
            OmegaConf.create({k: v for k, v in snapshot.items() if k != "expectile"}),
            make_spec(),
            CPU,
            "fp32",
        )
    assert OmegaConf.to_container(cfg) == snapshot


def test_paper_config_holds_the_official_locomotion_values() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["paper=iql", "env=hopper", "dataset=medium-replay"])
        short = compose(
            config_name="config", overrides=["paper=iql", "env=hopper", "paper.train.num_steps=500"]
        )
    p = OmegaConf.to_container(cfg.paper, resolve=True)
    assert p["loop"] == "common.offline.loop.train_offline" and cfg.dataset == "medium-replay"
    assert (p["buffer"]["batch_size"], p["buffer"]["discount"], p["train"]["num_steps"]) == (
        256,
        0.99,
        1_000_000,
    )
    a = p["agent"]
    assert (a["expectile"], a["temperature"], a["adv_weight_max"], a["tau"]) == (0.7, 3.0, 100.0, 0.005)
    assert (a["actor_lr"], a["value_lr"], a["critic_lr"], a["hidden_dim"]) == (3e-4, 3e-4, 3e-4, 256)
    assert (a["policy"], a["log_std_min"], a["dropout_rate"], a["actor_lr_schedule"]) == (
        "gaussian",
        -5.0,
        None,
        "cosine",
    )
    assert (
        a["reward_scaling"] == "locomotion" and a["reward_span"] == 1000.0 and a["normalize_states"] is False
    )
    assert a["max_steps"] == 1_000_000 and short.paper.agent.max_steps == 500  # follows num_steps


# --- learning from a tiny expert dataset -----------------------------------------------------------------
def test_learns_from_a_tiny_expert_dataset() -> None:
    # The TD3+BC test's data: a noisy hand-written stabiliser on InvertedPendulum-v5 (8 episodes at the
    # 200-step cap) plus 20 random episodes, ~1,750 transitions. 2,000 updates of batch 64, 64-unit nets,
    # states normalised (raw pendulum states are tiny; the official code leaves them raw), actor lr 1e-3
    # with the cosine decay over the run: ~10 s on one CPU thread.
    score = pendulum_score(
        lambda data, spec: make_agent(
            data=data,
            spec=spec,
            hidden_dim=64,
            actor_lr=1e-3,
            value_lr=3e-4,
            critic_lr=3e-4,
            tau=0.005,
            max_steps=2000,
            normalize_states=True,
        ),  # fmt: skip
        updates=2000,
    )
    assert score > 60, score


# --- the CLI on a D4RL-protocol dataset ------------------------------------------------------------------
def test_cli_smoke_run_on_a_tiny_d4rl_dataset(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _, train = cli_smoke("iql", tiny_d4rl, run_dir)
    assert all(
        {"value_loss", "critic_loss", "actor_loss", "adv_weight", "actor_lr"} <= set(row) for row in train
    )
    assert train[-1]["actor_lr"] < train[0]["actor_lr"]  # the cosine schedule spans the smoke's 200 steps
    config = OmegaConf.load(run_dir / "config.yaml")
    assert config.paper.agent.max_steps == config.paper.train.num_steps == 200


def test_killed_run_resumes_to_identical_metrics(
    tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the reward scale, the cosine schedule's count and the optimisers come back from the checkpoint
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_d4rl["root"]))
    args = (
        "paper=iql",
        "env=hopper",
        "dataset=medium-replay",
        "debug=smoke",
        "paper.train.eval_every_steps=50",
    )
    assert_kill_and_resume_identical(args, tmp_path)
