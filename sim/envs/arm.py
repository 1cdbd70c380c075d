"""Arm tasks on a table (table top at z = 0, arm base at the origin): reach, lift a cube, push a T block.

Each adds its objects to the robot's MJCF, so any arm spec with an `ee_site` and a table-height base works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import mujoco
import numpy as np

from realloop.robot.observation import ROT6D_NAMES, rot6d
from realloop.sim.envs.base import RobotEnv

GOAL_RGBA = (0.2, 0.8, 0.3, 0.45)


def _add_marker(
    scene: mujoco.MjSpec, name: str, shapes: list[tuple[list[float], list[float]]], rgba: Sequence[float]
) -> None:
    """A mocap body of visual-only boxes (half sizes, positions): goals the cameras see but nothing touches."""
    body = scene.worldbody.add_body(name=name, mocap=True)
    for i, (size, pos) in enumerate(shapes):
        body.add_geom(
            name=f"{name}_{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=pos, rgba=rgba, contype=0,
            conaffinity=0, group=1,
        )  # fmt: skip


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class ArmEnv(RobotEnv):
    """An arm task; the default control mode is end-effector delta with an absolute gripper opening."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012 (see RobotEnv.metadata)
    robot_name: ClassVar[str] = "arm6"
    default_control_mode: ClassVar[str] = "ee_delta"

    def _ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.robot.ee_site_id]


class ArmReachEnv(ArmEnv):
    """Move the end effector to a target point (a sphere the cameras see). Success: within `tolerance` m."""

    task_description = "reach the green target"
    env_state_names = ("target.x", "target.y", "target.z")
    target_low = np.array([0.25, -0.25, 0.05])
    target_high = np.array([0.5, 0.25, 0.3])
    tolerance = 0.02

    def _build_scene(self, scene: mujoco.MjSpec) -> None:
        body = scene.worldbody.add_body(name="target", mocap=True)
        body.add_geom(
            name="target", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.02, 0, 0], rgba=GOAL_RGBA, contype=0,
            conaffinity=0, group=1,
        )  # fmt: skip

    def _reset_task(self) -> None:
        self.target = self.np_random.uniform(self.target_low, self.target_high)
        self.data.mocap_pos[self.model.body_mocapid[self.body_id("target")]] = self.target

    def _task_state(self) -> np.ndarray:
        return self.target

    def set_task_state(self, state: np.ndarray) -> None:
        self.target = np.asarray(state, dtype=float)[:3].copy()

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        dist = float(np.linalg.norm(self._ee_pos() - self.target))
        return -dist, dist < self.tolerance, {"distance": dist}


class ArmLiftEnv(ArmEnv):
    """Grasp a 5 cm cube placed at random on the table and lift it `lift_height` m. Success: lifted."""

    task_description = "lift the red cube"
    # the cube's pose, then where it is from the gripper (as robosuite's Lift gives gripper_to_cube_pos): the
    # offset a grasp must bring to zero, a feature a policy need not learn to compute from ee and cube poses
    env_state_names = (
        "cube.x",
        "cube.y",
        "cube.z",
        *(f"cube.{n}" for n in ROT6D_NAMES),
        "cube_from_ee.x",
        "cube_from_ee.y",
        "cube_from_ee.z",
    )
    half = 0.025
    cube_low = np.array([0.3, -0.15])
    cube_high = np.array([0.5, 0.15])
    lift_height = 0.1

    def _build_scene(self, scene: mujoco.MjSpec) -> None:
        body = scene.worldbody.add_body(name="cube", pos=[0.4, 0, self.half])
        body.add_freejoint(name="cube")
        body.add_geom(
            name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[self.half] * 3, mass=0.1, rgba=(0.85, 0.2, 0.2, 1),
            condim=4, friction=[1.0, 0.005, 0.0001],
        )  # fmt: skip

    def _reset_task(self) -> None:
        adr = self.model.jnt_qposadr[self.model.joint("cube").id]
        xy = self.np_random.uniform(self.cube_low, self.cube_high)
        yaw = self.np_random.uniform(-np.pi / 4, np.pi / 4)
        self.data.qpos[adr : adr + 7] = [*xy, self.half, *_yaw_quat(yaw)]

    def _task_state(self) -> np.ndarray:
        bid = self.body_id("cube")
        pos = self.data.xpos[bid]
        return np.concatenate([pos, rot6d(self.data.xmat[bid]), pos - self._ee_pos()])

    def set_task_state(self, state: np.ndarray) -> None:
        """Set the cube from its pose (the first 9 values); the gripper offset follows from the robot's state."""
        state = np.asarray(state, dtype=float)
        pose = self.env_state_names[:9]
        if state.shape[-1] < len(pose):
            raise ValueError(
                f"the arm lift task state starts with the cube's pose ({', '.join(pose)}); got "
                f"{state.shape[-1]} values: publish at least those {len(pose)}"
            )
        c0, c1 = state[3:6], state[6:9]
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, np.column_stack([c0, c1, np.cross(c0, c1)]).ravel())
        adr = self.model.jnt_qposadr[self.model.joint("cube").id]
        self.data.qpos[adr : adr + 7] = [*state[:3], *quat]
        mujoco.mj_kinematics(self.model, self.data)

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        cube = self.data.xpos[self.body_id("cube")]
        reach = float(np.linalg.norm(self._ee_pos() - cube))
        height = float(cube[2] - self.half)
        reward = (1.0 - np.tanh(10.0 * reach)) + 2.0 * min(max(height, 0.0) / self.lift_height, 1.0)
        return reward, height >= self.lift_height, {"height": height, "ee_to_cube": reach}


class ArmPushTEnv(ArmEnv):
    """Push a T-shaped block on the table onto the green goal pose with the closed gripper.

    The block's pose is (x, y, yaw) of its frame at the centre of the T's bar; the stem points along -y of
    that frame. Success: within `pos_tolerance` m and `yaw_tolerance` rad of the goal.
    """

    task_description = "push the T block onto the green target"
    env_state_names = ("block.x", "block.y", "block.cos", "block.sin", "goal.x", "goal.y", "goal.cos", "goal.sin")
    # (half size, centre) of the bar and the stem, in the block frame; 3 cm tall
    shapes: ClassVar[list[tuple[list[float], list[float]]]] = [
        ([0.08, 0.02, 0.015], [0.0, 0.0, 0.0]),
        ([0.02, 0.06, 0.015], [0.0, -0.08, 0.0]),
    ]
    goal = np.array([0.42, 0.05, 0.0])  # x, y, yaw
    # x <= 0.46: pushing the block towards the arm needs a contact on its far side, and a gripper pointing down
    # reaches ~0.53 m at table height; starts further out were often unrecoverable
    block_low = np.array([0.3, -0.15, -np.pi])
    block_high = np.array([0.46, 0.15, np.pi])
    pos_tolerance = 0.02
    yaw_tolerance = 0.2

    def _build_scene(self, scene: mujoco.MjSpec) -> None:
        body = scene.worldbody.add_body(name="tblock", pos=[0.4, 0, 0.015])
        body.add_freejoint(name="tblock")
        for i, (size, pos) in enumerate(self.shapes):
            # priority: the block's low friction wins over the table's, so it slides when pushed
            body.add_geom(
                name=f"tblock_{i}", type=mujoco.mjtGeom.mjGEOM_BOX, size=size, pos=pos, density=600,
                rgba=(0.25, 0.45, 0.85, 1), condim=3, friction=[0.4, 0.005, 0.0001], priority=1,
            )  # fmt: skip
        _add_marker(scene, "goal", [([s[0], s[1], 0.0005], [p[0], p[1], 0.0]) for s, p in self.shapes], GOAL_RGBA)

    def _reset_task(self) -> None:
        mid = self.model.body_mocapid[self.body_id("goal")]
        self.data.mocap_pos[mid] = [self.goal[0], self.goal[1], 0.0006]
        self.data.mocap_quat[mid] = _yaw_quat(self.goal[2])
        while True:  # never start (nearly) solved
            x, y, yaw = self.np_random.uniform(self.block_low, self.block_high)
            if np.hypot(x - self.goal[0], y - self.goal[1]) > 0.05 or abs(_wrap(yaw - self.goal[2])) > 0.5:
                break
        adr = self.model.jnt_qposadr[self.model.joint("tblock").id]
        self.data.qpos[adr : adr + 7] = [x, y, 0.015, *_yaw_quat(yaw)]

    def block_pose(self) -> np.ndarray:
        """(x, y, yaw) of the block."""
        bid = self.body_id("tblock")
        m = self.data.xmat[bid]
        return np.array([self.data.xpos[bid, 0], self.data.xpos[bid, 1], np.arctan2(m[3], m[0])])

    def _task_state(self) -> np.ndarray:
        x, y, yaw = self.block_pose()
        gx, gy, gyaw = self.goal
        return np.array([x, y, np.cos(yaw), np.sin(yaw), gx, gy, np.cos(gyaw), np.sin(gyaw)])

    def set_task_state(self, state: np.ndarray) -> None:
        x, y, c, s, gx, gy, gc, gs = np.asarray(state, dtype=float)
        adr = self.model.jnt_qposadr[self.model.joint("tblock").id]
        self.data.qpos[adr : adr + 7] = [x, y, 0.015, *_yaw_quat(float(np.arctan2(s, c)))]
        self.goal = np.array([gx, gy, float(np.arctan2(gs, gc))])
        mid = self.model.body_mocapid[self.body_id("goal")]
        self.data.mocap_pos[mid] = [gx, gy, 0.0006]
        self.data.mocap_quat[mid] = _yaw_quat(self.goal[2])
        mujoco.mj_kinematics(self.model, self.data)

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        x, y, yaw = self.block_pose()
        pos_err = float(np.hypot(x - self.goal[0], y - self.goal[1]))
        yaw_err = abs(_wrap(yaw - self.goal[2]))
        success = pos_err < self.pos_tolerance and yaw_err < self.yaw_tolerance
        return -(pos_err / 0.1 + yaw_err / np.pi), success, {"pos_error": pos_err, "yaw_error": yaw_err}
