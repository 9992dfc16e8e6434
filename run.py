"""rlrepro entry point.

python run.py paper=drqv2 env=cheetah_run            # a new run in runs/<paper>/<env>/<time>_s<seed>/
python run.py paper=drqv2 env=dog --cfg job          # print the composed config
python run.py resume=runs/drqv2/cheetah_run/...      # continue a run from its latest checkpoint
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from common.errors import RlreproError

if TYPE_CHECKING:
    from common.command import RunDirSnapshot

# the run directory as it was before Hydra made or rewrote it (`check_command`); None in a multirun job
_before: RunDirSnapshot | None = None


def _fail(error: RlreproError) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from common.config import check_group_files, check_overrides
    from common.launch import start
    from common.registry import CONF_DIR

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        # top-level group choices and those a paper composes at its package (student@paper); not hydra/...,
        # nor groups placed in Hydra's config (local@hydra.launcher)
        choices = hc.runtime.choices.items()
        group_choices = [
            f"{g}={c}" for g, c in choices if c is not None and "/" not in g and "@hydra" not in g
        ]
        baseline = hydra.compose(config_name="config", overrides=group_choices)
        check_overrides(cfg, baseline, hc.overrides.task, groups=hc.runtime.choices.keys())
        compose = lambda overrides: hydra.compose(config_name="config", overrides=overrides)  # noqa: E731
        check_group_files(compose, dict(hc.runtime.choices), CONF_DIR)
        return start(cfg, run_dir)
    except RlreproError as e:
        if _before is not None and not _before.began(run_dir):
            _before.undo(run_dir)  # refused: the run directory is as it was (or gone)
        _fail(e)
    raise AssertionError("unreachable")


def _resume_target(argv: list[str]) -> tuple[str | None, list[str]]:
    rest = [a for a in argv if not a.startswith("resume=")]
    targets = [a.partition("=")[2] for a in argv if a.startswith("resume=")]
    return (targets[-1] if targets and targets[-1] not in ("", "null") else None), rest


def _missing_choice(argv: list[str]) -> str | None:
    """`paper` or `env` when the command line chooses neither it nor an experiment that does. The config's
    defaults leave both unset (null, not ???) so that multiruns can sweep them (`paper=drm,drqv2`)."""
    if any(a.split("=")[0] in ("-h", "--help", "--hydra-help", "--info", "--shell-completion") for a in argv):
        return None
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a}
    if "experiment" in given:
        return None
    return next((group for group in ("paper", "env") if group not in given), None)


if __name__ == "__main__":
    # what run.json records as the command, also inside SLURM jobs (whose argv is submitit's)
    os.environ["RLREPRO_COMMAND"] = " ".join(sys.argv)
    target, others = _resume_target(sys.argv[1:])
    missing = _missing_choice(others) if target is None else None
    if missing is not None:
        from common.errors import ConfigError
        from common.registry import config_choices

        article = "an" if missing == "env" else "a"
        choices = ", ".join(config_choices(missing))
        _fail(ConfigError(f"choose {article} {missing}: {missing}=<name>, one of {choices}"))
    if target is None:
        from common.command import check_command

        try:
            _before = check_command(others)  # before Hydra writes anything
        except RlreproError as e:
            _fail(e)
        try:
            main()
        except SystemExit as e:
            if e.code == 1:  # Hydra ended a multirun on a failed job (e.g. a cancelled SLURM job)
                from common.command import report_failed_multirun

                report_failed_multirun()
            raise
    else:
        from common.launch import resume

        try:
            resume(Path(target), others)
        except RlreproError as e:
            _fail(e)
