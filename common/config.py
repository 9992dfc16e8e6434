"""Checks on a composed config that Hydra's struct mode does not make: value types and added keys."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.errors import ConfigError

_MISSING = object()


def _type_name(value: Any) -> str:
    if isinstance(value, (DictConfig, dict)):
        return "a mapping"
    if isinstance(value, (ListConfig, list)):
        return "a list"
    return type(value).__name__


def _compatible(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True  # null defaults accept anything; null switches an option off
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (DictConfig, dict)):
        return isinstance(value, (DictConfig, dict))
    if isinstance(default, (ListConfig, list)):
        return isinstance(value, (ListConfig, list))
    return True


def _declared_missing(cfg: DictConfig, key: str) -> bool:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return False
    # `leaf in parent` is False for a `???` value; the key list still has it
    return leaf in list(parent.keys()) and OmegaConf.is_missing(parent, leaf)


def resolved_yaml(cfg: DictConfig) -> str:
    """The config as YAML with every interpolation filled in; a one-line ConfigError for `???` values
    left unset or interpolations that cannot resolve (e.g. a per-task table without the chosen task)."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            names = ", ".join(missing)
            raise ConfigError(f"{names} must be set: add e.g. {missing[0]}=<value> to the command")
        return OmegaConf.to_yaml(cfg, resolve=True)
    except OmegaConfBaseException as e:
        where = f" at {e.full_key}" if getattr(e, "full_key", None) else ""
        first = str(e).splitlines()[0]
        raise ConfigError(f"the config cannot be resolved{where}: {first}") from e


def check_overrides(
    cfg: DictConfig, baseline: DictConfig, overrides: Iterable[str], groups: Iterable[str]
) -> None:
    """Reject command-line values whose type differs from the default's, and keys that do not exist.

    `baseline` is the config composed with the same group choices but none of the value overrides.
    Group selections (`paper=drqv2`) and `hydra.*` keys are not checked here: Hydra checks those.
    """
    group_names = {name.split("@", 1)[0] for name in groups}  # student@paper: chosen as student@paper=x
    parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    for override in parsed:
        key = override.key_or_group
        if key in group_names or key.startswith("hydra.") or key == "hydra" or override.is_delete():
            continue
        default = OmegaConf.select(baseline, key, default=_MISSING, throw_on_missing=False)
        if default is _MISSING and _declared_missing(baseline, key):
            continue  # a `???` value: any value fills it
        if default is _MISSING:
            raise unknown_key_error(baseline, key, "on the command line")
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not _compatible(default, value):
            hint = " (quote it to pass a string: key='value')" if isinstance(default, str) else ""
            raise ConfigError(
                f"{key}={value!r} has the wrong type: expected {_type_name(default)} like {default!r}, "
                f"got {_type_name(value)}{hint}"
            )


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a config as a dotted path, mappings and their leaves alike."""
    if not isinstance(node, DictConfig):
        return []
    keys = []
    for k in node:
        path = f"{prefix}{k!s}"
        keys.append(path)
        keys += _dotted_keys(node._get_node(k), f"{path}.")  # the node: `???` values must not raise
    return keys


def closest_key(baseline: DictConfig, key: str) -> str | None:
    """The key of `baseline` most like `key` (a sibling when its parent exists), or None."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(baseline, parent_key, default=None) if parent_key else baseline
    if isinstance(parent, DictConfig):
        prefix = f"{parent_key}." if parent_key else ""
        found = difflib.get_close_matches(leaf, [str(k) for k in parent], n=1, cutoff=0.6)
        return f"{prefix}{found[0]}" if found else None
    found = difflib.get_close_matches(key, _dotted_keys(baseline), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_key_error(baseline: DictConfig, key: str, where: str) -> ConfigError:
    """`unknown key 'x' <where>; did you mean y?` as one line."""
    near = closest_key(baseline, key)
    hint = f"did you mean {near}?" if near else "check the spelling"
    return ConfigError(
        f"unknown key '{key}' {where}; {hint} (see `python run.py paper=... env=... --cfg job`)"
    )


# Group files that set values of the paper's config (not whole sections of their own): their keys are checked
CHECKED_GROUPS = ("paper_env", "experiment")


def _file_keys(node: Any, baseline: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys a group file sets, down to where the baseline stops being a mapping."""
    keys = []
    for k, value in node.items():
        path = f"{prefix}{k}"
        if prefix == "" and k in ("defaults", "hydra"):
            continue  # the defaults list and Hydra's own settings are not keys of the run's config
        keys.append(path)
        below = OmegaConf.select(baseline, path, default=None, throw_on_missing=False)
        if isinstance(value, dict) and isinstance(below, DictConfig) and len(below) > 0:
            keys += _file_keys(value, baseline, f"{path}.")  # an empty mapping is a table: any keys
    return keys


def check_group_files(
    compose: Callable[[list[str]], DictConfig], choices: Mapping[str, str | None], conf_dir: Path
) -> None:
    """Refuse a key set in a chosen `conf/paper_env/*.yaml` or `conf/experiment/*.yaml` that the config
    composed without that file does not have (a typo such as `lrr:` would otherwise be ignored).

    A new key that a value of the same file interpolates (a per-task table: `x: ${.x_by_task.${env.task}}`)
    is allowed, and so is any key under a mapping that is empty in the paper's config (a table to fill).
    `choices`: top-level group choices, e.g. Hydra's `runtime.choices`; `compose(overrides)` composes the
    config. Hydra merges group files without struct checks, so this is the only check such keys get.
    """
    import yaml

    top = {g: c for g, c in choices.items() if c is not None and "/" not in g and "@" not in g}
    for group in CHECKED_GROUPS:
        name = top.get(group)
        path = conf_dir / group / f"{name}.yaml"
        if name is None or not path.exists():
            continue
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        if "# @package _global_" not in text:
            data = {group: data}
        others = [f"{g}={c}" for g, c in top.items() if g != group]
        # without the file: deleting paper_env's default; an experiment is simply not chosen
        baseline = compose([*others, f"~{group}"] if group == "paper_env" else others)
        for key in _file_keys(data, baseline):
            default = OmegaConf.select(baseline, key, default=_MISSING, throw_on_missing=False)
            leaf = key.rpartition(".")[2]
            table = re.search(r"\$\{[^}]*\b" + re.escape(leaf) + r"\b", text)  # a table a value reads
            if default is _MISSING and not _declared_missing(baseline, key) and not table:
                near = closest_key(baseline, key)
                hint = f"did you mean {near}?" if near else f"it is not in paper={top.get('paper')}'s config"
                raise ConfigError(f"{group}/{name}.yaml sets unknown key '{key}'; {hint}")
