"""SynthER plugin: config shape, validation, and end-to-end online and offline runs through `run.py`."""

from __future__ import annotations

import json
import time
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


# Tiny upsampler settings shared by the smoke runs (sizes mean nothing; every code path runs): the smoke
# preset, named explicitly so that these tests do not depend on what `debug=smoke` selects.
TINY = ("debug=smoke", "synther.preset=smoke")
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
    online_cfg = _compose("paper=synther", "env=cheetah_run", "synther.mode=online")
    online = online_cfg.synther.diffusion
    offline_cfg = _compose("paper=synther", "env=hopper")
    offline = offline_cfg.synther.diffusion
    cpu = _compose("paper=synther", "env=hopper", "synther.preset=cpu").synther.diffusion
    assert online_cfg.synther.preset == "paper"  # no debug_preset: the official sizes
    assert (online.width, online.dim_t, online.sample_steps) == (1024, 256, 128)
    assert online_cfg.synther.online.retrain_every_frames == 10000
    assert online_cfg.paper.train.updates_per_step == 20
    assert (offline.width, offline.dim_t, offline.batch_size) == (2048, 128, None)
    o = offline_cfg.synther.offline
    for learner in (o.td3bc.train, o.iql.train):  # CORL: 1M steps, 10 episodes every 5000
        assert (learner.num_steps, learner.eval_every_steps, learner.eval_episodes) == (1_000_000, 5000, 10)
    assert cpu.width == 256 or cpu.width == 512
    assert _compose("paper=synther", "env=cheetah_run").synther.diffusion.skip_reward_norm  # DMC paper_env
    assert not offline.skip_reward_norm
    cfg = _compose("paper=synther", "env=hopper", "synther.mode=online")
    assert cfg.paper.loop == "papers.synther.online.train"


# SynthER's IQL is CORL's (synther/corl/algorithms/iql.py) with synther/corl/yaml/iql/<env>/<dataset>_v2.yaml,
# read by hand at conglu1997/SynthER @e6835a5: (normalize, normalize_reward, iql_deterministic, tau, beta,
# iql_tau) per dataset; normalize_reward true is CORL's `RewardNormalizer`, the IQL plugin's `locomotion`
# scaling. The IQL plugin (the official JAX IQL) has normalize_states false, locomotion scaling on every
# locomotion dataset, a Gaussian policy, tau 0.005, beta 3, expectile 0.7.
SYNTHER_IQL = {
    ("hopper", "medium-replay"): (True, "locomotion", "deterministic", 0.001, 3.0, 0.7),
    ("hopper", "medium"): (True, "locomotion", "deterministic", 0.001, 3.0, 0.7),
    ("hopper", "medium-expert"): (True, "none", "gaussian", 0.005, 6.0, 0.5),
    ("hopper", "random"): (True, "none", "gaussian", 0.005, 3.0, 0.7),
    ("walker2d", "medium-replay"): (True, "none", "gaussian", 0.005, 3.0, 0.7),
    ("halfcheetah", "medium"): (True, "none", "gaussian", 0.005, 3.0, 0.7),
}
IQL_KEYS = ("normalize_states", "reward_scaling", "policy", "tau", "temperature", "expectile")


@pytest.mark.parametrize(("env", "dataset"), sorted(SYNTHER_IQL))
def test_offline_learners_take_synthers_per_dataset_corl_settings(env: str, dataset: str) -> None:
    from papers.synther.offline import learner_config

    cfg = _compose("paper=synther", f"env={env}", f"dataset={dataset}")
    iql = cfg.synther.offline.iql.agent
    assert tuple(iql[k] for k in IQL_KEYS) == SYNTHER_IQL[(env, dataset)]
    # what the shared offline loop reads is the same (the config itself is not modified)
    sub = learner_config(cfg, "iql").paper.agent
    assert tuple(sub[k] for k in IQL_KEYS) == SYNTHER_IQL[(env, dataset)]
    plugin = _compose("paper=iql", f"env={env}", f"dataset={dataset}").paper.agent
    for key in set(plugin) - set(IQL_KEYS) - {"max_steps"}:
        assert iql[key] == plugin[key], key  # everything else is the IQL plugin's
    # every td3_bc/*_v2.yaml equals the TD3+BC plugin (alpha 2.5, states normalised, no reward scaling)
    td3bc = _compose("paper=td3bc", f"env={env}", f"dataset={dataset}").paper
    assert cfg.synther.offline.td3bc.agent == td3bc.agent
    assert cfg.synther.offline.td3bc.buffer == td3bc.buffer


def test_hopper_medium_replay_iql_differs_from_the_iql_plugin_in_three_keys() -> None:
    synther = _compose("paper=synther", "env=hopper", "dataset=medium-replay").synther.offline.iql.agent
    plugin = _compose("paper=iql", "env=hopper", "dataset=medium-replay").paper.agent
    differ = {k for k in plugin if k != "max_steps" and synther[k] != plugin[k]}
    assert differ == {"normalize_states", "policy", "tau"}
    assert (synther.normalize_states, synther.policy, synther.tau) == (True, "deterministic", 0.001)
    assert (plugin.normalize_states, plugin.policy, plugin.tau) == (False, "gaussian", 0.005)
    # a command-line value still wins over the per-dataset table
    tau = "synther.offline.iql.agent.tau=0.002"
    cfg = _compose("paper=synther", "env=hopper", "dataset=medium-replay", tau)
    assert cfg.synther.offline.iql.agent.tau == 0.002


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


# ------------------------------------------------------------------------------ `debug=smoke` alone


def _smoke_selects_the_smoke_preset(*overrides: str) -> None:
    cfg = _compose("paper=synther", *overrides, "debug=smoke")
    assert cfg.synther.preset == "smoke", (
        "debug=smoke must select synther.presets.smoke: conf/debug/smoke.yaml needs the top-level line "
        "`debug_preset: smoke` (conf/paper/synther.yaml reads it as synther.preset)"
    )


def test_debug_smoke_alone_runs_the_online_pipeline_in_seconds(tmp_path: Path) -> None:
    _smoke_selects_the_smoke_preset("env=cheetah_run", "synther.mode=online")
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    args = ("paper=synther", "env=cheetah_run", "synther.mode=online", "debug=smoke")
    run_cli(*args, f"hydra.run.dir={run_dir}", check=True, timeout=120)
    assert time.perf_counter() - start < 60
    fits = [json.loads(line) for line in (run_dir / "synther.jsonl").read_text().splitlines()]
    assert [f["step"] for f in fits] == [150, 300]  # retrained twice inside the 400 frames
    for f in fits:  # each fit's quality report: cheetah_run's [s, a, r, s'] = 2 * 17 + 6 + 1 dims
        assert len(f["per_dim"]["syn_mean"]) == 41 and np.isfinite(f["synther_mean_abs_z"])
    rows = read_metrics(run_dir / "train.jsonl")
    assert sum("synther_loss" in r for r in rows) == 2
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    assert np.load(latest / "replay" / "synther" / "synthetic" / "rewards.npy").shape == (400,)  # drawn
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_debug_smoke_alone_runs_the_offline_pipeline_in_seconds(
    tiny_d4rl: dict[str, Path], tmp_path: Path
) -> None:
    _smoke_selects_the_smoke_preset("env=hopper", "dataset=medium-replay")
    run_dir = tmp_path / "run"
    env = {"MINARI_DATASETS_PATH": str(tiny_d4rl["root"])}
    start = time.perf_counter()
    args = ("paper=synther", "env=hopper", "dataset=medium-replay", "debug=smoke")
    run_cli(*args, f"hydra.run.dir={run_dir}", env=env, check=True, timeout=120)
    assert time.perf_counter() - start < 60
    out = run_dir / "synther"
    assert json.loads((out / "fit.json").read_text())["loss"] > 0  # fitted
    quality = json.loads((out / "quality.json").read_text())
    assert quality["samples"] == 300 and np.isfinite(quality["dynamics_error"])  # reported
    with np.load(out / "synthetic.npz") as z:
        assert z["rewards"].shape == (300,)  # drawn
    for kind in ("real", "synthetic"):  # TD3+BC (the default learner) trained a few steps on each
        evals = read_metrics(run_dir / f"td3bc_{kind}" / "eval.jsonl")
        assert [r["step"] for r in evals] == [0, 20, 40]
    assert set(json.loads((run_dir / "scores.json").read_text())["td3bc"]) == {"real", "synthetic"}
