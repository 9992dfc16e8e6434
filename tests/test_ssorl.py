"""SS-ORL: the action-free transform (exact, seeded, Minari round trip, bad fraction), the IDM's window
and its proxy labels on a linear system, and the CLI on the tiny D4RL fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError, DatasetError
from common.offline.data import OfflineData
from common.offline.minari_io import load_dataset, write_dataset
from common.offline.transforms import (
    action_free,
    action_free_split,
    labelled_mask,
    select_labelled,
)
from common.offline.transforms import (
    main as transforms_main,
)
from papers.ssorl.idm import InverseDynamics, predict, squashed_nll, train_ensemble, windows
from tests.test_td3bc import cli_smoke, toy_data

torch.set_num_threads(1)
CPU = torch.device("cpu")


# --- the transform ---------------------------------------------------------------------------------------
def test_lowest_rule_labels_from_the_lowest_return_quantile_exactly() -> None:
    returns = np.array([50.0, 3.0, 40.0, 7.0, 1.0, 90.0, 20.0, 5.0, 60.0, 30.0] * 2) + np.arange(20) * 0.01
    order = np.argsort(returns)
    # q = p = 0.1: exactly the 2 lowest-return trajectories, whatever the seed
    for seed in range(5):
        assert set(select_labelled(returns, 0.1, "lowest", 0.1, seed)) == set(order[:2])
    # q = 0.5 (upstream default): min(int(20 q), int(20 p)) = 2 drawn from the 10 lowest; seeded
    picks = [tuple(select_labelled(returns, 0.1, "lowest", 0.5, s)) for s in range(20)]
    assert all(len(p) == 2 and set(p) <= set(order[:10]) for p in picks)
    assert picks[0] == tuple(select_labelled(returns, 0.1, "lowest", 0.5, 0)) and len(set(picks)) > 5
    # random: q = 1, drawn from all 20; fraction 0.25 -> int(5.0) = 5; quantile smaller than p caps the size
    rand = [select_labelled(returns, 0.25, "random", 0.5, s) for s in range(30)]
    assert all(len(r) == 5 for r in rand) and set(np.concatenate(rand)) - set(order[:10])
    assert len(select_labelled(returns, 0.5, "lowest", 0.1, 0)) == 2
    assert len(select_labelled(returns, 0.0, "lowest", 0.5, 0)) == 0


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5])
def test_fraction_outside_0_1_is_one_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\)"):
        select_labelled(np.arange(10.0), fraction, "lowest", 0.5, 0)
    with pytest.raises(ConfigError, match="rule"):
        select_labelled(np.arange(10.0), 0.1, "highest", 0.5, 0)


def test_action_free_round_trips_through_minari(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    data = toy_data(n=40)
    write_dataset("toy", "medium", data, {"algorithm": "test"})
    semi, labelled = action_free(data, 0.5, "lowest", 1.0, 0)
    mask = labelled_mask(semi)
    assert mask.tolist() == [i in labelled for i in range(4)] and mask.sum() == 2
    rows = np.repeat(mask, 10)
    assert np.isnan(semi.actions[~rows]).all() and np.array_equal(semi.actions[rows], data.actions[rows])
    assert not np.isnan(data.actions).any()  # the input is untouched
    # the command writes the same split; a learner's loader refuses the NaN actions
    assert (
        transforms_main(
            ["action-free", "--env", "toy", "--split", "medium", "--labelled", "0.5", "--quantile", "1"]
        )
        == 0
    )
    split = action_free_split("medium", 0.5, "lowest", 1.0, 0)
    assert split == "medium_labelled50-lowest100-s0"
    with pytest.raises(DatasetError, match="action-free"):
        load_dataset("toy", split)
    back = load_dataset("toy", split, allow_action_free=True)
    np.testing.assert_array_equal(back.actions, semi.actions)  # NaN where NaN, equal elsewhere
    np.testing.assert_array_equal(back.observations, data.observations)
    assert back.metadata["action_free"]["labelled_episodes"] == labelled.tolist()
    # bad fraction: one line, exit 2, nothing written
    capsys.readouterr()
    before = sorted(p.name for p in (tmp_path / "rlrepro" / "toy").iterdir())
    assert transforms_main(["action-free", "--env", "toy", "--split", "medium", "--labelled", "1.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: labelled fraction 1.0 must be in [0, 1)")
    assert sorted(p.name for p in (tmp_path / "rlrepro" / "toy").iterdir()) == before


# --- the IDM ---------------------------------------------------------------------------------------------
def test_window_holds_past_current_and_next_state_zero_padded() -> None:
    obs = np.arange(1.0, 7.0)[:, None]  # one feature, two episodes of 3: s = 1 2 3 | 4 5 6
    nxt = obs + 0.5
    x = windows(obs, nxt, np.array([0, 3]), k=1, mean=np.zeros(1), std=np.ones(1))
    want = [[0, 1, 1.5], [1, 2, 2.5], [2, 3, 3.5], [0, 4, 4.5], [4, 5, 5.5], [5, 6, 6.5]]
    np.testing.assert_allclose(x, want)
    z = windows(obs, nxt, np.array([0, 3]), k=2, mean=np.ones(1), std=2 * np.ones(1))
    np.testing.assert_allclose(z[1], (np.array([0, 1, 2, 2.5]) - 1) / 2)  # raw zeros, then normalised


def test_squashed_nll_matches_torch() -> None:
    mu, log_std, a = torch.randn(5, 2), torch.randn(5, 2) * 0.3, torch.rand(5, 2) * 1.8 - 0.9
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, log_std.exp()), torch.distributions.transforms.TanhTransform()
    )
    torch.testing.assert_close(squashed_nll(mu, log_std, a), -dist.log_prob(a).sum(-1), rtol=1e-4, atol=1e-4)


def linear_system(episodes: int = 40, steps: int = 50, seed: int = 0) -> OfflineData:
    """s' = A s + B a with a ~ U(-0.9, 0.9)^2, B of full column rank: a is exactly B^+ (s' - A s)."""
    rng = np.random.default_rng(seed)
    A = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.7]])
    B = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]])
    obs, nxt, act = [], [], []
    for _ in range(episodes):
        s = rng.normal(size=3)
        for _ in range(steps):
            a = rng.uniform(-0.9, 0.9, 2)
            s2 = A @ s + B @ a
            obs.append(s), nxt.append(s2), act.append(a)
            s = s2
    n = episodes * steps
    trunc = np.zeros(n, bool)
    trunc[steps - 1 :: steps] = True
    returns = rng.normal(size=episodes).repeat(steps) / steps
    return OfflineData(
        np.array(obs, np.float32), np.array(act, np.float32), returns.astype(np.float32),
        np.array(nxt, np.float32), np.zeros(n, bool), trunc, np.arange(0, n, steps, dtype=np.int64),
        {"ref_min_score": 0.0, "ref_max_score": 1.0},
    )  # fmt: skip


def test_idm_recovers_the_action_of_a_linear_system() -> None:
    data = linear_system()
    semi, labelled = action_free(data, 0.25, "random", 1.0, seed=0)  # 10 labelled trajectories of 40
    mask = labelled_mask(semi)
    mean, std = data.observations.mean(0), data.observations.std(0) + 1e-6
    x = windows(semi.observations, semi.next_observations, semi.episode_starts, 1, mean, std)
    torch.manual_seed(0)
    members = [InverseDynamics(x.shape[1], 2, [32, 32], 0.0, -5.0, 2.0) for _ in range(2)]
    stats = train_ensemble(
        members, x, np.nan_to_num(semi.actions), np.repeat(np.arange(40), 50), labelled,
        lr=3e-3, batch_size=128, train_steps=700, validation_fraction=0.1, eval_every=10, seed=0,
        device=CPU, progress=False,
    )  # fmt: skip
    proxy, uncertainty = predict(members, x, CPU)
    free = ~np.repeat(mask, 50)
    mse = float(np.mean((proxy[free] - data.actions[free]) ** 2))
    # the action variance is 0.27 (U(-0.9, 0.9)): R^2 > 0.96 on the 30 action-free trajectories (~0.006 seen)
    assert mse < 1e-2, (mse, stats)
    assert np.isfinite(stats["idm_val_nll"]) and uncertainty.shape == (2000,)


# --- the CLI ---------------------------------------------------------------------------------------------
def test_cli_smoke_run_with_the_cql_learner(tiny_d4rl: dict[str, Path], tmp_path: Path, cli) -> None:
    run_dir = tmp_path / "run"
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    cli(
        "paper=ssorl", "learner@paper=cql", "env=hopper", "dataset=medium-replay", "debug=smoke",
        "paper.labelled_fraction=0.3", f"hydra.run.dir={run_dir}", env=env, check=True, timeout=240,
    )  # fmt: skip
    info = json.loads((run_dir / "run.json").read_text())["ssorl"]
    idm = json.loads((run_dir / "ssorl" / "idm.json").read_text())
    assert np.isfinite(idm["proxy_mse_action_free"]) and info["proxy_labels"] is True
    assert (run_dir / "ssorl" / "proxy_actions.npy").exists()


@pytest.mark.slow  # tests/test_smoke.py runs paper=ssorl debug=smoke in CI
def test_cli_smoke_run_default_learner(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    _, train = cli_smoke("ssorl", tiny_d4rl, tmp_path / "run")  # TD3+BC on true + proxy actions
    assert any({"critic_loss", "actor_loss", "bc_loss"} <= set(row) for row in train)


@pytest.mark.parametrize("fraction", ["1.0", "-0.5"])
def test_bad_fraction_is_one_line_exit_2_and_nothing_written(cli, tmp_path: Path, fraction: str) -> None:
    run_dir = tmp_path / "run"
    proc = cli(
        "paper=ssorl", "env=hopper", "dataset=medium-replay", f"paper.labelled_fraction={fraction}",
        f"hydra.run.dir={run_dir}", env={"MINARI_DATASETS_PATH": str(tmp_path / "none")},
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and f"paper.labelled_fraction={fraction} must be" in lines[0] and "[0, 1)" in lines[0]
    ), proc.stderr
    assert not run_dir.exists()


def test_derived_split_names_pass_the_split_check_and_typos_do_not():
    from common.offline.minari_io import check_split

    for args in (("medium-replay", 0.1, "lowest", 0.5, 0), ("medium", 0.025, "random", 1.0, 12)):
        name = action_free_split(*args)
        assert check_split(name) == name
    assert action_free_split("medium", 0.025, "random", 1.0, 12) == "medium_labelled2p5-random-s12"
    for typo in ("medium_replay", "medium_expert", "medium_labelled10"):
        with pytest.raises(ConfigError, match="not a D4RL split"):
            check_split(typo)
