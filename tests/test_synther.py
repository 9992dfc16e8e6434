"""SynthER plugin: config shape, validation, and end-to-end online and offline runs through `run.py`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from common.logger import read_metrics
from common.registry import CONF_DIR
from tests.conftest import assert_kill_and_resume_identical, run_cli


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# Tiny upsampler settings shared by the smoke runs (sizes mean nothing; every code path runs).
TINY = (
    "debug=smoke",
    "synther.preset=cpu",
    "synther.diffusion.train_steps=40",
    "synther.diffusion.sample_steps=4",
    "synther.diffusion.width=32",
    "synther.diffusion.num_blocks=1",
)
ONLINE = (
    "paper=synther",
    "env=hopper",
    "synther.mode=online",
    *TINY,
    "synther.online.retrain_every_frames=150",
    "synther.online.num_samples=400",
    "synther.online.dynamics_check=50",
    "paper.train.updates_per_step=2",
)


def test_the_global_config_adds_only_the_synther_key_and_rebinds_paper() -> None:
    sac, synther = _compose("paper=sac", "env=hopper"), _compose("paper=synther", "env=hopper")
    assert set(synther) - set(sac) == {"synther"}
    for key in set(sac) - {"paper"}:
        assert synther[key] == sac[key], key  # nothing else is touched by the global package
    assert synther.paper.entry == sac.paper.entry  # SAC's agent, unchanged
    assert synther.paper.train.updates_per_step == 20
    # SAC's agent settings but REDQ's policy_update_delay=20: the actor learns once per env step
    assert synther.paper.agent.actor_update_every == 20 and sac.paper.agent.actor_update_every == 1
    delay = ("actor_update_every", "updates_per_step")  # the latter interpolates paper.train's
    rest = lambda agent: {k: v for k, v in agent.items() if k not in delay}  # noqa: E731
    assert rest(synther.paper.agent) == rest(sac.paper.agent)


def test_presets_and_modes_select_the_official_and_cpu_sizes() -> None:
    online = _compose("paper=synther", "env=cheetah_run", "synther.mode=online").synther.diffusion
    offline = _compose("paper=synther", "env=hopper").synther.diffusion
    cpu = _compose("paper=synther", "env=hopper", "synther.preset=cpu").synther.diffusion
    assert (online.width, online.dim_t, online.sample_steps) == (1024, 256, 128)
    assert (offline.width, offline.dim_t, offline.batch_size) == (2048, 128, None)
    assert cpu.width == 256 or cpu.width == 512
    assert _compose("paper=synther", "env=cheetah_run").synther.diffusion.skip_reward_norm  # DMC paper_env
    assert not offline.skip_reward_norm
    cfg = _compose("paper=synther", "env=hopper", "synther.mode=online")
    assert cfg.paper.loop == "papers.synther.online.train"


def test_bad_settings_fail_in_one_line_before_the_run_directory(tmp_path: Path) -> None:
    for i, (override, message) in enumerate(
        [
            ("synther.online.synthetic_fraction=1.5", "synthetic_fraction=1.5 not in [0, 1]"),
            ("synther.diffusion.sampler=ddim", "sampler='ddim'"),
            ("paper.buffer.nstep=3", "synthetic transitions are one-step"),
        ]
    ):
        run_dir = tmp_path / str(i)
        proc = run_cli(*ONLINE, override, f"hydra.run.dir={run_dir}", timeout=60)
        assert proc.returncode == 2, proc.stderr[-500:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, last
        assert not (run_dir / "config.yaml").exists()
    proc = run_cli("paper=synther", "env=hopper", f"hydra.run.dir={tmp_path / 'x'}", timeout=60)
    assert proc.returncode == 2 and "choose a dataset" in proc.stderr


def test_online_smoke_retrains_mixes_reports_and_checkpoints_the_upsampler(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_cli(*ONLINE, f"hydra.run.dir={run_dir}", check=True, timeout=120)
    fits = [json.loads(line) for line in (run_dir / "synther.jsonl").read_text().splitlines()]
    assert [f["step"] for f in fits] == [150, 300] and [f["fit"] for f in fits] == [1, 2]
    for f in fits:
        assert np.isfinite(f["synther_dynamics_error"]) and 0 <= f["synther_action_out_of_bounds"] <= 1
        assert len(f["per_dim"]["real_mean"]) == 2 * 11 + 3 + 1  # [s, a, r, s'] of Hopper
    rows = read_metrics(run_dir / "train.jsonl")
    assert sum("synther_loss" in r for r in rows) == 2
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    assert (latest / "replay" / "synther" / "upsampler.pt").exists()
    assert np.load(latest / "replay" / "synther" / "synthetic" / "rewards.npy").shape == (400,)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_online_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    # The kill lands after the first fit (150) and before the second (300): the resumed run must sample
    # the restored synthetic buffer and refit at 300 exactly as the uninterrupted one.
    assert_kill_and_resume_identical(ONLINE, tmp_path)


def test_offline_smoke_scores_every_learner_on_real_synthetic_and_both(
    tiny_d4rl: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = (
        "paper=synther",
        "env=hopper",
        "dataset=medium-replay",
        *TINY,
        "synther.offline.num_samples=300",
        "synther.offline.num_steps=60",
        "synther.offline.dynamics_check=50",
        "synther.offline.algos=[td3bc,iql]",
        "synther.offline.train_on=[real,synthetic,both]",
        "synther.offline.td3bc.train.eval_every_steps=30",
        "synther.offline.iql.train.eval_every_steps=30",
        "synther.offline.td3bc.train.eval_episodes=1",
        "synther.offline.iql.train.eval_episodes=1",
        f"hydra.run.dir={run_dir}",
    )
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    run_cli(*args, env=env, check=True, timeout=120)
    scores = json.loads((run_dir / "scores.json").read_text())
    assert set(scores) == {"td3bc", "iql"} and all(
        set(s) == {"real", "synthetic", "both"} for s in scores.values()
    )
    # IQL's reward scale needs episode returns: it trains on synthetic data only because `prepare` saw the
    # real dataset (SynthER's normalisers come from real data).
    assert all(np.isfinite(v) for s in scores.values() for v in s.values())
    with np.load(run_dir / "synther" / "synthetic.npz") as z:
        assert z["actions"].shape == (300, 3) and np.abs(z["actions"]).max() <= 1.0  # clipped
        assert z["terminations"].dtype == bool
    quality = json.loads((run_dir / "synther" / "quality.json").read_text())
    assert quality["dynamics_error_real"] < 1e-3 < quality["dynamics_error"]  # the checker, on real data: ~0
    evals = read_metrics(run_dir / "iql_synthetic" / "eval.jsonl")
    assert [r["step"] for r in evals] == [0, 30, 60]
    status = json.loads((run_dir / "status.json").read_text())
    # the run's score is a raw return, like every run's; scores.json holds its D4RL normalisation
    final = read_metrics(run_dir / "td3bc_synthetic" / "eval.jsonl")[-1]
    assert status["state"] == "finished" and status["score"] == pytest.approx(final["episode_return"])
    assert scores["td3bc"]["synthetic"] == pytest.approx(final["normalized_score"])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["dataset"]["split"] == "medium-replay" and "ref_max_score" in info["dataset"]
    # a second start of the finished run directory reuses everything (no refit, no retraining)
    stamp = (run_dir / "synther" / "synthetic.npz").stat().st_mtime
    run_cli(f"resume={run_dir}", env=env, check=True, timeout=60)
    assert (run_dir / "synther" / "synthetic.npz").stat().st_mtime == stamp


def test_offline_resume_without_saved_samples_draws_again_but_never_refits(
    tiny_d4rl: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = (
        "paper=synther",
        "env=hopper",
        "dataset=medium-replay",
        *TINY,
        "synther.offline.num_samples=200",
        "synther.offline.num_steps=20",
        "synther.offline.dynamics_check=0",
        "synther.offline.save_samples=false",
        "synther.offline.algos=[td3bc]",
        "synther.offline.train_on=[synthetic]",
        "synther.offline.td3bc.train.eval_every_steps=20",
        "synther.offline.td3bc.train.eval_episodes=1",
        f"hydra.run.dir={run_dir}",
    )
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    run_cli(*args, env=env, check=True, timeout=120)
    model = run_dir / "synther" / "upsampler.pt"
    assert model.exists() and not (run_dir / "synther" / "synthetic.npz").exists()
    stamp = model.stat().st_mtime_ns
    proc = run_cli(f"resume={run_dir}", env=env, check=True, timeout=120)
    assert model.stat().st_mtime_ns == stamp  # the fitted model was loaded, not trained again
    assert "fitted on" in proc.stdout
