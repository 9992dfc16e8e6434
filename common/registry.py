"""Papers register themselves by configuration: `conf/paper/<name>.yaml` plus the package `papers/<name>/`.

Nothing here lists papers; entry points are dotted paths imported only when chosen.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from common.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"


def import_entry(dotted: str) -> Any:
    """Import `package.module.Name` and return `Name`; a one-line ConfigError when it does not exist."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ConfigError(f"entry point {dotted!r} is not a dotted path like 'papers.drqv2.agent.DrQV2Agent'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"entry point {dotted!r}: module {module_name!r} not found ({e})") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ConfigError(f"entry point {dotted!r}: {module_name} has no attribute {attr!r}") from e


def config_choices(group: str) -> list[str]:
    """Option names of a config group, e.g. ``config_choices("paper")``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def paper_packages() -> list[str]:
    """Packages under `papers/` (directories with an `__init__.py`)."""
    return sorted(p.parent.name for p in (ROOT / "papers").glob("*/__init__.py"))
