"""How good synthetic transitions are: moments against the real data, and dynamics error in the simulator."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from common.buffers.diffusion.config import Transitions
from common.buffers.diffusion.layout import TransitionLayout


def quality_report(real: Transitions, synthetic: Transitions, action_out_of_bounds: float) -> dict[str, Any]:
    """How synthetic data compares with real data, per dimension of ``[s, a, r, s']``.

    Returns scalars (`mean_abs_z`: mean over dims of |mean_syn - mean_real| / std_real; `std_log_ratio`: mean
    over dims of |ln(std_syn / std_real)|; `action_out_of_bounds`; `terminal_rate` real and synthetic) and
    the per-dimension lists under `per_dim`.
    """
    layout = TransitionLayout(real["observations"].shape[1], real["actions"].shape[1], False)
    xr, xs = layout.flatten(real).astype(np.float64), layout.flatten(synthetic).astype(np.float64)
    mr, sr, ms, ss = xr.mean(0), xr.std(0) + 1e-8, xs.mean(0), xs.std(0) + 1e-8
    return {
        "mean_abs_z": float(np.mean(np.abs(ms - mr) / sr)),
        "std_log_ratio": float(np.mean(np.abs(np.log(ss / sr)))),
        "action_out_of_bounds": float(action_out_of_bounds),
        "terminal_rate_real": float(np.mean(real["terminations"])),
        "terminal_rate_synthetic": float(np.mean(synthetic["terminations"])),
        "per_dim": {
            "real_mean": mr.tolist(),
            "real_std": sr.tolist(),
            "syn_mean": ms.tolist(),
            "syn_std": ss.tolist(),
        },
    }


class MujocoDynamicsCheck:
    """Dynamics error of synthetic transitions: set the simulator to s, apply a, compare its next obs with s'.

    Supported: Gymnasium MuJoCo envs whose observation is ``[qpos[1:], qvel]`` (the full state but the
    x-position, which the dynamics do not depend on): Hopper, Walker2d, HalfCheetah (also Swimmer). Hopper and
    Walker2d clip qvel to +-10 in the observation, so states beyond that are set clipped. Others (Ant with
    contact forces, Humanoid, DMC) are skipped: `supported` is False and `error` returns None.
    """

    def __init__(self, env_id: str) -> None:
        import gymnasium as gym

        self.env = cast(Any, gym.make(env_id).unwrapped)  # a MujocoEnv when supported
        model: Any = getattr(self.env, "model", None)
        obs_dim = self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.supported = (
            model is not None
            and hasattr(self.env, "set_state")
            and getattr(self.env, "_exclude_current_positions_from_observation", False)
            and obs_dim == model.nq - 1 + model.nv
        )
        if self.supported:
            self.nq, self.low, self.high = model.nq, self.env.action_space.low, self.env.action_space.high

    def error(self, t: Transitions, max_n: int = 1000) -> float | None:
        """Mean over transitions of the RMS (over dims) of s'_syn - s'_sim; None if unsupported."""
        if not self.supported:
            return None
        env, errs = self.env, []
        self.env.reset(seed=0)
        for i in range(min(max_n, len(t["rewards"]))):
            s, a, s2 = t["observations"][i], t["actions"][i], t["next_observations"][i]
            qpos = np.concatenate([[0.0], s[: self.nq - 1]])
            env.set_state(qpos, s[self.nq - 1 :])
            ctrl = self.low + (np.clip(a, -1, 1) + 1.0) * 0.5 * (
                self.high - self.low
            )  # [-1, 1] -> env bounds
            env.do_simulation(ctrl, env.frame_skip)
            errs.append(float(np.sqrt(np.mean((env._get_obs() - s2) ** 2))))
        return float(np.mean(errs)) if errs else None

    def close(self) -> None:
        self.env.close()
