"""Uni-O4: the diversity term, the OPE gate and the clipped objective by hand, seeded determinism, a learning
test (the BC ensemble + offline PPO beat random on Pendulum), the CLI smoke run through both phases, its
exact resume, and the one-line error for an online phase without a simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from common.logger import read_metrics
from common.onpolicy import clipped_surrogate, gae
from papers.uni_o4.agent import UniO4Agent, diversity_bc_loss, ope_gate
from tests.conftest import assert_kill_and_resume_identical, run_cli
from tests.test_td3bc import make_spec, pendulum_dataset, pendulum_env, references, toy_data

torch.set_num_threads(1)
CPU = torch.device("cpu")


def make_cfg(**overrides: object) -> OmegaConf:
    full = OmegaConf.load(Path(__file__).parent.parent / "conf/paper/uni_o4.yaml").agent
    cfg = {k: full[k] for k in full if not OmegaConf.is_interpolation(full, k)}
    cfg.update(
        hidden_dim=32, q_hidden_dim=32, v_hidden_dim=32, online_v_hidden_dim=32, dynamics_hidden=[16, 16],
        dynamics_weight_decay=[1e-5, 1e-5, 1e-5], bc_batch_size=16, iql_batch_size=16, bppo_batch_size=16,
        ope_batch_size=8, ope_rollout_length=3, offline_steps=20, online_steps=64, rollout_steps=16,
        online_v_batch_size=16,
        minibatch_size=8, epochs=2, dynamics_batch_size=8, dynamics_members=3, dynamics_elites=2,
    )  # fmt: skip
    cfg.update(overrides)
    out = OmegaConf.create(cfg)
    OmegaConf.set_readonly(out, True)
    return out


def make_agent(seed: int = 0, data=None, spec=None, **cfg: object) -> UniO4Agent:
    torch.manual_seed(seed)
    agent = UniO4Agent(make_cfg(**cfg), spec or make_spec(), CPU, "fp32")
    agent.prepare(toy_data() if data is None else data)
    return agent


# --- the novel math by hand ------------------------------------------------------------------------------
def test_diversity_term_by_hand() -> None:
    own = torch.tensor([-1.0, -2.0])
    others = torch.tensor([[-3.0, -0.5], [-4.0, -2.5]])  # max over the other members: -0.5, -2.5
    # per sample: -own - 0.1 (own - max) = 1 - 0.1 * (-0.5) = 1.05 ; 2 - 0.1 * (0.5) = 1.95
    assert float(diversity_bc_loss(own, others, 0.1)) == pytest.approx(1.5)
    own.requires_grad_(True)
    diversity_bc_loss(own, others.requires_grad_(True), 0.1).backward()
    torch.testing.assert_close(own.grad, torch.full((2,), -(1 + 0.1) / 2))  # the max is a constant
    assert others.grad is None


def test_ope_gate_accepts_only_strict_improvements_and_replaces_the_behaviour_policy() -> None:
    assert ope_gate(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])).tolist() == [2]
    agent = make_agent()
    agent.bc_finish()
    agent.best_ope = torch.tensor([0.0] * agent.n)
    agent.c["ope_rounds"] = 1  # past the first round, which only records the BC policies' estimates
    for k in range(agent.n):  # move every member's policy away from its behaviour policy
        with torch.no_grad():
            for p in agent.pi[k].parameters():
                p.add_(0.1)
    scores = iter([1.0, -1.0, 0.5, -0.5])  # members 0 and 2 improve by OPE, 1 and 3 do not
    agent.ope = lambda k: next(scores)  # type: ignore[method-assign]
    out = agent.ope_round()
    assert out["accepted"] == 2
    for k in range(agent.n):
        same = all(
            torch.equal(a, b)
            for a, b in zip(agent.pi[k].parameters(), agent.pi_old[k].parameters(), strict=True)
        )
        assert same == (k in (0, 2))
    assert agent.best_ope.tolist() == [1.0, 0.0, 0.5, 0.0]


def test_clipped_objective_gradient_on_both_sides_of_the_clip() -> None:
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    ratio = torch.tensor([1.1, 1.5, 0.9, 0.5], requires_grad=True)  # inside, above, inside, below (eps .2)
    loss = clipped_surrogate(ratio, adv, 0.2)
    assert loss.item() == pytest.approx(-(1.1 + 1.2 - 0.9 - 0.8) / 4)
    loss.backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([-0.25, 0.0, 0.25, 0.0]))


def test_gae_by_hand() -> None:
    r, v, v2 = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 2.0])
    adv = gae(r, v, v2, torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), 0.9, 0.5)
    d1 = 1.0 - 0.5  # terminal: no bootstrap
    d0 = 1.0 + 0.9 * 0.5 - 0.5
    torch.testing.assert_close(adv, torch.tensor([d0 + 0.45 * d1, d1]))


# --- the stages ------------------------------------------------------------------------------------------
def run_stages(agent: UniO4Agent, n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        out += list(agent.iql_update().values()) + list(agent.dynamics_update().values())
        out += list(agent.bc_update().values()) + list(agent.critic_pretrain_update().values())
    agent.dynamics_finish()
    agent.bc_finish()
    out += list(agent.ope_round().values())
    for t in range(n):
        out += list(agent.bppo_update(t).values())
    out += list(agent.ope_round().values())
    return out


def test_seeded_determinism_and_state_dict_round_trip() -> None:
    a, b = make_agent(seed=3), make_agent(seed=3)
    torch.manual_seed(1)
    ra = run_stages(a)
    torch.manual_seed(1)
    rb = run_stages(b)
    assert ra == rb and all(np.isfinite(ra))
    c = make_agent(seed=9)
    c.load_state_dict(a.state_dict())
    torch.manual_seed(2)
    x = a.bppo_update(6)
    torch.manual_seed(2)
    assert c.bppo_update(6) == x


def test_online_ppo_learn_runs_and_decays_the_learning_rate() -> None:
    agent = make_agent()
    agent.select(0)
    obs = toy_data().observations
    for t in range(16):
        agent.explore(obs[t])
        agent.observe(1.0, t == 7, False, obs[t + 1])
    out = agent.learn()
    assert np.isfinite(out["actor_loss"]) and agent.rollout.t == 0
    assert agent.actor_opt.param_groups[0]["lr"] == pytest.approx(2e-5 * (1 - 16 / 64))


def test_offline_phase_learns_above_random_on_a_tiny_pendulum_dataset() -> None:
    env = pendulum_env()
    data = pendulum_dataset(env)
    lo, hi = references(env)
    agent = make_agent(data=data, spec=env.spec, hidden_dim=64, q_hidden_dim=64, v_hidden_dim=64,
                       bc_batch_size=64, iql_batch_size=64, bppo_batch_size=64, bc_lr=1e-3)  # fmt: skip
    for _ in range(600):
        agent.iql_update()
        agent.bc_update()
    agent.bc_finish()
    for t in range(20):
        agent.bppo_update(t)
    from common.session import evaluate

    score = 100 * (evaluate(agent, env, 3, 0)["episode_return"] - lo) / (hi - lo)
    env.close()
    assert score > 30, score


# --- the CLI ---------------------------------------------------------------------------------------------
SMOKE = ("paper=uni_o4", "env=hopper", "dataset=medium", "debug=smoke", "checkpoint.every_frames=50")


def test_cli_smoke_offline_then_online(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    run_cli(*SMOKE, f"hydra.run.dir={tmp_path}", env=env, check=True, timeout=240)
    evals = read_metrics(tmp_path / "eval.jsonl")
    switch = 80 + 40  # four stages of 20, then 40 offline PPO steps
    steps = [r["step"] for r in evals]
    assert steps[0] == 80 and switch in steps and steps[-1] == switch + 128
    handover = [r for r in evals if r.get("handover")]
    assert len(handover) == 1 and handover[0]["step"] == switch
    assert any(r["step"] > switch and r["online"] == 1.0 for r in evals)  # just after the switch
    assert all(np.isfinite(r["normalized_score"]) for r in evals)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "finished"


def test_cli_kill_and_resume_is_exact(tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_d4rl["root"]))
    assert_kill_and_resume_identical(SMOKE, tmp_path)


def test_online_phase_without_a_simulator_is_one_line_exit_2(tiny_d4rl, tmp_path: Path) -> None:
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    proc = run_cli(
        "paper=uni_o4", "env=mdp_chain", "dataset=medium", f"hydra.run.dir={tmp_path / 'r'}", env=env
    )
    assert proc.returncode == 2
    assert "cannot be stepped" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
