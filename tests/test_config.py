"""Composition, registration and config validation."""

from __future__ import annotations

import importlib

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.config import check_overrides
from common.errors import ConfigError
from common.registry import CONF_DIR, ROOT, config_choices, import_entry, paper_packages

PAPERS = config_choices("paper")
ENVS = config_choices("env")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _paper_folders() -> list[str]:
    """Every folder under papers/ that holds more than Python's caches."""
    folders = [d for d in (ROOT / "papers").iterdir() if d.is_dir() and not d.name.startswith((".", "_"))]
    return sorted(d.name for d in folders if any(f.name != "__pycache__" for f in d.iterdir()))


def _composed_papers(paper: str, group: str = "paper") -> set[str]:
    """The other papers whose config conf/paper/<paper>.yaml composes in its defaults (`sac`, `sac@paper`,
    or through a group of choices such as snapshot_rl's `/student@_here_: td3`, whose file composes
    `/paper/td3@_here_`)."""
    raw = yaml.safe_load((CONF_DIR / group / f"{paper}.yaml").read_text()) or {}
    names: set[str] = set()
    for default in raw.get("defaults", []):
        if isinstance(default, str):
            names.add(default.split("@")[0].strip().removeprefix("/paper/"))
        elif isinstance(default, dict):  # {"/student@_here_": "td3"}: that choice's own defaults
            ((key, choice),) = default.items()
            sub = key.split("@")[0].strip().lstrip("/")
            if sub != "paper" and (CONF_DIR / sub / f"{choice}.yaml").exists():
                names |= _composed_papers(choice, sub)
    return (names & set(PAPERS)) - ({paper} if group == "paper" else set())


def test_every_paper_has_a_package_and_every_package_a_config():
    assert set(PAPERS) == set(paper_packages()), (
        f"conf/paper/*.yaml {sorted(PAPERS)} and papers/*/ {sorted(paper_packages())} must match"
    )
    # every folder is a registered paper: code that several papers share belongs in common/
    extra = sorted(set(_paper_folders()) - set(PAPERS))
    assert not extra, f"papers/{extra} have no conf/paper/<name>.yaml; shared code goes to common/"
    for paper in PAPERS:
        assert (ROOT / "papers" / paper / "README.md").exists(), paper


@pytest.mark.parametrize("paper", PAPERS)
def test_paper_entry_points_import(paper):
    # `paper.entry` and `paper.loop` name the paper's own code or the shared core; an entry may name another
    # paper's agent only when this paper's config composes that paper's config (d4rl and synther run SAC)
    cfg = _compose(f"paper={paper}", "env=cheetah_run")
    assert cfg.paper.name == paper
    own = (f"papers.{paper}.", "common.")
    composed = tuple(f"papers.{other}." for other in sorted(_composed_papers(paper)))
    assert "loop" in cfg.paper, f"conf/paper/{paper}.yaml names no loop"
    for key, allowed in (("entry", own + composed), ("loop", own)):
        if key not in cfg.paper:
            continue  # a paper without a learner of its own (none today) needs only a loop
        dotted = cfg.paper[key]
        target = import_entry(dotted)
        assert callable(target), dotted
        assert dotted.startswith(allowed), f"paper.{key}={dotted} of {paper} is outside {allowed}"
        assert f"{target.__module__}.".startswith(allowed), (
            f"paper.{key}={dotted} is defined in {target.__module__}, outside {allowed}"
        )


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("paper", PAPERS)
def test_every_paper_env_pair_composes_and_resolves(paper, env):
    cfg = _compose(f"paper={paper}", f"env={env}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    train = resolved["paper"]["train"]
    # online: env frames, offline: updates; staged runs (Uni-O4: offline stages, then online) size each stage
    size = train.get("num_frames", train.get("num_steps", resolved["paper"].get("offline_steps", 0)))
    assert size > 0
    assert resolved["env"]["name"].startswith(env)


def test_paper_env_specialisation_is_applied():
    base = _compose("paper=drqv2", "env=cheetah_run")
    humanoid = _compose("paper=drqv2", "env=humanoid_run")
    assert base.paper.agent.lr == pytest.approx(1e-4) and base.paper.agent.feature_dim == 50
    assert humanoid.paper.agent.lr == pytest.approx(8e-5) and humanoid.paper.agent.feature_dim == 100


EASY, MEDIUM, HARD = (
    (1100000, "linear(1.0,0.1,100000)"),  # DrQ-v2 cfgs/task/easy.yaml
    (3100000, "linear(1.0,0.1,500000)"),  # medium.yaml (DrM's is the same)
    (30100000, "linear(1.0,0.1,2000000)"),  # hard.yaml (DrM's is the same)
)
DRM_EASY = (210000, "linear(1.0,0.1,40000)")  # DrM cfgs/task/easy.yaml


@pytest.mark.parametrize(
    ("paper", "overrides", "group", "budget"),
    [
        # the values these compositions had when `difficulty` was a key of the env files
        ("drqv2", ["env=walker_walk"], "easy", EASY),
        ("drqv2", ["env=cartpole_swingup"], "easy", EASY),
        ("drqv2", ["env=pendulum"], "easy", EASY),
        ("drqv2", ["env=cheetah_run"], "medium", MEDIUM),
        ("drqv2", ["env=hopper"], "medium", MEDIUM),
        ("drqv2", ["env=humanoid_run"], "hard", HARD),
        ("drqv2", ["env=dog", "env.task=trot"], "hard", HARD),
        ("drqv2", ["env=manipulator"], "hard", HARD),
        ("drm", ["env=walker_walk"], "easy", DRM_EASY),
        ("drm", ["env=cartpole_swingup"], "easy", DRM_EASY),
        ("drm", ["env=inverted_pendulum"], "easy", DRM_EASY),
        ("drm", ["env=cheetah_run"], "medium", MEDIUM),
        ("drm", ["env=quadruped_run"], "medium", MEDIUM),
        ("drm", ["env=dog"], "hard", HARD),
        ("drm", ["env=manipulator", "env.task=insert_peg"], "hard", HARD),
        ("drm", ["env=humanoid_run"], "hard", HARD),
    ],
)
def test_paper_task_group_selects_budget_and_schedule(paper, overrides, group, budget):
    cfg = OmegaConf.to_container(_compose(f"paper={paper}", *overrides), resolve=True, throw_on_missing=False)
    assert cfg["paper"]["difficulty"] == group
    assert (cfg["paper"]["train"]["num_frames"], cfg["paper"]["agent"]["stddev_schedule"]) == budget
    assert "difficulty" not in cfg["env"]


def test_task_group_can_be_overridden():
    cfg = _compose("paper=drqv2", "env=cheetah_run", "paper.difficulty=hard")
    assert (cfg.paper.train.num_frames, cfg.paper.agent.stddev_schedule) == HARD


@pytest.mark.parametrize("env", ENVS)
def test_env_files_hold_no_paper_grouping(env):
    # DrQ-v2's easy/medium/hard grouping belongs to the papers that use it (conf/paper/{drqv2,drm}.yaml)
    assert "difficulty" not in yaml.safe_load((CONF_DIR / "env" / f"{env}.yaml").read_text())


def test_dog_task_is_selectable():
    cfg = _compose("paper=drqv2", "env=dog", "env.task=trot")
    assert cfg.env.domain == "dog" and cfg.env.task == "trot" and cfg.env.name == "dog_trot"
    assert _compose("paper=drqv2", "env=dog").env.name == "dog_run"


def test_smoke_debug_and_experiment_compose():
    smoke = _compose("paper=drqv2", "env=dog", "debug=smoke")
    assert smoke.device == "cpu" and smoke.paper.buffer.batch_size <= 16
    assert smoke.paper.train.num_frames <= 1000
    exp = _compose("experiment=drqv2_cheetah_bf16")
    assert exp.paper.name == "drqv2" and exp.env.name == "cheetah_run" and exp.precision == "bf16"


def test_unknown_key_rejected_by_struct_mode():
    with pytest.raises(Exception, match="lrr"):
        _compose("paper=drqv2", "env=cheetah_run", "paper.agent.lrr=0.1")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed='abc' has the wrong type: expected int"),
        ("paper.agent.lr=fast", "paper.agent.lr='fast' has the wrong type: expected float"),
        ("paper.buffer.batch_size=1.5", "expected int"),
        ("env.fast_render=3", "expected bool"),
        ("paper.agent.stddev_schedule=0.2", "quote it"),
    ],
)
def test_wrong_type_rejected(override, message):
    base = _compose("paper=drqv2", "env=cheetah_run")
    cfg = _compose("paper=drqv2", "env=cheetah_run", override)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_overrides(cfg, base, [override], groups=["paper", "env"])


def test_right_types_accepted():
    overrides = ["seed=3", "paper.agent.lr=1", "paper.agent.stddev_schedule='0.2'", "paper=drqv2", "tag=x"]
    base = _compose("paper=drqv2", "env=cheetah_run")
    cfg = _compose("env=cheetah_run", *overrides)
    check_overrides(cfg, base, overrides, groups=["paper", "env"])  # no error


def test_cli_unknown_paper_lists_choices(cli):
    proc = cli("paper=nosuchpaper", "env=cheetah_run")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown paper 'nosuchpaper': choose one of") and "drqv2" in line


def test_cli_unknown_env_lists_choices(cli):
    proc = cli("paper=drqv2", "env=nosuchenv")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown env 'nosuchenv': choose one of") and "cheetah_run" in line


def test_cli_unknown_key_and_wrong_type(cli, tmp_path):
    proc = cli("paper=drqv2", "env=cheetah_run", "paper.agent.lrr=0.1", f"hydra.run.dir={tmp_path}/a")
    assert proc.returncode != 0 and "lrr" in proc.stderr
    proc = cli("paper=drqv2", "env=cheetah_run", "seed=abc", f"hydra.run.dir={tmp_path}/b")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: seed='abc' has the wrong type")
    assert not (tmp_path / "b" / "config.yaml").exists()


def test_cfg_job_prints_composed_config(cli):
    proc = cli("paper=drqv2", "env=dog", "--cfg", "job", "--resolve")
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.paper.agent.lr == pytest.approx(8e-5) and cfg.env.task == "run"


def test_no_paper_imported_by_common():
    # registration is configuration: common/ never imports a paper package
    for path in (ROOT / "common").rglob("*.py"):
        text = path.read_text()
        assert "import papers" not in text and "from papers" not in text, path
    importlib.import_module("common.launch")


def test_mandatory_values_accept_any_override_and_must_be_set():
    from common.config import resolved_yaml

    base = _compose("paper=drm", "env=hopper")  # DrM's per-task values are `???` for Gymnasium envs
    with pytest.raises(ConfigError, match="max_perturb_factor, paper.agent.target_lambda must be set"):
        resolved_yaml(base)
    overrides = ["paper.agent.max_perturb_factor=0.9", "paper.agent.target_lambda=0.6"]
    cfg = _compose("paper=drm", "env=hopper", *overrides)
    check_overrides(cfg, base, overrides, groups=["paper", "env"])
    assert "max_perturb_factor: 0.9" in resolved_yaml(cfg)


def test_unresolvable_interpolation_is_one_line():
    from common.config import resolved_yaml

    cfg = _compose("paper=drm", "env=dog", "env.task=runn")
    with pytest.raises(ConfigError, match="cannot be resolved at paper.agent.max_perturb_factor"):
        resolved_yaml(cfg)


def test_slurm_launcher_composes_with_valid_defaults_and_env_overrides(monkeypatch):
    monkeypatch.setenv("RLREPRO_SLURM_PARTITION", "gpu")
    monkeypatch.setenv("RLREPRO_SLURM_GPUS", "2")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["paper=drm", "env=dog", "hydra/launcher=slurm"],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 2 and launcher["account"] is None
    # submitit signals `signal_delay_s` before the limit: a shorter limit would signal the job at start
    assert launcher["timeout_min"] * 60 > launcher["signal_delay_s"]
