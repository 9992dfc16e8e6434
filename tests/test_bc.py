"""BC: the regression loss by hand, state normalisation, the top-frac trajectory selection, checkpoints,
learning from a tiny expert dataset, and the CLI on a D4RL-protocol dataset (smoke, resume)."""

from __future__ import annotations

import copy
import io
import json
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
from common.offline.data import OfflineData, state_statistics
from common.registry import CONF_DIR
from papers.bc.agent import BCAgent
from papers.bc.loop import discounted_returns, keep_best_trajectories
from tests.conftest import assert_kill_and_resume_identical, run_cli
from tests.test_td3bc import (  # the offline test fixtures the offline plugins share
    as_tensors,
    cli_smoke,
    make_batch,
    make_spec,
    pendulum_score,
    toy_data,
)

torch.set_num_threads(1)
CPU = torch.device("cpu")
OBS, ACT = 5, 2


def make_cfg(**overrides: object) -> OmegaConf:
    cfg = dict(lr=1e-3, hidden_dim=32, normalize_states=True, state_norm_eps=1e-3)
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
) -> BCAgent:
    torch.manual_seed(seed)
    agent = BCAgent(make_cfg(**cfg), spec or make_spec(), CPU, precision)
    agent.prepare(toy_data() if data is None else data)
    return agent


# --- the loss ---------------------------------------------------------------------------------------------
def test_loss_on_a_fixed_batch_by_hand() -> None:
    # Zero weights and an output bias of atanh(0.5), 0: pi(s) = (0.5, 0) for every state. With dataset actions
    # (1, 0) and (1, -1) the squared errors are 0.25, 0, 0.25, 1: the loss is their mean over batch and
    # action dimensions, 1.5 / 4 = 0.375; d loss / d pre-tanh output = 2 (pi - a) (1 - pi^2) / 4.
    agent = make_agent(lr=0.1)
    with torch.no_grad():
        for p in agent.actor.parameters():
            p.zero_()
        agent.actor.net[-2].bias.copy_(torch.tensor([math.atanh(0.5), 0.0]))
    batch = make_batch(n=2)
    batch.action[:] = [[1.0, 0.0], [1.0, -1.0]]
    metrics = agent.update(batch, step=0)
    assert metrics["actor_loss"] == pytest.approx(0.375, abs=1e-6)
    assert metrics["pi_abs"] == pytest.approx(0.25, abs=1e-6)  # mean |pi| over (0.5, 0) twice
    # The hidden units are all 0, so only the output bias has a gradient: sum_b 2 (pi - a)(1 - pi^2) / 4 =
    # (2 x -0.1875, 0 + 0.5) = (-0.375, 0.5). Adam's first step moves it by lr against the gradient's sign.
    bias = agent.actor.net[-2].bias.detach()
    torch.testing.assert_close(bias, torch.tensor([math.atanh(0.5) + 0.1, -0.1]), rtol=0, atol=1e-6)
    assert all(not p.any() for p in agent.actor.net[0].parameters())


def test_loss_and_gradient_equal_the_formula_on_normalised_states() -> None:
    agent = make_agent()
    before = copy.deepcopy(agent)
    batch = make_batch(n=8)
    seen: list[list[torch.Tensor]] = []
    step = agent.actor_opt.step

    def record(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append([p.grad.clone() for p in agent.actor.parameters()])
        return step(*args, **kwargs)

    agent.actor_opt.step = record  # type: ignore[method-assign]
    metrics = agent.update(batch, step=0)
    b = as_tensors(batch)
    obs = (b["obs"] - before.obs_mean) / before.obs_std  # the dataset statistics, not the batch's
    pi = before.actor(obs)
    loss = ((pi - b["action"]) ** 2).mean()  # Eq. (BC): E ||pi(s) - a||^2 / action_dim
    want = torch.autograd.grad(loss, list(before.actor.parameters()))
    assert metrics["actor_loss"] == pytest.approx(loss.item(), rel=1e-5)
    for got, expected in zip(seen[0], want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert agent.num_updates == 1


def test_state_statistics_and_act_use_the_dataset_normalisation() -> None:
    mean, std = state_statistics(np.array([[0.0, 2.0], [2.0, 6.0]], np.float32), eps=1e-3)
    np.testing.assert_allclose(mean, [1.0, 4.0])
    np.testing.assert_allclose(std, [1.001, 2.001])  # population std (ddof 0) + eps, as compute_mean_std
    data = toy_data()
    agent = make_agent(data=data)
    np.testing.assert_allclose(agent.obs_mean.numpy(), data.observations.mean(0), rtol=1e-5)
    with torch.no_grad():
        want = agent.actor(agent.normalize(torch.from_numpy(data.observations[:1])))[0].numpy()
    action = agent.act(data.observations[0], 0, eval_mode=True)
    np.testing.assert_allclose(action, want, atol=1e-6)
    assert action.dtype == np.float32 and np.abs(action).max() <= 1
    raw = make_agent(data=data, normalize_states=False)  # normalize False: identity
    obs = torch.from_numpy(data.observations)
    assert torch.equal(raw.normalize(obs), obs)


# --- the top-frac selection ("x% BC") ---------------------------------------------------------------------
def test_keep_best_trajectories_by_hand() -> None:
    # four episodes of 10 rows (toy_data); rewards set so that the ranking is known
    data = toy_data(n=40)
    rewards = np.zeros(40, np.float32)
    rewards[[0, 10, 11, 20, 30]] = [3.0, 1.0, 2.5, 5.0, 1.0]
    data.rewards = rewards
    np.testing.assert_allclose(discounted_returns(data, 1.0), [3.0, 3.5, 5.0, 1.0])
    np.testing.assert_allclose(discounted_returns(data, 0.5), [3.0, 2.25, 5.0, 1.0])
    # undiscounted (bc_10 configs): the top half is episodes 2 and 1; discounted 0.5: episodes 2 and 0
    half = keep_best_trajectories(data, 0.5, 1.0)
    np.testing.assert_array_equal(half.observations, data.observations[10:30])  # dataset order kept
    np.testing.assert_array_equal(half.episode_starts, [0, 10])
    np.testing.assert_array_equal(half.terminations, data.terminations[10:30])
    np.testing.assert_array_equal(half.truncations, data.truncations[10:30])
    assert half.metadata == data.metadata and len(half) == 20
    discounted = keep_best_trajectories(data, 0.5, 0.5)
    np.testing.assert_array_equal(
        discounted.actions, np.concatenate([data.actions[:10], data.actions[20:30]])
    )
    np.testing.assert_array_equal(discounted.episode_starts, [0, 10])
    # max(1, int(frac * E)): at least one episode; frac 1 returns the dataset itself
    assert len(keep_best_trajectories(data, 0.01, 1.0).episode_starts) == 1
    assert keep_best_trajectories(data, 1.0, 0.99) is data


def test_selection_sets_the_state_statistics() -> None:
    # any_percent_bc.py computes the mean/std after keep_best_trajectories
    data = toy_data(n=40)
    data.rewards = np.repeat([0.0, 1.0, 0.0, 0.0], 10).astype(np.float32)
    kept = keep_best_trajectories(data, 0.25, 1.0)
    agent = make_agent(data=kept)
    np.testing.assert_allclose(agent.obs_mean.numpy(), data.observations[10:20].mean(0), rtol=1e-5)


# --- checkpoints, precision, config -----------------------------------------------------------------------
def test_state_dict_round_trip_is_bit_identical_after_further_updates() -> None:
    agent = make_agent(seed=0)
    for i in range(3):
        agent.update(make_batch(seed=i), step=i)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = make_agent(seed=123, data=toy_data(seed=9))  # other weights and statistics: overwritten
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.obs_mean, agent.obs_mean) and torch.equal(restored.obs_std, agent.obs_std)
    assert restored.num_updates == 3
    m1 = [agent.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    m2 = [restored.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    assert m1 == m2
    obs = toy_data().observations[0]
    np.testing.assert_array_equal(agent.act(obs, 0, True), restored.act(obs, 0, True))


def test_checkpoint_of_another_shape_raises_checkpoint_error() -> None:
    with pytest.raises(CheckpointError, match="does not fit"):
        make_agent().load_state_dict(make_agent(hidden_dim=16).state_dict())
    state = make_agent().state_dict()
    del state["obs_std"]
    with pytest.raises(CheckpointError, match="obs_std"):
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
        BCAgent(cfg, discrete, CPU, "fp32")
    pixels = EnvSpec((9, 84, 84), np.dtype(np.uint8), (3, 84, 84), 3, (ACT,), 2, 500, True)
    with pytest.raises(ConfigError, match="pixels=false"):
        BCAgent(cfg, pixels, CPU, "fp32")
    snapshot = OmegaConf.to_container(cfg)
    with pytest.raises(ConfigError, match="lr"):
        BCAgent(OmegaConf.create({k: v for k, v in snapshot.items() if k != "lr"}), make_spec(), CPU, "fp32")
    assert OmegaConf.to_container(cfg) == snapshot


def test_paper_config_holds_corl_defaults() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["paper=bc", "env=hopper", "dataset=expert"])
    p = OmegaConf.to_container(cfg.paper, resolve=True)
    assert p["entry"] == "papers.bc.agent.BCAgent" and p["loop"] == "papers.bc.loop.train"
    assert (p["buffer"]["batch_size"], p["buffer"]["discount"], p["buffer"]["frac"]) == (256, 0.99, 1.0)
    assert (p["train"]["num_steps"], p["train"]["eval_every_steps"], p["train"]["eval_episodes"]) == (
        1_000_000,
        5000,
        10,
    )
    a = p["agent"]
    assert (a["lr"], a["hidden_dim"], a["normalize_states"], a["state_norm_eps"]) == (3e-4, 256, True, 1e-3)


def test_cli_rejects_a_bad_frac(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    args = (
        "paper=bc",
        "env=hopper",
        "dataset=medium",
        "paper.buffer.frac=0",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    proc = run_cli(*args, env=env, timeout=120)
    assert proc.returncode != 0 and "paper.buffer.frac=0" in proc.stderr
    assert not (tmp_path / "r" / "eval.jsonl").exists()


# --- learning from a tiny expert dataset ------------------------------------------------------------------
def test_learns_from_a_tiny_expert_dataset() -> None:
    # tests/test_td3bc.py's InvertedPendulum data: 8 episodes of a noisy hand-written stabiliser (each keeps
    # the pole up for the 200-step cap) and 20 random episodes, ~1,750 transitions; 64-unit nets, batch 64.
    def bc(frac: float, lr: float = 1e-3):  # type: ignore[no-untyped-def]
        return lambda data, spec: make_agent(
            data=keep_best_trajectories(data, frac, 1.0), spec=spec, hidden_dim=64, lr=lr
        )

    # 500 updates (~1 s a run): seeds 0 and 1 reach the cap (normalised 100) by 250 updates, on all data
    # and on the top quarter alike. The same initial network untrained (lr 0) scores 29 (seed 0; seeds 1-5:
    # 0-7).
    untrained = pendulum_score(bc(1.0, lr=0.0), updates=1)
    all_data = pendulum_score(bc(1.0), updates=500)
    top = pendulum_score(bc(0.25), updates=500)  # 7 of 28 episodes: the stabiliser's only
    assert untrained < 40 and all_data > 90 and top > 90, (untrained, all_data, top)


# --- the CLI on a D4RL-protocol dataset -------------------------------------------------------------------
def test_cli_smoke_run_on_a_tiny_d4rl_dataset(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    evals, train = cli_smoke("bc", tiny_d4rl, run_dir)
    assert all({"actor_loss", "pi_abs"} <= set(row) for row in train)
    assert train[-1]["actor_loss"] < train[0]["actor_loss"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["bc_data"]["frac"] == 1.0
    kept, total = info["bc_data"]["transitions"].split("/")
    assert kept == total == str(info["dataset"]["transitions"])


def test_killed_run_with_a_top_fraction_resumes_to_identical_metrics(
    tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the selection is redone identically on resume; weights, Adam moments and statistics come back
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_d4rl["root"]))
    args = (
        "paper=bc",
        "env=hopper",
        "dataset=medium-replay",
        "debug=smoke",
        "paper.buffer.frac=0.5",
        "paper.train.eval_every_steps=50",
    )
    assert_kill_and_resume_identical(args, tmp_path)
    info = json.loads((tmp_path / "full" / "run.json").read_text())
    kept, total = (int(x) for x in info["bc_data"]["transitions"].split("/"))
    assert kept < total and kept == info["dataset"]["transitions"]
