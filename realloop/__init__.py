"""realloop: a robot-learning stack for real robots (ROS 2, zarr episode dataset, policies, MuJoCo mirror).

The code lives in one folder per capability, each installed as a subpackage:
``data/`` is ``realloop.data``, ``robot/`` is ``realloop.robot``, ``sim/`` is ``realloop.sim``,
``policies/`` is ``realloop.policies``.

On a machine without a display, importing realloop selects headless EGL rendering for MuJoCo
(``MUJOCO_GL=egl``) unless MUJOCO_GL is already set, so any realloop module may import MuJoCo first.
"""

import os
import sys

# MuJoCo reads MUJOCO_GL once, when first imported: setting it later would only make error messages lie
if "mujoco" not in sys.modules and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
