"""XQL: the Gumbel loss by hand (clip, max-rescaling, its gradient), the V -> actor -> Q update against the
hand-built formulas, reward scaling, checkpoints, learning from a tiny dataset, the CLI (smoke, resume)."""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.errors import CheckpointError, ConfigError
from common.logger import read_metrics
from common.offline.data import OfflineData
from common.offline.dual_losses import gumbel_loss
from common.registry import CONF_DIR
from papers.xql.agent import XQLAgent
from tests.conftest import assert_kill_and_resume_identical, run_cli
from tests.test_td3bc import as_tensors, make_batch, make_spec, pendulum_score, toy_data

torch.set_num_threads(1)
CPU = torch.device("cpu")


def make_cfg(**overrides: object) -> OmegaConf:
    cfg = dict(
        actor_lr=1e-3,
        value_lr=1e-3,
        critic_lr=1e-3,
        hidden_dim=32,
        tau=0.1,
        loss_temp=2.0,
        max_clip=7.0,
        temperature=3.0,
        adv_weight_max=100.0,
        value_layer_norm=True,
        critic_huber_delta=20.0,
        sample_random_times=0,
        action_noise=False,
        noise_std=0.1,
        log_std_min=-5.0,
        log_std_max=2.0,
        actor_lr_schedule="cosine",
        max_steps=100,
        reward_scaling="locomotion",
        reward_span=1000.0,
    )
    cfg.update(overrides)
    out = OmegaConf.create(cfg)
    OmegaConf.set_readonly(out, True)
    return out


def make_agent(
    seed: int = 0, data: OfflineData | None = None, spec=None, precision="fp32", **cfg
) -> XQLAgent:
    torch.manual_seed(seed)
    agent = XQLAgent(make_cfg(**cfg), spec or make_spec(), CPU, precision)
    agent.prepare(toy_data() if data is None else data)
    return agent


# --- the Gumbel loss by hand ------------------------------------------------------------------------------
def test_gumbel_loss_by_hand_with_max_rescaling() -> None:
    # beta 1, no clip: z = (0, 1, -2), m = max z = 1: loss = e^-1 (e^z - z - 1)
    loss = gumbel_loss(torch.tensor([0.0, 1.0, -2.0]), beta=1.0, max_clip=None)
    e = math.e
    want = [0.0, (e - 2.0) / e, (math.exp(-2.0) + 1.0) / e]
    torch.testing.assert_close(loss, torch.tensor(want), rtol=0, atol=1e-6)
    # beta 2: z = (-2, -3); max z = -2 is floored at -1: loss = e (e^z - z - 1)
    loss = gumbel_loss(torch.tensor([-4.0, -6.0]), beta=2.0, max_clip=None)
    want = [e * (math.exp(-2.0) + 1.0), e * (math.exp(-3.0) + 2.0)]
    torch.testing.assert_close(loss, torch.tensor(want), rtol=1e-6, atol=1e-6)


def test_gumbel_loss_clips_z_and_rescales_the_gradient_by_the_detached_max() -> None:
    # max_clip 0.5: z = (0, 0.5 (clipped from 3), -1) and m = 0.5; the clipped entry has no gradient
    diff = torch.tensor([0.0, 3.0, -1.0], requires_grad=True)
    loss = gumbel_loss(diff, beta=1.0, max_clip=0.5)
    m = 0.5
    want = [math.exp(-m) * (math.exp(z) - z - 1.0) for z in (0.0, 0.5, -1.0)]
    torch.testing.assert_close(loss.detach(), torch.tensor(want), rtol=0, atol=1e-6)
    loss.sum().backward()
    # d/dz [e^(z - m) - z e^-m - e^-m] = e^-m (e^z - 1) with m held constant; dz/d diff = 1 / beta
    grad = [math.exp(-m) * (math.exp(0.0) - 1.0), 0.0, math.exp(-m) * (math.exp(-1.0) - 1.0)]
    torch.testing.assert_close(diff.grad, torch.tensor(grad), rtol=0, atol=1e-6)


# --- the update --------------------------------------------------------------------------------------------
def test_update_order_and_losses_equal_the_hand_built_formulas() -> None:
    agent = make_agent()
    before = copy.deepcopy(agent)
    batch = make_batch(n=8)
    metrics = agent.update(batch, step=0)
    b = as_tensors(batch)
    obs, next_obs, action = b["obs"], b["next_obs"], b["action"].clamp(-1 + 1e-5, 1 - 1e-5)
    reward = b["reward"] * before.reward_scale
    with torch.no_grad():
        q_t = torch.min(*before.critic_target(obs, action))
    value_loss = gumbel_loss(q_t - before.value(obs), 2.0, 7.0).mean()  # Eq. 11, the old V
    with torch.no_grad():
        y = reward + b["discount"] * agent.value(next_obs)  # Eq. 14 bootstraps from the *new* V
        w = torch.exp(3.0 * (q_t - agent.value(obs))).clamp(max=100.0)
    q1, q2 = before.critic(obs, action)
    critic_loss = F.huber_loss(q1, y, delta=20.0) + F.huber_loss(q2, y, delta=20.0)
    mean, log_std = before.actor(obs)
    logp = (-0.5 * ((action - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(
        -1, True
    )
    actor_loss = -(w * logp).mean()
    assert (b["discount"] == 0).any()
    assert metrics["value_loss"] == pytest.approx(value_loss.item(), rel=1e-5)
    assert metrics["critic_loss"] == pytest.approx(critic_loss.item(), rel=1e-5)
    assert metrics["actor_loss"] == pytest.approx(actor_loss.item(), rel=1e-5)
    assert metrics["actor_lr"] == 1e-3  # the cosine's count 0: the full step size


def test_random_actions_extend_the_value_batch() -> None:
    # sample_random_times 1 (hopper medium-expert): V sees each state twice, once with a uniform action
    agent = make_agent(sample_random_times=1)
    before = copy.deepcopy(agent)
    batch = make_batch(n=6)
    torch.manual_seed(5)
    metrics = agent.update(batch, step=0)
    b = as_tensors(batch)
    torch.manual_seed(5)
    rand = torch.rand(6, 2) * 2 - 1
    obs = torch.cat([b["obs"], b["obs"]])
    act = torch.cat([b["action"].clamp(-1 + 1e-5, 1 - 1e-5), rand])
    with torch.no_grad():
        q_t = torch.min(*before.critic_target(obs, act))
    want = gumbel_loss(q_t - before.value(obs), 2.0, 7.0).mean()
    assert metrics["value_loss"] == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="cannot be combined"):
        make_agent(sample_random_times=1, action_noise=True)


def test_reward_scale_is_1000_over_the_spread_of_episode_returns() -> None:
    data = toy_data(n=40)
    data.rewards = np.repeat([1.0, 3.0, 0.5, 2.0], 10).astype(np.float32)  # returns 10, 30, 5, 20
    assert make_agent(data=data).reward_scale == pytest.approx(1000.0 / 25.0)
    assert make_agent(data=data, reward_scaling="none").reward_scale == 1.0
    data.rewards = np.ones(40, np.float32)
    with pytest.raises(ConfigError, match="reward_scaling=none"):
        make_agent(data=data)


def test_state_dict_round_trip_is_bit_identical_after_further_updates() -> None:
    agent = make_agent()
    for i in range(3):
        agent.update(make_batch(seed=i), step=i)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = make_agent(seed=5, data=toy_data(seed=9))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.reward_scale == agent.reward_scale and restored.num_updates == 3
    m1 = [agent.update(make_batch(seed=10 + i), step=3 + i) for i in range(2)]
    m2 = [restored.update(make_batch(seed=10 + i), step=3 + i) for i in range(2)]
    assert m1 == m2
    with pytest.raises(CheckpointError, match="does not fit"):
        make_agent().load_state_dict(make_agent(hidden_dim=16).state_dict())


def test_seeded_updates_are_deterministic_and_bf16_runs() -> None:
    runs = [[make_agent(seed=3).update(make_batch(seed=1), 0)] for _ in range(2)]
    assert runs[0] == runs[1]
    metrics = make_agent(precision="bf16").update(make_batch(), 0)
    assert all(np.isfinite(v) for v in metrics.values())


def test_paper_config_holds_the_official_hopper_values() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["paper=xql", "env=hopper", "dataset=medium-replay"])
    p = OmegaConf.to_container(cfg.paper, resolve=True)
    a = p["agent"]
    assert (p["buffer"]["batch_size"], p["buffer"]["discount"], p["train"]["num_steps"]) == (
        256,
        0.99,
        1_000_000,
    )
    assert (a["loss_temp"], a["max_clip"], a["temperature"], a["adv_weight_max"]) == (2.0, 7.0, 3.0, 100.0)
    assert (a["value_layer_norm"], a["critic_huber_delta"], a["reward_scaling"]) == (True, 20.0, "locomotion")
    assert (a["actor_lr"], a["value_lr"], a["critic_lr"], a["tau"], a["hidden_dim"]) == (
        3e-4,
        3e-4,
        3e-4,
        0.005,
        256,
    )


# --- learning from a tiny dataset --------------------------------------------------------------------------
def test_learns_from_a_tiny_dataset() -> None:
    # tests/test_td3bc.py's InvertedPendulum data (8 noisy stabiliser episodes at the 200-step cap + 20
    # random ones, ~1,750 transitions); 1,000 updates of batch 64, 64-unit nets, beta 2: seed 0 reaches the
    # cap (normalised 100; random = 0; 300 updates: 17). ~25 s on one busy CPU thread.
    score = pendulum_score(
        lambda data, spec: make_agent(
            data=data,
            spec=spec,
            hidden_dim=64,
            value_lr=3e-4,
            critic_lr=3e-4,
            tau=0.005,
            max_steps=1000,
            reward_scaling="none",
        ),  # fmt: skip
        updates=1000,
    )
    assert score > 60, score


# --- the CLI -----------------------------------------------------------------------------------------------
@pytest.mark.slow  # tests/test_smoke.py runs paper=xql debug=smoke in CI
def test_cli_smoke_run_on_the_tiny_medium_split(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    args = ("paper=xql", "env=hopper", "dataset=medium", "debug=smoke", f"hydra.run.dir={run_dir}")
    run_cli(*args, env=env, check=True, timeout=180)
    evals, train = read_metrics(run_dir / "eval.jsonl"), read_metrics(run_dir / "train.jsonl")
    assert [r["step"] for r in evals] == [0, 100, 200] and all(
        np.isfinite(r["normalized_score"]) for r in evals
    )
    assert all({"value_loss", "critic_loss", "actor_loss", "adv_weight"} <= set(r) for r in train)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


@pytest.mark.slow  # the shared offline loop's exact resume: test_exact_resume.py
def test_killed_run_resumes_to_identical_metrics(
    tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_d4rl["root"]))
    args = ("paper=xql", "env=hopper", "dataset=medium", "debug=smoke", "paper.train.eval_every_steps=50")
    assert_kill_and_resume_identical(args, tmp_path)
