"""Quadruped task: walk at a commanded planar velocity (forward, sideways, yaw rate) on flat ground."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from realloop.sim.envs.base import RobotEnv

AXES = ("x", "y", "z")


class QuadWalkEnv(RobotEnv):
    """Track a velocity command drawn at reset, expressed in the trunk frame.

    observation.state: joint positions and velocities, IMU angular velocity, gravity in the trunk frame and the
    trunk's linear velocity (what a state estimator gives on the real robot). observation.environment_state:
    the command (vx, vy, yaw rate), uniform in [`command_low`, `command_high`]: always at least 0.2 m/s forward,
    so standing still never tracks it. The episode fails (terminates) when the robot falls (trunk below
    `min_height` or tilted past `min_upright`). `is_success`: the robot is up, its mean planar velocity error since
    `warmup` seconds is below `tolerance` m/s, and its mean yaw rate over that time is within `yaw_tolerance`
    rad/s of the command. The yaw rate is compared on average, not per step: a trot rocks the trunk in yaw at
    the gait frequency (a few tenths of a rad/s), which says nothing about how well it turns.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012 (see RobotEnv.metadata)
    robot_name: ClassVar[str] = "quad12"
    default_control_mode: ClassVar[str] = "joint_position"
    task_description: ClassVar[str] = "walk at the commanded velocity"
    env_state_names: ClassVar[tuple[str, ...]] = ("command.vx", "command.vy", "command.wz")
    ends_on_success: ClassVar[bool] = False
    render_camera: ClassVar[str] = "track"
    command_low: ClassVar[np.ndarray] = np.array([0.2, -0.2, -0.5])  # vx, vy [m/s], yaw rate [rad/s]
    command_high: ClassVar[np.ndarray] = np.array([0.8, 0.2, 0.5])
    warmup: ClassVar[float] = 1.0  # s before tracking counts (the robot starts standing)
    tolerance: ClassVar[float] = 0.1  # m/s, mean planar velocity error
    yaw_tolerance: ClassVar[float] = 0.1  # rad/s, error of the mean yaw rate
    min_height: ClassVar[float] = 0.15  # m, trunk centre above the floor (it stands at 0.31)
    min_upright: ClassVar[float] = 0.5  # trunk z axis . world z (cos of 60 degrees tilt)

    def _state_groups(self) -> dict[str, list[str]]:
        return {
            **super()._state_groups(),
            "imu.gyro": [f"imu.gyro.{a}" for a in AXES],
            "gravity": [f"gravity.{a}" for a in AXES],
            "base.v": [f"base.v{a}" for a in AXES],
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # sensor slices once: name lookups cost more than the rest of a step's bookkeeping
        self._slices = {}
        for name in ("imu_gyro", "imu_vel"):
            s = self.model.sensor(name)
            self._slices[name] = slice(int(s.adr[0]), int(s.adr[0] + s.dim[0]))

    def _sensor(self, name: str) -> np.ndarray:
        return self.data.sensordata[self._slices[name]]

    def _trunk_rot(self) -> np.ndarray:
        return self.data.xmat[self.body_id("trunk")].reshape(3, 3)

    def _state_readings(self) -> dict[str, np.ndarray]:
        gravity = -self._trunk_rot()[2]  # world -z in the trunk frame: the last row of R, negated
        return {
            **super()._state_readings(),
            "imu.gyro": self._sensor("imu_gyro"),
            "gravity": gravity,
            "base.v": self._sensor("imu_vel"),
        }

    def _reset_task(self) -> None:
        self.command = self.np_random.uniform(self.command_low, self.command_high)
        self._error_sum, self._yaw_sum, self._error_count = 0.0, 0.0, 0

    def _task_state(self) -> np.ndarray:
        return self.command

    def set_task_state(self, state: np.ndarray) -> None:
        self.command = np.asarray(state, dtype=float)[:3].copy()

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        v = self._sensor("imu_vel")
        wz = float(self._sensor("imu_gyro")[2])
        lin_err = math.hypot(v[0] - self.command[0], v[1] - self.command[1])  # scalar math: cheaper than numpy
        yaw_err = abs(wz - float(self.command[2]))
        if self._steps * self.robot.control_dt >= self.warmup:
            self._error_sum += lin_err
            self._yaw_sum += wz
            self._error_count += 1
        n = self._error_count
        mean_err = self._error_sum / n if n else float("inf")
        mean_yaw_err = abs(self._yaw_sum / n - float(self.command[2])) if n else float("inf")
        failed = self._failed()
        reward = math.exp(-(lin_err**2) / 0.05) + 0.5 * math.exp(-(yaw_err**2) / 0.1) - 0.5 * float(failed)
        success = n > 0 and mean_err < self.tolerance and mean_yaw_err < self.yaw_tolerance and not failed
        info = {"velocity_error": lin_err, "mean_velocity_error": mean_err, "mean_yaw_rate_error": mean_yaw_err}
        return float(reward), success, info

    def _failed(self) -> bool:
        trunk = self.data.xpos[self.body_id("trunk")]
        return bool(trunk[2] < self.min_height or self._trunk_rot()[2, 2] < self.min_upright)
