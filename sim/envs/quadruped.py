"""Quadruped task: walk at a commanded planar velocity (forward, sideways, yaw rate) on flat ground."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from realloop.sim.envs.base import RobotEnv

AXES = ("x", "y", "z")


class QuadWalkEnv(RobotEnv):
    """Track a velocity command drawn at reset, expressed in the trunk frame.

    observation.state: joint positions and velocities, IMU angular velocity, gravity in the trunk frame and the
    trunk's linear velocity (what a state estimator gives on the real robot). observation.environment_state:
    the command (vx, vy, yaw rate). The episode fails (terminates) when the robot falls; `is_success` says the
    robot is up and its mean velocity error since `warmup` seconds is below `tolerance` m/s.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 50}
    robot_name: ClassVar[str] = "quad12"
    default_control_mode: ClassVar[str] = "joint_position"
    task_description: ClassVar[str] = "walk at the commanded velocity"
    env_state_names: ClassVar[tuple[str, ...]] = ("command.vx", "command.vy", "command.wz")
    ends_on_success: ClassVar[bool] = False
    command_low = np.array([0.2, 0.0, 0.0])
    command_high = np.array([0.5, 0.0, 0.0])
    warmup = 1.0
    tolerance = 0.1
    min_height = 0.15
    min_upright = 0.5

    @property
    def state_names(self) -> list[str]:
        names = self.robot.spec.joint_names
        return [
            *(f"{n}.pos" for n in names),
            *(f"{n}.vel" for n in names),
            *(f"imu.gyro.{a}" for a in AXES),
            *(f"gravity.{a}" for a in AXES),
            *(f"base.v{a}" for a in AXES),
        ]

    def _sensor(self, name: str) -> np.ndarray:
        s = self.model.sensor(name)
        return self.data.sensordata[s.adr[0] : s.adr[0] + s.dim[0]]

    def _trunk_rot(self) -> np.ndarray:
        return self.data.xmat[self.model.body("trunk").id].reshape(3, 3)

    def _robot_state(self) -> np.ndarray:
        gravity = self._trunk_rot().T @ np.array([0.0, 0.0, -1.0])
        return np.concatenate(
            [
                self.robot.joint_positions(),
                self.robot.joint_velocities(),
                self._sensor("imu_gyro"),
                gravity,
                self._sensor("imu_vel"),
            ]
        )

    def _reset_task(self) -> None:
        self.command = self.np_random.uniform(self.command_low, self.command_high)
        self._error_sum, self._error_count = 0.0, 0

    def _task_state(self) -> np.ndarray:
        return self.command

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        v = self._sensor("imu_vel")
        wz = float(self._sensor("imu_gyro")[2])
        lin_err = float(np.linalg.norm(v[:2] - self.command[:2]))
        yaw_err = abs(wz - float(self.command[2]))
        if self._steps * self.robot.control_dt >= self.warmup:
            self._error_sum += lin_err
            self._error_count += 1
        mean_err = self._error_sum / self._error_count if self._error_count else float("inf")
        reward = np.exp(-(lin_err**2) / 0.05) + 0.5 * np.exp(-(yaw_err**2) / 0.1) - 0.5 * float(self._failed())
        success = self._error_count > 0 and mean_err < self.tolerance and not self._failed()
        return float(reward), success, {"velocity_error": lin_err, "mean_velocity_error": mean_err}

    def _failed(self) -> bool:
        trunk = self.data.xpos[self.model.body("trunk").id]
        return bool(trunk[2] < self.min_height or self._trunk_rot()[2, 2] < self.min_upright)
