"""Action modes: how an action vector becomes joint position targets (joint position, joint delta, ee delta).

Every mode is set-point based: deltas add to the last commanded targets, not to the measured state, so a
position servo's steady-state error (gravity sag) never accumulates, as on a real position-controlled arm.
The gripper, when the robot has one, is always the last action entry: an absolute opening in the spec's units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np

from realloop.sim.robot import SimRobot

EE_AXES = ("x", "y", "z", "roll", "pitch", "yaw")


class ActionMode:
    """Maps actions to robot commands. `space` is the gymnasium Box, `names` labels its entries."""

    name: str
    space: gym.spaces.Box
    names: list[str]

    def __init__(self, robot: SimRobot) -> None:
        self.robot = robot

    def _with_gripper(self, low: np.ndarray, high: np.ndarray, names: list[str]) -> None:
        g = self.robot.spec.gripper
        if g is not None:
            low, high, names = np.append(low, g.lower), np.append(high, g.upper), [*names, "gripper"]
        self.space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.names = names
        self._low, self._high = self.space.low.astype(float), self.space.high.astype(float)

    def validate(self, action: np.ndarray) -> np.ndarray:
        """The action as float64, clipped to the space; ValueError on a wrong shape, NaN or inf."""
        a = np.asarray(action, dtype=float)
        if a.shape != self.space.shape:
            raise ValueError(f"{self.name} action of shape {a.shape}, expected {self.space.shape} ({self.names})")
        if not np.isfinite(a).all():
            raise ValueError(f"{self.name} action contains NaN or inf: {a}; the robot keeps its last command")
        return np.minimum(np.maximum(a, self._low), self._high)  # np.clip costs more on tiny arrays

    def _split(self, a: np.ndarray) -> tuple[np.ndarray, float | None]:
        if self.robot.has_gripper:
            return a[:-1], float(a[-1])
        return a, None

    def hold(self) -> np.ndarray:
        """The action that keeps the current targets (what a robot does before its first command arrives)."""
        a = np.zeros(self.space.shape, dtype=np.float32)
        if self.robot.has_gripper:
            a[-1] = self.robot.gripper_target()
        return a

    def apply(self, action: np.ndarray) -> None:
        """Turn one action, already checked by `validate`, into robot commands."""
        raise NotImplementedError

    def step_scale(self) -> np.ndarray:
        """Per action entry, how far one control step can move it: the step bound of a delta mode, the joint
        velocity limit times the control period for absolute targets; 0 for the gripper (a discrete command).
        The unit of the demonstration noise of realloop-collect."""
        scale = np.maximum(np.abs(self._low), np.abs(self._high))
        if self.robot.has_gripper:
            scale[-1] = 0.0
        return scale


class JointPosition(ActionMode):
    """Absolute joint position targets (rad or m), bounded by the spec's position limits."""

    name = "joint_position"

    def __init__(self, robot: SimRobot) -> None:
        super().__init__(robot)
        self._with_gripper(robot.lower, robot.upper, robot.spec.joint_names)

    def hold(self) -> np.ndarray:
        a = self.robot.joint_targets()
        if self.robot.has_gripper:
            a = np.append(a, self.robot.gripper_target())
        return a.astype(np.float32)

    def step_scale(self) -> np.ndarray:
        step = self.robot.velocity_limit * self.robot.control_dt
        return np.append(step, 0.0) if self.robot.has_gripper else np.asarray(step, dtype=float)

    def apply(self, action: np.ndarray) -> None:
        q, g = self._split(action)
        self.robot.command(q, g)


class JointDelta(ActionMode):
    """Per-step change of the joint targets, bounded by each joint's velocity limit times the control period."""

    name = "joint_delta"

    def __init__(self, robot: SimRobot) -> None:
        super().__init__(robot)
        step = robot.velocity_limit * robot.control_dt
        self._with_gripper(-step, step, [f"{n}.delta" for n in robot.spec.joint_names])

    def apply(self, action: np.ndarray) -> None:
        dq, g = self._split(action)
        self.robot.command(self.robot.joint_targets() + dq, g)


@dataclass(frozen=True)
class IKConfig:
    """Damped least squares: `damping` (m), up to `iterations` Gauss-Newton steps, stop below `tolerance`.

    Per-step deltas are small, so a few iterations converge (quadratically) far below a millimetre.
    """

    damping: float = 0.02
    iterations: int = 4
    tolerance: float = 5e-4


class EEDelta(ActionMode):
    """End-effector delta in the world frame: [dx, dy, dz] (m) and [droll, dpitch, dyaw] (rad, axis-angle).

    The target pose is the forward kinematics of the current joint targets plus the delta; differential IK
    (damped least squares on the site Jacobian, on a scratch MjData) turns it into joint targets, limited to
    each joint's velocity limit per control period. With ``workspace`` (min, max corners, world frame, m) the
    target position is first clipped into that box: a step that would leave it keeps its in-box part instead
    of being refused whole by a safety filter checking the same box.
    """

    name = "ee_delta"

    def __init__(
        self, robot: SimRobot, max_linear_speed: float = 0.5, max_angular_speed: float = 3.0, ik: IKConfig = IKConfig()
    ) -> None:
        super().__init__(robot)
        if robot.ee_site_id < 0:
            raise ValueError(f"robot {robot.spec.name!r}: the ee_delta control mode needs an ee_site in its spec")
        dt = robot.control_dt
        step = np.array([max_linear_speed * dt] * 3 + [max_angular_speed * dt] * 3)
        self._with_gripper(-step, step, [f"ee.d{a}" for a in EE_AXES])
        self.ik = ik
        self._scratch = mujoco.MjData(robot.model)
        self._jac = np.zeros((6, robot.model.nv))
        self._damp = ik.damping**2 * np.eye(6)
        adr = robot.dof_adr
        contiguous = np.array_equal(adr, np.arange(adr[0], adr[0] + adr.size))
        self._dofs = slice(int(adr[0]), int(adr[0] + adr.size)) if contiguous else adr  # a view, not a copy
        self._quat = np.empty(4)
        self.workspace: tuple[np.ndarray, np.ndarray] | None = None

    def set_workspace(self, low: np.ndarray | list[float] | None, high: np.ndarray | list[float] | None) -> None:
        """Clip end-effector targets into the box [low, high] (m, world frame); None removes the box."""
        if low is None or high is None:
            self.workspace = None
            return
        lo, hi = np.asarray(low, dtype=float).reshape(3), np.asarray(high, dtype=float).reshape(3)
        if not np.all(lo < hi):
            raise ValueError(f"ee_delta workspace: min {lo.tolist()} must be < max {hi.tolist()} on every axis")
        self.workspace = (lo, hi)

    def _fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Kinematics of the scratch data at joint positions `q`; returns views of the site pose."""
        r, d = self.robot, self._scratch
        d.qpos[r.qpos_adr] = q
        mujoco.mj_kinematics(r.model, d)
        mujoco.mj_comPos(r.model, d)  # the Jacobian needs the com-based quantities
        mujoco.mju_mat2Quat(self._quat, d.site_xmat[r.ee_site_id])
        return d.site_xpos[r.ee_site_id], self._quat

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position and quaternion (wxyz) at joint positions `q` (other joints as measured now)."""
        self._scratch.qpos[:] = self.robot.data.qpos
        pos, quat = self._fk(q)
        return pos.copy(), quat.copy()

    def solve(self, q0: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray) -> np.ndarray:
        """Joint positions near `q0` that put the end effector at (target_pos, target_quat), within limits."""
        self._scratch.qpos[:] = self.robot.data.qpos
        return self._solve(q0, np.asarray(target_pos, dtype=float), np.asarray(target_quat, dtype=float))

    def _solve(
        self, q: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray, fk_done: bool = False
    ) -> np.ndarray:
        r = self.robot
        q = q.copy()
        err, neg, dq_quat = np.empty(6), np.empty(4), np.empty(4)
        for i in range(self.ik.iterations + 1):
            if i > 0 or not fk_done:
                pos, quat = self._fk(q)
            else:  # the caller just ran the kinematics at q
                pos, quat = self._scratch.site_xpos[r.ee_site_id], self._quat
            err[:3] = target_pos - pos
            mujoco.mju_negQuat(neg, quat)
            mujoco.mju_mulQuat(dq_quat, target_quat, neg)
            mujoco.mju_quat2Vel(err[3:], dq_quat, 1.0)
            if i == self.ik.iterations or err @ err < self.ik.tolerance**2:
                break
            mujoco.mj_jacSite(r.model, self._scratch, self._jac[:3], self._jac[3:], r.ee_site_id)
            jac = self._jac[:, self._dofs]
            q = np.minimum(np.maximum(q + jac.T @ np.linalg.solve(jac @ jac.T + self._damp, err), r.lower), r.upper)
        return q

    def apply(self, action: np.ndarray) -> None:
        self.robot.command(*self._targets(action))

    def targets(self, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The joint targets and gripper opening this action commands (nothing is sent to the robot)."""
        return self._targets(self.validate(action))

    def _targets(self, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        delta, g = self._split(action)
        r = self.robot
        q_cmd = r.joint_targets()
        if not delta.any():
            return q_cmd, g
        self._scratch.qpos[:] = r.data.qpos
        pos, quat = self._fk(q_cmd)
        angle = float(np.linalg.norm(delta[3:]))
        rot, target_quat = np.array([1.0, 0.0, 0.0, 0.0]), np.empty(4)
        if angle > 0:
            mujoco.mju_axisAngle2Quat(rot, delta[3:] / angle, angle)
        mujoco.mju_mulQuat(target_quat, rot, quat)
        target_pos = pos + delta[:3]
        if self.workspace is not None:
            target_pos = np.minimum(np.maximum(target_pos, self.workspace[0]), self.workspace[1])
        q = self._solve(q_cmd, target_pos, target_quat, fk_done=True)
        step = r.velocity_limit * r.control_dt
        return q_cmd + np.clip(q - q_cmd, -step, step), g


def ee_delta_as(mode: ActionMode, ee_mode: EEDelta, action: np.ndarray) -> np.ndarray:
    """Express an ee_delta action as the equivalent action of `mode` from the robot's current targets.

    Lets an expert written in end-effector deltas demonstrate in any control mode.
    """
    if isinstance(mode, EEDelta):
        return mode.validate(action).astype(np.float32)
    q, g = ee_mode.targets(action)
    if isinstance(mode, JointDelta):
        q = q - mode.robot.joint_targets()
    out = q if g is None else np.append(q, g)
    return mode.validate(out).astype(np.float32)


def make_action_mode(name: str, robot: SimRobot, **kwargs: float) -> ActionMode:
    """Build the action mode `name` (one of the robot spec's control_modes)."""
    modes: dict[str, Callable[..., ActionMode]] = {m.name: m for m in (JointPosition, JointDelta, EEDelta)}
    if name not in robot.spec.control_modes:
        raise ValueError(
            f"control mode {name!r} is not supported by robot {robot.spec.name!r}; "
            f"its spec lists {', '.join(robot.spec.control_modes)}"
        )
    return modes[name](robot, **kwargs)
