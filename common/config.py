"""Checks on a composed config that Hydra's struct mode does not make: value types and added keys."""

from __future__ import annotations

from collections.abc import Iterable
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
    group_names = set(groups)
    parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    for override in parsed:
        key = override.key_or_group
        if key in group_names or key.startswith("hydra.") or key == "hydra" or override.is_delete():
            continue
        default = OmegaConf.select(baseline, key, default=_MISSING, throw_on_missing=False)
        if default is _MISSING and _declared_missing(baseline, key):
            continue  # a `???` value: any value fills it
        if default is _MISSING:
            raise ConfigError(
                f"unknown key '{key}': it is not in the composed config; "
                f"check the spelling with `python run.py paper=... env=... --cfg job`"
            )
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not _compatible(default, value):
            hint = " (quote it to pass a string: key='value')" if isinstance(default, str) else ""
            raise ConfigError(
                f"{key}={value!r} has the wrong type: expected {_type_name(default)} like {default!r}, "
                f"got {_type_name(value)}{hint}"
            )
