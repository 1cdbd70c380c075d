"""Scripted experts for the arm tasks (sim/envs/arm.py): reach, lift a cube, push a T block.

They plan in end-effector terms (a Cartesian goal, a gripper yaw and opening) and servo towards it with bounded
ee_delta steps, which `ee_delta_as` turns into the env's control mode, so every control mode gets the same
demonstrations. Each episode draws its own waypoint jitter, speeds and pauses from the reset rng.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

from realloop.sim.control import EEDelta, JointPosition, ee_delta_as
from realloop.sim.envs.base import RobotEnv
from realloop.sim.experts.base import Expert

if TYPE_CHECKING:
    from realloop.sim.envs.arm import ArmPushTEnv, ArmReachEnv

DOWN = np.diag([-1.0, 1.0, -1.0])  # ee_site orientation at the home pose: gripper pointing straight down


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    quat, mat = np.empty(4), np.empty(9)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, dtype=float), float(angle))
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _yaw_of(xmat: np.ndarray) -> float:
    m = np.asarray(xmat).reshape(9)
    return float(np.arctan2(m[3], m[0]))


def _grip_yaw(rot: np.ndarray) -> float:
    """The yaw of a gripper orientation (inverse of `_gripper_down` for a gripper pointing down)."""
    return float(np.arctan2(-rot[0, 1], rot[1, 1]))


def _gripper_down(yaw: float) -> np.ndarray:
    """Gripper pointing down, its closing axis (ee y) along (-sin yaw, cos yaw, 0)."""
    return _rot_z(yaw) @ DOWN


class _ArmExpert(Expert):
    """Servoing shared by the arm experts: a Cartesian goal -> one bounded, IK-feasible ee_delta action.

    Deltas are taken from the pose the joint targets will command once the expert's actions still in flight are
    applied (the env's action latency under domain randomisation), not from the measured pose, so neither the
    servo's tracking lag nor the latency makes the expert overshoot. Position goals are for the ee_site at rest:
    the command is raised by the servo's gravity sag.
    """

    def __init__(self, env: RobotEnv) -> None:
        super().__init__(env)
        mode = env.action_mode
        self.ee = mode if isinstance(mode, EEDelta) else EEDelta(env.robot)
        self.max_step = np.asarray(self.ee.space.high[:6], dtype=float)
        robot = env.robot
        self.joint_step = robot.velocity_limit * robot.control_dt
        self.g_open = float(robot.spec.gripper.upper) if robot.spec.gripper else 0.0
        self.g_closed = float(robot.spec.gripper.lower) if robot.spec.gripper else 0.0
        # arm geometry for the reach heuristics: shoulder pitch anchor and the wrist-pitch-to-ee_site offset
        names = robot.spec.joint_names
        d = mujoco.MjData(env.model)
        d.qpos[robot.qpos_adr] = robot.default_q
        mujoco.mj_kinematics(env.model, d)
        self.shoulder = d.xanchor[env.model.joint(names[1]).id].copy()
        self.wrist_len = float(np.linalg.norm(d.site_xpos[robot.ee_site_id] - d.xanchor[env.model.joint(names[4]).id]))
        self._jac = np.zeros((3, env.model.nv))
        self.t = 0
        self.pause = 0
        self.latency = 0
        self._pending: deque[np.ndarray] = deque(maxlen=0)

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.t = 0
        self.pause = 0
        randomizer = getattr(self.env, "randomizer", None)
        self.latency = int(randomizer.latency_steps) if randomizer is not None else 0
        self._pending = deque(maxlen=self.latency)  # joint target changes of actions the env has not applied yet

    def waiting(self) -> bool:
        """True during the episode's initial pause, which lasts at least the action latency: the env applies its
        first action more than once until its latency queue fills, harmless only for a hold."""
        return self.t < max(self.pause, self.latency)

    # ------------------------------------------------------------------------------------------ state

    def joint_targets(self) -> np.ndarray:
        """The joint targets once the actions in flight are applied."""
        return self.env.robot.joint_targets() + sum(self._pending, np.zeros(self.env.robot.n_joints))

    def commanded(self) -> tuple[np.ndarray, np.ndarray]:
        """ee_site position and rotation matrix the joint targets command once the actions in flight are applied."""
        pos, quat = self.ee.forward(self.joint_targets())
        mat = np.empty(9)
        mujoco.mju_quat2Mat(mat, quat)
        return pos, mat.reshape(3, 3)

    def measured(self) -> np.ndarray:
        return self.env.data.site_xpos[self.env.robot.ee_site_id].copy()

    def settled(self) -> tuple[np.ndarray, np.ndarray]:
        """Where the ee_site comes to rest under the commanded pose (plus the servo's sag)."""
        pos, rot = self.commanded()
        return pos + self.sag(), rot

    def sag(self) -> np.ndarray:
        """How far the measured ee_site sits from the commanded one at rest: the position servos give way by
        (gravity torque / kp) per joint, ~5 mm at the table, too much for fingertips meant to skim it."""
        m, d, r = self.env.model, self.env.data, self.env.robot
        mujoco.mj_jacSite(m, d, self._jac, None, r.ee_site_id)
        kp = m.actuator_gainprm[r.actuator_ids, 0]  # read live: domain randomisation scales the gains
        return -self._jac[:, r.dof_adr] @ (d.qfrc_bias[r.dof_adr] / kp)

    def grip_yaw(self, yaw: float, period: float, pos: np.ndarray) -> float:
        """The yaw equivalent to `yaw` modulo `period` that keeps the wrist roll smallest at `pos`."""
        azimuth = np.arctan2(pos[1], pos[0])
        return azimuth + _wrap((yaw - azimuth) * 2 * np.pi / period) * period / (2 * np.pi)

    # ------------------------------------------------------------------------------------------ servo

    def hold(self, gripper: float) -> np.ndarray:
        return np.append(np.zeros(6), gripper)

    def servo(self, pos: np.ndarray, rot: np.ndarray, gripper: float, speed: float = 1.0) -> np.ndarray:
        """The ee_delta action towards (pos, rot): straight-line, at most `speed` x the mode's step bounds, and
        shortened until the IK needs no joint at its velocity limit (a clipped joint step bends the path)."""
        cur_pos, cur_rot = self.settled()
        dp = np.asarray(pos, dtype=float) - cur_pos
        lin = speed * self.max_step[:3].min()
        if np.linalg.norm(dp) > lin:
            dp *= lin / np.linalg.norm(dp)
        err_quat, cur_quat, tgt_quat = np.empty(4), np.empty(4), np.empty(4)
        mujoco.mju_mat2Quat(tgt_quat, np.ascontiguousarray(rot).reshape(9))
        mujoco.mju_mat2Quat(cur_quat, np.ascontiguousarray(cur_rot).reshape(9))
        neg = np.empty(4)
        mujoco.mju_negQuat(neg, cur_quat)
        mujoco.mju_mulQuat(err_quat, tgt_quat, neg)
        dr = np.empty(3)
        mujoco.mju_quat2Vel(dr, err_quat, 1.0)
        ang = self.max_step[3:].min()
        if np.linalg.norm(dr) > ang:
            dr *= ang / np.linalg.norm(dr)
        action = np.append(np.clip(np.concatenate([dp, dr]), -self.max_step, self.max_step), gripper)
        q0 = self.env.robot.joint_targets()
        for _ in range(4):
            q, _ = self.ee.targets(action)
            if np.all(np.abs(q - q0) < self.joint_step * 0.999):
                break
            action[:6] *= 0.6
        return action

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """An ee_delta action (relative to `commanded`) in the env's control mode."""
        self.t += 1
        robot, mode = self.env.robot, self.env.action_mode
        out = ee_delta_as(mode, self.ee, action)
        if self._pending.maxlen:
            dq = self.ee.targets(action)[0] - robot.joint_targets()
            if isinstance(mode, JointPosition):  # absolute targets: build on the ones still in flight
                out[: robot.n_joints] += (self.joint_targets() - robot.joint_targets()).astype(np.float32)
                out = mode.validate(out).astype(np.float32)
            self._pending.append(dq)
        return out

    def reach_rot(self, pos: np.ndarray, yaw: float, max_wrist_dist: float = 0.47) -> np.ndarray:
        """Gripper down at yaw `yaw`, tilted outwards just enough that the wrist centre stays within
        `max_wrist_dist` of the shoulder (pointing down, the far and high corners are out of reach)."""
        rel = np.asarray(pos, dtype=float) - self.shoulder
        radial = np.array([rel[0], rel[1], 0.0])
        r = np.linalg.norm(radial)
        base = _gripper_down(yaw)
        if r < 1e-6:
            return base
        radial /= r
        axis = np.array([radial[1], -radial[0], 0.0])  # tilting about it moves the gripper's tip outwards
        for tilt in np.linspace(0.0, 1.4, 29):
            point = -np.cos(tilt) * np.array([0, 0, 1.0]) + np.sin(tilt) * radial
            if np.linalg.norm(rel - self.wrist_len * point) <= max_wrist_dist:
                break
        return _axis_angle(axis, tilt) @ base


# ---------------------------------------------------------------------------------------------- reach


class ReachExpert(_ArmExpert):
    """Move the end effector to the target, at a random speed, possibly through a random via point, after a
    random pause, with a random gripper yaw and opening."""

    env: ArmReachEnv  # EXPERTS pairs each expert with its task

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        env = self.env
        target = np.asarray(env.target, dtype=float)
        start, _ = self.settled()
        self.pause = int(rng.integers(0, 4))
        self.speed = float(rng.uniform(0.35, 1.0))
        self.yaw = float(rng.uniform(-0.6, 0.6))
        self.gripper = float(rng.uniform(self.g_closed, self.g_open))
        self.waypoints = [target]
        if rng.random() < 0.5:  # a detour: above / beside the straight line
            via = 0.5 * (start + target) + np.array([0.0, *rng.uniform(-0.06, 0.06, 1), rng.uniform(0.0, 0.08)])
            via[2] = float(np.clip(via[2], 0.06, 0.3))
            self.waypoints.insert(0, via)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.waiting():
            return self.to_env(self.hold(self.gripper))
        cur, _ = self.settled()
        if len(self.waypoints) > 1 and np.linalg.norm(self.waypoints[0] - cur) < 0.02:
            self.waypoints.pop(0)
        goal = self.waypoints[0]
        # slow down over the last few cm so the servo settles inside the tolerance
        speed = self.speed * float(np.clip(np.linalg.norm(goal - cur) / 0.04, 0.4, 1.0))
        return self.to_env(self.servo(goal, self.reach_rot(goal, self.yaw), self.gripper, speed))


# ---------------------------------------------------------------------------------------------- lift


class LiftExpert(_ArmExpert):
    """Hover over the cube with the fingers across a pair of its faces, descend, close, lift.

    Per episode: the face pair (a yaw in the cube's 90-degree symmetry that keeps the wrist roll small), hover
    height, grasp depth, a small lateral offset, speeds, pauses and the lift's end point. Closed loop on the cube
    pose: the hover point follows the cube, and a grasp that loses the cube starts over from the hover.
    """

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.phase = "hover"
        self.phase_t = 0
        self.hover_z = float(rng.uniform(0.09, 0.15))
        self.grasp_z = float(rng.uniform(0.024, 0.032))  # ee_site height: fingertips 4 .. 12 mm above the table
        self.offset = rng.uniform(-0.004, 0.004, 2)
        self.speed = float(rng.uniform(0.5, 1.0))
        self.descend_speed = float(rng.uniform(0.3, 0.6))
        self.lift_speed = float(rng.uniform(0.4, 1.0))
        self.pause = int(rng.integers(0, 3))
        self.hover_steps = int(rng.integers(0, 4))  # extra steps over the cube before descending
        self.close_steps = int(rng.integers(4, 7))
        self.face = int(rng.integers(0, 2))  # which pair of faces the fingers close on
        self.open = float(rng.uniform(0.034, self.g_open))
        self.lift_x = float(rng.uniform(0.33, 0.42))  # lift towards the base (more room above the table) ...
        self.lift_y = float(rng.uniform(0.6, 1.0))  # ... and towards the centre line, as far as these say
        self.lift_z = float(rng.uniform(0.17, 0.21))
        self.lift_goal = np.zeros(3)
        self.yaw: float | None = None

    def _cube(self) -> tuple[np.ndarray, float]:
        bid = self.env.model.body("cube").id
        return self.env.data.xpos[bid].copy(), _yaw_of(self.env.data.xmat[bid])

    def _goto(self, phase: str) -> None:
        self.phase, self.phase_t = phase, 0

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.waiting():
            return self.to_env(self.hold(self.open))
        cube, cube_yaw = self._cube()
        cur, _ = self.settled()
        if self.yaw is None or self.phase == "hover":
            self.yaw = self.grip_yaw(cube_yaw + self.face * np.pi / 2, np.pi, cube)
        rot = _gripper_down(self.yaw)
        over = np.array([cube[0] + self.offset[0], cube[1] + self.offset[1], 0.0])
        self.phase_t += 1
        if self.phase == "hover":
            goal = np.array([over[0], over[1], self.hover_z])
            action = self.servo(goal, rot, self.open, self.speed)
            _, cur_rot = self.settled()
            aligned = np.linalg.norm(goal[:2] - cur[:2]) < 0.006 and abs(_wrap(_grip_yaw(cur_rot) - self.yaw)) < 0.05
            if aligned and self.phase_t > self.hover_steps:
                self._goto("descend")
        elif self.phase == "descend":
            goal = np.array([over[0], over[1], self.grasp_z])
            action = self.servo(goal, rot, self.open, self.descend_speed)
            if self.measured()[2] < self.grasp_z + 0.006:
                self._goto("close")
        elif self.phase == "close":
            action = self.servo(np.array([over[0], over[1], self.grasp_z]), rot, self.g_closed, 0.2)
            if self.phase_t >= self.close_steps and self.env.robot.gripper_opening() < 0.005:
                self._goto("hover")  # closed on nothing: open and try again
            elif self.phase_t >= self.close_steps:
                self._goto("lift")
                self.lift_goal = np.array([min(cur[0], self.lift_x), cur[1] * self.lift_y, self.lift_z])
        else:
            action = self.servo(self.lift_goal, rot, self.g_closed, self.lift_speed)
            if self.measured()[2] - cube[2] > 0.05:  # the cube slipped out: start over
                self._goto("hover")
        return self.to_env(action)


# ---------------------------------------------------------------------------------------------- push-T


def _t_faces(shapes: list[tuple[list[float], list[float]]]) -> list[tuple[np.ndarray, np.ndarray, bool, bool]]:
    """The T's outline as edges (start, end, start convex, end convex), counter-clockwise in the block frame."""
    (bw, bh), (sw, sh) = shapes[0][0][:2], shapes[1][0][:2]
    stem_bottom = shapes[1][1][1] - sh
    pts = [(-bw, bh), (-bw, -bh), (-sw, -bh), (-sw, stem_bottom), (sw, stem_bottom), (sw, -bh), (bw, -bh), (bw, bh)]
    convex = [True, True, False, True, True, False, True, True]
    return [(np.array(pts[i]), np.array(pts[(i + 1) % 8]), convex[i], convex[(i + 1) % 8]) for i in range(len(pts))]


class PushTExpert(_ArmExpert):
    """Closed-loop re-planning of short straight pushes with the closed gripper.

    Each push is picked by simulating candidate pushes (contact points along the T's edges, pushing along the
    edge's inward normal, a few push lengths) with a quasi-static model -- sticking / sliding point contact and an
    ellipsoidal limit surface for the block's friction with the table -- and keeping the one whose predicted pose
    is closest to the goal. The gripper then moves over the pre-contact point (lifted above the block if the way
    there crosses it), descends beside the edge, pushes, backs off, and the next push is planned from the block's
    new pose. Per episode: push speed, heights, the contact gap, cost weights and ties among near-best pushes.
    """

    push_z = 0.028  # ee_site height while pushing: fingertips ~8 mm above the table, the T is 3 cm tall
    hover_z = 0.08  # ee_site height for moves across the block: fingertips 3 cm above its top
    pusher_half = (0.01, 0.016)  # closed fingers: half width across / along the push direction
    reach = (0.19, 0.535)  # radial ee_site range where the arm points down comfortably (joint limits, singularity)
    mu_pusher = 0.4  # finger-block friction (the block's, it has the higher contact priority)
    far, far_weight = 0.51, 3.0  # T corners beyond this radius (m) cost far_weight per m
    env: ArmPushTEnv  # EXPERTS pairs each expert with its task

    def __init__(self, env: ArmPushTEnv) -> None:
        super().__init__(env)
        self.shapes = [(np.array(size[:2]), np.array(pos[:2])) for size, pos in env.shapes]
        areas = np.array([4 * h[0] * h[1] for h, _ in self.shapes])
        self.com = (areas[:, None] * np.array([p for _, p in self.shapes])).sum(0) / areas.sum()
        self.c = self._limit_surface_length()
        self.faces = _t_faces(env.shapes)
        self.vertices = np.array([a for a, *_ in self.faces])
        self.candidates = self._candidates()

    def _limit_surface_length(self) -> float:
        """Mean distance of the T's footprint from its centre of mass: max friction torque / max force."""
        pts = []
        for half, centre in self.shapes:
            g = [np.linspace(-h, h, 2 * round(h / 0.002) + 1) for h in half]
            xx, yy = np.meshgrid(*g)
            pts.append(np.stack([xx.ravel() + centre[0], yy.ravel() + centre[1]], 1))
        p = np.concatenate(pts)
        return float(np.linalg.norm(p - self.com, axis=1).mean())

    def reset(self, rng: np.random.Generator) -> None:
        super().reset(rng)
        self.queue: list[tuple[np.ndarray, float, str, float, bool]] = []  # waypoints, see _queue_push
        self.plan: dict[str, Any] | None = None
        self.push_speed = float(rng.uniform(0.35, 0.6))
        self.move_speed = float(rng.uniform(0.7, 1.0))
        self.push_z = float(rng.uniform(0.026, 0.031))
        self.hover_z = float(rng.uniform(0.075, 0.095))
        self.gap = float(rng.uniform(0.008, 0.015))
        self.yaw_weight = float(rng.uniform(0.08, 0.12))  # m per rad in the pose cost
        self.slack = float(rng.uniform(0.0, 0.1))  # pushes within this fraction of the best cost are equally good
        self.yaw = 0.0
        self.pause = int(rng.integers(0, 3))

    # ------------------------------------------------------------------------------------------ model

    def _cost(self, pose: np.ndarray) -> np.ndarray:
        """Distance to the goal (m, yaw weighted in m/rad), plus a penalty for T corners beyond `far`: the far
        side of a block pushed out there can no longer be reached to push it back."""
        goal = self.env.goal
        pos = np.hypot(pose[..., 0] - goal[0], pose[..., 1] - goal[1])
        yaw = np.abs((pose[..., 2] - goal[2] + np.pi) % (2 * np.pi) - np.pi)
        c, s = np.cos(pose[..., 2])[..., None], np.sin(pose[..., 2])[..., None]
        vx, vy = self.vertices[:, 0], self.vertices[:, 1]
        r = np.hypot(pose[..., :1] + c * vx - s * vy, pose[..., 1:2] + s * vx + c * vy).max(-1)
        return np.hypot(pos, self.yaw_weight * yaw) + self.far_weight * np.maximum(r - self.far, 0.0)

    def _candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Contact points (block frame), inward normals, tangents and the allowed tangential range."""
        margin_convex, margin_concave = 0.004, self.pusher_half[0] + 0.006
        pts, normals, tangents, ranges = [], [], [], []
        for a, b, ca, cb in self.faces:
            length = float(np.linalg.norm(b - a))
            t = (b - a) / length
            n = np.array([-t[1], t[0]])
            lo = margin_convex if ca else margin_concave
            hi = length - (margin_convex if cb else margin_concave)
            if hi <= lo:
                continue
            for s in np.linspace(lo, hi, max(2, round((hi - lo) / 0.012) + 1)):
                pts.append(a + s * t)
                normals.append(n)
                tangents.append(t)
                ranges.append((lo - s, hi - s))
        return np.array(pts), np.array(normals), np.array(tangents), np.array(ranges)

    def _simulate(
        self, pose: np.ndarray, candidates: tuple[np.ndarray, ...], distances: np.ndarray, step: float = 0.004
    ) -> np.ndarray:
        """Block poses (n, len(distances), 3) after pushing each candidate contact (`_candidates`) along its
        initial world normal for each distance, integrated in `step` m increments of the pusher."""
        contact, normal, tangent, ranges = candidates
        n = len(contact)
        c, s = np.cos(pose[2]), np.sin(pose[2])
        rot = np.array([[c, -s], [s, c]])
        u = normal @ rot.T  # the pusher's (fixed) world direction
        com = np.tile(pose[:2] + rot @ self.com, (n, 1))
        yaw = np.full(n, pose[2])
        slide = np.zeros(n)  # how far the contact slid along its edge
        alive = np.ones(n, bool)
        out = np.empty((n, len(distances), 3))
        travelled, k = 0.0, 0
        while k < len(distances):
            c, s = np.cos(yaw), np.sin(yaw)
            rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n, 2, 2)
            cp = contact + slide[:, None] * tangent
            r = np.einsum("nij,nj->ni", rot, cp - self.com)
            nw = np.einsum("nij,nj->ni", rot, normal)
            tw = np.einsum("nij,nj->ni", rot, tangent)
            a = np.stack([-r[:, 1], r[:, 0]], 1)
            # sticking: the contact moves with the pusher; force F from (I + a a^T / c^2) F = u
            aa = np.einsum("ni,nj->nij", a, a) / self.c**2 + np.eye(2)
            force = np.einsum("nij,nj->ni", np.linalg.inv(aa), u)
            fn, ft = (force * nw).sum(1), (force * tw).sum(1)
            sliding = np.abs(ft) > self.mu_pusher * fn
            force = np.where(sliding[:, None], nw + np.sign(ft)[:, None] * self.mu_pusher * tw, force)
            vp = np.einsum("nij,nj->ni", aa, force)  # contact point velocity per unit force
            un = (u * nw).sum(1)
            alive &= un > 0.2
            scale = np.where(alive, un / np.maximum((vp * nw).sum(1), 1e-9), 0.0) * step
            com += force * scale[:, None]
            yaw += (a * force).sum(1) / self.c**2 * scale
            slide += ((u * step - vp * scale[:, None]) * tw).sum(1)
            alive &= (slide > ranges[:, 0] - 0.004) & (slide < ranges[:, 1] + 0.004)
            travelled += step
            while k < len(distances) and travelled >= distances[k] - 1e-9:
                c, s = np.cos(yaw), np.sin(yaw)
                origin = com - np.stack([c * self.com[0] - s * self.com[1], s * self.com[0] + c * self.com[1]], 1)
                out[:, k] = np.concatenate([origin, yaw[:, None]], 1)
                k += 1
        return out

    # ------------------------------------------------------------------------------------------ geometry

    def _inside(self, pts: np.ndarray, pose: np.ndarray, inflate: float) -> np.ndarray:
        """Which world points (..., 2) lie within `inflate` of the T at `pose`."""
        c, s = np.cos(pose[2]), np.sin(pose[2])
        d = pts - pose[:2]
        local = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)
        hit = np.zeros(pts.shape[:-1], bool)
        for half, centre in self.shapes:
            hit |= np.all(np.abs(local - centre) <= half + inflate, axis=-1)
        return hit

    def _path_clear(self, a: np.ndarray, b: np.ndarray, pose: np.ndarray) -> bool:
        """Whether the pusher, in any yaw, can move straight from a to b (xy) at pushing height."""
        k = max(2, int(np.linalg.norm(b - a) / 0.004) + 1)
        pts = a + np.linspace(0.0, 1.0, k)[:, None] * (b - a)
        return not self._inside(pts, pose, float(np.hypot(*self.pusher_half)) + 0.004).any()

    # ------------------------------------------------------------------------------------------ planning

    def _plan(self) -> dict[str, Any] | None:
        env = self.env
        pose = env.block_pose()
        pts, normals = self.candidates[:2]
        distances = np.array([0.01, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1])
        poses = self._simulate(pose, self.candidates, distances)
        cost = self._cost(poses)  # (n, d)
        c, s = np.cos(pose[2]), np.sin(pose[2])
        rot = np.array([[c, -s], [s, c]])
        contact = pose[:2] + pts @ rot.T
        u = normals @ rot.T
        back = self.gap + self.pusher_half[1]
        start = contact - u * back
        end = contact[:, None] + u[:, None] * (distances[None, :, None] - self.pusher_half[1])
        ok = np.ones(cost.shape, bool)
        lo, hi = self.reach
        r_start = np.linalg.norm(start, axis=1)
        ok &= ((r_start > lo) & (r_start < hi))[:, None]
        r_end = np.linalg.norm(end, axis=2)
        ok &= (r_end > lo) & (r_end < hi)
        # the pusher's footprint at the pre-contact point must clear the whole T (e.g. the stem beside the bar)
        side = np.stack([-u[:, 1], u[:, 0]], 1)
        grid = [(a, b) for a in np.linspace(-1, 1, 5) for b in np.linspace(-1, 1, 3)]
        foot = np.stack(
            [start + a * self.pusher_half[1] * u + b * self.pusher_half[0] * side for a, b in grid], 1
        )  # (n, 15, 2)
        ok &= ~np.any(self._inside(foot, pose, 0.003), axis=1)[:, None]
        cost = np.where(ok, cost, np.inf)
        best = float(cost.min())
        if not np.isfinite(best):
            return None
        choices = np.argwhere(cost <= best * (1.0 + self.slack) + 1e-9)
        i, j = choices[self.rng.integers(len(choices))]
        return {
            "pose": pose, "start": start[i], "end": end[i, j], "dir": u[i], "cost": float(cost[i, j]),
            "now": float(self._cost(pose)), "distance": float(distances[j]), "pred": poses[i, j],
        }  # fmt: skip

    def _queue_push(self, plan: dict[str, Any]) -> None:
        """Waypoints (ee goal, speed, tag, tolerance, yaw must match) from here through the push and back off."""
        cur, _ = self.settled()
        start = np.array([*plan["start"], self.push_z])
        end = np.array([*plan["end"], self.push_z])
        retreat = end - 0.012 * np.append(plan["dir"], 0.0)
        low = cur[2] < self.push_z + 0.01
        self.queue = []
        if not (low and self._path_clear(cur[:2], start[:2], plan["pose"])):
            if low:  # straight up first: the pusher is beside the block
                self.queue.append((np.array([*cur[:2], self.hover_z]), self.move_speed, "up", 0.02, False))
            self.queue.append((np.array([*start[:2], self.hover_z]), self.move_speed, "over", 0.004, True))
        self.queue.append((start, self.move_speed, "start", 0.003, True))
        speed = self.push_speed if plan["distance"] > 0.025 else 0.25
        self.queue += [(end, speed, "push", 0.003, False), (retreat, self.move_speed, "retreat", 0.004, False)]
        self.yaw = self.grip_yaw(float(np.arctan2(-plan["dir"][0], plan["dir"][1])), np.pi, start)

    def _advance(self) -> None:
        """Drop the waypoints already reached; re-plan when the queue runs out or the block moved meanwhile."""
        cur, cur_rot = self.settled()
        while self.queue:
            goal, _, tag, tol, need_yaw = self.queue[0]
            if np.linalg.norm(goal - cur) > tol or (need_yaw and abs(_wrap(_grip_yaw(cur_rot) - self.yaw)) > 0.05):
                return
            self.queue.pop(0)
            if tag in ("over", "start") and self.plan is not None:  # about to descend / push: is the plan still good?
                moved = self.env.block_pose() - self.plan["pose"]
                if np.hypot(*moved[:2]) > 0.004 or abs(_wrap(moved[2])) > 0.04:
                    self.queue = []
        self.plan = self._plan()
        if self.plan is not None:
            self._queue_push(self.plan)

    def _done(self) -> bool:
        """Well inside the success tolerances (for envs that do not end the episode on success)."""
        env = self.env
        pose = env.block_pose()
        pos = np.hypot(*(pose[:2] - env.goal[:2]))
        return pos < 0.5 * env.pos_tolerance and abs(_wrap(pose[2] - env.goal[2])) < 0.5 * env.yaw_tolerance

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.waiting():
            return self.to_env(self.hold(self.g_closed))
        if self._done():
            self.queue = []
        else:
            self._advance()
        if not self.queue:  # done, or no reachable push: wait above the block (it cannot move by itself)
            cur, _ = self.settled()
            goal = np.array([*cur[:2], self.hover_z])
            return self.to_env(self.servo(goal, _gripper_down(self.yaw), self.g_closed, self.move_speed))
        goal, speed, *_ = self.queue[0]
        return self.to_env(self.servo(goal, _gripper_down(self.yaw), self.g_closed, speed))
