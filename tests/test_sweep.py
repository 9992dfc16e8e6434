"""Sweep files → Hydra multiruns, and the SLURM launcher's settings checked before anything is submitted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common.errors import ConfigError
from common.hpo.sweep import expand

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


def test_a_sweep_expands_to_one_multirun_with_tag_group_and_axes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tag": "cmp",
                "papers": ["drm", "drqv2"],
                "envs": ["dog"],
                "seeds": "1-3",
                "launcher": "slurm",
                "params": {"env.task": ["walk", "run"], "paper.agent.lr": [1e-4, 8e-5]},
                "overrides": ["precision=bf16"],
            }
        )
    )
    assert expand(path, ["hydra.launcher.timeout_min=60"], describe="v1-3-gabc") == [
        "-m",
        "paper=drm,drqv2",
        "env=dog",
        "seed=1,2,3",
        "env.task=walk,run",
        "paper.agent.lr=0.0001,8e-05",
        "hydra/launcher=slurm",
        "tag=cmp",
        "logger.wandb.group='cmp@v1-3-gabc'",
        "hydra.sweep.dir=runs/multirun/cmp/${now:%Y-%m-%d_%H-%M-%S}",
        "precision=bf16",
        "hydra.launcher.timeout_min=60",
    ]


def test_tag_by_gives_each_value_of_an_axis_its_own_arm(tmp_path):
    """A loss comparison must not pool its losses under one tag: the tag interpolates the swept keys, and
    each composed job resolves to its own (the report's arm `paper[tag]`)."""
    from hydra import compose, initialize_config_dir

    from common.registry import CONF_DIR

    base = {"tag": "cmp", "papers": ["hl_gauss"], "envs": ["minatar"], "seeds": [1]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**base, "params": {"paper.agent.loss": ["mse", "hl_gauss"]},
                                    "tag_by": ["paper.agent.loss"]}))  # fmt: skip
    args = expand(path, [], describe="v1")
    (tag,) = [a for a in args if a.startswith("tag=")]
    assert tag == "tag=cmp_${paper.agent.loss}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["paper=hl_gauss", "env=minatar", "paper.agent.loss=c51", tag])
    assert cfg.tag == "cmp_c51"
    path.write_text(yaml.safe_dump({**base, "tag_by": ["paper.agent.loss"]}))
    with pytest.raises(ConfigError, match="tag_by names paper.agent.loss, which `params` does not sweep"):
        expand(path, [], describe="v1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"papers": ["drmm"]}, "unknown paper 'drmm'; conf/paper/ has"),
        ({"envs": ["dogg"]}, "unknown env 'dogg'; conf/env/ has"),
        ({"launcher": "pbs"}, "launcher 'pbs'"),
        ({"seeds": [1, "x"]}, "seeds must be integers"),
        ({"tag": "a b"}, "`tag` must be a short name"),
        ({"sedes": [1]}, "unknown key(s) sedes"),
        ({"papers": []}, "`papers` must be a non-empty list"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(tmp_path, change, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"tag": "t", "papers": ["sac"], "envs": ["hopper"], **change}))
    with pytest.raises(ConfigError) as e:
        expand(path, describe="x")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_shipped_sweep_expands_and_composes(path):
    from hydra import compose, initialize_config_dir

    args = expand(path, describe="x")
    data = yaml.safe_load(path.read_text())
    # compose the first job of the multirun: every paper/env/param exists and composes
    first = [f"paper={data['papers'][0]}", f"env={data['envs'][0]}", *data.get("overrides", [])]
    first += [f"{k}={v[0]}" for k, v in (data.get("params") or {}).items()]
    (tag,) = [a for a in args if a.startswith("tag=")]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*first, tag])
    assert cfg.paper is not None and cfg.tag.startswith(data["tag"])


def test_make_sweep_command_rejects_an_unknown_env_before_running_anything(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"tag": "t", "papers": ["sac"], "envs": ["nope"]}))
    proc = subprocess.run(
        [sys.executable, "-m", "common.hpo.sweep", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "unknown env 'nope'" in proc.stderr


def test_slurm_launcher_time_limit_within_the_signal_delay_is_rejected_before_submission(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "RLREPRO_SLURM_TIME_MIN": "2"}
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "hydra/launcher=slurm", "paper=sac", "env=cheetah_run",
         "debug=smoke", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: hydra.launcher.timeout_min=2 (120 s) does not exceed signal_delay_s=120: "
        "submitit would signal the job as it starts; raise timeout_min to at least 3 "
        "or lower hydra.launcher.signal_delay_s"
    )
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing was submitted
