"""`python run.py paper=<p> env=<e> debug=smoke` for every paper in conf/paper/ (one parameter each, from the
directory listing): each run exits 0 within the time limit with `debug=smoke` as its only setting, and its
run directory holds what makes that paper distinctive. A new paper fails until it has a row in CASES."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from common.logger import read_metrics
from common.offline.minari_io import SPLITS
from common.registry import config_choices
from tests.conftest import run_cli

PAPERS = config_choices("paper")
TIME_LIMIT_S = 180  # the slowest (pixel DrM) takes ~45 s on 2 busy cores


def rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    return read_metrics(run_dir / "train.jsonl"), read_metrics(run_dir / "eval.jsonl")


def online_rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Train rows and the smoke's evaluations at frames 0, 200, 400 (eval_every_frames 200, 400 frames)."""
    train, evals = rows(run_dir)
    assert train, "no train rows"
    assert [r["frame"] for r in evals] == [0, 200, 400]
    return train, evals


def check_stream(run_dir: Path) -> None:
    train, _ = online_rows(run_dir)
    assert all("td_error" in r for r in train)
    assert train[-1]["updates"] == train[-1]["step"], "stream agents update once per env step"
    assert not list((run_dir / "checkpoints").glob("*/replay")), "a stream agent stores no samples"


def check_replay_learner(*metrics: str) -> Callable[[Path], None]:
    def check(run_dir: Path) -> None:
        train, _ = online_rows(run_dir)
        learned = [r for r in train if r["updates"] > 0]
        assert learned and all(set(metrics) <= set(r) for r in learned), metrics
        assert list((run_dir / "checkpoints").glob("*/replay")), "the replay is checkpointed"

    return check


def check_drm(run_dir: Path) -> None:
    check_replay_learner("critic_loss", "actor_dormant_ratio", "exploit_lambda", "value_loss")(run_dir)
    _, evals = online_rows(run_dir)
    for r in evals:  # the dormant ratio drives the perturbation and the exploration schedule
        assert 0.0 <= r["dormant_ratio"] <= 1.0
        assert {"perturbations", "awaken_step", "exploration_std"} <= set(r)


def check_td3(run_dir: Path) -> None:
    check_replay_learner("critic_loss", "target_q")(run_dir)
    train, _ = online_rows(run_dir)
    learned = [r for r in train if r["updates"] > 0]
    # policy_delay 2: the actor learns on every second update only; rows averaging such updates show it
    assert any("actor_loss" in r for r in learned)


def check_ppo(run_dir: Path) -> None:
    train, _ = online_rows(run_dir)
    learned = [r for r in train if r["updates"] > 0]
    assert learned and all({"policy_loss", "value_loss", "approx_kl", "clipfrac"} <= set(r) for r in learned)
    assert train[-1]["updates"] == 400 // 64, "one update per full rollout (debug=smoke: 64 steps, one env)"
    assert not list((run_dir / "checkpoints").glob("*/replay")), "an on-policy agent keeps no replay"
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    state = torch.load(latest / "state.pt", weights_only=True)
    # the observation statistics are checkpointed: every observation acted on (400) counted once
    assert state["agent"]["obs_stats"]["count"] == pytest.approx(400, abs=1e-3)


def check_value_learner(outputs_per_action: int) -> Callable[[Path], None]:
    """DQN-family runs: replay updates logged; the checkpointed head has 6 MinAtar actions x outputs."""

    def check(run_dir: Path) -> None:
        check_replay_learner("loss", "q", "batch_reward")(run_dir)
        latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
        state = torch.load(latest / "state.pt", weights_only=True)
        assert state["agent"]["q"]["head.weight"].shape[0] == 6 * outputs_per_action

    return check


def check_distributional_dp(run_dir: Path) -> None:
    """The gamble MDP at CVaR_0.25: the stock-augmented DP reaches the brute-force optimum (3, always safe)
    and beats classic DP's always-gamble policy (-2.5), per-iteration rows logged for each DP."""
    values = json.loads((run_dir / "results.json").read_text())["values"]
    assert values["stock_vi"] == values["stock_pi"] == values["brute_force"] == pytest.approx(3.0)
    assert values["classic_vi"] == pytest.approx(-2.5)
    train, evals = rows(run_dir)
    assert {"stock_vi", "stock_pi", "classic_vi", "distributional_vi"} <= {r["method"] for r in train}
    assert all("bellman_residual" in r for r in train) and evals[-1]["episode_return"] == pytest.approx(3.0)


def check_sequence_rl(run_dir: Path) -> None:
    """J = 4 actions per decision (frames = 4 x decisions), the model trained beside the critic and actor,
    and the end-of-run FAS (debug=smoke: intervals 1, 2, 4) as the formula gives it from the returns."""
    from papers.sequence_rl.fas import frequency_averaged_score

    check_replay_learner("critic_loss", "model_loss", "actor_loss")(run_dir)
    train, _ = online_rows(run_dir)
    assert all(r["frame"] == 4 * r["step"] for r in train)
    fas = json.loads((run_dir / "fas.json").read_text())
    assert fas["intervals"] == [1, 2, 4] and len(fas["returns"]) == 3 and fas["max_return"] == 3600.0
    assert fas["fas"] == pytest.approx(
        frequency_averaged_score(fas["intervals"], fas["returns"], fas["max_return"], fas["offset"])
    )


def check_effective_horizon(run_dir: Path) -> None:
    """The 6-state slippery chain (T = 10): one step of value iteration on the random policy's Q is enough
    (min k = 1), the optimum is P(5 moves succeed within 10 tries), and SQIRL's search is recorded."""
    results = json.loads((run_dir / "results.json").read_text())
    p_done = sum(math.comb(t - 1, 4) * 0.8**5 * 0.2 ** (t - 5) for t in range(5, 11))
    assert results["analysis"]["min_k"] == 1
    assert results["analysis"]["optimal_return"] == pytest.approx(p_done)
    assert "sqirl_sample_complexity" in results


def check_offline(*metrics: str) -> Callable[[Path], None]:
    def check(run_dir: Path) -> None:
        train, evals = rows(run_dir)
        assert [r["step"] for r in evals] == [0, 100, 200]  # num_steps 200, eval_every_steps 100
        assert all(math.isfinite(r["normalized_score"]) for r in evals)
        assert train and all(set(metrics) <= set(r) for r in train), metrics

    return check


def check_d4rl(run_dir: Path, minari: Path) -> None:
    for split in SPLITS:
        assert (minari / "rlrepro" / "hopper" / f"{split}-v0" / "data" / "main_data.hdf5").exists(), split
    summary = json.loads((run_dir / "datasets.json").read_text())
    sizes = {s: row["transitions"] for s, row in summary["splits"].items()}
    # debug=smoke shrinks the splits to 1000 transitions (medium-expert: both halves)
    assert sizes["random"] == sizes["medium"] == sizes["expert"] == 1000 and sizes["medium-expert"] == 2000
    assert 0 < sizes["medium-replay"] < 400  # the behaviour replay up to the medium snapshot
    refs = json.loads((run_dir / "behaviour" / "references.json").read_text())
    assert set(refs) == {"ref_min_score", "ref_max_score"}


def check_synther(run_dir: Path) -> None:
    out = run_dir / "synther"
    fit = json.loads((out / "fit.json").read_text())  # the upsampler's fit ...
    assert math.isfinite(fit["loss"]) and (out / "upsampler.pt").exists()
    quality = json.loads((out / "quality.json").read_text())  # ... and the synthetic data's quality report
    assert 0.0 <= quality["action_out_of_bounds"] <= 1.0 and math.isfinite(quality["mean_abs_z"])
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores and all(math.isfinite(v) for s in scores.values() for v in s.values())


@dataclass(frozen=True)
class Case:
    env: str
    check: Callable[[Path], None] | None = None  # None: the generator's own check (needs the datasets dir)
    dataset: str | None = None  # offline papers train from the session's tiny D4RL split
    skip: str | None = None


OFFLINE = "medium-replay"
CASES: dict[str, Case] = {
    "bc": Case("hopper", check_offline("actor_loss"), OFFLINE),
    "cql": Case("hopper", check_offline("critic_loss", "cql_diff", "policy_loss", "alpha"), OFFLINE),
    "d4rl": Case("hopper"),
    "dataset_perspective": Case(
        "cartpole", skip="tests/test_dataset_perspective.py runs it (one learner: nine cost a minute)"
    ),
    "dqn": Case("minatar", check_value_learner(1)),  # Huber: one value per action
    "dual_rl": Case("hopper", check_offline("value_loss", "critic_loss", "actor_loss"), OFFLINE),  # f-DVL
    "distributional_dp": Case("mdp_gamble", check_distributional_dp),
    "drm": Case("cartpole_swingup", skip="tests/test_drm.py runs it on dog, with check_drm's checks"),
    "drqv2": Case(
        "cheetah_run", skip="tests/test_run.py runs it, checks its run directory, kills and resumes it"
    ),
    "effective_horizon": Case("mdp_chain", check_effective_horizon),
    "hl_gauss": Case("minatar", check_value_learner(51)),  # HL-Gauss: 51 logits per action
    "iql": Case("hopper", check_offline("value_loss", "critic_loss", "actor_loss", "adv_weight"), OFFLINE),
    "mbtl": Case(
        "cartpole_context", skip="tests/test_mbtl.py runs it end to end (its PPO sub-runs included)"
    ),
    "mex": Case("hopper_sparse", check_replay_learner("critic_loss", "td_loss", "optimism", "q_pi")),
    "ppo": Case("pendulum", check_ppo),
    "sequence_rl": Case("hopper", check_sequence_rl),
    "sac": Case("pendulum", check_replay_learner("critic_loss", "actor_loss", "alpha", "entropy")),
    "snapshot_rl": Case("hopper", skip="needs a teacher run: tests/test_snapshot_rl.py makes one, runs it"),
    "ssorl": Case("hopper", check_offline("critic_loss", "actor_loss", "bc_loss"), OFFLINE),  # TD3+BC learner
    "stream_ac": Case("pendulum", check_stream),
    "stream_q": Case("cartpole", check_stream),
    "stream_td": Case("pendulum", check_stream),
    "synther": Case("hopper", check_synther, OFFLINE),
    "td3": Case("pendulum", check_td3),
    "td3bc": Case("hopper", check_offline("critic_loss", "actor_loss", "bc_loss", "lmbda"), OFFLINE),
    "uni_o4": Case("hopper", skip="tests/test_uni_o4.py runs it, offline and online, and resumes it"),
    "xql": Case("hopper", check_offline("value_loss", "critic_loss", "actor_loss", "adv_weight"), OFFLINE),
}


@pytest.mark.parametrize("paper", PAPERS)
def test_smoke_run(paper: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    case = CASES.get(paper)
    assert case is not None, f"add paper={paper} to CASES in tests/test_smoke.py (a cheap env, what to check)"
    if case.skip:
        pytest.skip(case.skip)
    run_dir, args = tmp_path / "run", [f"paper={paper}", f"env={case.env}"]
    if case.dataset is not None:
        minari = request.getfixturevalue("tiny_d4rl")["root"]  # made once per session, shared
        args.append(f"dataset={case.dataset}")
    else:
        minari = tmp_path / "minari"  # empty: the generator writes here
    proc = run_cli(
        *args,
        "debug=smoke",
        f"hydra.run.dir={run_dir}",
        env={"MINARI_DATASETS_PATH": str(minari)},
        timeout=TIME_LIMIT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    if case.check is None:
        check_d4rl(run_dir, minari)
    else:
        case.check(run_dir)
