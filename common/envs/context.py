"""Context-parametrised tasks (contextual MDPs): one Gymnasium task whose physics is set by a few named
numbers, the *context*, as the CARL benchmark varies them (Benjamins et al., 2023; the copy MBTL trains on:
jhoon-cho/MBTL @671f0e0 control-tasks/carl/envs/classic_control/carl_cartpole.py, carl_pendulum.py).

An env section with a `context` mapping trains on that one context; `multi_context` (a mapping of one name
to a list of values) draws a context uniformly at every reset instead (multi-task training):

    env.context.pole_length=1.0                          # CartPole-v1 with a pole twice the default
    env.multi_context={pole_length:[0.25,0.5,1.0]}       # one policy across three contexts

Each parameter has a valid range (outside it: a one-line ConfigError) and a grid: the default times
0.1, 0.2, ..., 10.0, the 100 values of MBTL's job scripts (e.g. s-cartpole_source_lenpole_ppo_train.sh:
`SCALE_LIST=(0.1 ... 10)`, `VAR = SCALE * DEFAULT`).

| task | parameter | default | range | what it sets |
|---|---|---|---|---|
| CartPole-v1 | pole_length | 0.5 | [0.05, 5] | `length` (half the pole, m), then `polemass_length` |
| | masspole | 0.1 | [0.01, 1] | `masspole` (kg), then `total_mass`, `polemass_length` |
| | masscart | 1.0 | [0.1, 10] | `masscart` (kg), then `total_mass` |
| Pendulum-v1 | m | 1.0 | [0.1, 10] | `m` (kg) |
| | l | 1.0 | [0.1, 10] | `l` (m) |
| | dt | 0.05 | [0.005, 0.5] | `dt` (s per step) |
| Hopper-v5 | gravity | 9.81 | [0.981, 98.1] | `model.opt.gravity` = (0, 0, -g) |
| | friction | 1.0 | [0.1, 10] | x the sliding friction of every geom (`model.geom_friction[:, 0]`) |

CartPole's ranges are CARL's `CONTEXT_BOUNDS` (a factor of 10 either side of the default); the others
span the same 0.1x-10x grid the MBTL scripts sweep. CARL's `_update_context` sets `masspole`, `masscart` and
`length` but not the derived `total_mass` and `polemass_length`, which Gymnasium's CartPole computes once in
its constructor; here both are recomputed, so every parameter acts through the full equations of motion.

The context is written into the simulator when the env is built (and, with `multi_context`, at each reset);
the env keeps its `get_state`/`set_state`, so a run on a context resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.envs.base import Env, Step
from common.errors import CheckpointError, ConfigError, EnvError

# MBTL's grid: the default scaled by 0.1, 0.2, ..., 10.0 (100 values)
GRID_STEP = 0.1
GRID_FACTORS: tuple[float, ...] = tuple(round(GRID_STEP * k, 1) for k in range(1, 101))


@dataclass(frozen=True)
class ContextParam:
    default: float
    low: float
    high: float
    meaning: str


def _set_cartpole(env: Any, c: Mapping[str, float]) -> None:
    env.length = float(c["pole_length"])  # Gymnasium's `length` is half the pole (CARL's pole_length)
    env.masspole = float(c["masspole"])
    env.masscart = float(c["masscart"])
    env.total_mass = env.masspole + env.masscart  # derived, as CartPoleEnv.__init__ computes them
    env.polemass_length = env.masspole * env.length


def _set_pendulum(env: Any, c: Mapping[str, float]) -> None:
    env.m, env.l, env.dt = float(c["m"]), float(c["l"]), float(c["dt"])


def _set_hopper(env: Any, c: Mapping[str, float]) -> None:
    model = env.model
    base = getattr(env, "_rlrepro_base_friction", None)
    if base is None:  # the model's own friction, kept once: a later context scales it, not the last one
        base = model.geom_friction[:, 0].copy()
        env._rlrepro_base_friction = base
    model.opt.gravity[:] = (0.0, 0.0, -float(c["gravity"]))
    model.geom_friction[:, 0] = base * float(c["friction"])


@dataclass(frozen=True)
class ContextFamily:
    env_id: str
    params: dict[str, ContextParam]
    apply: Callable[[Any, Mapping[str, float]], None]  # (Gymnasium env.unwrapped, full context)

    def grid(self, name: str, factors: tuple[float, ...] = GRID_FACTORS) -> list[float]:
        """The values of `name` on the grid: its default times each factor."""
        default = self.params[name].default
        return [round(default * f, 10) for f in factors]


CONTEXT_FAMILIES: dict[str, ContextFamily] = {
    "CartPole-v1": ContextFamily(
        "CartPole-v1",
        {
            "pole_length": ContextParam(0.5, 0.05, 5.0, "half the pole's length (m)"),
            "masspole": ContextParam(0.1, 0.01, 1.0, "the pole's mass (kg)"),
            "masscart": ContextParam(1.0, 0.1, 10.0, "the cart's mass (kg)"),
        },
        _set_cartpole,
    ),
    "Pendulum-v1": ContextFamily(
        "Pendulum-v1",
        {
            "m": ContextParam(1.0, 0.1, 10.0, "the pendulum's mass (kg)"),
            "l": ContextParam(1.0, 0.1, 10.0, "the pendulum's length (m)"),
            "dt": ContextParam(0.05, 0.005, 0.5, "the time step (s)"),
        },
        _set_pendulum,
    ),
    "Hopper-v5": ContextFamily(
        "Hopper-v5",
        {
            "gravity": ContextParam(9.81, 0.981, 98.1, "gravity's magnitude (m/s^2)"),
            "friction": ContextParam(1.0, 0.1, 10.0, "a factor on every geom's sliding friction"),
        },
        _set_hopper,
    ),
}


def context_family(env_cfg: Mapping) -> ContextFamily:
    """The context family of an env section's Gymnasium id; a one-line ConfigError for other tasks."""
    env_id = env_cfg.get("id")
    family = CONTEXT_FAMILIES.get(str(env_id))
    if family is None:
        raise ConfigError(
            f"env {env_cfg.get('name')}: id {env_id!r} has no context parameters; contexts are defined for "
            f"{', '.join(CONTEXT_FAMILIES)}"
        )
    return family


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ConfigError(f"env.context.{name}={value!r} must be a finite number")
    return float(value)


def check_value(family: ContextFamily, name: str, value: Any, key: str = "env.context") -> float:
    """`value` of parameter `name` as a float, after the range check (one-line ConfigErrors)."""
    param = family.params.get(name)
    if param is None:
        raise ConfigError(
            f"{key}.{name}: {family.env_id} has no context parameter {name!r}; use {', '.join(family.params)}"
        )
    number = _number(name, value)
    if not param.low <= number <= param.high:
        raise ConfigError(
            f"{key}.{name}={value} is outside its valid range [{param.low}, {param.high}] "
            f"({family.env_id}: {param.meaning}); choose a value in it"
        )
    return number


def resolve_context(env_cfg: Mapping) -> dict[str, float]:
    """The full context of an env section: every parameter, `env.context`'s values over the defaults."""
    family = context_family(env_cfg)
    given = env_cfg.get("context") or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"env.context must map parameter names to numbers, got {given!r}")
    out = {name: p.default for name, p in family.params.items()}
    for name, value in given.items():
        out[str(name)] = check_value(family, str(name), value)
    return out


def resolve_multi_context(env_cfg: Mapping) -> tuple[str, list[float]] | None:
    """`env.multi_context` as (name, values), checked; None when absent."""
    multi = env_cfg.get("multi_context")
    if multi is None:
        return None
    family = context_family(env_cfg)
    if not isinstance(multi, Mapping) or len(multi) != 1:
        raise ConfigError(
            f"env.multi_context must map one parameter to a list of values, e.g. "
            f"{{{next(iter(family.params))}: [a, b]}}; got {multi!r}"
        )
    ((name, values),) = multi.items()
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) < 1:
        raise ConfigError(f"env.multi_context.{name} must be a non-empty list of values, got {values!r}")
    return str(name), [check_value(family, str(name), v, "env.multi_context") for v in values]


def check_context_config(env_cfg: Mapping, *, pixels: bool) -> None:
    """Every check of `make_context_env`, without building anything (a run calls it before writing)."""
    if pixels:
        raise ConfigError(f"env {env_cfg.get('name')}: context envs serve states only; set pixels=false")
    resolve_context(env_cfg)
    resolve_multi_context(env_cfg)


def gym_env(env: Env) -> Any:
    """The Gymnasium env (`.unwrapped`) under an rlrepro adapter (`GymEnv`, `GymDiscreteEnv`)."""
    inner = getattr(env, "_env", None)  # the adapters of common.envs hold their Gymnasium env there
    if inner is None or not hasattr(inner, "unwrapped"):
        raise EnvError(f"a context needs a Gymnasium env adapter, got {type(env).__name__}")
    return inner.unwrapped


def apply_context(env: Env, env_id: str, context: Mapping[str, float]) -> None:
    """Write `context` (every parameter of the family) into the simulator of `env`."""
    CONTEXT_FAMILIES[env_id].apply(gym_env(env), context)


def make_context_env(env_cfg: Mapping, **make_env_kwargs: Any) -> Env:
    """The env of `env_cfg` (suite gym or gym_discrete) with its context applied (keyword arguments: those
    of `common.envs.make_env`); with `multi_context`, a `ContextSampler` around it."""
    from common.envs import make_env

    check_context_config(env_cfg, pixels=bool(make_env_kwargs.get("pixels")))
    family = context_family(env_cfg)
    context = resolve_context(env_cfg)
    multi = resolve_multi_context(env_cfg)
    base = {k: v for k, v in env_cfg.items() if k not in ("context", "multi_context")}
    env = make_env(base, **make_env_kwargs)
    try:
        apply_context(env, family.env_id, context)
        if multi is None:
            return env
        return ContextSampler(env, family, context, *multi, seed=int(make_env_kwargs["seed"]))
    except BaseException:
        env.close()
        raise


class ContextSampler:
    """Multi-task training: before every reset, one value of parameter `name` drawn uniformly from `values`
    (its own RNG, seeded by the env's seed) is written into the simulator. The current context is
    `self.context`; `get_state`/`set_state` carry it and the RNG for an exact resume."""

    def __init__(
        self,
        env: Env,
        family: ContextFamily,
        base: Mapping[str, float],
        name: str,
        values: list[float],
        seed: int,
    ) -> None:
        self._env, self._family, self._name, self._values = env, family, name, list(values)
        self.spec = env.spec
        self.context = dict(base)
        self._rng = np.random.default_rng([seed, 0xC0])

    def _draw(self) -> None:
        self.context[self._name] = self._values[int(self._rng.integers(len(self._values)))]
        apply_context(self._env, self._family.env_id, self.context)

    def reset(self) -> Step:
        self._draw()
        step = self._env.reset()
        step.info = {**step.info, "context": dict(self.context)}
        return step

    def step(self, action: np.ndarray) -> Step:
        return self._env.step(action)

    def get_rng_state(self) -> dict[str, Any]:
        return {
            "env": self._env.get_rng_state(),
            "context_rng": self._rng.bit_generator.state,
            "context": dict(self.context),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        try:
            self._env.set_rng_state(state["env"])
            self._rng.bit_generator.state = state["context_rng"]
            self.context = {str(k): float(v) for k, v in state["context"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"not a context sampler RNG state ({type(exc).__name__}: {exc})") from exc
        apply_context(self._env, self._family.env_id, self.context)

    def get_state(self) -> dict[str, Any] | None:
        inner = self._env.get_state() if hasattr(self._env, "get_state") else None
        return None if inner is None else {"env": inner, "rng": self.get_rng_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._env.set_state(state["env"])  # type: ignore[attr-defined]  # get_state returned it
        self.set_rng_state(state["rng"])

    def close(self) -> None:
        self._env.close()
