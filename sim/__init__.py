"""realloop.sim: the MuJoCo mirror (see ../shared/ARCHITECTURE.md). So far: robot specs and MJCF models."""

from realloop.sim.spec import (
    CONTROL_MODES,
    CameraSpec,
    CommandSpec,
    GripperSpec,
    JointSpec,
    RobotSpec,
    RobotSpecError,
    load_robot_spec,
)

__all__ = [
    "CONTROL_MODES",
    "CameraSpec",
    "CommandSpec",
    "GripperSpec",
    "JointSpec",
    "RobotSpec",
    "RobotSpecError",
    "load_robot_spec",
]
