"""TD3+BC: state normalisation, the lambda-normalised actor loss, target smoothing, policy delay,
checkpoints, learning from a tiny expert dataset, and the CLI on a D4RL-protocol dataset."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.buffers.base import Batch
from common.envs import make_env
from common.envs.base import Env, EnvSpec
from common.envs.discrete import DiscreteEnvSpec
from common.errors import CheckpointError, ConfigError
from common.evaluation.normalization import normalized_score
from common.logger import read_metrics
from common.loop import mean_return
from common.offline.data import OfflineData, OfflineSampler, state_statistics
from common.registry import CONF_DIR
from papers.td3bc.agent import TD3BCAgent
from tests.conftest import run_cli

torch.set_num_threads(1)
CPU = torch.device("cpu")
OBS, ACT = 5, 2


def make_cfg(**overrides: object) -> OmegaConf:
    cfg = dict(
        actor_lr=1e-3,
        critic_lr=1e-3,
        hidden_dim=32,
        tau=0.1,
        policy_noise=0.2,
        noise_clip=0.5,
        policy_freq=2,
        alpha=2.5,
        normalize_states=True,
        state_norm_eps=1e-3,
    )
    cfg.update(overrides)
    out = OmegaConf.create(cfg)
    OmegaConf.set_readonly(out, True)
    return out


def make_spec(obs_dim: int = OBS, action_dim: int = ACT) -> EnvSpec:
    return EnvSpec((obs_dim,), np.dtype(np.float32), (obs_dim,), 1, (action_dim,), 1, 1000, False)


def toy_data(n: int = 40, seed: int = 0, obs_dim: int = OBS, act_dim: int = ACT) -> OfflineData:
    """Random transitions in four episodes, states far from N(0, 1) so normalisation matters."""
    rng = np.random.default_rng(seed)
    obs = (rng.normal(size=(n + 1, obs_dim)) * [1, 2, 3, 4, 5][:obs_dim] + 10).astype(np.float32)
    starts = np.arange(0, n, n // 4, dtype=np.int64)
    ends = np.append(starts[1:], n) - 1
    terminations = np.zeros(n, bool)
    terminations[ends[::2]] = True
    truncations = np.zeros(n, bool)
    truncations[ends[1::2]] = True
    return OfflineData(
        observations=obs[:-1],
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=obs[1:],
        terminations=terminations,
        truncations=truncations,
        episode_starts=starts,
        metadata={"ref_min_score": 0.0, "ref_max_score": 1.0},
    )


def make_agent(
    seed: int = 0,
    precision: str = "fp32",
    data: OfflineData | None = None,
    spec: EnvSpec | None = None,
    **cfg: object,
) -> TD3BCAgent:
    torch.manual_seed(seed)
    agent = TD3BCAgent(make_cfg(**cfg), spec or make_spec(), CPU, precision)
    agent.prepare(toy_data() if data is None else data)
    return agent


def make_batch(seed: int = 0, n: int = 6) -> Batch:
    batch = OfflineSampler(toy_data(), 0.99, seed).sample(n)
    batch.discount[0] = 0.0  # a true terminal in every batch: no bootstrap there
    return batch


def as_tensors(batch: Batch) -> dict[str, torch.Tensor]:
    return {
        k: torch.from_numpy(getattr(batch, k)) for k in ("obs", "action", "reward", "discount", "next_obs")
    }


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def record_grads(agent: object, opt_name: str, module: torch.nn.Module) -> list[list[torch.Tensor]]:
    """Capture `module`'s gradients each time `agent.<opt_name>.step()` is called."""
    opt = getattr(agent, opt_name)
    step, seen = opt.step, []

    def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append([p.grad.clone() for p in module.parameters()])
        return step(*args, **kwargs)

    opt.step = wrapped
    return seen


# --- state normalisation ---------------------------------------------------------------------------------
def test_state_statistics_by_hand_and_the_normalisation_round_trip() -> None:
    mean, std = state_statistics(np.array([[0.0, 2.0], [2.0, 6.0]], np.float32), eps=1e-3)
    np.testing.assert_allclose(mean, [1.0, 4.0])
    np.testing.assert_allclose(std, [1.001, 2.001])  # population std (ddof 0) + eps, as utils.py
    data = toy_data()
    agent = make_agent(data=data)
    obs = torch.from_numpy(data.observations)
    normed = agent.normalize(obs)
    np.testing.assert_allclose(normed.mean(0).numpy(), 0.0, atol=1e-5)
    sigma = data.observations.astype(np.float64).std(0)
    np.testing.assert_allclose(normed.std(0, unbiased=False).numpy(), sigma / (sigma + 1e-3), rtol=1e-5)
    torch.testing.assert_close(normed * agent.obs_std + agent.obs_mean, obs)
    # act() normalises its one observation itself
    with torch.no_grad():
        want = agent.actor(normed[:1])[0].numpy()
    np.testing.assert_allclose(agent.act(data.observations[0], 0, eval_mode=True), want, atol=1e-6)
    raw = make_agent(data=data, normalize_states=False)  # --normalize False: identity
    assert torch.equal(raw.normalize(obs), obs)


# --- the update: critic target, actor loss ---------------------------------------------------------------
def test_critic_and_actor_losses_equal_the_hand_built_formulas() -> None:
    agent = make_agent(policy_freq=1)
    before = copy.deepcopy(agent)
    batch = make_batch()
    critic_grads = record_grads(agent, "critic_opt", agent.critic)
    actor_grads = record_grads(agent, "actor_opt", agent.actor)
    torch.manual_seed(7)
    metrics = agent.update(batch, step=0)

    b = as_tensors(batch)
    obs, next_obs = before.normalize(b["obs"]), before.normalize(b["next_obs"])
    torch.manual_seed(7)
    noise = (torch.randn(6, ACT) * 0.2).clamp(-0.5, 0.5)
    with torch.no_grad():
        next_action = (before.actor_target(next_obs) + noise).clamp(-1, 1)
        y = b["reward"] + b["discount"] * torch.min(*before.critic_target(next_obs, next_action))
    q1, q2 = before.critic(obs, b["action"])
    critic_loss = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    expected_grads = torch.autograd.grad(critic_loss, list(before.critic.parameters()))
    # the actor sees the critic *after* its step (TD3_BC.py steps the critic first); lambda is a constant
    pi = before.actor(obs)
    q = agent.critic.q1(torch.cat([obs, pi], -1))
    lmbda = 2.5 / q.abs().mean().detach()
    bc = ((pi - b["action"]) ** 2).mean()  # mean over batch and action dims
    expected_actor_grads = torch.autograd.grad(-lmbda * q.mean() + bc, list(before.actor.parameters()))

    assert (b["discount"] == 0).any()
    approx = dict(rel=1e-4, abs=1e-5)
    assert metrics["target_q"] == pytest.approx(y.mean().item(), **approx)
    assert metrics["critic_loss"] == pytest.approx(critic_loss.item(), **approx)
    assert metrics["lmbda"] == pytest.approx(lmbda.item(), **approx)
    assert metrics["bc_loss"] == pytest.approx(bc.item(), **approx)
    assert metrics["actor_loss"] == pytest.approx((-lmbda * q.mean() + bc).item(), **approx)
    for got, want in zip(critic_grads[0], expected_grads, strict=True):  # the actor adds no critic grad
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(actor_grads[0], expected_actor_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_lambda_makes_the_actor_gradient_invariant_to_the_scale_of_q() -> None:
    # Eq. 4: lambda = alpha / mean|Q| (a constant), so scaling Q by 10 leaves the actor's gradient unchanged;
    # without the normalisation (or with lambda differentiated) it would change.
    batch = make_batch(n=32)
    grads = []
    for scale in (1.0, 10.0):
        agent = make_agent(policy_freq=1, critic_lr=0.0)  # the critic's step must not move Q
        with torch.no_grad():
            for head in (agent.critic.q1, agent.critic.q2):
                head[-1].weight.mul_(scale)
                head[-1].bias.add_(3.0).mul_(scale)  # away from 0 so |Q| has one sign
        seen = record_grads(agent, "actor_opt", agent.actor)
        torch.manual_seed(0)
        agent.update(batch, step=0)
        grads.append(seen[0])
    for g1, g10 in zip(*grads, strict=True):
        torch.testing.assert_close(g1, g10, rtol=1e-4, atol=1e-6)
    assert any(g.abs().max() > 1e-4 for g in grads[0])


def test_target_policy_noise_is_clipped() -> None:
    # policy_noise 100 >> noise_clip 0.3: every noise draw is clipped to +-0.3
    agent = make_agent(policy_noise=100.0, noise_clip=0.3, policy_freq=1)
    before = copy.deepcopy(agent)
    batch = make_batch()
    torch.manual_seed(3)
    metrics = agent.update(batch, step=0)
    b = as_tensors(batch)
    torch.manual_seed(3)
    noise = 0.3 * torch.sign(torch.randn(6, ACT))
    with torch.no_grad():
        next_obs = before.normalize(b["next_obs"])
        next_action = (before.actor_target(next_obs) + noise).clamp(-1, 1)
        y = b["reward"] + b["discount"] * torch.min(*before.critic_target(next_obs, next_action))
    assert metrics["target_q"] == pytest.approx(y.mean().item(), rel=1e-5, abs=1e-6)


def test_policy_delay_moves_the_actor_and_targets_every_second_update() -> None:
    agent = make_agent(policy_freq=2, tau=0.05)
    actor, actor_t, critic_t = params(agent.actor), params(agent.actor_target), params(agent.critic_target)
    assert all(torch.equal(a, b) for a, b in zip(actor, actor_t, strict=True))  # the targets start as copies
    assert all(torch.equal(a, b) for a, b in zip(params(agent.critic), critic_t, strict=True))
    first = agent.update(make_batch(seed=1), step=0)
    assert "actor_loss" not in first and "critic_loss" in first
    assert all(torch.equal(a, b) for a, b in zip(actor, agent.actor.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(actor_t, agent.actor_target.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(critic_t, agent.critic_target.parameters(), strict=True))
    second = agent.update(make_batch(seed=2), step=1)
    assert "actor_loss" in second
    assert any(not torch.equal(a, b) for a, b in zip(actor, agent.actor.parameters(), strict=True))
    for old, new, src in zip(
        critic_t, agent.critic_target.parameters(), agent.critic.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.05 * src + 0.95 * old, rtol=0, atol=1e-7)
    for old, new, src in zip(actor_t, agent.actor_target.parameters(), agent.actor.parameters(), strict=True):
        torch.testing.assert_close(new, 0.05 * src + 0.95 * old, rtol=0, atol=1e-7)
    assert "actor_loss" not in agent.update(make_batch(seed=3), step=2)


# --- checkpoints, precision, config ----------------------------------------------------------------------
def test_state_dict_round_trip_is_bit_identical_after_further_updates() -> None:
    agent = make_agent(seed=0)
    for i in range(3):  # odd: the restored agent must continue the policy-delay phase
        agent.update(make_batch(seed=i), step=i)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = make_agent(seed=123, data=toy_data(seed=9))  # other weights and statistics: overwritten
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.obs_mean, agent.obs_mean) and torch.equal(restored.obs_std, agent.obs_std)

    torch.manual_seed(99)
    m1 = [agent.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    torch.manual_seed(99)
    m2 = [restored.update(make_batch(seed=10 + i), step=3 + i) for i in range(3)]
    assert m1 == m2 and "actor_loss" in m1[0]
    obs = toy_data().observations[0]
    np.testing.assert_array_equal(agent.act(obs, 0, True), restored.act(obs, 0, True))
    s1, s2 = agent.state_dict(), restored.state_dict()
    for name in ("actor", "actor_target", "critic", "critic_target"):
        for key in s1[name]:
            assert torch.equal(s1[name][key], s2[name][key]), f"{name}.{key}"


def test_checkpoint_of_another_shape_raises_checkpoint_error() -> None:
    with pytest.raises(CheckpointError, match="does not fit"):
        make_agent().load_state_dict(make_agent(hidden_dim=16).state_dict())
    state = make_agent().state_dict()
    del state["obs_std"]
    with pytest.raises(CheckpointError, match="obs_std"):
        make_agent().load_state_dict(state)


def test_bf16_path_runs() -> None:
    agent = make_agent(precision="bf16", policy_freq=1)
    metrics = agent.update(make_batch(), step=0)
    assert all(np.isfinite(v) for v in metrics.values()) and "actor_loss" in metrics
    action = agent.act(toy_data().observations[0], 0, eval_mode=True)
    assert action.dtype == np.float32 and np.abs(action).max() <= 1


def test_bad_config_or_env_raises_config_error() -> None:
    cfg = make_cfg()
    discrete = DiscreteEnvSpec((4,), np.dtype(np.float32), (4,), 1, (), 1, 500, False, num_actions=2)
    with pytest.raises(ConfigError, match="continuous actions"):
        TD3BCAgent(cfg, discrete, CPU, "fp32")
    pixels = EnvSpec((9, 84, 84), np.dtype(np.uint8), (3, 84, 84), 3, (ACT,), 2, 500, True)
    with pytest.raises(ConfigError, match="pixels=false"):
        TD3BCAgent(cfg, pixels, CPU, "fp32")
    with pytest.raises(ConfigError, match="policy_freq"):
        TD3BCAgent(make_cfg(policy_freq=0), make_spec(), CPU, "fp32")
    snapshot = OmegaConf.to_container(cfg)
    with pytest.raises(ConfigError, match="alpha"):
        TD3BCAgent(
            OmegaConf.create({k: v for k, v in snapshot.items() if k != "alpha"}), make_spec(), CPU, "fp32"
        )
    assert OmegaConf.to_container(cfg) == snapshot


def test_paper_config_holds_the_official_defaults() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["paper=td3bc", "env=hopper", "dataset=medium-replay"])
    p = OmegaConf.to_container(cfg.paper, resolve=True)
    assert p["loop"] == "common.offline.loop.train_offline" and cfg.dataset == "medium-replay"
    assert (p["buffer"]["batch_size"], p["buffer"]["discount"]) == (256, 0.99)
    assert (p["train"]["num_steps"], p["train"]["eval_every_steps"], p["train"]["eval_episodes"]) == (
        1_000_000,
        5000,
        10,
    )
    a = p["agent"]
    assert (a["alpha"], a["policy_noise"], a["noise_clip"], a["policy_freq"]) == (2.5, 0.2, 0.5, 2)
    assert (a["actor_lr"], a["critic_lr"], a["tau"], a["hidden_dim"]) == (3e-4, 3e-4, 0.005, 256)
    assert a["normalize_states"] is True and a["state_norm_eps"] == 1e-3


# --- learning from a tiny expert dataset -----------------------------------------------------------------
PENDULUM = {
    "name": "inverted_pendulum",
    "suite": "gym",
    "id": "InvertedPendulum-v5",
    "camera": None,
    "max_episode_frames": 200,
    "fast_render": False,
}
STABILISER = np.array([1.0, 10.0, 1.0, 1.0], np.float32)  # a = clip(k . [x, theta, x', theta']), by hand


def pendulum_env(seed: int = 0) -> Env:
    return make_env(
        OmegaConf.create(PENDULUM), pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=seed
    )


def pendulum_dataset(env: Env, seed: int = 0) -> OfflineData:
    """8 episodes of the hand-written stabiliser with N(0, 0.3^2) action noise (each keeps the pole up
    for the 200-step limit) and 20 uniformly random episodes (5-20 steps): ~1,750 transitions."""
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    starts = []
    for noise in [0.3] * 8 + [None] * 20:
        ts = env.reset()
        starts.append(len(rows))
        while not ts.done:
            if noise is None:
                action = rng.uniform(-1, 1, 1)
            else:
                action = np.clip(STABILISER @ ts.obs + noise * rng.normal(), -1, 1)[None]
            after = env.step(action.astype(np.float32))
            rows.append((ts.obs, action, after.reward, after.obs, after.terminated, after.truncated))
            ts = after
    o, a, r, n, te, tr = (np.array(col) for col in zip(*rows, strict=True))
    return OfflineData(
        o.astype(np.float32), a.astype(np.float32), r.astype(np.float32), n.astype(np.float32), te, tr,
        np.array(starts, np.int64),
    )  # fmt: skip


def references(env: Env) -> tuple[float, float]:
    """The random and expert (noise-free stabiliser) returns that normalise scores, as D4RL measures them."""
    rng = np.random.default_rng(1)
    random = mean_return(env, lambda obs: rng.uniform(-1, 1, 1).astype(np.float32), 20)
    expert = mean_return(env, lambda obs: np.clip(STABILISER @ obs, -1, 1)[None].astype(np.float32), 3)
    return random, expert


def pendulum_score(make: Callable[[OfflineData, EnvSpec], Any], updates: int) -> float:
    """Train `make(data, spec)` for `updates` batches of 64 on the pendulum dataset; its normalised score."""
    env = pendulum_env()
    data = pendulum_dataset(env)
    random, expert = references(env)
    agent = make(data, env.spec)
    sampler = OfflineSampler(data, 0.99, seed=0)
    for step in range(updates):
        agent.update(sampler.sample(64), step)
    learned = mean_return(env, lambda obs: agent.act(obs, updates, eval_mode=True), 5)
    env.close()
    assert expert == 200.0 and random < 20, (random, expert)
    return float(normalized_score(learned, random, expert))


def cli_smoke(paper: str, tiny_d4rl: dict[str, Path], run_dir: Path) -> tuple[list[dict], list[dict]]:
    """`run.py paper=<paper> env=hopper dataset=medium-replay debug=smoke`: its eval and train rows."""
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    args = (
        f"paper={paper}",
        "env=hopper",
        "dataset=medium-replay",
        "debug=smoke",
        f"hydra.run.dir={run_dir}",
    )
    run_cli(*args, env=env, check=True, timeout=180)
    evals = read_metrics(run_dir / "eval.jsonl")
    assert [row["step"] for row in evals] == [0, 100, 200]
    assert all(np.isfinite(row["normalized_score"]) for row in evals)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    return evals, read_metrics(run_dir / "train.jsonl")


def test_learns_from_a_tiny_expert_dataset() -> None:
    # ~1,750 transitions, 1,000 updates of batch 64 with 64-unit nets: ~5 s on one CPU thread. Seed 0
    # reaches the 200-step cap (normalised 100) by 500 updates; random scores 0 by definition (~5 steps).
    score = pendulum_score(
        lambda data, spec: make_agent(
            data=data, spec=spec, hidden_dim=64, actor_lr=3e-4, critic_lr=3e-4, tau=0.005
        ),
        updates=1000,
    )
    assert score > 60, score


# --- the CLI on a D4RL-protocol dataset ------------------------------------------------------------------
def test_cli_smoke_run_on_a_tiny_d4rl_dataset(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    _, train = cli_smoke("td3bc", tiny_d4rl, tmp_path / "run")
    assert any({"critic_loss", "actor_loss", "lmbda", "bc_loss"} <= set(row) for row in train)
