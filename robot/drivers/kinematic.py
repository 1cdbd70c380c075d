"""A kinematic stand-in for a position-controlled robot: each joint moves toward its target at (at most) the
spec's velocity limit, with an optional first-order lag. It needs nothing but the spec (no MJCF, no physics),
which is what a test of the robot layer without the sim needs in place of a motor bus."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .base import JointReading, check_command, state_joint_names

if TYPE_CHECKING:
    from realloop.robot.spec import RobotSpec


class KinematicDriver:
    """Joints start at the spec's default pose (gripper at its default) and track position targets.

    Args:
        spec: the robot spec.
        time_constant: s of the first-order lag toward the target (0: move at the velocity limit).
        clock: seconds (default ``time.time``); tests pass a fake one.
    """

    def __init__(self, spec: RobotSpec, time_constant: float = 0.05, clock: Callable[[], float] | None = None) -> None:
        if not time_constant >= 0:
            raise ValueError(f"time_constant must be >= 0 s, got {time_constant}")
        self.spec = spec
        self.names = state_joint_names(spec)
        self.tau = float(time_constant)
        self.clock = clock or time.time
        self.vmax = np.array([j.velocity for j in spec.joints])
        self.q = np.array(spec.default_positions, dtype=float)
        self.v = np.zeros_like(self.q)
        self.target = self.q.copy()
        g = spec.gripper
        self.gripper = None if g is None else float(g.default)
        self.gripper_target = self.gripper
        self.gripper_speed = None if g is None else float(g.velocity)
        self.t: float | None = None
        self.connected = False

    def connect(self) -> None:
        self.t = self.clock()
        self.connected = True

    def _advance(self) -> None:
        now = self.clock()
        dt = max(0.0, now - (self.t if self.t is not None else now))
        self.t = now
        if dt == 0.0:
            return
        err = self.target - self.q
        # first-order lag, capped at the velocity limit
        step = err if self.tau == 0 else err * (1.0 - np.exp(-dt / self.tau))
        step = np.clip(step, -self.vmax * dt, self.vmax * dt)
        self.q = self.q + step
        self.v = step / dt
        if self.gripper is not None and self.gripper_target is not None and self.gripper_speed is not None:
            d = float(np.clip(self.gripper_target - self.gripper, -self.gripper_speed * dt, self.gripper_speed * dt))
            self.gripper += d

    def read_state(self) -> JointReading:
        self._advance()
        pos, vel = list(self.q), list(self.v)
        if self.gripper is not None:
            n_fingers = len(self.names) - len(pos)
            pos += [self.gripper] * n_fingers  # coupled fingers each open by the gripper's opening
            vel += [0.0] * n_fingers
        return JointReading(
            float(self.t if self.t is not None else self.clock()),
            list(self.names),
            np.array(pos),
            np.array(vel),
            np.zeros(0),
        )

    def write_command(self, positions: np.ndarray, gripper: float | None = None) -> None:
        self._advance()
        self.target = check_command(self.spec, positions, gripper)
        if gripper is not None and self.gripper is not None:
            self.gripper_target = float(gripper)

    def close(self) -> None:
        self.connected = False
