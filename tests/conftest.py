"""Test-session set-up: headless MuJoCo rendering, chosen before any test module imports mujoco."""

import os

if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")
