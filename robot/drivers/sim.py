"""A driver on MuJoCo physics: the robot alone (its spec's MJCF, no task scene) stepped in real time. The sim
mirror node (robot/nodes/sim_mirror.py) is the full task mirror with objects, cameras and /clock; this driver is
the same robot behind the driver contract, so the driver node runs against physics exactly as against hardware."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .base import JointReading, check_command, state_joint_names

if TYPE_CHECKING:
    from realloop.robot.spec import RobotSpec
    from realloop.sim.robot import SimRobot

MAX_CATCH_UP_S = 0.1  # a stalled reader does not make the physics jump by more than this


class SimDriver:
    """Args: spec; clock (seconds, default ``time.monotonic``): physics advances by the clock's elapsed time."""

    def __init__(self, spec: RobotSpec, clock: Callable[[], float] | None = None) -> None:
        self.spec = spec
        self.names = state_joint_names(spec)
        self.clock = clock or time.monotonic
        self.robot: SimRobot | None = None
        self._t: float | None = None

    def connect(self) -> None:
        import mujoco

        from realloop.sim.mjcf import load_model
        from realloop.sim.robot import SimRobot

        model = load_model(self.spec, "the sim driver")
        self._mj = mujoco
        self.robot = robot = SimRobot(self.spec, model, mujoco.MjData(model))
        robot.reset()
        self._t = self.clock()
        self._wall0 = time.time() - float(robot.data.time)

    def _advance(self) -> SimRobot:
        """Step the physics up to the clock; the connected robot."""
        assert self.robot is not None, "connect() first"
        now = self.clock()
        dt = min(now - (self._t or now), MAX_CATCH_UP_S)
        n = int(dt / self.robot.model.opt.timestep)
        if n > 0:
            self._mj.mj_step(self.robot.model, self.robot.data, nstep=n)
            self._t = (self._t or now) + n * self.robot.model.opt.timestep
            if now - self._t > MAX_CATCH_UP_S:
                self._t = now
        return self.robot

    def read_state(self) -> JointReading:
        r = self._advance()
        pos, vel = list(r.joint_positions()), list(r.joint_velocities())
        if r.has_gripper:
            n = len(self.names) - len(pos)
            pos += [r.gripper_opening()] * n
            vel += [0.0] * n
        return JointReading(
            self._wall0 + float(r.data.time), list(self.names), np.array(pos), np.array(vel), np.zeros(0)
        )

    def write_command(self, positions: np.ndarray, gripper: float | None = None) -> None:
        self._advance().command(check_command(self.spec, positions, gripper), gripper)

    def close(self) -> None:
        self.robot = None
