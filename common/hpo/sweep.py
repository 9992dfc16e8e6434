"""Declarative sweeps: `sweeps/<name>.yaml` → one Hydra multirun (`python run.py -m ...`).

    tag: drm_dog                    # W&B tag and group prefix (required)
    papers: [drm, drqv2]            # conf/paper names
    envs: [dog]                     # conf/env names
    seeds: [1, 2, 3, 4]             # or "1-4"
    launcher: slurm                 # local (default) or slurm
    params: {env.task: [stand, walk, trot, run]}   # more sweep axes (optional)
    tag_by: [env.task]              # axes of `params` that also go into each run's tag (optional)
    overrides: [precision=bf16]     # fixed for every job (optional)

A report compares arms `paper[tag]`: `tag_by` gives each value of an axis its own arm (`drm_dog_walk`, ...),
e.g. the losses of a loss comparison, instead of pooling them under one tag.

`python -m common.hpo.sweep sweeps/drm_dog.yaml [overrides] [--dry-run]` (`make sweep S=...`). Every job's
W&B group is `<tag>@<git describe>`, so one sweep's runs stay together and name the code that made them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from common.errors import ConfigError, RlreproError
from common.registry import ROOT

KEYS = {"tag", "papers", "envs", "seeds", "launcher", "params", "tag_by", "overrides"}


def git_describe() -> str:
    """`git describe --always --dirty --tags` of the repository, or `unknown`."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def _as_list(value: Any, what: str, where: str) -> list[Any]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: `{what}` must be a non-empty list")
    return value


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, str):
        from common.hpo.__main__ import parse_seeds

        return parse_seeds(value)
    seeds = _as_list(value, "seeds", where)
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: seeds must be integers, got {seeds}")
    return seeds


def _value(v: Any) -> str:
    """A sweep value for the command line: plain names stay plain, anything else is quoted."""
    from common.hpo.space import format_value

    plain = isinstance(v, str) and v and all(c.isalnum() or c in "_-./" for c in v) and not v[0].isdigit()
    return v if plain else format_value(v)


def expand(path: Path, extra: list[str] | None = None, describe: str | None = None) -> list[str]:
    """The `run.py` arguments of the multirun a sweep file describes (checked: one-line errors)."""
    import yaml

    where = str(path)
    if not path.exists():
        raise ConfigError(f"sweep file {path} not found; sweeps/ has {', '.join(p.name for p in _sweeps())}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with tag, papers, envs, seeds")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(KEYS))}")
    tag = data.get("tag")
    if not isinstance(tag, str) or not tag or any(c in tag for c in " ,=@'\""):
        raise ConfigError(f"{where}: `tag` must be a short name without spaces, commas, '=', '@' or quotes")
    papers = [str(p) for p in _as_list(data.get("papers"), "papers", where)]
    envs = [str(e) for e in _as_list(data.get("envs"), "envs", where)]
    for group, names in (("paper", papers), ("env", envs)):
        known = _choices(group)
        for name in names:
            if name not in known:
                raise ConfigError(f"{where}: unknown {group} {name!r}; conf/{group}/ has {', '.join(known)}")
    seeds = _seeds(data.get("seeds", [1]), where)
    launcher = data.get("launcher", "local")
    if launcher not in _choices("hydra/launcher"):
        raise ConfigError(f"{where}: launcher {launcher!r}: use {' or '.join(_choices('hydra/launcher'))}")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: `params` must map config keys to lists of values")
    overrides = [str(o) for o in (data.get("overrides") or [])]
    tag_by = [str(k) for k in (data.get("tag_by") or [])]
    missing = [k for k in tag_by if k not in params]
    if missing:
        raise ConfigError(f"{where}: tag_by names {', '.join(missing)}, which `params` does not sweep")
    run_tag = tag + "".join(f"_${{{k}}}" for k in tag_by)  # resolved per job: one arm per value

    group = f"{tag}@{describe or git_describe()}"
    args = [
        "-m",
        f"paper={','.join(papers)}",
        f"env={','.join(envs)}",
        f"seed={','.join(str(s) for s in seeds)}",
        *[f"{k}={','.join(_value(v) for v in _as_list(vs, k, where))}" for k, vs in params.items()],
        f"hydra/launcher={launcher}",
        f"tag={run_tag}",
        f"logger.wandb.group={_value(group)}",  # quoted: '@' is not plain
        f"hydra.sweep.dir=runs/multirun/{tag}/${{now:%Y-%m-%d_%H-%M-%S}}",
        *overrides,
        *(extra or []),
    ]
    return args


def _sweeps() -> list[Path]:
    return sorted((ROOT / "sweeps").glob("*.yaml"))


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    rest = [a for a in argv if a != "--dry-run"]
    if not rest:
        raise ConfigError("usage: python -m common.hpo.sweep sweeps/<name>.yaml [overrides] [--dry-run]")
    args = expand(Path(rest[0]), rest[1:])
    command = [sys.executable, str(ROOT / "run.py"), *args]
    print(shlex.join(["python", "run.py", *args]), file=sys.stderr)
    if dry:
        return 0
    os.execv(sys.executable, command)  # the multirun replaces this process: its output and exit status
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RlreproError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
