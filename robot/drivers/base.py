"""The driver contract: what realloop needs from robot hardware that has no ROS 2 interface of its own.

A driver talks to one robot (a motor bus, a vendor SDK, a simulator) in the robot spec's units and joint order:

- ``connect()``: open the connection; raise :class:`DriverError` with the reason when the robot is not there;
- ``read_state()``: the newest measured state (:class:`JointReading`), never blocking for long;
- ``write_command(positions, gripper)``: position targets for the spec's joints (and the gripper's opening);
  commands reach the driver only through the safety filter, so a driver does not re-check limits, but it
  must refuse what it cannot execute (wrong length, non-finite) by raising ``DriverError``;
- ``close()``: stop and release the hardware (idempotent).

The ``driver`` node serves any driver as ``/joint_states`` and the ros2_control command topics, so the recorder,
safety filter, teleop and policy runner work unchanged on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from realloop.robot.spec import RobotSpec


class DriverError(RuntimeError):
    """The robot cannot be reached or cannot execute a command."""


@dataclass
class JointReading:
    """A measured joint state at ``stamp`` (s, the driver's clock): ``names`` are the spec's joints followed by
    the gripper's joints; ``velocity`` and ``effort`` may be empty when the hardware does not report them."""

    stamp: float
    names: list[str]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@runtime_checkable
class Driver(Protocol):
    def connect(self) -> None: ...

    def read_state(self) -> JointReading: ...

    def write_command(self, positions: np.ndarray, gripper: float | None = None) -> None: ...

    def close(self) -> None: ...


def state_joint_names(spec: RobotSpec) -> list[str]:
    """The joint names a driver reports: the spec's joints, then the gripper's (its first one is the opening)."""
    names = [j.name for j in spec.joints]
    gripper = spec.gripper
    return names + (list(gripper.joints) if gripper is not None else [])


def check_command(spec: RobotSpec, positions: np.ndarray, gripper: float | None) -> np.ndarray:
    """``positions`` as float64 if it fits the spec's joints and is finite, else DriverError."""
    q = np.asarray(positions, dtype=float)
    n = len(spec.joints)
    if q.shape != (n,):
        raise DriverError(f"command has {q.size} joint positions, the robot has {n}")
    if not np.isfinite(q).all() or (gripper is not None and not np.isfinite(gripper)):
        raise DriverError(f"command is not finite: {q.tolist()}, gripper {gripper}")
    return q
