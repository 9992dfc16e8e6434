"""D4RL-protocol datasets: generation (papers/d4rl), Minari round trip, normalised scores, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError, DatasetError
from common.evaluation.normalization import normalized_score
from common.logger import read_metrics
from common.offline.data import OfflineData, OfflineSampler
from common.offline.minari_io import SPLITS, dataset_dir, episode_starts, load_dataset, write_dataset
from tests.conftest import run_cli


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def toy_data(n: int = 300, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> OfflineData:
    """Contiguous episodes of 100 steps (time limits), one terminal at row 150."""
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    trunc[99::100] = True
    term[150] = True
    states[151] = rng.normal(size=obs_dim)  # a new episode starts after the terminal
    return OfflineData(
        observations=states[:-1],
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=np.where(term[:, None], rng.normal(size=(n, obs_dim)), states[1:]).astype(
            np.float32
        ),
        terminations=term,
        truncations=trunc,
        episode_starts=episode_starts(term, trunc),
        metadata={"ref_min_score": -10.0, "ref_max_score": 90.0},
    )


# ------------------------------------------------------------------------------- normalised score


def test_normalized_score_by_hand() -> None:
    assert normalized_score(40.0, random=-10.0, expert=90.0) == pytest.approx(50.0)
    assert normalized_score(-10.0, -10.0, 90.0) == pytest.approx(0.0)
    assert normalized_score(90.0, -10.0, 90.0) == pytest.approx(100.0)
    assert normalized_score(140.0, -10.0, 90.0) == pytest.approx(150.0)  # above expert is allowed
    # D4RL hopper references (d4rl infos.py: random -20.272305, expert 3234.3): 1620.27 / 3254.57
    assert normalized_score(1600.0, -20.272305, 3234.3) == pytest.approx(49.7845, abs=1e-4)
    np.testing.assert_allclose(normalized_score(np.array([0.0, 5.0]), 0.0, 10.0), [0.0, 50.0])
    with pytest.raises(ConfigError, match="expert != random"):
        normalized_score(1.0, 3.0, 3.0)


# ------------------------------------------------------------------------------------ Minari format


def test_episode_starts() -> None:
    term = np.array([0, 0, 1, 0, 0, 0], bool)
    trunc = np.array([0, 0, 0, 0, 1, 0], bool)
    assert episode_starts(term, trunc).tolist() == [0, 3, 5]


def test_write_then_load_round_trips(minari_root: Path) -> None:
    data = toy_data()
    path = write_dataset("toy", "medium", data, {"policy": {"kind": "test"}})
    assert path == minari_root / "rlrepro" / "toy" / "medium-v0"
    assert (path / "data" / "main_data.hdf5").exists()
    back = load_dataset("toy", "medium")
    for key in ("observations", "actions", "rewards", "next_observations", "terminations"):
        np.testing.assert_array_equal(getattr(back, key), getattr(data, key), err_msg=key)
    assert back.truncations[-1]  # the budget cut the last episode: marked as a truncation
    np.testing.assert_array_equal(back.truncations[:-1], data.truncations[:-1])
    assert back.episode_starts.tolist() == [0, 100, 151, 200]
    assert back.metadata["ref_min_score"] == -10.0 and back.metadata["ref_max_score"] == 90.0
    assert back.metadata["policy"] == {"kind": "test"}
    np.testing.assert_allclose(
        back.episode_returns(),
        [data.rewards[a:b].sum() for a, b in [(0, 100), (100, 151), (151, 200), (200, 300)]],
        rtol=1e-5,
    )


def test_gymnasium_datasets_keep_reference_scores_in_minari_metadata(minari_root: Path) -> None:
    import minari

    write_dataset("hopper", "expert", toy_data(obs_dim=11, act_dim=3), {}, gym_id="Hopper-v5")
    meta = minari.load_dataset("rlrepro/hopper/expert-v0").storage.metadata
    assert meta["ref_min_score"] == -10.0 and meta["ref_max_score"] == 90.0


def test_sampler_discount_is_zero_at_terminals() -> None:
    data = toy_data()
    sampler = OfflineSampler(data, discount=0.99, seed=0)
    batch = sampler.sample(4096)
    idx = [int(np.flatnonzero((data.observations == o).all(1))[0]) for o in batch.obs]
    assert data.terminations[idx].any() and not data.terminations[idx].all()  # both kinds were drawn
    expected = np.where(data.terminations[idx], 0.0, 0.99)
    np.testing.assert_allclose(batch.discount[:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(batch.next_obs, data.next_observations[idx])
    np.testing.assert_array_equal(batch.reward[:, 0], data.rewards[idx])
    state = sampler.get_rng_state()
    a = sampler.sample(8).obs
    sampler.set_rng_state(state)
    np.testing.assert_array_equal(sampler.sample(8).obs, a)  # the RNG state restores the draws


# ------------------------------------------------------------------------------------- bad input


def test_missing_dataset_names_the_command(minari_root: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"not found .*generate it with: python run.py paper=d4rl env=hopper"
    ):
        load_dataset("hopper", "medium")


def test_unknown_split() -> None:
    with pytest.raises(ConfigError, match="not a D4RL split; choose one of random, medium, medium-replay"):
        load_dataset("hopper", "medium_replay")


def test_corrupt_file_is_reported(minari_root: Path) -> None:
    path = write_dataset("toy", "expert", toy_data(), {})
    (path / "data" / "main_data.hdf5").write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(DatasetError, match="unreadable .*delete .*regenerate"):
        load_dataset("toy", "expert")


def test_dataset_of_another_env_is_refused(minari_root: Path) -> None:
    from common.envs.base import EnvSpec

    write_dataset("toy", "random", toy_data(obs_dim=3), {})
    copied = dataset_dir("other", "random")
    shutil.copytree(dataset_dir("toy", "random"), copied)
    with pytest.raises(DatasetError, match="holds a dataset for env=toy"):
        load_dataset("other", "random")
    spec = EnvSpec((11,), np.dtype(np.float32), (11,), 1, (3,), 1, 1000, False)
    with pytest.raises(DatasetError, match=r"observations \(3,\) .*gives \(11,\).*another env"):
        load_dataset("toy", "random", spec)


def test_existing_dataset_is_not_overwritten(minari_root: Path) -> None:
    write_dataset("toy", "medium", toy_data(seed=1), {})
    before = (dataset_dir("toy", "medium") / "data" / "main_data.hdf5").read_bytes()
    with pytest.raises(DatasetError, match="already exists"):
        write_dataset("toy", "medium", toy_data(seed=2), {})
    assert (dataset_dir("toy", "medium") / "data" / "main_data.hdf5").read_bytes() == before


# --------------------------------------------------------------------------------- the generator


def test_generation_writes_all_five_splits(tiny_d4rl: dict[str, Path]) -> None:
    from omegaconf import OmegaConf

    from common.envs import make_env

    root, run = tiny_d4rl["root"], tiny_d4rl["run"]
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        summary = json.loads((run / "datasets.json").read_text())
        cfg = OmegaConf.load(run / "config.yaml")
        env = make_env(cfg.env, pixels=False, action_repeat=1, frame_stack=1, image_size=84, seed=0)
        splits = {s: load_dataset("hopper", s, env.spec) for s in SPLITS}
        env.close()
    finally:
        os.environ.pop("MINARI_DATASETS_PATH")
    ref_min, ref_max = summary["ref_min_score"], summary["ref_max_score"]
    for name, data in splits.items():
        assert data.observations.shape[1:] == (11,) and data.actions.shape[1:] == (3,), name
        assert np.all(np.abs(data.actions) <= 1.0), name
        assert data.metadata["ref_min_score"] == ref_min and data.metadata["ref_max_score"] == ref_max
        assert data.metadata["split"] == name and data.metadata["env"] == "hopper"
        # consecutive rows of an episode chain: s'_t == s_{t+1}
        starts = set(data.episode_starts.tolist())
        inner = np.array([i for i in range(len(data) - 1) if i + 1 not in starts])
        np.testing.assert_array_equal(data.next_observations[inner], data.observations[inner + 1])
    for name in ("random", "medium", "expert"):
        assert len(splits[name]) == 1000
    # medium-expert is the medium split followed by the expert split (D4RL: equal amounts of both)
    me = splits["medium-expert"]
    assert len(me) == 2000
    np.testing.assert_array_equal(me.observations[:1000], splits["medium"].observations)
    np.testing.assert_array_equal(me.actions[1000:], splits["expert"].actions)
    # medium-replay: the SAC replay up to the medium snapshot, i.e. the first transitions of training
    medium = splits["medium"].metadata["policy"]
    replay = splits["medium-replay"]
    assert medium["kind"] == "SAC snapshot" and medium["frame"] in (200,)  # smoke: snapshots at 0, 200, 400
    assert len(replay) == medium["frame"]  # every transition collected before the medium snapshot
    train_rows = read_metrics(run / "train.jsonl")
    first_return = train_rows[0]["episode_return"]
    first_len = train_rows[0]["episode_length"]
    assert replay.rewards[:first_len].sum() == pytest.approx(first_return, rel=1e-4)
    # the policy that produced each split is recorded, and its weights load
    expert_dir = dataset_dir("hopper", "expert").relative_to(dataset_dir("hopper", "expert").parents[2])
    weights = torch.load(root / expert_dir / "policy.pt", weights_only=True)
    assert "actor" in weights
    assert splits["random"].metadata["policy"]["kind"] == "randomly initialised SAC actor"
    assert summary["splits"]["expert"]["transitions"] == 1000


def test_generation_refuses_to_overwrite_before_training(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    root = tiny_d4rl["root"]
    data_file = root / "rlrepro" / "hopper" / "medium-v0" / "data" / "main_data.hdf5"
    before = data_file.stat().st_mtime_ns
    proc = run_cli(
        "paper=d4rl",
        "env=hopper",
        "debug=smoke",
        f"hydra.run.dir={tmp_path / 'again'}",
        env={"MINARI_DATASETS_PATH": str(root)},
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: dataset rlrepro/hopper/random-v0 already exists")
    )
    assert not (tmp_path / "again" / "config.yaml").exists()  # nothing started
    assert data_file.stat().st_mtime_ns == before


def test_generation_checks_sizes_first(tmp_path: Path) -> None:
    proc = run_cli(
        "paper=d4rl",
        "env=hopper",
        "debug=smoke",
        "paper.buffer.capacity=300",
        f"hydra.run.dir={tmp_path / 'r'}",
        env={"MINARI_DATASETS_PATH": str(tmp_path / "m")},
    )
    assert proc.returncode == 2
    assert "medium-replay needs every training sample; raise the capacity" in proc.stderr
    proc = run_cli(
        "paper=d4rl",
        "env=hopper",
        "debug=smoke",
        "paper.datasets.splits=[medium,best]",
        f"hydra.run.dir={tmp_path / 'r2'}",
        env={"MINARI_DATASETS_PATH": str(tmp_path / "m")},
    )
    assert proc.returncode == 2 and "dataset=best is not a D4RL split" in proc.stderr


def test_offline_runs_refuse_missing_or_unknown_datasets_before_starting(tmp_path: Path) -> None:
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "empty")}
    cases = [
        ("dataset=medium", "error: dataset rlrepro/hopper/medium-v0 not found under "),
        ("dataset=best", "error: dataset=best is not a D4RL split; choose one of random, medium,"),
        ("dataset=null", "error: paper=td3bc learns offline: choose a dataset, e.g. dataset=medium"),
    ]
    for i, (choice, message) in enumerate(cases):
        run_dir = tmp_path / f"run{i}"
        proc = run_cli("paper=td3bc", "env=hopper", choice, f"hydra.run.dir={run_dir}", env=env)
        assert proc.returncode == 2, proc.stderr[-500:]
        assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-500:]
        assert not (run_dir / "config.yaml").exists()  # refused before anything was written
        if choice == "dataset=medium":
            assert proc.stderr.strip().endswith("generate it with: python run.py paper=d4rl env=hopper")


# ----------------------------------------------------------------------------- reference returns


def test_reference_episodes_default_to_d4rls_100_and_smoke_shrinks_the_generator() -> None:
    from hydra import compose, initialize_config_dir

    from common.registry import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose(config_name="config", overrides=["paper=d4rl", "env=hopper"]).paper.datasets
        chosen = compose(
            config_name="config",
            overrides=["paper=d4rl", "env=hopper", "paper.datasets.reference_episodes=7"],
        ).paper.datasets
        smoke = compose(config_name="config", overrides=["paper=d4rl", "env=hopper", "debug=smoke"]).paper
    # D4RL scripts/reference_scores/generate_ref_min_score.py, adroit_expert.py: --num_episodes 100
    assert (full.reference_episodes, full.size, full.require_expert_above_random) == (100, 1_000_000, True)
    assert chosen.reference_episodes == 7  # still configurable
    assert (smoke.datasets.size, smoke.datasets.reference_episodes) == (1000, 10)
    assert smoke.datasets.require_expert_above_random is False and smoke.train.num_frames == 400


@pytest.mark.parametrize(("ref_min", "ref_max"), [(19.4, 10.9), (5.0, 5.0), (0.0, float("nan"))])
def test_an_expert_not_above_random_is_refused_naming_both_returns_and_the_fix(
    ref_min: float, ref_max: float
) -> None:
    from papers.d4rl.generate import check_references

    with pytest.raises(DatasetError) as err:
        check_references({"ref_min_score": ref_min, "ref_max_score": ref_max}, num_frames=400)
    message = str(err.value)
    assert "\n" not in message and f"({ref_max:.4g})" in message and f"({ref_min:.4g})" in message
    assert "no dataset was written" in message and "paper.train.num_frames, now 400" in message
    check_references({"ref_min_score": 10.9, "ref_max_score": 19.4}, num_frames=400)  # the right way round


def _copy_behaviour_run(tiny_d4rl: dict[str, Path], dest: Path, refs: dict[str, float] | None) -> Path:
    """The tiny run's phase-1 output (config, evaluations, snapshots, checkpoints) without its splits, with
    the reference check on and `refs` as its measured references (None: measured again)."""
    from omegaconf import OmegaConf

    shutil.copytree(tiny_d4rl["run"], dest)
    (dest / "datasets.json").unlink()
    refs_file = dest / "behaviour" / "references.json"
    refs_file.unlink()
    if refs is not None:
        refs_file.write_text(json.dumps(refs))
    from common.runtime import config_hash

    cfg = OmegaConf.load(dest / "config.yaml")
    cfg.paper.datasets.require_expert_above_random = True
    OmegaConf.save(cfg, dest / "config.yaml")
    info = json.loads((dest / "run.json").read_text())  # as if the run had started with this config:
    info["config_hash"] = config_hash(cfg)  # a resume refuses a config.yaml edited after the start
    (dest / "run.json").write_text(json.dumps(info))
    return dest


def test_generation_refuses_an_expert_below_random_before_writing_anything(
    tiny_d4rl: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omegaconf import OmegaConf

    import papers.d4rl.generate as generate
    from common.runtime import RunContext, StopFlag

    run = _copy_behaviour_run(tiny_d4rl, tmp_path / "run", refs=None)
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    monkeypatch.setattr(
        generate, "_references", lambda cfg, env, expert: {"ref_min_score": 19.4, "ref_max_score": 10.9}
    )
    cfg = OmegaConf.load(run / "config.yaml")
    ctx = RunContext(run_dir=run, device=torch.device("cpu"), resuming=True, stop=StopFlag())
    with pytest.raises(DatasetError, match=r"expert's reference return \(10\.9\) is not above .*\(19\.4\)"):
        generate.write_splits(cfg, ctx)  # type: ignore[arg-type]
    assert not root.exists() and not (run / "datasets.json").exists()
    assert not (run / "behaviour" / "references.json").exists()  # a rerun measures them again


def test_cli_refusal_is_one_line_exit_2(tiny_d4rl: dict[str, Path], tmp_path: Path) -> None:
    # resuming the finished behaviour run goes straight to phase 2, which reads these references
    run = _copy_behaviour_run(tiny_d4rl, tmp_path / "run", {"ref_min_score": 30.0, "ref_max_score": 30.0})
    root = tmp_path / "minari"
    proc = run_cli(f"resume={run}", env={"MINARI_DATASETS_PATH": str(root)}, timeout=120)
    assert proc.returncode == 2, proc.stderr[-1000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the expert's reference return (30) is not above the random policy's (30)")
    assert last.endswith("train the behaviour policy longer in a new run (paper.train.num_frames, now 400)")
    assert not root.exists() and not (run / "datasets.json").exists()
