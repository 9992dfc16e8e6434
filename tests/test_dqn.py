"""DQN (papers/dqn) and the MinAtar env (common/envs/minatar.py): the n-step double-Q target on a hand-built
batch, value fitting with every loss, the target-network period and the epsilon schedule; MinAtar shapes,
dtypes, sticky actions, truncation and seeding; one-line errors for bad commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from common.buffers.base import Batch
from common.envs.discrete import DiscreteEnvSpec
from common.envs.minatar import GAMES, make_minatar
from common.errors import ConfigError
from common.registry import CONF_DIR
from common.value_loop import validate
from papers.dqn.agent import DQNAgent, epsilon_at
from tests.conftest import run_cli

AGENT = {
    "network": "mlp",
    "hidden_dim": 32,
    "hidden_layers": 1,
    "channel_scale": 1,
    "loss": "mse",
    "huber_delta": 1.0,
    "v_min": -2.0,
    "v_max": 2.0,
    "num_bins": 21,
    "sigma_ratio": 0.75,
    "double_q": False,
    "target_update_every": 1000,
    "optimizer": "adam",
    "lr": 0.01,
    "rmsprop_alpha": 0.95,
    "optim_eps": 1e-8,
    "rmsprop_centered": True,
    "rmsprop_momentum": 0.0,
    "max_grad_norm": None,
    "epsilon_start": 1.0,
    "epsilon_end": 0.1,
    "epsilon_decay_steps": 100,
    "epsilon_warmup_steps": 10,
    "epsilon_eval": 0.0,
    "target_noise_std": 0.0,
}


def _spec(obs_dim: int, num_actions: int) -> DiscreteEnvSpec:
    return DiscreteEnvSpec(
        obs_shape=(obs_dim,),
        obs_dtype=np.dtype(np.float32),
        frame_shape=(obs_dim,),
        frame_stack=1,
        action_shape=(),
        action_repeat=1,
        max_episode_steps=100,
        pixels=False,
        num_actions=num_actions,
    )


def _agent(obs_dim: int = 2, num_actions: int = 3, **overrides: object) -> DQNAgent:
    torch.manual_seed(0)
    cfg = OmegaConf.create({**AGENT, **overrides})
    return DQNAgent(cfg, _spec(obs_dim, num_actions), torch.device("cpu"), "fp32")


class Table(nn.Module):
    """Q(s, a) = table[s, a] for one-hot states; outputs (B, A, 1) as the scalar head does."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.float() @ self.table).unsqueeze(-1)


def test_n_step_double_q_target_on_a_hand_built_batch():
    # Two next states (one-hot). Online Q(s') = [1, 5, 2] / [0, 0, 9]; target Q(s') = [3, 0.5, 4] / [7, 1, 2].
    agent = _agent(obs_dim=2, num_actions=3)
    agent.q = Table([[1.0, 5.0, 2.0], [0.0, 0.0, 9.0]])
    agent.q_target = Table([[3.0, 0.5, 4.0], [7.0, 1.0, 2.0]])
    # n = 2, gamma = 0.9: R = r1 + 0.9 r2 = 1 + 0.9 x 2 = 2.8, discount 0.81; the second row ends at a
    # terminal (discount 0), its 1-step return 1.5.
    reward, discount = torch.tensor([2.8, 1.5]), torch.tensor([0.81, 0.0])
    next_obs = torch.eye(2)
    # Nature DQN: max_a Q_target(s', a) = 4 -> 2.8 + 0.81 x 4 = 6.04
    assert agent.td_target(reward, discount, next_obs).tolist() == pytest.approx([6.04, 1.5])
    # double DQN: a* = argmax online = 1, evaluated by the target: 0.5 -> 2.8 + 0.81 x 0.5 = 3.205
    agent.double_q = True
    assert agent.td_target(reward, discount, next_obs).tolist() == pytest.approx([3.205, 1.5])
    agent.q = Table([[1.0, 5.0, 2.0], [9.0, 0.0, 0.0]])  # terminal rows ignore the choice
    assert agent.td_target(reward, discount, next_obs).tolist() == pytest.approx([3.205, 1.5])


def _bandit_batch() -> tuple[Batch, np.ndarray]:
    """Each (state, action) of a 2-state, 3-action bandit once; terminal, so Q(s, a) should become R[s, a]."""
    rewards = np.array([[0.2, 1.0, -0.5], [0.7, 0.0, 1.5]], np.float32)
    states, actions = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    obs = np.eye(2, dtype=np.float32)[states.ravel()]
    batch = Batch(
        obs=obs,
        action=actions.ravel().astype(np.float32),  # as the replay stores discrete actions
        reward=rewards.reshape(-1, 1),
        discount=np.zeros((6, 1), np.float32),
        next_obs=obs,
    )
    return batch, rewards


@pytest.mark.parametrize("loss", ["mse", "huber", "hl_gauss", "two_hot", "c51"])
def test_every_loss_fits_the_values_of_a_bandit(loss):
    agent = _agent(loss=loss)
    batch, rewards = _bandit_batch()
    for step in range(300):
        metrics = agent.update(batch, step)
    assert set(metrics) == {"loss", "q", "batch_reward"}
    with torch.no_grad():
        q = agent._values(agent.q, torch.eye(2)).numpy()
    np.testing.assert_allclose(q, rewards, atol=0.1)
    assert agent.act(np.eye(2, dtype=np.float32)[1], 0, eval_mode=True) == 2  # greedy: argmax R[1]


def test_target_network_copies_the_online_network_every_k_updates():
    agent = _agent(target_update_every=3)
    batch, _ = _bandit_batch()
    for step in range(2):
        agent.update(batch, step)
    same = [torch.equal(a, b) for a, b in zip(agent.q.parameters(), agent.q_target.parameters(), strict=True)]
    assert not all(same)
    agent.update(batch, 2)
    assert all(
        torch.equal(a, b) for a, b in zip(agent.q.parameters(), agent.q_target.parameters(), strict=True)
    )
    fresh = _agent(target_update_every=3)
    fresh.load_state_dict(agent.state_dict())
    assert fresh.num_updates == 3
    with torch.no_grad():
        assert torch.equal(fresh.q(torch.eye(2)), agent.q(torch.eye(2)))


def test_epsilon_is_one_during_warmup_then_linear_then_constant():
    # MinAtar dqn.py: uniform for REPLAY_START_SIZE frames, then 1 -> 0.1 over FIRST_N_FRAMES
    assert epsilon_at(0, 1.0, 0.1, 5000, 100000) == 1.0
    assert epsilon_at(4999, 1.0, 0.1, 5000, 100000) == 1.0
    assert epsilon_at(5000 + 50000, 1.0, 0.1, 5000, 100000) == pytest.approx(0.55)
    assert epsilon_at(10**7, 1.0, 0.1, 5000, 100000) == pytest.approx(0.1)


def test_dqn_refuses_continuous_actions_and_unknown_networks():
    continuous = DiscreteEnvSpec(
        obs_shape=(3,), obs_dtype=np.dtype(np.float32), frame_shape=(3,), frame_stack=1,
        action_shape=(2,), action_repeat=1, max_episode_steps=10, pixels=False, num_actions=0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="discrete-action env"):
        DQNAgent(OmegaConf.create(AGENT), continuous, torch.device("cpu"), "fp32")
    with pytest.raises(ConfigError, match="network='resnet' must be one of minatar, nature, mlp"):
        _agent(network="resnet")
    with pytest.raises(ConfigError, match="needs .C, H, W. observations"):
        _agent(network="minatar")


# ------------------------------------------------------------------------------------------- MinAtar

CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}


def _minatar(game: str = "breakout", seed: int = 0, **cfg: object):
    return make_minatar(
        {"game": game, "max_episode_frames": 100000, **cfg}, pixels=False, action_repeat=1, seed=seed
    )


def _episode_trace(env, actions: np.ndarray) -> list[tuple[bytes, float, bool, bool]]:
    trace, ts = [], env.reset()
    for a in actions:
        ts = env.step(a)
        trace.append((ts.obs.tobytes(), ts.reward, ts.terminated, ts.truncated))
        if ts.done:
            ts = env.reset()
    return trace


@pytest.mark.parametrize("game", GAMES)
def test_minatar_observations_are_channels_first_uint8_and_actions_six(game):
    env = _minatar(game)
    ts = env.reset()
    assert env.spec.obs_shape == env.spec.frame_shape == (CHANNELS[game], 10, 10)
    assert env.spec.action_shape == () and env.spec.num_actions == 6 and not env.spec.pixels
    assert ts.obs.dtype == np.uint8 and ts.obs.shape == (CHANNELS[game], 10, 10)
    assert set(np.unique(ts.obs)) <= {0, 1} and ts.obs.any()
    ts = env.step(np.asarray(3))
    assert ts.obs.dtype == np.uint8 and ts.episode_length == 1


def test_minatar_seeding_gives_identical_episodes_and_rng_state_round_trips():
    actions = np.random.default_rng(0).integers(0, 6, size=600)
    assert _episode_trace(_minatar("asterix", 3), actions) == _episode_trace(_minatar("asterix", 3), actions)
    assert _episode_trace(_minatar("asterix", 3), actions) != _episode_trace(_minatar("asterix", 4), actions)
    env = _minatar("asterix", 3)
    _episode_trace(env, actions[:100])
    state = json.loads(json.dumps(env.get_rng_state()))  # JSON-safe
    future = _episode_trace(env, actions)
    other = _minatar("asterix", 99)
    other.set_rng_state(state)
    assert _episode_trace(other, actions) == future


@pytest.mark.parametrize("game", GAMES)
def test_minatar_state_saved_mid_episode_continues_the_episode_exactly(game, tmp_path: Path):
    actions = np.random.default_rng(1).integers(0, 6, size=400)
    env = _minatar(game, 5)
    ts = env.reset()
    for a in actions[:60]:
        ts = env.step(a) if not ts.done else env.reset()
    if ts.done:
        env.reset()
    torch.save(env.get_state(), tmp_path / "state.pt")
    future = _episode_trace_from_here(env, actions)
    other = _minatar(game, 77)
    other.reset()
    other.set_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert _episode_trace_from_here(other, actions) == future


def _episode_trace_from_here(env, actions: np.ndarray) -> list[tuple[bytes, float, bool, bool, int]]:
    trace = []
    for a in actions:
        ts = env.step(a)
        trace.append((ts.obs.tobytes(), ts.reward, ts.terminated, ts.truncated, ts.episode_length))
        if ts.done:
            env.reset()
    return trace


def test_minatar_sticky_actions_repeat_the_previous_action_one_time_in_ten():
    env = _minatar("breakout", seed=1)
    received: list[int] = []
    game = env._game.env
    inner = game.act
    game.act = lambda a: (received.append(int(a)), inner(a))[1]
    env.reset()
    n = 3000
    for i in range(n):
        ts = env.step(np.asarray(1 + i % 3))  # cycle 3 actions: a repeat is always a sticky one
        if ts.done:
            env.reset()
    repeats = np.mean([a == b for a, b in zip(received[1:], received[:-1], strict=True)])
    assert abs(repeats - 0.1) < 0.02  # binomial sd ~0.0055
    env = _minatar("breakout", seed=1, sticky_action_prob=0.0)
    received.clear()
    game = env._game.env
    inner = game.act
    game.act = lambda a: (received.append(int(a)), inner(a))[1]
    env.reset()
    for i in range(200):
        if env.step(np.asarray(1 + i % 3)).done:
            env.reset()
    assert received[:200] == [1 + i % 3 for i in range(200)]


def test_minatar_episode_cap_truncates_and_game_over_terminates():
    env = _minatar("freeway", max_episode_frames=5)  # Freeway never ends before 2500 frames
    env.reset()
    steps = [env.step(np.asarray(0)) for _ in range(5)]
    assert [s.truncated for s in steps] == [False] * 4 + [True]
    assert not any(s.terminated for s in steps)
    env = _minatar("breakout")
    ts = env.reset()
    while not ts.done:  # standing still, the ball falls
        ts = env.step(np.asarray(0))
    assert ts.terminated and not ts.truncated


@pytest.mark.parametrize(
    ("cfg", "pixels", "message"),
    [
        ({"game": "pong"}, False, "unknown MinAtar game 'pong'; env.game must be one of asterix, breakout"),
        ({"game": "breakout"}, True, "not pixels; set paper.pixels=false"),
        ({"game": "breakout", "max_episode_frames": None}, False, "max_episode_frames must be an integer"),
    ],
)
def test_minatar_bad_settings_are_one_line_errors(cfg, pixels, message):
    with pytest.raises(ConfigError, match=message):
        make_minatar({"max_episode_frames": 100, **cfg}, pixels=pixels, action_repeat=1, seed=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("paper.agent.loss=softmax", "paper.agent.loss='softmax' is not a value loss"),
        ("paper.agent.v_min=200", "paper.agent.v_min=200 must be below paper.agent.v_max=100.0"),
        ("env.game=pong", "unknown MinAtar game 'pong'"),
        ("paper.pixels=true", "MinAtar serves its symbolic 10x10 channels only, not pixels"),
        ("paper.agent.network=nature", "network=nature does not fit observations (4, 10, 10)"),
    ],
)
def test_the_value_loop_validates_loss_env_and_agent_up_front(override, message):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["paper=hl_gauss", "env=minatar", override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


def test_a_bad_command_fails_in_one_line_and_writes_nothing(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = run_cli("paper=hl_gauss", "env=minatar", "paper.agent.num_bins=1", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "paper.agent.num_bins=1 must be an integer >= 2" in lines[0]
    assert not (run_dir / "config.yaml").exists()


def test_dqn_learns_cartpole(tmp_path: Path):
    # Random CartPole play lasts ~22 steps. DQN with the CartPole settings (conf/paper_env/dqn_cartpole.yaml)
    # balanced 150 steps at its 5k-frame evaluation and 187 at 10k in a development run; DQN's returns
    # swing between evaluations, so the test asks for one evaluation above 120 within 15k frames
    # (~30 s on an idle core; part of CI, as the issue asks for a learning test within its budget).
    run_dir = tmp_path / "run"
    proc = run_cli(
        "paper=dqn", "env=cartpole", "paper.train.num_frames=15000", "paper.train.eval_episodes=5",
        "logger=none", f"hydra.run.dir={run_dir}", timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in evals] == [0, 5000, 10000, 15000]
    assert max(r["episode_return"] for r in evals[1:]) > 120, evals
