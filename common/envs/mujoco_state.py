"""The state of a MuJoCo simulation, captured and restored bit-exactly (for mid-episode checkpoints).

`mj_getState(..., mjSTATE_INTEGRATION)` holds everything `mj_step` reads: time, qpos, qvel, act, the
constraint solver's warm start, controls, applied forces, mocap poses, user data and plugin state. Tasks may
also edit the model when an episode starts (DMC reacher moves its target's geom, finger its target site), so
the model's arrays that differ from their values at construction are captured too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import mujoco


def model_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    """Copies of every numeric array of `model` (the baseline `capture` diffs against)."""
    out = {}
    for name in dir(model):
        if not name.startswith("_"):
            value = getattr(model, name)
            if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
                out[name] = value.copy()
    return out


def capture(model: mujoco.MjModel, data: mujoco.MjData, baseline: dict[str, np.ndarray]) -> dict[str, Any]:
    """The integration state of `data` and the arrays of `model` that differ from `baseline`."""
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(model, spec), np.float64)
    mujoco.mj_getState(model, data, state, spec)
    changed = {
        name: torch.from_numpy(getattr(model, name).copy())
        for name, base in baseline.items()
        if not np.array_equal(getattr(model, name), base)
    }
    return {"integration": torch.from_numpy(state), "model": changed}


def restore(
    model: mujoco.MjModel, data: mujoco.MjData, baseline: dict[str, np.ndarray], saved: dict[str, Any]
) -> None:
    """Put `model` and `data` back into a `capture`d state (the model from `baseline` plus its changes)."""
    import mujoco

    changed = saved["model"]
    for name, base in baseline.items():
        value = changed[name].numpy() if name in changed else base
        target = getattr(model, name)
        if not np.array_equal(target, value):
            target[...] = value
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = saved["integration"].numpy()
    mujoco.mj_setState(model, data, state, spec)
    mujoco.mj_forward(model, data)  # derived quantities (positions, contacts, sensors) for rendering
    mujoco.mj_setState(model, data, state, spec)  # mj_forward rewrote the solver's warm start
