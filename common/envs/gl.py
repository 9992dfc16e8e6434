"""Headless OpenGL for MuJoCo rendering: pick a backend before import, explain a failure in one line."""

from __future__ import annotations

import os

from common.errors import EnvError

GL_PACKAGES_HINT = (
    "install a headless GL backend: apt-get install libegl1 libgl1 libgl1-mesa-dri libegl-mesa0 "
    "(MUJOCO_GL=egl), or apt-get install libosmesa6 and set MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa"
)


def ensure_headless_gl() -> str:
    """Select EGL when `MUJOCO_GL` is unset, and return the backend in use.

    Must run before mujoco, dm_control or gymnasium's MuJoCo envs are imported: dm_control picks its
    backend at import time, and the default (GLFW) needs a display.
    """
    if not os.environ.get("MUJOCO_GL"):
        os.environ["MUJOCO_GL"] = "egl"
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    return os.environ["MUJOCO_GL"]


def gl_error(exc: BaseException, action: str) -> EnvError:
    """An `EnvError` for `action` (a render, or a renderer import) that failed because no GL backend loads."""
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return EnvError(
        f"cannot {action} with MUJOCO_GL={backend} ({type(exc).__name__}: {detail}); {GL_PACKAGES_HINT}"
    )
