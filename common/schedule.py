"""Step-dependent hyperparameter schedules as strings (drqv2 `utils.py`, function `schedule`).

Grammar (steps are whatever the caller counts; DrQ-v2/DrM count agent steps):

- a number, e.g. ``0.2`` or ``"0.2"``: constant;
- ``linear(init,final,duration)``: ``init`` -> ``final`` linearly over `duration` steps, then ``final``;
- ``step_linear(init,final1,duration1,final2,duration2)``: ``init`` -> ``final1`` over `duration1`
  steps (inclusive of step `duration1`), then ``final1`` -> ``final2`` over the next `duration2`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError

_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$")
_ARITY = {"linear": "init,final,duration", "step_linear": "init,final1,duration1,final2,duration2"}


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; call it with a step to get the value."""

    kind: str  # "constant", "linear" or "step_linear"
    args: tuple[float, ...]

    def __call__(self, step: int) -> float:
        a = self.args
        if self.kind == "constant":
            return a[0]
        if self.kind == "linear":
            init, final, duration = a
            mix = np.clip(step / duration, 0.0, 1.0)
            return float((1.0 - mix) * init + mix * final)
        init, final1, duration1, final2, duration2 = a
        if step <= duration1:
            mix = np.clip(step / duration1, 0.0, 1.0)
            return float((1.0 - mix) * init + mix * final1)
        mix = np.clip((step - duration1) / duration2, 0.0, 1.0)
        return float((1.0 - mix) * final1 + mix * final2)


def parse_schedule(spec: str | float) -> Schedule:
    """Parse and validate `spec`; raises `ConfigError` (one line) if it is malformed.

    Durations must be > 0 and every number finite.
    """
    if isinstance(spec, bool):
        raise ConfigError(f"schedule {spec!r}: expected a number or a string like 'linear(1.0,0.1,500000)'")
    if isinstance(spec, (int, float)):
        value = float(spec)
        if not math.isfinite(value):
            raise ConfigError(f"schedule {spec!r}: the constant must be finite")
        return Schedule("constant", (value,))
    if not isinstance(spec, str):
        raise ConfigError(f"schedule {spec!r}: expected a number or a string, got {type(spec).__name__}")
    try:
        value = float(spec)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ConfigError(f"schedule {spec!r}: the constant must be finite")
        return Schedule("constant", (value,))
    match = _CALL.match(spec)
    if match is None or match.group(1) not in _ARITY:
        raise ConfigError(
            f"schedule {spec!r}: expected a number, 'linear(init,final,duration)' or "
            "'step_linear(init,final1,duration1,final2,duration2)'"
        )
    kind, body = match.group(1), match.group(2)
    signature = _ARITY[kind]
    parts = body.split(",")
    if len(parts) != len(signature.split(",")):
        raise ConfigError(f"schedule {spec!r}: {kind} takes {signature}, got {len(parts)} argument(s)")
    try:
        args = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"schedule {spec!r}: every argument of {kind}({signature}) must be a number"
        ) from None
    if not all(math.isfinite(v) for v in args):
        raise ConfigError(f"schedule {spec!r}: every argument must be finite")
    durations = (args[2],) if kind == "linear" else (args[2], args[4])
    if any(d <= 0 for d in durations):
        raise ConfigError(f"schedule {spec!r}: durations must be > 0")
    return Schedule(kind, args)


def schedule(spec: str | float, step: int) -> float:
    """The value of schedule `spec` at `step` (same numbers as drqv2's ``utils.schedule``)."""
    return parse_schedule(spec)(step)
