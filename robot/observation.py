"""The observation builder: robot readings -> the ``observation.state`` vector a dataset feature names.

A state feature is a list of entry names (the feature's ``names``). Each name comes from a reading group:

- ``pos``: ``<joint>.pos`` (rad or m), ``vel``: ``<joint>.vel``, ``gripper``: ``gripper.pos`` (the opening);
- ``ee``: ``ee.x``, ``ee.y``, ``ee.z`` (m, world frame) and ``ee.r11`` ... ``ee.r32`` (the first two columns of
  the rotation matrix), from forward kinematics, so only robots with an MJCF and an ``ee_site`` have them;
- task- or robot-specific groups (the quadruped's ``imu.gyro.*``, ``gravity.*``, ``base.v*``).

The sim tasks, the policy runner and the recorder build ``observation.state`` through :class:`StateBuilder`,
so a feature means the same numbers wherever it was made; a checkpoint's feature names alone tell the runner
what to read from the robot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from realloop.robot.msgs import JointState
    from realloop.robot.spec import RobotSpec
    from realloop.sim.robot import SimRobot

STATE = "observation.state"
ROT6D_NAMES = ("r11", "r21", "r31", "r12", "r22", "r32")
EE_NAMES = ("ee.x", "ee.y", "ee.z", *(f"ee.{n}" for n in ROT6D_NAMES))


def rot6d(xmat: np.ndarray) -> np.ndarray:
    """The first two columns of a rotation matrix (MuJoCo's row-major 9-vector): a continuous orientation
    feature, unlike quaternions (sign flips) or Euler angles (wrap-around)."""
    return np.asarray(xmat).reshape(3, 3)[:, :2].T.reshape(6)


def robot_groups(spec: RobotSpec, ee: bool) -> dict[str, list[str]]:
    """The reading groups a robot with this spec provides (``ee``: it has forward kinematics), in the order
    of the default state vector."""
    joints = [j.name for j in spec.joints]
    groups = {"pos": [f"{n}.pos" for n in joints], "vel": [f"{n}.vel" for n in joints]}
    if spec.gripper is not None:
        groups["gripper"] = ["gripper.pos"]
    if ee:
        groups["ee"] = list(EE_NAMES)
    return groups


def robot_readings(
    positions: np.ndarray,
    velocities: np.ndarray,
    gripper: float | None = None,
    ee_pos: np.ndarray | None = None,
    ee_xmat: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Reading groups from a measured joint state (and forward kinematics, when known)."""
    out = {"pos": np.asarray(positions, dtype=float), "vel": np.asarray(velocities, dtype=float)}
    if gripper is not None:
        out["gripper"] = np.array([gripper], dtype=float)
    if ee_pos is not None and ee_xmat is not None:
        out["ee"] = np.concatenate([ee_pos, rot6d(ee_xmat)])
    return out


class StateBuilder:
    """Builds the state vector of ``names`` from reading groups.

    Args:
        names: the state feature's entry names, in vector order.
        groups: what the robot provides: group -> entry names, in the order its reading vector holds them.
    """

    def __init__(self, names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> None:
        where = {n: (g, i) for g, entries in groups.items() for i, n in enumerate(entries)}
        missing = [n for n in names if n not in where]
        if missing:
            hint = (
                " (ee.* entries need forward kinematics: a robot spec with an mjcf and an ee_site)"
                if any(n.startswith("ee.") for n in missing)
                else ""
            )
            raise ValueError(
                f"observation.state entries {missing} cannot be built from this robot{hint}; it "
                f"provides {[n for entries in groups.values() for n in entries]}"
            )
        self.names = list(names)
        self.groups = [g for g in groups if any(where[n][0] == g for n in names)]
        offsets, total = {}, 0
        for g in self.groups:
            offsets[g] = total
            total += len(groups[g])
        self._sizes = {g: len(groups[g]) for g in self.groups}
        self._index = np.array([offsets[where[n][0]] + where[n][1] for n in names], dtype=np.int64)

    def __call__(self, readings: Mapping[str, np.ndarray]) -> np.ndarray:
        """The state vector (float32) from ``readings`` (group -> vector)."""
        parts = []
        for g in self.groups:
            v = np.asarray(readings[g], dtype=float).reshape(-1)
            if v.size != self._sizes[g]:
                raise ValueError(f"reading {g!r} has {v.size} values, expected {self._sizes[g]}")
            parts.append(v)
        return np.concatenate(parts)[self._index].astype(np.float32)


def robot_state_names(spec: RobotSpec) -> list[str]:
    """The default ``observation.state`` of a robot: every group it provides (end effector where its spec has an
    MJCF and an ee_site); the sim tasks of that robot observe the same entries first."""
    return [n for names in robot_groups(spec, ee=spec.ee_site is not None).values() for n in names]


class JointStateObserver:
    """``observation.state`` (``names``, default :func:`robot_state_names`) from sensor_msgs/JointState messages:
    joints matched by name, the gripper's first joint as its opening, end-effector entries by MuJoCo forward
    kinematics of the spec's MJCF (loaded only when ``names`` has some). The recorder and the policy runner both
    build the state this way, so a recorded feature and a live one are the same numbers."""

    def __init__(self, spec: RobotSpec, names: Sequence[str] | None = None) -> None:
        self.spec = spec
        self.names = list(names) if names is not None else robot_state_names(spec)
        self.joints = [j.name for j in spec.joints]
        gripper = spec.gripper
        self.gripper_joint = gripper.joints[0] if gripper is not None else None
        self.build = StateBuilder(self.names, robot_groups(spec, ee=spec.ee_site is not None))
        self.kinematics: SimRobot | None = None
        if "ee" in self.build.groups:
            from realloop.sim.robot import SimRobot  # MuJoCo: only for robots whose features need FK

            self.kinematics = SimRobot.from_spec(spec, "end-effector (ee.*) state entries")

    def joint_values(self, msg: JointState) -> tuple[np.ndarray, np.ndarray | None, float | None]:
        """(positions, velocities or None, gripper opening or None) of the spec's joints in ``msg``."""
        names = list(msg.name)
        index = {n: i for i, n in enumerate(names)}
        try:
            q = np.array([msg.position[index[n]] for n in self.joints])
            v = np.array([msg.velocity[index[n]] for n in self.joints]) if len(msg.velocity) == len(names) else None
            g = float(msg.position[index[self.gripper_joint]]) if self.gripper_joint else None
        except KeyError as e:
            raise ValueError(f"the JointState lacks joint {e}; it has {names}") from None
        return q, v, g

    def __call__(self, msg: JointState) -> np.ndarray:
        q, v, g = self.joint_values(msg)
        if v is None and "vel" in self.build.groups:
            raise ValueError("the state needs joint velocities and the JointState has none")
        ee_pos: np.ndarray | None = None
        ee_xmat: np.ndarray | None = None
        if self.kinematics is not None:
            self.kinematics.data.qpos[self.kinematics.qpos_adr] = q
            ee_pos, ee_xmat = self.kinematics.forward_kinematics()
        return self.build(robot_readings(q, np.zeros_like(q) if v is None else v, g, ee_pos, ee_xmat))
