"""Search spaces: `conf/hpo/<name>.yaml` → checked distributions → Optuna suggestions → Hydra overrides.

A space maps config paths to distributions::

    params:
      paper.agent.lr: {type: float, low: 1e-5, high: 1e-3, log: true}
      paper.agent.hidden_dim: {type: int, low: 64, high: 1024, log: true}
      paper.agent.actor_q: {type: categorical, choices: [mean, min]}
      paper.train.updates_per_step: {type: int, low: 1, high: 4, when: {paper.train.update_every_steps: 1}}

`when` makes a parameter conditional: it is sampled only when every named parameter (sampled before it, in
file order) took one of the given values; otherwise the config keeps its default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError

TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: a config path and its distribution."""

    path: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def suggest(self, trial: Any) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.type == "int":
            step = int(self.step or 1)
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)  # type: ignore[arg-type]

    def values(self) -> list[Any]:
        """Representative values (bounds or every choice): each must pass the config's type check."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


def _parse_param(path: str, spec: Any, earlier: dict[str, Param], where: str) -> Param:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: {path} must be a mapping like {{type: float, low: 1e-5, high: 1e-3}}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}: {path} has type {kind!r}; use one of {', '.join(TYPES)}")
    allowed = {"type", "when"} | ({"choices"} if kind == "categorical" else {"low", "high", "log", "step"})
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{where}: {path} has unknown field(s) {', '.join(unknown)} for type {kind}")
    when: dict[str, tuple[Any, ...]] = {}
    for other, values in dict(spec.get("when") or {}).items():
        if other not in earlier:
            raise ConfigError(
                f"{where}: {path} is conditional on {other}, which is not a parameter listed before it"
            )
        when[other] = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or len(choices) == 0:
            raise ConfigError(f"{where}: {path} needs a non-empty list of choices")
        return Param(path, kind, choices=tuple(choices), when=when)
    low, high, log, step = spec.get("low"), spec.get("high"), bool(spec.get("log", False)), spec.get("step")
    numbers = (int,) if kind == "int" else (int, float)
    for name, value in (("low", low), ("high", high)):
        if not isinstance(value, numbers) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{where}: {path}.{name}={value!r} must be a finite {kind}")
    assert low is not None and high is not None
    if not low < high:
        raise ConfigError(f"{where}: {path} has an empty or inverted range [{low}, {high}]; make low < high")
    if log and low <= 0:
        raise ConfigError(f"{where}: {path} is log-scaled, so low={low} must be > 0")
    if step is not None:
        if log:
            raise ConfigError(f"{where}: {path}: Optuna cannot combine step with log; drop one")
        if not isinstance(step, numbers) or step <= 0:
            raise ConfigError(f"{where}: {path}.step={step!r} must be a positive {kind}")
    return Param(path, kind, low=low, high=high, log=log, step=step, when=when)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @classmethod
    def parse(cls, params: Any, where: str = "search space") -> SearchSpace:
        """Check a `params:` mapping; every error is one line naming the parameter and the fix."""
        if not isinstance(params, Mapping) or not params:
            raise ConfigError(f"{where}: `params` must map config paths to distributions; it is empty")
        parsed: dict[str, Param] = {}
        for path, spec in params.items():
            parsed[str(path)] = _parse_param(str(path), spec, parsed, where)
        return cls(tuple(parsed.values()))

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every active parameter (conditionals only when their condition holds)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if all(other in values and values[other] in ok for other, ok in p.when.items()):
                values[p.path] = p.suggest(trial)
        return values

    def paths(self) -> list[str]:
        return [p.path for p in self.params]


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged (strings quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def to_overrides(params: Mapping[str, Any]) -> list[str]:
    """`{path: value}` → `["path=value", ...]` for `python run.py` or `hydra.compose`."""
    return [f"{path}={format_value(value)}" for path, value in params.items()]
