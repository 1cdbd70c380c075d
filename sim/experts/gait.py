"""GaitExpert: a scripted trot for the quadruped task (QuadWalkEnv).

Diagonal leg pairs (FL+RR, FR+RL) alternate stance and swing, half a cycle each. In stance a foot slides backwards
under its hip at the hip's commanded velocity (trunk velocity plus the yaw rate's share); in swing it lifts and
moves to a landing point chosen with Raibert's heuristic, which pushes the measured velocity towards the command.
An integral term trims the command so the mean speed and turn rate match it despite slip and servo lag. Foot
positions go through analytic leg IK (abduction, then a planar thigh/calf pair) to joint position targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from realloop.sim.envs.base import ENV_STATE, STATE, RobotEnv
from realloop.sim.experts.base import Expert

LEGS = ("FL", "FR", "RL", "RR")
LEG_JOINTS = ("hip_abduction", "hip_flexion", "knee")
TROT_PHASE = (0.0, 0.5, 0.5, 0.0)  # FL and RR together, FR and RL half a cycle later


class GaitExpert(Expert):
    """Trot at QuadWalkEnv's commanded (vx, vy, yaw rate), in the joint_position or joint_delta control mode.

    It reads the command and the trunk's velocity and yaw rate from the observation (no privileged state).
    Randomness (the gait's start phase, +-10% swing height) comes from the rng passed to `reset`.

    Args:
        env: the unwrapped QuadWalkEnv.
        period: gait cycle [s].
        swing_height: foot lift at mid-swing [m].
        height: hip height above the foot centre in stance [m] (default: the robot's default pose).
        raibert_gain: landing-point shift per m/s of velocity error [s].
        trim_gain: integral gain [1/s] on the velocity / yaw-rate error that trims the command.
    """

    def __init__(
        self,
        env: RobotEnv,
        period: float = 0.3,
        swing_height: float = 0.06,
        height: float | None = None,
        raibert_gain: float = 0.08,
        trim_gain: float = 2.0,
    ) -> None:
        super().__init__(env)
        model, robot = env.model, env.robot
        names = robot.spec.joint_names
        self.idx = np.array([[names.index(f"{leg}_{j}") for j in LEG_JOINTS] for leg in LEGS])
        # leg geometry from the model: abduction joint in the trunk, thigh offset along y, thigh and calf lengths
        self.hip = np.array([model.body(f"{leg}_hip").pos for leg in LEGS])
        self.offset = np.array([model.body(f"{leg}_thigh").pos[1] for leg in LEGS])
        self.l1 = float(-model.body("FL_calf").pos[2])
        self.l2 = float(-model.geom("FL_foot").pos[2])
        if height is None:
            q1, q2 = robot.default_q[self.idx[0, 1]], robot.default_q[self.idx[0, 2]]
            height = self.l1 * np.cos(q1) + self.l2 * np.cos(q1 + q2)
        self.period, self.swing_height0, self.height = period, swing_height, float(height)
        self.raibert_gain, self.trim_gain = raibert_gain, trim_gain
        state = env.state_names
        self.i_wz = state.index("imu.gyro.z")
        self.i_v = [state.index("base.vx"), state.index("base.vy")]
        self.dt = robot.control_dt
        self.reset(np.random.default_rng(0))

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.phase0 = float(rng.uniform(0.0, 1.0))
        self.swing_height = self.swing_height0 * float(rng.uniform(0.9, 1.1))
        self.t = 0.0
        self.integral = np.zeros(3)  # integral trim of the command (vx, vy, wz)

    def leg_ik(self, leg: int, foot: np.ndarray) -> np.ndarray:
        """(abduction, flexion, knee) that put the foot centre at `foot` (trunk axes, from the abduction joint)."""
        x, y, z = foot
        oy = self.offset[leg]
        # abduction rotates the leg plane about x: (y, z) is (thigh offset, -h) rotated by the abduction angle
        h = np.sqrt(max(y * y + z * z - oy * oy, 1e-6))
        abd = np.arctan2(z, y) - np.arctan2(-h, oy)
        abd = (abd + np.pi) % (2 * np.pi) - np.pi
        # in the leg plane: flexion > 0 swings the foot backwards, the knee bends negative
        l1, l2 = self.l1, self.l2
        d2 = min(x * x + h * h, (l1 + l2 - 1e-3) ** 2)
        knee = -np.arccos(np.clip((d2 - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0))
        flex = np.arctan2(-x, h) - np.arctan2(l2 * np.sin(knee), l1 + l2 * np.cos(knee))
        return np.array([abd, flex, knee])

    def feet(self, ref: np.ndarray, vel: np.ndarray, wz: float) -> np.ndarray:
        """Foot positions (4, 3) from each abduction joint for the reference command `ref` at the current time."""
        ramp = min(self.t / self.period, 1.0)  # start from the stand without a jerk
        ref = ramp * ref
        out = np.zeros((4, 3))
        for leg in range(4):
            hx, hy = self.hip[leg, 0], self.hip[leg, 1] + self.offset[leg]
            v_ref = np.array([ref[0] - ref[2] * hy, ref[1] + ref[2] * hx])
            v_meas = np.array([vel[0] - wz * hy, vel[1] + wz * hx])
            stride = v_ref * 0.5 * self.period  # how far the foot slides under the hip during stance
            land = 0.5 * stride + self.raibert_gain * ramp * (v_meas - v_ref)
            s = (self.t / self.period + self.phase0 + TROT_PHASE[leg]) % 1.0
            if s < 0.5:  # stance
                xy, z = land - stride * (s / 0.5), -self.height
            else:  # swing: lift off where stance ended, land ahead
                u = (s - 0.5) / 0.5
                xy = land - stride + stride * (0.5 - 0.5 * np.cos(np.pi * u))
                z = -self.height + ramp * self.swing_height * np.sin(np.pi * u)
            out[leg] = [xy[0], self.offset[leg] + xy[1], z]
        return out

    def targets(self, obs: dict[str, Any]) -> np.ndarray:
        """Joint position targets (spec order) for the current control step."""
        state = np.asarray(obs[STATE], dtype=float)
        cmd = np.asarray(obs[ENV_STATE], dtype=float)
        vel, wz = state[self.i_v], float(state[self.i_wz])
        err = np.array([*(cmd[:2] - vel), cmd[2] - wz])
        if self.t >= self.period:  # the first cycle is a ramp from standing; its error says nothing about gains
            self.integral = np.clip(self.integral + self.trim_gain * self.dt * err, -0.3, 0.3)
        feet = self.feet(cmd + self.integral, vel, wz)
        q = np.zeros(12)
        for leg in range(4):
            q[self.idx[leg]] = self.leg_ik(leg, feet[leg])
        return q

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        robot = self.env.robot
        q = np.clip(self.targets(obs), robot.lower, robot.upper)
        self.t += self.dt
        if self.env.action_mode.name == "joint_delta":
            q = q - robot.joint_targets()  # deltas add to the last commanded targets (sim/control.py)
        return self.env.action_mode.validate(q).astype(np.float32)
