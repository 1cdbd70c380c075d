"""Joint position targets of a robot from its spec alone: the ``joint_position`` and ``joint_delta`` action modes
for a robot without a MuJoCo model (the ``ee_delta`` mode needs the MJCF's kinematics: realloop.sim.control)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from realloop.robot.spec import RobotSpec

JOINT_MODES = ("joint_position", "joint_delta")


def joint_action_names(spec: RobotSpec, mode: str) -> list[str]:
    """The action entry names of a joint mode, as realloop-collect writes them (gripper last)."""
    joints = [j.name for j in spec.joints]
    names = joints if mode == "joint_position" else [f"{n}.delta" for n in joints]
    return names + (["gripper"] if spec.gripper is not None else [])


class JointTargets:
    """The commanded joint targets (spec order) and gripper opening, clipped to the spec's limits, and the action
    mode ``mode`` that moves them: absolute targets, or per-step deltas bounded by velocity limit x period."""

    def __init__(self, spec: RobotSpec, mode: str, rate_hz: float) -> None:
        if mode not in JOINT_MODES:
            raise ValueError(f"control mode {mode!r} needs a model of the robot; without one: {', '.join(JOINT_MODES)}")
        if mode not in spec.control_modes:
            raise ValueError(
                f"control mode {mode!r} is not in robot {spec.name!r}'s control_modes {list(spec.control_modes)}"
            )
        self.spec, self.name = spec, mode
        joints = spec.joints
        self.lower = np.array([j.lower for j in joints])
        self.upper = np.array([j.upper for j in joints])
        self.step = np.array([j.velocity for j in joints]) / float(rate_hz)
        self.gripper = spec.gripper
        self.names = joint_action_names(spec, mode)
        self.n_joints = len(joints)
        self._q = np.array(spec.default_positions, dtype=float)
        self._g = None if self.gripper is None else float(self.gripper.default)

    @property
    def has_gripper(self) -> bool:
        return self.gripper is not None

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Set the targets (clipped to the position limits) and, if given, the gripper opening."""
        self._q = np.minimum(np.maximum(np.asarray(q, dtype=float), self.lower), self.upper)
        if gripper is not None and self.gripper is not None:
            self._g = float(np.clip(gripper, self.gripper.lower, self.gripper.upper))

    def joint_targets(self) -> np.ndarray:
        return self._q.copy()

    def gripper_target(self) -> float:
        return 0.0 if self._g is None else self._g

    def targets(self, action: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The joint targets and gripper opening ``action`` commands from the current targets (nothing sent)."""
        a = np.asarray(action, dtype=float)
        if a.shape != (len(self.names),):
            raise ValueError(f"{self.name} action of shape {a.shape}, expected ({len(self.names)},) ({self.names})")
        if not np.isfinite(a).all():
            raise ValueError(f"{self.name} action contains NaN or inf: {a}; the robot keeps its last command")
        q, g = (a[:-1], float(a[-1])) if self.gripper is not None else (a, None)
        if self.name == "joint_delta":
            q = self._q + np.clip(q, -self.step, self.step)
        q = np.minimum(np.maximum(q, self.lower), self.upper)
        if g is not None and self.gripper is not None:  # g is given exactly when there is a gripper
            g = float(np.clip(g, self.gripper.lower, self.gripper.upper))
        return q, g
