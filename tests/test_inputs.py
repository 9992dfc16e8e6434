"""Refused commands: one line each, and nothing written or rewritten (no run directory, no `.hydra/`
provenance changed); typos in paper_env/experiment files are caught like typos on the command line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from common.config import check_group_files
from common.errors import ConfigError
from common.registry import CONF_DIR, config_choices


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("[")]  # absl's logs
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------- item 11: nothing left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["seed=abc"], "seed='abc' has the wrong type"),
        (["paper.train.num_frames=-5"], "num_frames=-5 must be positive"),
        (["device=gpu"], "device='gpu' is not a torch device"),
        pytest.param(
            ["device=cuda"],
            "CUDA is not available here",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
        (["env.task=flyy"], "unknown DMC task 'flyy'"),  # refused only when the env is built
        (["paper.agent.lrr=0.1"], "did you mean paper.agent.lr?"),
    ],
)
def test_a_refused_command_leaves_no_run_directory(cli, tmp_path, args, message):
    run_dir = tmp_path / "runs" / "sac" / "x"
    proc = cli("paper=sac", "env=cheetah_run", "debug=smoke", *args, f"hydra.run.dir={run_dir}")
    assert message in _error_line(proc)
    assert not (tmp_path / "runs").exists()  # nor the folders made for it


def test_a_missing_dataset_leaves_no_run_directory(cli, tmp_path):
    run_dir = tmp_path / "runs" / "iql" / "x"
    env = {"MINARI_DATASETS_PATH": str(tmp_path / "no_datasets")}
    args = ("paper=iql", "env=hopper", "dataset=medium", "debug=smoke", f"hydra.run.dir={run_dir}")
    proc = cli(*args, env=env)
    assert "dataset rlrepro/hopper/medium-v0 not found" in _error_line(proc)
    assert not (tmp_path / "runs").exists()


def test_a_refusal_after_hydra_wrote_leaves_an_existing_folder_as_it_was(cli, tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")
    proc = cli("paper=sac", "env=cheetah_run", "debug=smoke", "env.task=flyy", f"hydra.run.dir={run_dir}")
    assert "unknown DMC task" in _error_line(proc)
    assert _tree(run_dir) == {"notes.txt": b"keep me"}  # no .hydra/, config.yaml, run.json, status.json, log


# ------------------------------------------------------------------- item 12: refused means untouched


def test_a_refused_second_run_leaves_the_first_runs_provenance_byte_identical(cli, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    # a run made with seed=1: its saved config and Hydra's provenance (contents are only compared)
    (run_dir / "config.yaml").write_text("seed: 1\ntag: first\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=1\n- tag=first\n")
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run_dir / "run.log").write_text("")
    before = _tree(run_dir)
    for args in (["seed=2"], ["seed=2", "env.task=flyy"], ["seed=abc"]):
        proc = cli("paper=sac", "env=cheetah_run", "debug=smoke", *args, f"hydra.run.dir={run_dir}")
        assert _error_line(proc).startswith("error: ")
        assert _tree(run_dir) == before, args


# --------------------------------------------------------- item 13: keys that paper_env/experiment set


def _check_files(conf_dir: Path, *overrides: str) -> None:
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        choices = {str(k): v for k, v in cfg.hydra.runtime.choices.items()}
        check_group_files(lambda o: compose("config", overrides=o), choices, conf_dir)


def test_a_misspelled_key_in_a_paper_env_file_is_refused_naming_file_key_and_closest(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    path = conf / "paper_env" / "drm_cheetah_run.yaml"
    _check_files(conf, "paper=drm", "env=cheetah_run")  # as committed: passes
    data = yaml.safe_load(path.read_text())
    data["paper"]["agent"]["lrr"] = 1e-4
    path.write_text("# @package _global_\n" + yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        _check_files(conf, "paper=drm", "env=cheetah_run")
    assert str(e.value) == (
        "paper_env/drm_cheetah_run.yaml sets unknown key 'paper.agent.lrr'; did you mean paper.agent.lr?"
    )


def test_a_misspelled_key_in_an_experiment_file_is_refused(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    path = conf / "experiment" / "drqv2_cheetah_bf16.yaml"
    path.write_text(path.read_text().replace("precision: bf16", "precison: bf16"))
    with pytest.raises(ConfigError, match=r"experiment/drqv2_cheetah_bf16.yaml sets unknown key 'precison'"):
        _check_files(conf, "experiment=drqv2_cheetah_bf16")


def _paper_env_pairs() -> list[tuple[str, str]]:
    papers, envs = config_choices("paper"), config_choices("env")
    pairs = [
        (p, e) for name in config_choices("paper_env") for p in papers for e in envs if name == f"{p}_{e}"
    ]
    assert len(pairs) == len(config_choices("paper_env")), "a paper_env file names no paper_env pair"
    return pairs


@pytest.mark.parametrize(("paper", "env"), _paper_env_pairs())
def test_every_committed_paper_env_file_sets_only_known_keys(paper, env):
    _check_files(CONF_DIR, f"paper={paper}", f"env={env}")


@pytest.mark.parametrize("experiment", config_choices("experiment"))
def test_every_committed_experiment_file_sets_only_known_keys(experiment):
    _check_files(CONF_DIR, f"experiment={experiment}")


# ------------------------------------------------------------------ item 14: Hydra's blocks, one line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["paper=sacc", "env=cheetah_run"],
            "error: unknown paper 'sacc': did you mean paper=sac? choose one of",
        ),
        (["paper=sac", "env=chetah_run"], "error: unknown env 'chetah_run': did you mean env=cheetah_run?"),
        (
            ["paper=sac", "env=cheetah_run", "debug=smok"],
            "error: unknown debug 'smok': did you mean debug=smoke?",
        ),
        (["paper=sac", "env=cheetah_run", "paper.agent.lrr=1"], "error: unknown key 'paper.agent.lrr'"),
        (["-m", "paper=sac,drqq", "env=cheetah_run"], "error: unknown paper 'drqq': did you mean paper=drq"),
        (
            ["-m", "paper=sac", "env=cheetah_run", "paper.agnt.lr=1,2"],
            "error: unknown key 'paper.agnt.lr' on the command line; did you mean paper.agent.lr?",
        ),
    ],
)
def test_unknown_choices_and_keys_are_one_line_with_the_closest_match(cli, tmp_path, args, message):
    proc = cli(*args, f"hydra.run.dir={tmp_path}/r", f"hydra.sweep.dir={tmp_path}/m")
    assert _error_line(proc).startswith(message)
    assert not any(tmp_path.iterdir())
