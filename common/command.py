"""What rlrepro adds around Hydra's handling of a `run.py` command.

- `check_command(argv)`: every check of a new run before Hydra creates its run directory (unknown choices
  and keys in one line with the closest match, value types, the paper's `validate`, the device, a run
  directory that holds another run), and a `RunDirSnapshot` of what that directory held.
- `RunDirSnapshot.undo()`: a command refused after Hydra made its directory leaves nothing behind.
- `MultirunCheck` (a Hydra callback) and `report_failed_multirun`: a multirun whose runs did not all finish
  ends with one line per such run (preempted, cancelled, failed), the command that continues each, and exit
  status 1.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from common.errors import ConfigError
from common.registry import CONF_DIR, config_choices

# what a run leaves once it has begun: a refused command never has these (a failed run does)
RESULTS = ("train.jsonl", "eval.jsonl", "checkpoints")
# all that a command refused after Hydra made its directory can have written there (and Hydra's *.log)
REFUSED = {".hydra", "config.yaml", "run.json", "status.json", ".lock", "wandb"}


def _groups() -> set[str]:
    """Top-level config groups: the folders of conf/ (not Hydra's own, not the git-ignored local/)."""
    return {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "local")}


def _choice_error(group: str, name: str) -> ConfigError:
    choices = config_choices(group)
    near = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    hint = f"did you mean {group}={near[0]}? " if near else ""
    return ConfigError(f"unknown {group} '{name}': {hint}choose one of {', '.join(choices)}")


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides=list(overrides))
    except OverrideParseException as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from None


def _values(override: Any) -> list[str]:
    """The values an override gives (several for a sweep such as `paper=drm,drqv2`), as Hydra would read
    them back on a command line."""
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]  # quoted where Hydra needs it
    value = override.value()
    return [] if value is None else [str(value)]


def check_choices(overrides: Sequence[str]) -> list[str]:
    """One-line errors for unknown group choices (`paper=sacc`); returns the overrides with each sweep
    reduced to its first value (what one job of the multirun composes)."""
    groups, first = _groups(), []
    for override in _parse(overrides):
        key = override.key_or_group
        values = _values(override)
        if key in groups and not override.is_delete():
            for name in values:
                if name != "null" and name.strip("'") not in config_choices(key):
                    raise _choice_error(key, name)
        prefix = override.get_key_element()
        first.append(f"{prefix}={values[0]}" if override.is_sweep_override() else override.input_line)
    return first


def _is_group(override: str, groups: set[str]) -> bool:
    """`paper=x`, and a group chosen at a package (`student@paper=sac`, a group a paper composes)."""
    return override.lstrip("+~").split("=", 1)[0].split("@", 1)[0] in groups


def _compose_error(error: Exception) -> ConfigError:
    """Hydra's multi-line composition error as one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return ConfigError(lines[0] if lines else type(error).__name__)


def check_command(argv: Sequence[str]) -> RunDirSnapshot | None:
    """Check `python run.py ARGV` before Hydra runs. Returns a snapshot of the run directory for a single
    run that passed (None for a multirun or a command with flags such as --cfg: only choices and keys are
    checked there; each job is checked when it runs)."""
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    first = check_choices(overrides)
    flags = [a for a in argv if a not in overrides]
    multirun = bool(flags) and set(flags) <= {"-m", "--multirun"}
    if flags and not multirun:
        return None  # --cfg, --help, --config-name, ...: Hydra's own modes write no run directory
    return _check_config(first, single=not multirun)


def _check_config(overrides: list[str], single: bool) -> RunDirSnapshot | None:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from common.config import check_group_files, check_overrides

    groups = _groups()
    chosen = [o for o in overrides if _is_group(o, groups)]
    values = [o for o in overrides if not _is_group(o, groups) and not o.startswith("hydra")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            baseline = compose("config", overrides=chosen)
            check_overrides(baseline, baseline, values, groups=groups)  # unknown keys, before Hydra's block
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as e:
            raise _compose_error(e) from None
        choices = {str(k): v for k, v in cfg.hydra.runtime.choices.items()}
        try:
            run_dir: Path | None = Path(str(cfg.hydra.run.dir))
        except OmegaConfBaseException:  # it interpolates what only Hydra's run knows (${hydra:...})
            run_dir = None
        with open_dict(cfg):
            del cfg["hydra"]
        check_overrides(cfg, baseline, values, groups=groups)
        check_group_files(lambda o: compose("config", overrides=o), choices, CONF_DIR)
    if not single or run_dir is None:
        return None
    _check_start(cfg, run_dir)
    return RunDirSnapshot.take(run_dir)


def _check_start(cfg: DictConfig, run_dir: Path) -> None:
    """What `common.launch.start` refuses, checked before Hydra writes `run_dir/.hydra`."""
    from common.config import resolved_yaml
    from common.launch import load_run_config, validated_loop
    from common.runtime import config_hash, resolve_device

    resolved_yaml(cfg)
    resolve_device(cfg.device)
    validated_loop(cfg)
    if (run_dir / "config.yaml").exists() and config_hash(load_run_config(run_dir)) != config_hash(cfg):
        raise ConfigError(f"run directory {run_dir} already holds another run; choose a new hydra.run.dir")


# ------------------------------------------------------------------------------- undoing a refusal


@dataclass
class RunDirSnapshot:
    """What a run directory held before a command (Hydra rewrites `.hydra/` and appends to its log)."""

    path: Path
    existed: bool
    entries: set[str] = field(default_factory=set)  # top-level names
    files: dict[str, bytes] = field(default_factory=dict)  # `.hydra/*` and `*.log`, byte for byte
    ancestors: set[Path] = field(default_factory=set)  # parents that existed

    @classmethod
    def take(cls, path: Path) -> RunDirSnapshot:
        path = path.absolute()
        ancestors = {p for p in path.parents if p.exists()}
        if not path.is_dir():
            return cls(path, False, ancestors=ancestors)
        files = {
            str(f.relative_to(path)): f.read_bytes()
            for f in [*path.glob(".hydra/*"), *path.glob("*.log")]
            if f.is_file()
        }
        return cls(path, True, {p.name for p in path.iterdir()}, files, ancestors)

    def began(self, run_dir: Path) -> bool:
        """Whether a run began writing results in `run_dir` since the snapshot."""
        same = run_dir.absolute() == self.path and self.existed
        return any((run_dir / r).exists() and not (same and r in self.entries) for r in RESULTS)

    def undo(self, run_dir: Path) -> None:
        """Put `run_dir` back as it was: remove what the command created, restore what Hydra rewrote.
        `run_dir` is Hydra's run directory; a time-stamped one differs from the predicted path."""
        run_dir = run_dir.absolute()
        if run_dir != self.path or not self.existed:
            if any(p.name not in REFUSED and p.suffix != ".log" for p in run_dir.iterdir()):
                return  # not only what a refused run writes: not this command's alone, leave it
            shutil.rmtree(run_dir, ignore_errors=True)
            for parent in run_dir.parents:  # folders made for it (runs/<paper>/<env>/), when empty
                if parent in self.ancestors or any(parent.iterdir()):
                    break
                parent.rmdir()
            return
        for entry in run_dir.iterdir():
            if entry.name not in self.entries:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for f in [*run_dir.glob(".hydra/*"), *run_dir.glob("*.log")]:
            if str(f.relative_to(run_dir)) not in self.files:
                f.unlink()
        for name, data in self.files.items():
            (run_dir / name).write_bytes(data)


# ------------------------------------------------------------------------------------- multiruns


def unfinished_runs(sweep_dir: Path) -> list[str]:
    """One line per run of a multirun's directory that did not finish, with what continues it."""
    from common.launch import read_status, restart_command

    lines = []
    for run_dir in sorted(p.parent for p in sweep_dir.glob("*/.hydra")):
        status = read_status(run_dir)
        state = status.get("state")
        resume = f"python run.py resume={run_dir}"
        again = f"start it again with: {restart_command(run_dir)}"
        if state == "finished":
            continue
        if state == "preempted":
            lines.append(
                f"{run_dir}: stopped by a signal (preempted, cancelled or requeued); continue with: {resume}"
            )
        elif state == "running":  # its lock is held: a requeued job runs it again
            lines.append(f"{run_dir}: still running (its job was requeued); see squeue")
        elif state == "interrupted":
            how = f"continue with: {resume}" if status.get("checkpoint") else again
            lines.append(f"{run_dir}: ended while running (its job cancelled or killed); {how}")
        elif state is None:
            lines.append(f"{run_dir}: never started (see its job's log); {again}")
        else:
            lines.append(
                f"{run_dir}: {state} ({status.get('error') or status.get('reason') or 'see its log'})"
            )
    return lines


def report_unfinished(sweep_dir: Path, job_errors: Sequence[BaseException] = ()) -> None:
    """Print what did not finish in the multirun of `sweep_dir` and exit with status 1; return when
    every run finished."""
    lines = [str(e) for e in job_errors] + unfinished_runs(sweep_dir)
    if not lines:
        return
    print(f"multirun: {len(lines)} problem(s) in {sweep_dir}:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    sys.exit(1)  # SystemExit passes through Hydra's error reporting


class MultirunCheck(Callback):
    """Installed by conf/hydra/launcher/*.yaml: after a multirun, its runs that did not finish.

    A multirun that ends normally is checked here (`on_multirun_end`). One that Hydra ends on a job's
    error (submitit raises for a cancelled SLURM job) is checked by run.py through `report_failed_multirun`,
    with the directory this callback remembers.
    """

    sweep_dir: Path | None = None  # the multirun of this process, once started

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        MultirunCheck.sweep_dir = Path(str(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        MultirunCheck.sweep_dir = None  # reported here: not again by run.py when this exits with 1
        report_unfinished(Path(str(config.hydra.sweep.dir)))


def report_failed_multirun() -> None:
    """After Hydra stopped a multirun on a failed job (it printed that job's error): the runs that did not
    finish, and exit status 1. Nothing when no multirun started in this process."""
    if MultirunCheck.sweep_dir is not None:
        report_unfinished(MultirunCheck.sweep_dir)
