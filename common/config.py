"""Checks on a composed config that Hydra's struct mode does not make: value types and added keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

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
