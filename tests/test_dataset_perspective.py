"""papers/dataset_perspective: TQ and SACo on hand-built data, the five generators' defining properties, each
learner's loss on a hand-built batch, seeded determinism, a learning test, bad input and a CLI smoke run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from common.errors import ConfigError
from common.registry import CONF_DIR
from papers.dataset_perspective import generate, metrics
from papers.dataset_perspective.learners import LEARNERS, make_learner
from papers.dataset_perspective.learners.base import DiscreteBatch
from papers.dataset_perspective.learners.bcq import eligible, masked_argmax
from papers.dataset_perspective.learners.crr import advantage_weights
from papers.dataset_perspective.learners.mce import returns_to_go
from papers.dataset_perspective.learners.qrdqn import quantile_huber_loss
from papers.dataset_perspective.learners.rem import mixture
from papers.dataset_perspective.loop import DatasetSampler, validate


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="config", overrides=["paper=dataset_perspective", "env=cartpole", *overrides]
        )


def _batch(obs_dim: int = 2) -> DiscreteBatch:
    return DiscreteBatch(
        obs=torch.tensor([[1.0, 0.0], [0.0, 1.0]])[:, :obs_dim],
        action=torch.tensor([0, 1]),
        reward=torch.tensor([1.0, 0.5]),
        next_obs=torch.tensor([[0.0, 1.0], [1.0, 1.0]])[:, :obs_dim],
        not_done=torch.tensor([1.0, 0.0]),
        next_action=torch.tensor([1, 0]),
        mc_return=torch.tensor([2.0, 0.5]),
    )


def _learner(name: str, **agent):
    cfg = _cfg(*(f"paper.agent.{k}={v}" for k, v in agent.items()))
    return make_learner(cfg.paper.agent, name, 2, 2, 0.5, 0, torch.device("cpu"))


class Table(torch.nn.Module):
    """A fixed linear 'network': out = obs @ W (hand-set values)."""

    def __init__(self, w: list[list[float]]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# ------------------------------------------------------------------------------------- TQ and SACo


def test_episode_returns_and_tq_by_hand():
    rewards = np.array([1, 1, 1, 2, 2, 5], np.float32)
    dones = np.array([0, 0, 1, 0, 1, 0], bool)  # episodes 3 and 4; the trailing 5 is unfinished
    assert metrics.episode_returns(rewards, dones).tolist() == [3.0, 4.0]
    # TQ = (3.5 - 1.5) / (9.5 - 1.5) = 0.25
    assert metrics.trajectory_quality(3.5, 1.5, 9.5) == pytest.approx(0.25)
    # an online run that never beat random leaves no scale: undefined, not a crash (Acrobot at smoke size)
    assert math.isnan(metrics.trajectory_quality(-100.0, -100.0, -100.0))


def test_saco_counts_discretised_pairs_exactly():
    states = np.array([[0.0], [0.0], [0.999], [1.0], [0.5]])
    actions = np.array([0, 0, 0, 1, 1])
    limits = np.array([[0.0, 1.0], [0.0, 1.0]])
    # bins = linspace(0, 1, 3) = [0, .5, 1]: 0 -> 1, 0.999 -> 2, 1.0 -> 3, 0.5 -> 2; actions 0 -> 1, 1 -> 3
    assert metrics.discretise(states, actions, limits, 3).tolist() == [[1, 1], [1, 1], [2, 1], [3, 3], [2, 3]]
    assert metrics.unique_state_actions(states, actions, limits, 3) == 4
    reference = metrics.unique_state_actions(
        np.array([[0.0], [0.3], [0.6], [0.9], [1.0]]), np.zeros(5), limits, 3
    )
    assert reference == 3
    assert metrics.saco(4, reference) == pytest.approx(4 / 3)


def test_saco_refuses_a_stochastic_env():
    with pytest.raises(ConfigError, match="sticky_action_prob"):
        metrics.check_deterministic({"name": "minatar_breakout", "sticky_action_prob": 0.1})
    with pytest.raises(ConfigError) as e:
        validate(_cfg("env=minatar"))
    assert "\n" not in str(e.value)


def test_bad_dataset_type_and_learner_are_one_line_errors(cli, tmp_path):
    with pytest.raises(ConfigError, match="not a dataset type"):
        validate(_cfg("paper.dataset_types=[random,medium]"))
    proc = cli(
        "paper=dataset_perspective",
        "env=cartpole",
        "paper.learner=sac",
        f"hydra.run.dir={tmp_path}/r",
        env={"MINARI_DATASETS_PATH": str(tmp_path / "m")},
    )
    assert proc.returncode == 2
    assert "paper.learner=sac is not a learner" in proc.stderr and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------- generators


@pytest.fixture(scope="module")
def collected():
    cfg = _cfg(
        "paper.train.num_frames=300",
        "paper.train.eval_every_frames=100",
        "paper.train.eval_episodes=1",
        "env.max_episode_frames=50",
    )
    return cfg, *generate.collect(cfg, torch.device("cpu"))


def test_generators_defining_properties(collected, monkeypatch):
    cfg, data, dones, returns = collected
    n, k = 300, 240
    assert all(len(d) == n for d in data.values()) and len(returns) == 3
    # mixed = the first 80 % of random, then the last 20 % of expert
    np.testing.assert_array_equal(data["mixed"].observations[:k], data["random"].observations[:k])
    np.testing.assert_array_equal(data["mixed"].actions[k:], data["expert"].actions[k:])
    np.testing.assert_array_equal(dones["mixed"], np.concatenate([dones["random"][:k], dones["expert"][k:]]))
    # the replay is exactly what the online run saw: rerunning the online run gives the same transitions
    env = generate.build_env(cfg, cfg.seed)
    agent, replay, _, again = generate.online_run(cfg, env, torch.device("cpu"))
    env.close()
    np.testing.assert_array_equal(replay.observations, data["replay"].observations)
    np.testing.assert_array_equal(replay.actions, data["replay"].actions)
    assert again == returns
    # expert is greedy: every action is the argmax of the final Q; noisy deviates with eps = 0.2
    with torch.no_grad():
        greedy = agent.values(torch.as_tensor(data["expert"].observations)).argmax(1).numpy()
        noisy_greedy = agent.values(torch.as_tensor(data["noisy"].observations)).argmax(1).numpy()
    np.testing.assert_array_equal(data["expert"].actions, greedy)
    off = float(np.mean(data["noisy"].actions != noisy_greedy))  # eps * (1 - 1/A) = 0.1 expected
    assert 0.04 < off < 0.18, off
    assert cfg.paper.online.noisy_epsilon == 0.2


def test_measures_normalise_by_random_and_online_best(collected):
    cfg, data, dones, returns = collected
    m = generate.measure(cfg, data, dones, returns)
    assert m["replay"]["saco"] == 1.0 and m["random"]["tq"] == pytest.approx(0.0)
    rand = m["random"]["mean_return"]
    mean = metrics.episode_returns(data["expert"].rewards, dones["expert"]).mean()
    assert m["expert"]["tq"] == pytest.approx((mean - rand) / (max(returns) - rand))


def test_minari_round_trip_keeps_discrete_actions(collected, tmp_path, monkeypatch):
    from common.offline.minari_io import load_discrete_dataset, write_discrete_dataset

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    _, data, _, _ = collected
    write_discrete_dataset("cartpole", "dp-test", data["mixed"], {"x": 1}, 2)
    back = load_discrete_dataset("cartpole", "dp-test", 2)
    np.testing.assert_array_equal(back.actions, data["mixed"].actions)
    np.testing.assert_array_equal(back.next_observations, data["mixed"].next_observations)
    assert back.actions.dtype == np.int64 and back.metadata["x"] == 1


# ------------------------------------------------------------------------------------- learner losses


def test_bve_bootstraps_on_the_dataset_next_action():
    bve = _learner("bve")
    bve.q = Table([[1.0, 2.0], [3.0, 4.0]])  # Q(s) = s @ W
    # row 0: Q(s=[1,0], a=0) = 1; y = 1 + 0.5 * Q([0,1], a'=1) = 1 + 0.5 * 4 = 3 -> delta 2 -> huber 1.5
    # row 1: Q([0,1], 1) = 4; y = 0.5 (done) -> delta 3.5 -> huber 3.0
    assert float(bve.loss(_batch())) == pytest.approx((1.5 + 3.0) / 2)


def test_mce_regresses_on_discounted_returns_to_go():
    g = returns_to_go(np.array([1, 1, 1, 2, 2]), np.array([0, 0, 1, 0, 1], bool), 0.5)
    np.testing.assert_allclose(g, [1.75, 1.5, 1.0, 3.0, 2.0])
    mce = _learner("mce")
    mce.q = Table([[1.0, 2.0], [3.0, 4.0]])
    assert float(mce.loss(_batch())) == pytest.approx((huber(1 - 2.0) + huber(4 - 0.5)) / 2)


def test_rem_random_convex_combination():
    heads = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])  # (B=1, K=2, A=2)
    assert mixture(heads, torch.tensor([0.25, 0.75])).tolist() == [[2.5, 5.0]]
    rem = _learner("rem", rem_heads=3)
    torch.manual_seed(0)
    a = rem.mixed(rem.q, torch.ones(1, 2))
    torch.manual_seed(0)
    alpha = torch.rand(3)
    alpha = alpha / alpha.sum()
    expected = (rem.heads(rem.q, torch.ones(1, 2)) * alpha.view(1, -1, 1)).sum(1)
    torch.testing.assert_close(a, expected)
    assert float(alpha.sum()) == pytest.approx(1.0) and bool((alpha >= 0).all())
    torch.testing.assert_close(rem.values(torch.ones(1, 2)), rem.heads(rem.q, torch.ones(1, 2)).mean(1))


def test_crr_binary_and_exp_advantage_weighting():
    adv = torch.tensor([[-1.0, 0.0, 2.0]])
    assert advantage_weights(adv, "binary", 1.0).tolist() == [[0.0, 0.0, 1.0]]
    torch.testing.assert_close(advantage_weights(adv, "exp", 2.0), torch.exp(adv / 2.0))
    crr = _learner("crr")
    crr.q = Table([[1.0, 2.0], [3.0, 4.0]])
    crr.actor = Table([[50.0, -50.0], [-50.0, 50.0]])  # pi(s=[1,0]) = a0, pi([0,1]) = a1 (near certain)
    # A = Q - Q(s, pi(s)): row 0: Q(.,0)=1, A(a=0) = 0 -> weight 0; row 1: A(a=1) = 0 -> weight 0
    assert float(crr.policy_loss(_batch())) == pytest.approx(0.0)
    crr.actor = Table([[-50.0, 50.0], [50.0, -50.0]])  # pi picks the other action: A(row0, a0) = 1 - 2 < 0,
    b = (
        _batch()
    )  # row 1: A(a=1) = 4 - 3 = 1 > 0 -> the CE of a=1 under pi (about 100) counts, halved by the mean
    ce = F.cross_entropy(crr.actor(b.obs), b.action, reduction="none")
    assert float(crr.policy_loss(b)) == pytest.approx(float(ce[1]) / 2)


def test_bcq_threshold_masks_unlikely_actions():
    logits = torch.log(torch.tensor([[0.5, 0.14, 0.36]]))  # ratios to the max: 1, 0.28, 0.72
    assert eligible(logits, 0.3).tolist() == [[1.0, 0.0, 1.0]]
    q = torch.tensor([[1.0, 9.0, 2.0]])  # the best Q is ineligible
    assert masked_argmax(q, eligible(logits, 0.3)).tolist() == [2]
    bcq = _learner("bcq")
    bcq.q, bcq.q_target = Table([[1.0, 2.0], [3.0, 4.0]]), Table([[1.0, 2.0], [3.0, 4.0]])
    bcq.actor = Table([[10.0, -10.0], [10.0, -10.0]])  # only action 0 is eligible anywhere
    q_loss, a_loss, reg = bcq.losses(_batch())
    # row 0: y = 1 + 0.5 * Q_target([0,1], 0) = 1 + 1.5 = 2.5; Q = 1 -> huber(1.5) = 1.0
    # row 1: Q = 4 vs y = 0.5 (done) -> huber(3.5) = 3.0
    assert float(q_loss) == pytest.approx((1.0 + 3.0) / 2)
    assert float(reg) == pytest.approx(0.01 * 100.0)
    assert bcq.act(np.array([0.0, 1.0])) == 0  # Q prefers 1, but it is masked


def test_cql_discrete_regulariser():
    cql = _learner("cql")
    cql.q, cql.q_target = Table([[1.0, 2.0], [3.0, 4.0]]), Table([[1.0, 2.0], [3.0, 4.0]])
    td, reg = cql.losses(_batch())
    # row 0: logsumexp(1, 2) - Q(a=0)=1; row 1: logsumexp(3, 4) - Q(a=1)=4; times alpha 0.1, mean
    lse0, lse1 = math.log(math.e + math.e**2), math.log(math.e**3 + math.e**4)
    assert float(reg) == pytest.approx(0.1 * ((lse0 - 1) + (lse1 - 4)) / 2)
    # double-DQN target: row 0: a' = argmax Q([0,1]) = 1 -> y = 1 + 0.5 * 4 = 3; Q = 1 -> huber(2) = 1.5
    assert float(td) == pytest.approx((1.5 + 3.0) / 2)


def test_qrdqn_quantile_loss_by_hand():
    tau = torch.tensor([0.5, 1.0])  # upstream: k / N for N = 2
    current, target = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 3.0]])
    # [i, j]: delta = T_j - theta_i = [[0.5, 3], [-0.5, 2]]; huber = [[.125, 2.5], [.125, 1.5]]
    # weight |tau_j - 1[delta < 0]| = [[.5, 1], [.5, 1]]; sum over i then mean over j: (.125 + .0625 ... )
    expected = ((0.5 * 0.125 + 0.5 * 0.125) + (1.0 * 2.5 + 1.0 * 1.5)) / 2
    assert float(quantile_huber_loss(current, target, tau)) == pytest.approx(expected)


def test_bc_is_cross_entropy_and_dqn_is_double_q():
    bc = _learner("bc")
    bc.actor = Table([[1.0, 2.0], [3.0, 4.0]])
    b = _batch()
    expected = float(F.cross_entropy(bc.actor(b.obs), b.action))
    assert bc.update(b)["loss"] == pytest.approx(expected)
    dqn = _learner("dqn")
    dqn.q, dqn.q_target = Table([[1.0, 2.0], [3.0, 4.0]]), Table([[0.0, 0.0], [10.0, 0.0]])
    # row 0: a' = argmax Q([0,1]) = 1; Q_target([0,1], 1) = 0 -> y = 1 = Q -> 0; row 1: 4 vs .5 -> 3.0
    assert float(dqn.loss(b)) == pytest.approx(3.0 / 2)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_each_learner_is_seeded_deterministic_and_checkpoints(name, collected):
    cfg, data, _, _ = collected

    def run() -> tuple[list[float], dict]:
        torch.manual_seed(3)
        learner = make_learner(cfg.paper.agent, name, 4, 2, 0.95, 3, torch.device("cpu"))
        sampler = DatasetSampler(data["replay"], 0.95, 3, torch.device("cpu"))
        losses = [learner.update(sampler.sample(16))["loss"] for _ in range(3)]
        return losses, learner.state_dict()

    (a, state), (b, _) = run(), run()
    assert a == b and all(math.isfinite(x) for x in a)
    fresh = make_learner(cfg.paper.agent, name, 4, 2, 0.95, 9, torch.device("cpu"))
    fresh.load_state_dict(state)
    assert fresh.iterations == 3


# ------------------------------------------------------------------------------------- learning + CLI


def test_bc_learns_cartpole_from_a_good_dataset():
    """BC on 2,000 transitions of a hand-written balancing controller beats random play (~22) by far."""
    cfg = _cfg("env.max_episode_frames=200")
    env = generate.build_env(cfg, 0)
    data, _ = generate.rollout(env, lambda o: int(o[2] + 0.5 * o[3] > 0), 2000, "heuristic")
    env.close()
    torch.manual_seed(0)
    bc = make_learner(cfg.paper.agent, "bc", 4, 2, 0.95, 0, torch.device("cpu"))
    bc.optimizer = torch.optim.Adam(bc.actor.parameters(), lr=1e-3)
    sampler = DatasetSampler(data, 0.95, 0, torch.device("cpu"))
    for _ in range(300):
        bc.update(sampler.sample(64))
    ret = generate.evaluate(cfg, generate.greedy(bc), 3)
    assert ret > 120, ret


def test_smoke_cli_writes_datasets_results_and_figure(cli, tmp_path):
    run_dir, minari = tmp_path / "run", tmp_path / "minari"
    args = [
        "paper=dataset_perspective",
        "env=cartpole",
        "debug=smoke",
        "paper.learner=cql",
        "paper.train.num_steps=20",
        "paper.train.eval_every_steps=10",
        "paper.train.log_every_steps=10",
    ]
    proc = cli(*args, f"hydra.run.dir={run_dir}", env={"MINARI_DATASETS_PATH": str(minari)}, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["datasets"]) == set(generate.TYPES)
    assert results["datasets"]["replay"]["saco"] == 1.0 and results["datasets"]["random"]["tq"] == 0.0
    assert set(results["learners"]["cql"]) == set(generate.TYPES)
    assert (run_dir / "figure.png").stat().st_size > 0
    assert (run_dir / "learners" / "cql" / "expert" / "learner.pt").exists()
    for kind in generate.TYPES:
        assert (
            minari / "rlrepro" / "cartpole" / f"dataset-perspective-{kind}-s1-v0" / "rlrepro.json"
        ).exists()
    # a second run reuses the datasets (same generation settings) and gets the same TQ/SACo
    again = cli(
        *args, f"hydra.run.dir={tmp_path}/run2", env={"MINARI_DATASETS_PATH": str(minari)}, timeout=170
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "behavioural DQN" not in again.stderr
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["datasets"] == results["datasets"]


def test_analysis_table_rows_and_family_means_by_hand(tmp_path) -> None:
    """One row per (env, dataset, seed) with TQ, SACo, each learner's score and the families' means; a
    family with a member missing is left out; the CLI writes the table and refuses a folder without runs."""
    import json

    from papers.dataset_perspective import analysis

    results = {
        "env": "cartpole",
        "seed": 2,
        "datasets": {"expert": {"tq": 1.0, "saco": 0.1}, "random": {"tq": 0.0, "saco": 0.9}},
        "learners": {
            "bc": {"expert": {"normalized_return": 0.9}, "random": {"normalized_return": 0.1}},
            "dqn": {"expert": {"normalized_return": 0.2}, "random": {"normalized_return": 0.5}},
            "qrdqn": {"expert": {"normalized_return": 0.4}, "random": {"normalized_return": 0.6}},
            "rem": {"expert": {"normalized_return": 0.6}, "random": {"normalized_return": 0.7}},
            "bcq": {"expert": {"normalized_return": 1.0}},
        },
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    out = tmp_path / "t.json"
    assert analysis.main(["table", str(run), "--out", str(out)]) == 0
    t = json.loads(out.read_text())
    assert set(t) == {"cartpole/expert/s2", "cartpole/random/s2"}
    e = t["cartpole/expert/s2"]
    assert e["tq"] == 1.0 and e["saco"] == 0.1 and e["bc"] == 0.9 and e["bcq"] == 1.0
    assert e["value_family"] == pytest.approx(0.4)  # (0.2 + 0.4 + 0.6) / 3
    assert "constraint_family" not in e  # cql and crr did not run
    assert analysis.main(["table", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_analysis_joins_runs_of_the_same_datasets_and_refuses_others(tmp_path) -> None:
    """A second run of the same seed with other learners (datasets reused) joins the first one's rows, and the
    families are computed over the joined row; another dataset under the same key, or a learner twice, is a
    one-line error; --figure writes the pooled scatter plot."""
    import json

    from papers.dataset_perspective import analysis

    def write(name: str, learners: dict, tq: float = 1.0, ident: str = "rlrepro/cartpole/x-expert-s2-v0"):
        results = {
            "env": "cartpole",
            "seed": 2,
            "datasets": {"expert": {"tq": tq, "saco": 0.1, "id": ident}},
            "learners": {k: {"expert": {"normalized_return": v}} for k, v in learners.items()},
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
        return str(tmp_path / name)

    first = write("a", {"bc": 0.9, "dqn": 0.2, "qrdqn": 0.4})
    second = write("b", {"rem": 0.6, "bve": 0.7, "mce": 0.3})
    out, fig = tmp_path / "t.json", tmp_path / "fig.png"
    assert analysis.main(["table", first, second, "--out", str(out), "--figure", str(fig)]) == 0
    row = json.loads(out.read_text())["cartpole/expert/s2"]
    assert {k: row[k] for k in ("bc", "rem", "bve", "mce")} == {"bc": 0.9, "rem": 0.6, "bve": 0.7, "mce": 0.3}
    assert row["value_family"] == pytest.approx(0.4)  # dqn from one run, qrdqn and rem from the other
    assert fig.stat().st_size > 10_000
    other_tq = write("c", {"cql": 0.5}, tq=0.5)
    other_id = write("d", {"crr": 0.5}, ident="rlrepro/cartpole/y-expert-s2-v0")
    again = write("e", {"bc": 0.1})
    for bad in (other_tq, other_id, again):
        out.unlink(missing_ok=True)
        assert analysis.main(["table", first, bad, "--out", str(out)]) == 2 and not out.exists()


def test_analysis_joins_runs_whose_tq_is_undefined(tmp_path) -> None:
    """TQ is NaN when the online run never beat random; two runs on that same dataset still join (NaN
    equals NaN here, not "another dataset"), and the dataset without a TQ gives no row."""
    import json

    from papers.dataset_perspective import analysis

    dirs = []
    for name, learner in (("a", "bc"), ("b", "bve")):
        results = {
            "env": "acrobot",
            "seed": 0,
            "datasets": {
                "random": {"tq": float("nan"), "saco": 0.5, "id": "rlrepro/acrobot/r-s0-v0"},
                "expert": {"tq": 1.0, "saco": 0.2, "id": "rlrepro/acrobot/e-s0-v0"},
            },
            "learners": {
                learner: {"random": {"normalized_return": 0.3}, "expert": {"normalized_return": 0.9}}
            },
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
        dirs.append(tmp_path / name)
    assert analysis.table(dirs) == {"acrobot/expert/s0": {"tq": 1.0, "saco": 0.2, "bc": 0.9, "bve": 0.9}}
