"""SimRobot: a robot spec bound to a compiled MuJoCo model — joint state, position commands, physics steps.

The one place that maps spec joint names to MuJoCo indices. Gymnasium tasks, scripted experts and the sim
mirror node all command the robot through it, so limits, units and rates are the spec's everywhere.
"""

from __future__ import annotations

import mujoco
import numpy as np

from realloop.robot.spec import RobotSpec
from realloop.sim.mjcf import check_against_model, joint_actuator_id


class SimRobot:
    """Joint-space access to one robot inside a (possibly larger) MuJoCo scene.

    Commands are position targets in the spec's joint order (plus an optional gripper opening); they are
    clipped to the spec's position limits before they reach the actuators. `step()` advances one control
    period (``1 / control_rate_hz``) in physics substeps.
    """

    def __init__(self, spec: RobotSpec, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        check_against_model(spec, model)
        self.spec, self.model, self.data = spec, model, data
        ids = [model.joint(j.name).id for j in spec.joints]
        self.qpos_adr = np.array([model.jnt_qposadr[i] for i in ids])
        self.dof_adr = np.array([model.jnt_dofadr[i] for i in ids])
        # check_against_model has ruled out joints without an actuator
        self.actuator_ids = np.array([joint_actuator_id(model, j) for j in spec.joints])
        self.lower = np.array([j.lower for j in spec.joints])
        self.upper = np.array([j.upper for j in spec.joints])
        self.velocity_limit = np.array([j.velocity for j in spec.joints])
        self.default_q = np.array(spec.default_positions)
        self.gripper_id: int | None = None
        self.gripper_qpos_adr = np.zeros(0, dtype=int)
        if spec.gripper is not None:
            self.gripper_id = model.actuator(spec.gripper.actuator).id
            self.gripper_qpos_adr = np.array([model.jnt_qposadr[model.joint(n).id] for n in spec.gripper.joints])
        self.n_substeps = round(1.0 / (spec.control_rate_hz * model.opt.timestep))
        self.control_dt = self.n_substeps * model.opt.timestep
        self.key_id = model.key(spec.home_keyframe).id if spec.home_keyframe else -1
        self.ee_site_id = model.site(spec.ee_site).id if spec.ee_site else -1

    @classmethod
    def from_spec(cls, spec: RobotSpec, purpose: str = "a model of the robot") -> SimRobot:
        """The robot alone (its spec's MJCF, no task scene), at its default pose: kinematics and IK."""
        from realloop.sim.mjcf import load_model

        model = load_model(spec, purpose)
        robot = cls(spec, model, mujoco.MjData(model))
        robot.reset()
        return robot

    @property
    def n_joints(self) -> int:
        return len(self.spec.joints)

    @property
    def has_gripper(self) -> bool:
        return self.gripper_id is not None

    # ------------------------------------------------------------------------------------------ state

    def reset(self, q: np.ndarray | None = None, gripper: float | None = None) -> None:
        """Reset the whole scene (home keyframe if the spec names one), put the joints at `q` (default pose)."""
        if self.key_id >= 0:
            mujoco.mj_resetDataKeyframe(self.model, self.data, self.key_id)
        else:
            mujoco.mj_resetData(self.model, self.data)
        q = self.default_q if q is None else np.clip(np.asarray(q, dtype=float), self.lower, self.upper)
        self.data.qpos[self.qpos_adr] = q
        self.data.qvel[self.dof_adr] = 0.0
        if self.spec.gripper is not None:  # has_gripper
            g = self.spec.gripper.default if gripper is None else gripper
            self.data.qpos[self.gripper_qpos_adr] = g
        self.command(q, gripper)
        mujoco.mj_forward(self.model, self.data)

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.qpos_adr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self.dof_adr].copy()

    def gripper_opening(self) -> float:
        """The gripper's measured opening (its actuator's transmission length, e.g. one finger's travel in m)."""
        return float(self.data.actuator_length[self.gripper_id]) if self.has_gripper else 0.0

    def joint_targets(self) -> np.ndarray:
        """The position targets currently commanded."""
        return self.data.ctrl[self.actuator_ids].copy()

    def gripper_target(self) -> float:
        return float(self.data.ctrl[self.gripper_id]) if self.has_gripper else 0.0

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """End-effector site position (3,) and orientation quaternion (4, wxyz) in the world frame."""
        if self.ee_site_id < 0:
            raise ValueError(f"robot {self.spec.name!r} has no ee_site in its spec")
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.ee_site_id])
        return self.data.site_xpos[self.ee_site_id].copy(), quat

    def forward_kinematics(self) -> tuple[np.ndarray, np.ndarray]:
        """End-effector site position (3,) and rotation matrix (9,) of the current qpos (kinematics only)."""
        if self.ee_site_id < 0:
            raise ValueError(f"robot {self.spec.name!r} has no ee_site in its spec")
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.ee_site_id].copy(), self.data.site_xmat[self.ee_site_id].copy()

    # ------------------------------------------------------------------------------------------ command

    def command(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Set joint position targets (clipped to the spec's limits) and optionally the gripper opening."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.n_joints,):
            raise ValueError(f"{self.spec.name}: joint command of shape {q.shape}, expected ({self.n_joints},)")
        if not np.isfinite(q).all():
            raise ValueError(f"{self.spec.name}: joint command contains NaN or inf: {q}")
        self.data.ctrl[self.actuator_ids] = np.minimum(np.maximum(q, self.lower), self.upper)
        g = self.spec.gripper
        if gripper is not None and g is not None:  # has_gripper
            if not np.isfinite(gripper):
                raise ValueError(f"{self.spec.name}: gripper command is NaN or inf")
            self.data.ctrl[self.gripper_id] = float(np.clip(gripper, g.lower, g.upper))

    def step(self) -> None:
        """Advance one control period."""
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
