"""Dual RL: the f-DVL losses (chi-square, total variation, reverse KL = XQL) and ReCOIL's objective by hand,
the ReCOIL update against the hand-built formulas, the seeded mixture of demonstrations and pool, learning
from a tiny dataset (f-DVL and ReCOIL), and the CLI (smoke runs, the missing-expert-split error, resume)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.errors import ConfigError
from common.logger import read_metrics
from common.offline.dual_losses import chi_square_loss, f_dvl_loss, gumbel_loss, total_variation_loss
from common.offline.mixtures import compose_mixture, select_episodes
from common.registry import CONF_DIR
from papers.dual_rl.fdvl import FDVLAgent
from papers.dual_rl.recoil import ReCOILAgent, recoil_critic_loss
from tests.conftest import assert_kill_and_resume_identical, run_cli
from tests.test_td3bc import as_tensors, make_batch, make_spec, pendulum_score, toy_data

torch.set_num_threads(1)
CPU = torch.device("cpu")
COMMON = dict(
    actor_lr=1e-3, value_lr=1e-3, critic_lr=1e-3, hidden_dim=32, tau=0.1, temperature=3.0,
    adv_weight_max=100.0,
    max_clip=7.0, log_std_min=-5.0, log_std_max=2.0, actor_lr_schedule="cosine", max_steps=100,
)  # fmt: skip
FDVL = dict(
    f="chi_square", f_temp=0.5, value_layer_norm=True, critic_huber_delta=20.0, sample_random_times=0,
    action_noise=False, noise_std=0.1, reward_scaling="none", reward_span=1000.0,
)  # fmt: skip
RECOIL = dict(discount=0.99, loss_temp=5.0, value_layer_norm=False, reward_gap=2.0, expert_q=200.0)


def cfg_of(**values: object) -> OmegaConf:
    out = OmegaConf.create(values)
    OmegaConf.set_readonly(out, True)
    return out


def fdvl_agent(seed: int = 0, data=None, spec=None, **cfg) -> FDVLAgent:
    torch.manual_seed(seed)
    agent = FDVLAgent(cfg_of(**{**COMMON, **FDVL, **cfg}), spec or make_spec(), CPU, "fp32")
    agent.prepare(toy_data() if data is None else data)
    return agent


def recoil_agent(seed: int = 0, demos=None, spec=None, **cfg) -> ReCOILAgent:
    torch.manual_seed(seed)
    agent = ReCOILAgent(cfg_of(**{**COMMON, **RECOIL, **cfg}), spec or make_spec(), CPU, "fp32")
    agent.prepare(toy_data(seed=4) if demos is None else demos)
    return agent


# --- the losses by hand ------------------------------------------------------------------------------------
def test_chi_square_and_total_variation_losses_by_hand() -> None:
    d = torch.tensor([-2.0, 0.0, 1.0, -6.0])
    # chi-square, lam 0.5: max(d + d^2/4, 0) = (0, 0, 1.25, 3); loss = 0.5 * that - 0.5 * d
    torch.testing.assert_close(chi_square_loss(d, 0.5), torch.tensor([1.0, 0.0, 0.125, 4.5]))
    # total variation, lam 0.5: max(d, 0) = (0, 0, 1, 0)
    torch.testing.assert_close(total_variation_loss(d, 0.5), torch.tensor([1.0, 0.0, 0.0, 3.0]))
    # lam 1 (DVL's README example): the pure implicit maximisers
    torch.testing.assert_close(chi_square_loss(d, 1.0), torch.tensor([0.0, 0.0, 1.25, 3.0]))
    torch.testing.assert_close(
        f_dvl_loss("total_variation", d, 1.0, None), torch.tensor([0.0, 0.0, 1.0, 0.0])
    )
    # reverse KL is XQL's Gumbel loss, clip included
    torch.testing.assert_close(f_dvl_loss("reverse_kl", d, 2.0, 0.1), gumbel_loss(d, 2.0, 0.1))
    with pytest.raises(ValueError, match="chi_square"):
        f_dvl_loss("kl", d, 1.0, None)


def test_recoil_critic_objective_by_hand() -> None:
    # pool Q (1, 2) with targets (0, 1); expert Q (3, 4) regressed to 5:
    # mean(0.5 * (3-5)^2 + 0.5 * (1-0)^2, 0.5 * (4-5)^2 + 0.5 * (2-1)^2) = mean(2.5, 1) = 1.75
    q, target = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.0, 1.0, 99.0, 99.0])
    assert recoil_critic_loss(q, target, expert_q=5.0, n_pool=2).item() == pytest.approx(1.75)


def test_fdvl_update_uses_the_chosen_loss() -> None:
    for f, temp in (("chi_square", 0.5), ("total_variation", 0.7), ("reverse_kl", 2.0)):
        agent = fdvl_agent(f=f, f_temp=temp)
        before = copy.deepcopy(agent)
        batch = make_batch(n=8)
        metrics = agent.update(batch, 0)
        b = as_tensors(batch)
        act = b["action"].clamp(-1 + 1e-5, 1 - 1e-5)
        with torch.no_grad():
            diff = torch.min(*before.critic_target(b["obs"], act)) - before.value(b["obs"])
        assert metrics["value_loss"] == pytest.approx(f_dvl_loss(f, diff, temp, 7.0).mean().item(), rel=1e-5)
    with pytest.raises(ConfigError, match="paper.f="):
        fdvl_agent(f="kl")
    with pytest.raises(ConfigError, match="f_temp"):
        fdvl_agent(f_temp=1.5)


def test_recoil_update_equals_the_hand_built_formulas() -> None:
    agent = recoil_agent()
    before = copy.deepcopy(agent)  # holds the expert sampler's state: the same expert half
    batch = make_batch(n=6)  # row 0 is terminal
    metrics = agent.update(batch, 0)
    pool, expert = as_tensors(batch), as_tensors(before.expert_sampler.sample(6))
    obs = torch.cat([pool["obs"], expert["obs"]])
    act = torch.cat([pool["action"], expert["action"]]).clamp(-1 + 1e-5, 1 - 1e-5)
    disc = torch.cat([pool["discount"], expert["discount"]])
    next_obs = torch.cat([pool["next_obs"], expert["next_obs"]])
    with torch.no_grad():
        q_t = torch.min(*before.critic_target(obs, act))
    z = ((q_t - before.value(obs)) / 5.0).clamp(max=7.0)
    m = max(z.max().item(), -1.0)  # the max spans both halves ...
    value_loss = (torch.exp(z - m) - z * np.exp(-m) - np.exp(-m))[:6].mean()  # ... the mean the pool's
    with torch.no_grad():
        y = -2.0 + disc * agent.value(next_obs) + (0.99 - disc) * -200.0  # rewards ignored
    assert y[0].item() == pytest.approx(-2.0 - 0.99 * 200.0, rel=1e-6)  # past a terminal: -gap - gamma*200
    q1, q2 = before.critic(obs, act)
    critic = sum((0.5 * (q[6:] - 200) ** 2 + 0.5 * (q[:6] - y[:6]) ** 2).mean() for q in (q1, q2))
    assert metrics["value_loss"] == pytest.approx(value_loss.item(), rel=1e-5)
    assert metrics["critic_loss"] == pytest.approx(critic.item(), rel=1e-5)
    assert metrics["q_expert"] == pytest.approx(q1[6:].mean().item(), rel=1e-5)


def test_recoil_checkpoint_restores_the_expert_sampler() -> None:
    agent = recoil_agent()
    agent.update(make_batch(seed=1), 0)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = recoil_agent(seed=7)  # another expert-sampler seed: overwritten by the checkpoint
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    m1 = [agent.update(make_batch(seed=10 + i), 1 + i) for i in range(2)]
    m2 = [restored.update(make_batch(seed=10 + i), 1 + i) for i in range(2)]
    assert m1 == m2


# --- the mixture -------------------------------------------------------------------------------------------
def test_mixture_is_exact_and_seeded() -> None:
    expert, sub = toy_data(n=40, seed=1), toy_data(n=20, seed=2)  # 4 expert episodes of 10 rows; 4 of 5
    mix = compose_mixture(expert, sub, num_expert_episodes=1, pool_expert_episodes=2, seed=3)
    perm = np.random.default_rng(3).permutation(4)
    first, second = perm[0], perm[1]
    np.testing.assert_array_equal(mix.expert.observations, expert.observations[10 * first : 10 * first + 10])
    np.testing.assert_array_equal(mix.expert.episode_starts, [0])
    np.testing.assert_array_equal(mix.expert.terminations, expert.terminations[10 * first : 10 * first + 10])
    rows = np.r_[10 * first : 10 * first + 10, 10 * second : 10 * second + 10]
    np.testing.assert_array_equal(
        mix.pool.observations, np.concatenate([sub.observations, expert.observations[rows]])
    )
    np.testing.assert_array_equal(mix.pool.actions[20:30], mix.expert.actions)  # the demo is in the pool
    np.testing.assert_array_equal(mix.pool.episode_starts, [0, 5, 10, 15, 20, 30])
    assert mix.info["expert_episodes"] == [int(first)] and mix.info["pool_transitions"] == 40
    again = compose_mixture(expert, sub, 1, 2, seed=3)
    np.testing.assert_array_equal(again.pool.observations, mix.pool.observations)
    others = {compose_mixture(expert, sub, 1, 2, seed=s).info["expert_episodes"][0] for s in range(10)}
    assert len(others) > 1  # the seed chooses the demonstration
    everything = compose_mixture(expert, sub, 2, 200, seed=0)  # more than the split has: all 4 episodes
    assert everything.info["pool_expert_episodes"] == 4 and len(everything.pool) == 60
    assert len(compose_mixture(expert, sub, 1, 0, seed=0).pool) == 20  # a pool without expert data
    with pytest.raises(ValueError, match="num_expert_episodes=5"):
        compose_mixture(expert, sub, 5, 200, seed=0)
    assert len(expert) == 40 and len(sub) == 20  # inputs untouched


# --- learning from a tiny dataset --------------------------------------------------------------------------
def test_fdvl_learns_from_a_tiny_dataset() -> None:
    # tests/test_td3bc.py's InvertedPendulum data; chi-square, lambda 0.5, 1,000 updates of batch 64 with
    # 64-unit nets: seed 0 reaches the 200-step cap (normalised 100; total variation too; random = 0).
    score = pendulum_score(
        lambda data, spec: fdvl_agent(
            data=data, spec=spec, hidden_dim=64, value_lr=3e-4, critic_lr=3e-4, tau=0.005, max_steps=1000
        ),
        updates=1000,
    )
    assert score > 60, score


def test_recoil_imitates_one_demonstration_from_a_mixed_pool() -> None:
    # The pool is the pendulum data (8 noisy stabiliser episodes + 20 random ones, rewards unused); the
    # demonstration is its first stabiliser episode. RECOIL_UPDATES of batch 64 + 64 expert rows.
    score = pendulum_score(
        lambda data, spec: recoil_agent(
            demos=select_episodes(data, np.array([0])),
            spec=spec,
            hidden_dim=64,
            value_lr=3e-4,
            critic_lr=3e-4,
            tau=0.005,
            max_steps=RECOIL_UPDATES,
            loss_temp=RECOIL_BETA,
        ),  # fmt: skip
        updates=RECOIL_UPDATES,
    )
    assert score > RECOIL_MIN, score


RECOIL_UPDATES, RECOIL_BETA, RECOIL_MIN = 1000, 5.0, 30  # measured: 41 (untrained 10)


# --- config and CLI ----------------------------------------------------------------------------------------
def test_paper_config_holds_the_official_values() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        rec = compose(config_name="config", overrides=["paper=dual_rl", "env=hopper", "paper.mode=recoil"])
        fd = compose(config_name="config", overrides=["paper=dual_rl", "env=hopper", "dataset=medium"])
    assert (
        rec.paper.entry == "papers.dual_rl.recoil.ReCOILAgent"
        and fd.paper.entry == "papers.dual_rl.fdvl.FDVLAgent"
    )
    p = OmegaConf.to_container(rec.paper, resolve=True)
    a = p["agent"]
    splits = (p["expert_dataset"], p["suboptimal_dataset"])
    assert splits == ("expert", "random")
    assert (p["num_expert_episodes"], p["pool_expert_episodes"]) == (1, 200)
    assert (p["buffer"]["batch_size"], a["loss_temp"], a["reward_gap"], a["expert_q"], a["discount"]) == (
        1024, 5.0, 2.0, 200.0, 0.99,
    )  # fmt: skip
    assert (fd.paper.agent.f, fd.paper.agent.f_temp, fd.paper.agent.reward_scaling) == (
        "chi_square",
        1.0,
        "locomotion",
    )


def _smoke(args: tuple[str, ...], root: Path, run_dir: Path) -> list[dict]:
    run_cli(
        *args, "debug=smoke", f"hydra.run.dir={run_dir}", env={"MINARI_DATASETS_PATH": str(root)}, check=True
    )
    evals = read_metrics(run_dir / "eval.jsonl")
    assert [r["step"] for r in evals] == [0, 100, 200] and all(
        np.isfinite(r["normalized_score"]) for r in evals
    )
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    return read_metrics(run_dir / "train.jsonl")


def test_cli_smoke_run_recoil(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    train = _smoke(("paper=dual_rl", "env=hopper", "paper.mode=recoil"), tiny_d4rl["root"], tmp_path / "rec")
    assert all({"value_loss", "critic_loss", "q_expert", "q_pool", "actor_loss"} <= set(r) for r in train)
    info = json.loads((tmp_path / "rec" / "run.json").read_text())
    assert info["recoil_data"]["expert_dataset"] == "rlrepro/hopper/expert-v0"
    assert info["dataset"]["split"] == "random"  # the pool's base split
    # f-DVL (the default mode) runs in tests/test_smoke.py


def test_missing_expert_split_is_one_line_exit_2_nothing_written(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ("paper=dual_rl", "env=hopper", "paper.mode=recoil", "debug=smoke", f"hydra.run.dir={run_dir}")
    proc = cli(*args, env={"MINARI_DATASETS_PATH": str(tmp_path / "empty")}, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "python run.py paper=d4rl env=hopper" in lines[0], proc.stderr
    assert not run_dir.exists()
    proc = cli("paper=dual_rl", "env=hopper", "paper.mode=bogus", f"hydra.run.dir={run_dir}", timeout=120)
    assert proc.returncode == 2 and "paper.mode='bogus'" in proc.stderr and not run_dir.exists()


def test_killed_recoil_run_resumes_to_identical_metrics(
    tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the mixture is recomposed identically; weights, optimisers and the expert sampler's RNG come back
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_d4rl["root"]))
    args = (
        "paper=dual_rl",
        "env=hopper",
        "paper.mode=recoil",
        "debug=smoke",
        "paper.train.eval_every_steps=50",
    )
    assert_kill_and_resume_identical(args, tmp_path)


def test_pool_command_writes_recoils_pool_as_a_split(tmp_path: Path, monkeypatch, capsys) -> None:
    """`python -m common.offline.transforms pool` writes the same pool ReCOIL composes (suboptimal rows, then
    the seeded expert episodes), readable as `dataset=<suboptimal>_pool<N>-s<seed>` (BC on all data)."""
    from common.offline.minari_io import check_split, load_dataset, write_dataset
    from common.offline.mixtures import compose_mixture
    from common.offline.transforms import main as transforms_main
    from tests.test_td3bc import toy_data

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    expert, random = toy_data(n=40), toy_data(n=20)
    write_dataset("toy", "expert", expert, {"algorithm": "test"})
    write_dataset("toy", "random", random, {"algorithm": "test"})
    args = ["pool", "--env", "toy", "--pool-expert-episodes", "2", "--seed", "3"]
    assert transforms_main(args) == 0
    assert check_split("random_pool2-s3") == "random_pool2-s3"
    back = load_dataset("toy", "random_pool2-s3")
    want = compose_mixture(expert, random, 1, 2, 3).pool
    np.testing.assert_array_equal(back.observations, want.observations)
    np.testing.assert_array_equal(back.actions, want.actions)
    assert len(back) == 20 + 2 * 10  # the random rows, then two 10-step expert episodes
    capsys.readouterr()
    assert transforms_main(["pool", "--env", "toy", "--suboptimal", "medium"]) == 2  # no such split
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
