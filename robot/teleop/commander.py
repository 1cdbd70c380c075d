"""Intents to robot commands: joint position targets for an arm, a base velocity for a legged robot.

:class:`ArmCommander` keeps the arm's command set-point on a standalone MuJoCo model of the robot's MJCF (the
spec's), synced from the measured joint states, and moves it with :class:`realloop.sim.control.EEDelta`
(differential IK on the end-effector site, bounded by joint limits and velocity limits) or by jogging joints.
Like the sim's action modes it integrates deltas on the last *commanded* targets, not on the measured state,
so a position servo's steady-state error (gravity sag) never accumulates while the operator holds a key.

:class:`BaseCommander` scales the planar motion channels to a body velocity (``cmd_vel``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np

from realloop.robot.spec import RobotSpec
from realloop.sim.control import EEDelta, IKConfig
from realloop.sim.mjcf import load_model
from realloop.sim.robot import SimRobot

from .intents import MOTION_AXES, Event, Intent

MODES = ("ee", "joint")


class ArmCommander:
    """Joint position targets (and a gripper opening) from intents, for an arm described by ``spec``.

    ``rate_hz`` is how often :meth:`step` is called; speeds are per second: ``linear_speed`` (m/s) and
    ``angular_speed`` (rad/s) of the end effector at full input, ``joint_speed`` and ``home_speed`` as
    fractions of each joint's velocity limit, ``gripper_speed`` in the gripper's units per second (default:
    its velocity limit). ``mode`` is ``"ee"`` (needs the spec's ``ee_site``) or ``"joint"``.
    """

    def __init__(
        self,
        spec: RobotSpec,
        rate_hz: float,
        *,
        linear_speed: float = 0.05,
        angular_speed: float = 0.5,
        joint_speed: float = 0.25,
        home_speed: float = 0.25,
        gripper_speed: float | None = None,
        mode: str = "ee",
        ik: IKConfig | None = None,
    ):
        if not rate_hz > 0:
            raise ValueError(f"teleop rate_hz must be > 0, got {rate_hz}")
        for name, v in (
            ("linear_speed", linear_speed),
            ("angular_speed", angular_speed),
            ("joint_speed", joint_speed),
            ("home_speed", home_speed),
        ):
            if not v > 0:
                raise ValueError(f"teleop {name} must be > 0, got {v}")
        model = load_model(spec, "teleoperating an arm by end-effector motion (differential IK)")
        robot = SimRobot(spec, model, mujoco.MjData(model))
        robot.reset()
        # this robot never steps physics: its control period is the teleop period, which is what EEDelta's
        # per-step bounds (speed * dt, velocity limit * dt) must use
        robot.control_dt = 1.0 / rate_hz
        self.robot, self.spec, self.dt = robot, spec, robot.control_dt
        self.ee = (
            EEDelta(robot, max_linear_speed=linear_speed, max_angular_speed=angular_speed, ik=ik or IKConfig())
            if robot.ee_site_id >= 0
            else None
        )
        self.linear_speed, self.angular_speed = float(linear_speed), float(angular_speed)
        self.joint_step = joint_speed * robot.velocity_limit * self.dt
        self.home_step = home_speed * robot.velocity_limit * self.dt
        g = spec.gripper
        self.gripper_step = 0.0 if g is None else (g.velocity if gripper_speed is None else gripper_speed) * self.dt
        if mode not in MODES:
            raise ValueError(f"teleop mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "ee" and self.ee is None:
            mode = "joint"  # no ee_site in the spec: joint jogging is all there is
        self.mode = mode
        self.joint_page = 0  # joint mode: motion channel k jogs joint 6 * page + k
        self.homing = False
        self._names = {n: i for i, n in enumerate(spec.joint_names)}
        self._gripper_name = g.joints[0] if g is not None else None
        self._measured_q: np.ndarray | None = None
        self._measured_g: float | None = None

    # ------------------------------------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        """Whether every joint has been measured at least once (commands start from the measured pose)."""
        return self._measured_q is not None and not np.isnan(self._measured_q).any()

    def sync(self, names: Sequence[str], positions: Sequence[float] | np.ndarray) -> None:
        """Take in a measured joint state (``/joint_states`` names and positions; the gripper's first joint
        carries its opening). Joints it does not name keep their last measured value."""
        q = np.full(self.robot.n_joints, np.nan) if self._measured_q is None else self._measured_q
        for name, pos in zip(names, positions, strict=False):  # a malformed message: use what pairs up
            i = self._names.get(name)
            if i is not None:
                q[i] = pos
            elif name == self._gripper_name:
                self._measured_g = float(pos)
        self._measured_q = q
        if self.ready:
            self.robot.data.qpos[self.robot.qpos_adr] = q

    def resync(self) -> None:
        """Restart the set-point from the measured pose (before the operator takes over: the robot may have been
        moved by a policy or by hand since)."""
        q = self._measured_q
        if q is None or not self.ready:
            raise RuntimeError("no joint state measured yet")
        self.homing = False
        self.robot.command(q, self._measured_g)

    def targets(self) -> tuple[np.ndarray, float | None]:
        """The current joint targets and gripper opening (None without a gripper)."""
        r = self.robot
        return r.joint_targets(), (r.gripper_target() if r.has_gripper else None)

    def ee_position(self, q: np.ndarray | None = None) -> np.ndarray:
        """End-effector position (forward kinematics) at joint positions ``q`` (default: the targets)."""
        if self.ee is None:
            raise ValueError(f"robot {self.spec.name!r} has no ee_site in its spec")
        return self.ee.forward(self.robot.joint_targets() if q is None else np.asarray(q, dtype=float))[0]

    # ------------------------------------------------------------------------------------------ commands

    def handle(self, event: Event) -> str | None:
        """Apply a robot event (gripper toggle, mode switch, next joints, home, halt); a status line or None."""
        r, g = self.robot, self.spec.gripper
        if event is Event.GRIPPER and g is not None:
            closing = r.gripper_target() > 0.5 * (g.lower + g.upper)
            r.command(r.joint_targets(), g.lower if closing else g.upper)
            return "gripper: close" if closing else "gripper: open"
        if event is Event.MODE:
            if self.ee is None:
                return "mode: joint (the robot spec has no ee_site)"
            self.mode = "joint" if self.mode == "ee" else "ee"
            return f"mode: {self.mode}" + (f" (joints {self._page_text()})" if self.mode == "joint" else "")
        if event is Event.NEXT_JOINTS:
            pages = -(-r.n_joints // len(MOTION_AXES))
            self.joint_page = (self.joint_page + 1) % pages
            return f"joint mode jogs joints {self._page_text()}"
        if event is Event.HOME:
            self.homing = True
            return "homing to the default pose (any motion input cancels)"
        if event is Event.HALT:
            self.homing = False
            return "halt"
        return None

    def _page_text(self) -> str:
        first = self.joint_page * len(MOTION_AXES)
        names = self.spec.joint_names[first : first + len(MOTION_AXES)]
        return ", ".join(f"{k + 1}:{n}" for k, n in enumerate(names))

    def step(self, intent: Intent) -> tuple[np.ndarray, float | None]:
        """Advance the set-point by one period of operator input; returns (joint targets, gripper opening)."""
        if not self.ready:
            raise RuntimeError("no joint state measured yet")
        r = self.robot
        q, g = self.targets()
        if g is not None and intent.gripper:
            g += intent.gripper * self.gripper_step
        motion = np.clip(np.asarray(intent.motion, dtype=float), -1.0, 1.0)
        if motion.any():
            self.homing = False
        if self.homing:
            delta = r.default_q - q
            q = q + np.clip(delta, -self.home_step, self.home_step)
            self.homing = bool(np.abs(delta).max() > 1e-6)
        elif motion.any() and self.mode == "ee" and self.ee is not None:
            scale = np.repeat([self.linear_speed * self.dt, self.angular_speed * self.dt], 3)
            action = motion * scale
            if g is not None:
                action = np.append(action, g)
            q, _ = self.ee.targets(action)
        elif motion.any():
            first = self.joint_page * len(MOTION_AXES)
            k = min(len(MOTION_AXES), r.n_joints - first)
            q = q.copy()
            q[first : first + k] += motion[:k] * self.joint_step[first : first + k]
        r.command(q, g)  # clips to the joint and gripper limits
        return self.targets()


class BaseCommander:
    """Body velocity (vx, vy, wz) from intents for a legged or wheeled base: channel x -> forward, y -> left,
    yaw -> turn left, scaled by ``linear_speed`` (m/s) and ``angular_speed`` (rad/s)."""

    def __init__(self, linear_speed: float = 0.5, angular_speed: float = 1.0):
        if not (linear_speed > 0 and angular_speed > 0):
            raise ValueError(f"teleop base speeds must be > 0, got {linear_speed} m/s, {angular_speed} rad/s")
        self.linear_speed, self.angular_speed = float(linear_speed), float(angular_speed)
        self.ready = True

    def handle(self, event: Event) -> str | None:
        return None

    def step(self, intent: Intent) -> tuple[float, float, float]:
        m = np.clip(np.asarray(intent.motion, dtype=float), -1.0, 1.0)
        return (
            float(m[0] * self.linear_speed),
            float(m[1] * self.linear_speed),
            float(m[MOTION_AXES.index("yaw")] * self.angular_speed),
        )


def make_commander(
    spec: RobotSpec, rate_hz: float, target: str = "auto", speeds: Mapping[str, Any] | None = None
) -> ArmCommander | BaseCommander:
    """``target``: ``arm`` (joint commands), ``base`` (``cmd_vel``) or ``auto``: arm when the spec names an
    ``ee_site``, else base (a quadruped's spec has joints but no end effector to steer)."""
    speeds = dict(speeds or {})
    if target == "auto":
        target = "arm" if spec.ee_site is not None else "base"
    if target == "arm":
        keys = ("linear_speed", "angular_speed", "joint_speed", "home_speed", "gripper_speed", "mode")
        return ArmCommander(spec, rate_hz, **{k: speeds[k] for k in keys if speeds.get(k) is not None})
    if target == "base":
        return BaseCommander(float(speeds.get("base_linear_speed", 0.5)), float(speeds.get("base_angular_speed", 1.0)))
    raise ValueError(f"teleop target must be auto, arm or base, got {target!r}")
