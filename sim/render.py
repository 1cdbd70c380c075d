"""Headless camera rendering of MuJoCo scenes, with a clear error when no OpenGL backend is usable.

Importing `realloop` sets ``MUJOCO_GL=egl`` before MuJoCo is imported when the machine has no display and the
variable is unset; set it yourself (``egl``, ``osmesa`` or ``glfw``) to choose another backend.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np


class RenderError(RuntimeError):
    """MuJoCo cannot create an OpenGL context here."""


def gl_hint() -> str:
    backend = os.environ.get("MUJOCO_GL")
    early = " (MuJoCo was imported before realloop could pick a headless backend)" if backend is None else ""
    return (
        f"MUJOCO_GL={backend!r}{early}. Without a display use MUJOCO_GL=egl (needs libEGL: a GPU driver or Mesa, e.g. "
        "`apt install libegl1`) or MUJOCO_GL=osmesa (CPU, `apt install libosmesa6`), set before MuJoCo is first "
        "imported; or run without cameras (images=false)."
    )


class CameraRenderer:
    """Renders named MJCF cameras of one model at one resolution (H x W x 3 uint8 RGB).

    Shadows are off unless asked for: with software OpenGL (Mesa llvmpipe, no GPU) the shadow map costs about
    ten times the rest of a small frame.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, shadows: bool = False) -> None:
        # the offscreen framebuffer must hold the image; grow it rather than make users edit their MJCF
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        try:
            self._renderer = mujoco.Renderer(model, height, width)
        except Exception as e:  # mujoco raises FatalError, RuntimeError or ImportError depending on the backend
            msg = f"cannot create an OpenGL context to render {width}x{height} images: {e}. {gl_hint()}"
            raise RenderError(msg) from e
        self.model, self.height, self.width, self.shadows = model, height, width, shadows

    def render(self, data: mujoco.MjData, camera: str | int) -> np.ndarray:
        try:
            self._renderer.update_scene(data, camera=camera)
        except ValueError as e:
            cams = [self.model.camera(i).name for i in range(self.model.ncam)]
            raise ValueError(f"camera {camera!r} is not in the model; cameras: {', '.join(cams)}") from e
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.shadows
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()


def off_axis_deg(model: mujoco.MjModel, data: mujoco.MjData, camera: str, point: np.ndarray) -> float:
    """Degrees between a camera's optical axis and the direction to a world ``point`` (after ``mj_forward``);
    the point is in view when this is below about half the camera's ``fovy``."""
    cam = model.camera(camera).id
    p = data.cam_xmat[cam].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[cam])  # camera frame, looks along -z
    return float(np.degrees(np.arctan2(np.hypot(p[0], p[1]), -p[2])))
