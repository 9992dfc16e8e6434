"""Sequence RL: the FAS formula, J actions per decision stored as primitive steps, temporal recall, the
actor loss's credit per action, the J check, a smoke run (with fas.json) and FAS of a TD3 run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from common.buffers.base import Batch
from common.envs.base import EnvSpec, Step
from common.errors import ConfigError
from common.logger import read_metrics
from papers.sequence_rl.agent import SRLAgent, recall_states
from papers.sequence_rl.fas import frequency_averaged_score, main, sequence_policy
from papers.sequence_rl.loop import Decisions, PrimitiveUpdates, check_interval
from tests.conftest import run_cli

torch.set_num_threads(1)
AGENT_CFG = dict(
    interval=3, lr=3e-4, hidden_dim=16, model_hidden_dims=[16, 16], tau=0.005, init_temperature=1.0,
    target_entropy=None, log_std_min=-20.0, log_std_max=2.0, num_expl_frames=0,
)  # fmt: skip


@dataclass
class Counter:
    """A 1-D toy env: obs = [number of steps taken], reward = 10 x step number + the action; ends at
    `length` steps (terminated)."""

    length: int = 5
    actions: list[float] = field(default_factory=list)
    t: int = 0
    spec: EnvSpec = field(
        default_factory=lambda: EnvSpec((1,), np.dtype(np.float32), (1,), 1, (1,), 1, 5, False)
    )

    def reset(self) -> Step:
        self.t = 0
        return Step(obs=np.zeros(1, np.float32))

    def step(self, action: np.ndarray) -> Step:
        self.t += 1
        self.actions.append(float(action[0]))
        return Step(np.full(1, self.t, np.float32), 10.0 * self.t + float(action[0]), self.t >= self.length)

    def get_rng_state(self) -> dict[str, Any]:
        return {}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


# --- FAS -------------------------------------------------------------------------------------------------
def test_fas_is_the_normalised_trapezoid_area_over_sequence_lengths() -> None:
    # lengths 1, 2, 4; returns 10, 8, 4: area (10 + 8) / 2 x 1 + (8 + 4) / 2 x 2 = 21; / (10 x 4) = 0.525
    assert frequency_averaged_score([1, 2, 4], [10.0, 8.0, 4.0], 10.0) == pytest.approx(0.525)
    # offset 2 (Reacher-style shift): (12 + 10) / 2 + (10 + 6) / 2 x 2 = 27; / 40
    assert frequency_averaged_score([1, 2, 4], [10.0, 8.0, 4.0], 10.0, 2.0) == pytest.approx(0.675)
    # a policy at max return at every length from 1 to s_max scores (s_max - 1) / s_max, as upstream's / 30
    assert frequency_averaged_score([1, 30], [5.0, 5.0], 5.0) == pytest.approx(29 / 30)
    for bad in ([2, 1, 4], [0, 1, 2]):
        with pytest.raises(ConfigError, match="increasing"):
            frequency_averaged_score(bad, [1.0, 1.0, 1.0], 1.0)
    with pytest.raises(ConfigError, match="one return each"):
        frequency_averaged_score([1, 2], [1.0], 1.0)


def test_baselines_hold_their_action_and_srl_emits_the_asked_length() -> None:
    class OneAction:
        def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
            assert eval_mode
            return np.array([0.25, -0.5], np.float32)

    held = sequence_policy(OneAction(), 3)(np.zeros(4))
    np.testing.assert_array_equal(held, [0.25, -0.5] * 3)
    spec = EnvSpec((6,), np.dtype(np.float32), (6,), 1, (6,), 1, 10, False)  # 4-D state, 2-D actions
    agent = SRLAgent(OmegaConf.create({**AGENT_CFG, "interval": 3}), spec, torch.device("cpu"), "fp32")
    assert sequence_policy(agent, 7)(np.zeros(6, np.float32)).shape == (14,)  # any length


# --- J actions per decision, stored as primitive transitions ---------------------------------------------
def test_a_decision_runs_each_action_once_and_the_replay_gets_each_step() -> None:
    torch.manual_seed(0)
    inner = Counter(length=5)
    env = Decisions(inner, 3)
    agent = SRLAgent(OmegaConf.create(AGENT_CFG), env.spec, torch.device("cpu"), "fp32")
    first = env.reset()
    np.testing.assert_array_equal(first.obs, [0.0, 0.0])  # [state, no previous action]
    decision = agent.act(first.obs, step=0, eval_mode=False)
    assert decision.shape == (3,) and np.all(np.abs(decision) <= 1)
    cfg = OmegaConf.create(
        {"seed": 0, "checkpoint": {"replay": False},
         "paper": {"action_repeat": 3,
                   "buffer": {"capacity": 100, "nstep": 1, "discount": 0.9, "batch_size": 4},
                   "train": {"seed_frames": 0, "update_every_steps": 1, "updates_per_step": 3}}}
    )  # fmt: skip
    learner = PrimitiveUpdates(cfg, agent, env)  # type: ignore[arg-type]
    learner.begin_episode(env.reset())
    actions = [np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5, 0.6])]
    for a in actions:  # 3 steps, then 2 (the episode ends at 5: the 6th action never runs)
        ts = env.step(a)
        learner.after_env_step(0, np.zeros(1), a, ts)
    assert inner.actions == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert ts.terminated and ts.info["executed"] == 2
    assert learner.stored() == 5 + 1  # five primitive steps after the reset observation
    batch = learner.replay.sample(64)
    # each stored step is ([t - 1, a_{t-1}], a_t, r = 10 t + a_t, [t, a_t]), a_t = t / 10, a_0 = 0;
    # only the 5th ends the episode
    t = batch.next_obs[:, 0]
    np.testing.assert_allclose(batch.obs[:, 0], t - 1)
    np.testing.assert_allclose(batch.obs[:, 1], (t - 1) / 10, rtol=1e-6)
    np.testing.assert_array_equal(batch.next_obs[:, 1], batch.action[:, 0])
    np.testing.assert_allclose(batch.reward[:, 0], 10 * t + batch.action[:, 0], rtol=1e-6)
    np.testing.assert_allclose(batch.action[:, 0], t / 10, rtol=1e-6)
    np.testing.assert_allclose(batch.discount[:, 0], np.where(t == 5, 0.0, 0.9), rtol=1e-6)
    assert len(learner.before_env_step(0)) == 3  # updates_per_step updates, each on primitive steps


# --- temporal recall -------------------------------------------------------------------------------------
def test_recall_rolls_the_model_forward_along_the_sequence() -> None:
    model = nn.Linear(2, 1)  # m(s, a) = 2 s + a
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 1.0]]))
        model.bias.zero_()
    actions = torch.tensor([[[1.0], [2.0], [3.0]]], requires_grad=True)
    states = recall_states(model, torch.tensor([[1.0]]), actions)
    # s0 = 1, s1 = 2 + 1 = 3, s2 = 6 + 2 = 8 (the last action's next state is not needed)
    np.testing.assert_allclose(states[0, :, 0].numpy(), [1.0, 3.0, 8.0])
    assert not states.requires_grad  # each action is credited only through its own Q(s_j, a_j)


def test_each_action_of_the_sequence_is_pushed_up_its_own_q() -> None:
    """With Q(s, a) = a * sign(s) for 1-D actions and a model that negates the state, the loss pulls the
    first action up and the second down (the recalled state flips sign): temporal recall at work."""

    class SignQ(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))  # gives the critic loss something to differentiate

        def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            q = 50.0 * a * torch.sign(s) + self.w
            return q, q

    torch.manual_seed(0)
    spec = EnvSpec((2,), np.dtype(np.float32), (2,), 1, (2,), 1, 10, False)  # [s, previous action]
    agent = SRLAgent(
        OmegaConf.create({**AGENT_CFG, "interval": 2, "lr": 3e-3}), spec, torch.device("cpu"), "fp32"
    )
    agent.critic, agent.critic_target = SignQ(), SignQ()
    agent.critic_opt = torch.optim.SGD(agent.critic.parameters(), lr=0.0)
    flip = nn.Linear(2, 1)  # the target model: s' = -s
    with torch.no_grad():
        flip.weight.copy_(torch.tensor([[-1.0, 0.0]]))
        flip.bias.zero_()
    agent.model, agent.model_target = nn.Sequential(nn.Linear(2, 1)), nn.Sequential(flip)
    agent.model_opt = torch.optim.SGD(agent.model.parameters(), lr=0.0)
    agent.tau = 0.0  # targets stay the hand-built ones
    obs = np.repeat(np.array([[1.0, 0.0]], np.float32), 32, 0)
    batch = Batch(obs, np.zeros((32, 1), np.float32), np.zeros((32, 1), np.float32),
                  np.zeros((32, 1), np.float32), -obs)  # fmt: skip
    for _ in range(200):
        agent.update(batch, 0)
    first, second = agent.act_sequence(np.array([1.0, 0.0], np.float32), 2, eval_mode=True)
    assert first > 0.9 and second < -0.9


# --- the J check, a smoke run and FAS on a baseline run ---------------------------------------------------
@pytest.mark.parametrize("interval", [0, -2, 1.5])
def test_interval_below_one_is_refused_before_anything_is_written(interval: Any, tmp_path: Path) -> None:
    cfg = OmegaConf.create({"paper": {"interval": interval, "action_repeat": 1, "pixels": False}})
    with pytest.raises(ConfigError, match="integer >= 1"):
        check_interval(cfg)
    run_dir = tmp_path / "run"
    proc = run_cli(
        "paper=sequence_rl", "env=hopper", f"paper.interval={interval}", f"hydra.run.dir={run_dir}"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not run_dir.exists()


@pytest.mark.slow  # tests/test_smoke.py runs the same smoke run (check_sequence_rl) in the fast suite
def test_smoke_run_trains_on_primitive_steps_and_writes_fas(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = (
        "paper=sequence_rl",
        "env=hopper",
        "debug=smoke",
        "paper.fas.intervals=[1,2,4,6]",
        f"hydra.run.dir={run_dir}",
    )
    run_cli(*args, check=True, timeout=180)
    train, evals = read_metrics(run_dir / "train.jsonl"), read_metrics(run_dir / "eval.jsonl")
    assert [r["frame"] for r in evals] == [0, 200, 400]  # frames = decisions x J
    assert all(r["frame"] == 4 * r["step"] for r in train)
    learned = [r for r in train if r["updates"] > 0]
    assert learned and all({"model_loss", "actor_loss", "critic_loss"} <= set(r) for r in learned)
    fas = json.loads((run_dir / "fas.json").read_text())
    assert fas["intervals"][:3] == [1, 2, 4] and len(fas["returns"]) == len(fas["intervals"])
    assert fas["fas"] == pytest.approx(
        frequency_averaged_score(fas["intervals"], fas["returns"], fas["max_return"], fas["offset"])
    )
    assert fas["max_return"] == 3600.0  # the paper's Hopper normaliser


def test_fas_cli_evaluates_a_td3_run_with_held_actions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "td3"
    run_cli("paper=td3", "env=hopper", "debug=smoke", f"hydra.run.dir={run_dir}", check=True, timeout=180)
    assert main([str(run_dir), "--intervals", "1", "3", "--episodes", "1"]) == 0
    fas = json.loads((run_dir / "fas.json").read_text())
    assert fas["paper"] == "td3" and fas["intervals"] == [1, 3] and len(fas["returns"]) == 2
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_stopped_run_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path: Path) -> None:
    """SIGTERM inside an episode (after the first checkpoint): `Decisions` cannot save the simulator, so the
    resume repeats the steps since that checkpoint; the replay, agent and RNGs make the rows identical."""
    from tests.conftest import assert_runs_identical
    from tests.test_exact_resume import _compose, _in_child, _resume_to_the_end, _signal_at_step, _start

    cfg = _compose("paper=sequence_rl", "env=hopper", "paper.agent.hidden_dim=32", "paper.fas.at_end=false")
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert _in_child(lambda: _start(cfg, full)) == 0
    ends = {r["step"] for r in read_metrics(full / "train.jsonl")}
    step = next(s for s in range(80, 100) if s not in ends and s - 1 not in ends)  # inside an episode

    def interrupted() -> None:
        _signal_at_step(step, 15)  # SIGTERM
        _start(cfg, stopped)

    assert _in_child(interrupted) == 0
    assert json.loads((stopped / "status.json").read_text())["state"] == "preempted"
    _resume_to_the_end(stopped)
    assert_runs_identical(full, stopped)
