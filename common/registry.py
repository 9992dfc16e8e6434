"""Papers register themselves by configuration: `conf/paper/<name>.yaml` plus the package `papers/<name>/`.

Nothing here lists papers; entry points are dotted paths imported only when chosen: `paper.entry` names the
agent class, `paper.loop` a `Loop`. A config can come from a run directory someone else wrote (`resume=`), so
an entry point resolves only inside the project's own packages, `papers` and `common` of this checkout (a
program, never a config, may trust one more with `trust_package`, e.g. a benchmark's stub agent): a dotted
path into a run directory (`runs.<...>.utils.go`) or anywhere else is refused before anything is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from common.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from common.runtime import RunContext

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"

# Top-level packages entry points may come from, and the directory each must be loaded from.
_TRUSTED: dict[str, Path | None] = {"papers": ROOT / "papers", "common": ROOT / "common"}


def trust_package(name: str) -> None:
    """Let entry points also resolve inside the already-imported package or module `name` (e.g. a
    benchmark's own `__main__`). For programs only: nothing a config says reaches this."""
    _TRUSTED[name] = None


def _check_trusted(dotted: str, module_name: str) -> None:
    """Refuse `dotted` unless its top-level package is trusted and is the one of this checkout."""
    top = module_name.split(".")[0]
    if top not in _TRUSTED:
        raise ConfigError(
            f"entry point {dotted!r} is outside the project's packages: paper.entry and paper.loop must "
            f"name a class or loop in {' or '.join(f'{p}.' for p in _TRUSTED)} (a config from a run "
            f"directory never runs code from elsewhere)"
        )
    home = _TRUSTED[top]
    if home is None:  # trusted by a program: must already be imported
        if top not in sys.modules:
            raise ConfigError(f"entry point {dotted!r}: the trusted module {top!r} is not imported")
        return
    spec = importlib.util.find_spec(top)  # finds the top-level package without running its code
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin is None or origin.parent != home:
        raise ConfigError(
            f"entry point {dotted!r}: package {top!r} resolves to {origin}, not to {home}; "
            f"run from the project's checkout"
        )


def import_entry(dotted: str) -> Any:
    """Import `package.module.Name` and return `Name`; a one-line ConfigError when it does not exist."""
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        raise ConfigError(f"entry point {dotted!r} is not a dotted path like 'papers.drqv2.agent.DrQV2Agent'")
    _check_trusted(dotted, module_name)
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


class Loop(Protocol):
    """A paper's run loop, named by `paper.loop`.

    ``loop(cfg, ctx)`` trains and returns the final evaluation return (NaN when none finished);
    ``loop.validate(cfg)`` raises a one-line `ConfigError` for settings that cannot run. `common.launch` calls
    `validate` once per run, before it writes the run directory; the loop itself does not validate again,
    and a resume runs the saved (already validated) config. Write one with the `loop` decorator.
    """

    def __call__(self, cfg: DictConfig, ctx: RunContext) -> float: ...

    def validate(self, cfg: DictConfig) -> None: ...


def loop(
    validate: Callable[[DictConfig], None],
) -> Callable[[Callable[[DictConfig, RunContext], float]], Loop]:
    """Make a function ``run(cfg, ctx) -> float`` a `Loop` whose checks are `validate`::

        @loop(validate=validate)
        def train(cfg: DictConfig, ctx: RunContext) -> float: ...

    The function itself is returned (importable and picklable by name), with `validate` as an attribute.
    """

    def mark(run: Callable[[DictConfig, RunContext], float]) -> Loop:
        run.__dict__["validate"] = validate
        return cast(Loop, run)

    return mark


def import_loop(dotted: str) -> Loop:
    """Import `paper.loop`; a one-line ConfigError when it is not a `Loop`."""
    run = import_entry(dotted)
    if not callable(run) or not callable(getattr(run, "validate", None)):
        raise ConfigError(
            f"paper.loop {dotted!r} is not a run loop: it must be callable as loop(cfg, ctx) and have "
            f"loop.validate(cfg) (decorate it with @common.registry.loop(validate=...))"
        )
    return cast(Loop, run)
