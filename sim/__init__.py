"""realloop.sim: the MuJoCo mirror — MJCF models, gymnasium tasks, randomisation, experts.

Importing it registers the gymnasium ids (``realloop/ArmReach-v0``, ``ArmLift-v0``, ``ArmPushT-v0``,
``QuadWalk-v0``); the headless rendering backend is chosen when ``realloop`` is imported.
"""

import os

try:
    import mujoco  # noqa: F401
except Exception as e:  # MuJoCo's GL backend import fails with AttributeError when e.g. libOSMesa is missing
    raise ImportError(
        f"MuJoCo failed to import with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({type(e).__name__}: {e}). "
        "Use MUJOCO_GL=egl (libEGL) or osmesa (libOSMesa) with its library installed, or MUJOCO_GL=disable "
        "for state-only simulation without cameras."
    ) from e

from realloop.robot.spec import (
    CONTROL_MODES,
    CameraSpec,
    CommandSpec,
    GripperSpec,
    JointSpec,
    RobotSpec,
    RobotSpecError,
    load_robot_spec,
)
from realloop.sim.envs import TASKS, RobotEnv

__all__ = [
    "CONTROL_MODES",
    "TASKS",
    "CameraSpec",
    "CommandSpec",
    "GripperSpec",
    "JointSpec",
    "RobotEnv",
    "RobotSpec",
    "RobotSpecError",
    "load_robot_spec",
]
