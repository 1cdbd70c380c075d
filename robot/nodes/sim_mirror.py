"""Sim mirror node: a MuJoCo task (robot spec + scene) behind the same ROS 2 topics as the real robot.

Publishes ``/joint_states`` at ``state_rate_hz``, the spec's cameras (``<cam>/image_raw`` and/or
``<cam>/image_raw/compressed``, ``<cam>/camera_info``) at their fps, ``/clock``, the task's object state on
``/sim/environment_state`` (what a motion-capture or perception node gives on a real cell) and the task's
status on ``/sim/status`` (JSON: success, reward, episode). Takes ros2_control commands: joint positions on
``/<controller>/commands``, the gripper on ``/<gripper controller>/commands``, trajectories on
``/<controller>/joint_trajectory``, and for legged robots ``/cmd_vel`` (walked by the scripted gait).
``/sim/reset`` (String: empty or a seed) starts a new episode. With ``randomize`` each episode draws the task's
domain randomisation from its seed: friction, masses, damping, armature, actuator gains, camera poses, lights and
colours of the model (the gym env's action latency and observation noise are not applied: the graph has its own).

Its DDS domain follows the rule of every node (``domain_id``, else ``ROS_DOMAIN_ID``, else 0), so nodes started
alone meet it. So that it never drives a real robot by accident, it refuses a domain where another participant
publishes ``/joint_states`` (a robot, a driver, another sim): at start it listens ``robot_check_s`` for one and
exits 2, and while it runs it stops (exit code 1) if one appears. The sim graphs run on their own domain, 42.
Stamps are sim time; with ``realtime: true`` sim time starts at the wall clock and runs at its pace, with
``realtime: false`` it starts at 0 and runs as fast as the CPU allows (other nodes then use ``use_sim_time``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import cv2
import gymnasium as gym
import mujoco
import numpy as np

from ..msgs import (
    CameraInfo,
    Clock,
    CompressedImage,
    Float64MultiArray,
    Image,
    JointState,
    JointTrajectory,
    MultiArrayDimension,
    MultiArrayLayout,
    String,
    Time,
    TwistStamped,
    header,
)
from ..node import Node
from . import run_node

JPEG_FORMAT = "bgr8; jpeg compressed bgr8"


def other_robot(node: Node, wait: float) -> str | None:
    """Why ``node`` must not mirror a robot on its domain: another participant publishes ``/joint_states``
    (looked for during ``wait`` s, as discovery takes a moment); None when there is none (or the transport
    cannot tell)."""
    count = getattr(node.transport, "count_publishers", None)
    if count is None:
        return None
    end = time.monotonic() + wait
    while True:
        n = count("/joint_states")
        if n:
            return (
                f"domain {node.domain_id} already has {n} /joint_states publisher(s) (a robot, a driver or another "
                f"sim): a sim mirror there could drive a real robot. Pick another domain (domain_id=N or "
                f"ROS_DOMAIN_ID=N for every node, as the sim graphs do with 42)"
            )
        if time.monotonic() >= end:
            return None
        time.sleep(0.05)


def task_model_env(
    task: str,
    control_mode: str | None = None,
    seed: int | None = None,
    robot: str | None = None,
    randomize: bool | Mapping[str, Any] = False,
) -> gym.Env:
    """A task's env (never terminating) in ``control_mode`` (default: the task config's); ``task`` is a task config
    name (arm_lift) or a gymnasium id; ``robot`` a robot spec name or path in place of the task's; ``randomize``:
    domain randomisation drawn at each reset, ``True`` for the task config's ranges or a mapping of them."""
    import realloop.sim  # noqa: F401 - registers the realloop/ ids

    kwargs: dict[str, Any] = {}
    ranges: Any = dict(randomize) if isinstance(randomize, Mapping) else None
    if "/" not in task:
        from realloop.sim.collect import compose_config

        cfg = compose_config([f"task={task}"])["task"]
        task = cfg["env_id"]
        kwargs = dict(cfg.get("env") or {})
        if randomize is True:
            ranges = cfg.get("randomize")
    if randomize is True and not ranges:
        raise ValueError(f"randomize=true: task {task!r} has no randomize ranges; give them (randomize={{...}})")
    if ranges:
        kwargs["randomize"] = ranges
    kwargs.pop("max_episode_steps", None)
    if control_mode:
        kwargs["control_mode"] = control_mode
    if robot:
        kwargs["robot"] = str(robot)
    env = gym.make(task, terminate_on_success=False, **kwargs)
    env.reset(seed=seed)
    return env


class Trajectory:
    """A JointTrajectory being executed: linear interpolation between its points on the sim clock."""

    def __init__(self, msg: JointTrajectory, order: list[int], start: float, q0: np.ndarray):
        self.times = np.array([start] + [start + p.time_from_start.to_sec() for p in msg.points])
        pts = [np.asarray(p.positions, dtype=float)[order] for p in msg.points]
        self.points = np.vstack([q0, *pts])

    def at(self, t: float) -> tuple[np.ndarray, bool]:
        """Target at time t and whether the trajectory is finished."""
        if t >= self.times[-1]:
            return self.points[-1], True
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        i = max(i, 0)
        a = (t - self.times[i]) / max(self.times[i + 1] - self.times[i], 1e-9)
        return self.points[i] + a * (self.points[i + 1] - self.points[i]), False


class SimMirror(Node):
    def __init__(self, name: str = "sim_mirror", params: Mapping[str, Any] | None = None, **kw: Any):
        from realloop.sim.envs.base import task_of
        from realloop.sim.envs.quadruped import QuadWalkEnv

        params = dict(params or {})
        super().__init__(name, params, **kw)
        self.exit_code = 0
        check_until = time.monotonic() + float(self.param("robot_check_s", 0.5))  # discovery runs meanwhile
        self.seed = params.get("seed")
        randomize = self.param("randomize", False)
        self.env = task_model_env(str(self.param("task", "arm_lift")), "joint_position", self.seed, None, randomize)
        self.u = task_of(self.env)
        self.robot = self.u.robot
        self.spec = self.robot.spec
        self.model, self.data = self.u.model, self.u.data
        self.realtime = bool(self.param("realtime", True))
        self.t0 = time.time() if self.realtime else 0.0
        rate = float(self.param("state_rate_hz", 100.0))
        self.substeps = max(1, round(1.0 / (rate * self.model.opt.timestep)))
        self.tick_dt = self.substeps * self.model.opt.timestep
        self.episode = 0

        why = other_robot(self, check_until - time.monotonic())
        if why:
            self.env.close()
            Node.close(self)
            raise ValueError(why)
        self._next_robot_check = time.monotonic() + 1.0

        names = list(self.spec.joint_names)
        if self.spec.gripper is not None:  # has_gripper
            names.append(self.spec.gripper.joints[0])
        self.state_names = names
        self.js_pub = self.create_publisher("/joint_states", JointState)
        self.env_pub = self.create_publisher("/sim/environment_state", Float64MultiArray)
        self.status_pub = self.create_publisher("/sim/status", String, qos="latched")
        self.clock_pub = (
            self.create_publisher("/clock", Clock, qos="clock") if self.param("publish_clock", True) else None
        )

        self.q_cmd = self.robot.joint_targets().copy()
        self.g_cmd = self.robot.gripper_target() if self.robot.has_gripper else None
        self.trajectory: Trajectory | None = None
        self.cmd_vel: np.ndarray | None = None
        self.cmd_vel_time = -1.0
        self.rejected = 0
        ctrl = self.spec.command.controller if self.spec.command else "joint_controller"
        self.create_subscription(f"/{ctrl}/commands", Float64MultiArray, self._on_commands)
        self.create_subscription(f"/{ctrl}/joint_trajectory", JointTrajectory, self._on_trajectory)
        if self.spec.gripper is not None and self.spec.gripper.controller:
            self.create_subscription(f"/{self.spec.gripper.controller}/commands", Float64MultiArray, self._on_gripper)
        self.gait = None
        self.walker: QuadWalkEnv | None = None  # the task whose velocity command the gait follows
        if self.u.robot.ee_site_id < 0 and isinstance(self.u, QuadWalkEnv):
            from realloop.sim.experts import make_expert

            self.walker = self.u
            self.gait = make_expert(self.env)
            self.gait.reset(np.random.default_rng(self.seed))
            self.gait_every = max(1, round(self.robot.control_dt / self.tick_dt))
            self.create_subscription("/cmd_vel", TwistStamped, self._on_cmd_vel)
        self.create_subscription("/sim/reset", String, self._on_reset)

        self.cameras = self._setup_cameras()
        self.ticks = 0
        self._status_sent: tuple | None = None
        self._next_tick = time.monotonic()
        self.log.info(
            "sim mirror %s on domain %d: %d substeps per %.0f Hz tick, realtime=%s",
            self.spec.name,
            self.domain_id,
            self.substeps,
            1 / self.tick_dt,
            self.realtime,
        )
        self._publish_state()

    # --- cameras -------------------------------------------------------------------------------------------
    def _setup_cameras(self) -> list[dict[str, Any]]:
        from realloop.sim.render import CameraRenderer

        wanted = self.param("cameras", None)
        specs = [c for c in self.spec.cameras if wanted is None or c.name in wanted]
        if wanted is not None and len(specs) != len(wanted):
            known = [c.name for c in self.spec.cameras]
            raise ValueError(f"cameras={wanted}: the {self.spec.name} spec has cameras {known}")
        raw, compressed = bool(self.param("image_raw", False)), bool(self.param("compressed", True))
        width, height = self.param("image_width"), self.param("image_height")
        out = []
        for cam in specs:
            w, h = int(width or cam.width), int(height or cam.height)
            fps = float(self.param("camera_fps", None) or cam.fps)
            f = 0.5 * h / np.tan(np.deg2rad(self.model.cam_fovy[self.model.camera(cam.mount).id]) / 2)
            info = CameraInfo(
                height=h,
                width=w,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=np.array([f, 0, w / 2, 0, f, h / 2, 0, 0, 1.0]),
                r=np.eye(3).ravel(),
                p=np.array([f, 0, w / 2, 0, 0, f, h / 2, 0, 0, 0, 1.0, 0]),
            )
            out.append(
                {
                    "spec": cam,
                    "renderer": CameraRenderer(self.model, h, w),
                    "every": 1.0 / fps,
                    "next": 0.0,
                    "info": info,
                    "frame_id": f"{cam.name}_optical_frame",
                    "raw": self.create_publisher(f"/{cam.name}/image_raw", Image, qos="sensor") if raw else None,
                    "jpeg": self.create_publisher(f"/{cam.name}/image_raw/compressed", CompressedImage, qos="sensor")
                    if compressed
                    else None,
                    "info_pub": self.create_publisher(f"/{cam.name}/camera_info", CameraInfo, qos="sensor"),
                }
            )
        return out

    def _publish_cameras(self, t: float) -> None:
        quality = int(self.param("jpeg_quality", 90))
        for cam in self.cameras:
            if self.data.time + 1e-9 < cam["next"]:
                continue
            cam["next"] = max(cam["next"] + cam["every"], self.data.time)
            bgr = cv2.cvtColor(cam["renderer"].render(self.data, cam["spec"].mount), cv2.COLOR_RGB2BGR)
            hdr = header(t, cam["frame_id"])
            if cam["raw"] is not None:
                h, w = bgr.shape[:2]
                cam["raw"].publish(Image(hdr, h, w, "bgr8", 0, 3 * w, bgr.tobytes()))
            if cam["jpeg"] is not None:
                _, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
                cam["jpeg"].publish(CompressedImage(hdr, JPEG_FORMAT, buf.tobytes()))
            cam["info"].header = hdr
            cam["info_pub"].publish(cam["info"])

    # --- commands ------------------------------------------------------------------------------------------
    def _reject(self, what: str, why: str) -> None:
        self.rejected += 1
        self.log.warning("rejected %s: %s", what, why)

    def _on_commands(self, msg: Float64MultiArray) -> None:
        q = np.asarray(msg.data, dtype=float)
        if q.shape != (self.robot.n_joints,) or not np.isfinite(q).all():
            self._reject("joint command", f"needs {self.robot.n_joints} finite positions, got {q}")
            return
        self.q_cmd, self.trajectory = q, None

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        if len(msg.data) != 1 or not np.isfinite(msg.data).all():
            self._reject("gripper command", f"needs one finite opening, got {msg.data}")
            return
        self.g_cmd = float(msg.data[0])

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(msg.joint_names)
        if sorted(names) != sorted(self.spec.joint_names) or not msg.points:
            self._reject("trajectory", f"needs points for joints {self.spec.joint_names}, got {names}")
            return
        if any(len(p.positions) != len(names) or not np.isfinite(p.positions).all() for p in msg.points):
            self._reject("trajectory", "every point needs one finite position per joint")
            return
        order = [names.index(n) for n in self.spec.joint_names]
        start = msg.header.stamp.to_sec() or self.sim_now()
        self.trajectory = Trajectory(msg, order, max(start, self.sim_now()), self.q_cmd.copy())

    def _on_cmd_vel(self, msg: TwistStamped) -> None:
        v = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.angular.z])
        if not np.isfinite(v).all():
            self._reject("cmd_vel", f"non-finite {v}")
            return
        self.cmd_vel, self.cmd_vel_time = v, self.data.time

    def _on_reset(self, msg: String) -> None:
        seed = int(msg.data) if msg.data.strip() else None
        before = self.sim_now()
        self.env.reset(seed=seed)
        # MuJoCo's clock restarts at 0 on a reset; the published time (stamps, /clock, camera frames) runs on
        self.t0 = before - self.data.time
        for cam in self.cameras:  # frames are scheduled on MuJoCo's clock
            cam["next"] = 0.0
        self.q_cmd = self.robot.joint_targets().copy()
        self.g_cmd = self.robot.gripper_target() if self.robot.has_gripper else None
        self.trajectory, self.cmd_vel = None, None
        self.episode += 1
        self.log.info("reset: episode %d (seed %s)", self.episode, seed)

    # --- loop ----------------------------------------------------------------------------------------------
    def sim_now(self) -> float:
        return self.t0 + self.data.time

    def tick(self) -> None:
        if self.trajectory is not None:
            self.q_cmd, done = self.trajectory.at(self.sim_now())
            if done:
                self.trajectory = None
        walker, gait = self.walker, self.gait
        if walker is not None and gait is not None and self.cmd_vel is not None and self.ticks % self.gait_every == 0:
            if self.data.time - self.cmd_vel_time > float(self.param("cmd_vel_timeout", 0.5)):
                self.cmd_vel = None  # a stale velocity command stops the gait; the legs hold their targets
            else:
                walker.command = self.cmd_vel
                self.q_cmd = gait.act(walker.observation())
        self.robot.command(self.q_cmd, self.g_cmd)
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self.ticks += 1
        self._publish_state()

    def _publish_state(self) -> None:
        t = self.sim_now()
        q = list(self.robot.joint_positions())
        v = list(self.robot.joint_velocities())
        eff = list(self.data.actuator_force[self.robot.actuator_ids])
        if self.robot.has_gripper:
            q.append(self.robot.gripper_opening())
            v.append(0.0)
            eff.append(float(self.data.actuator_force[self.robot.gripper_id]))
        self.js_pub.publish(JointState(header(t), self.state_names, np.array(q), np.array(v), np.array(eff)))
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(Time.from_sec(t)))
        if self.u.env_state_names:
            state = np.asarray(self.u._task_state(), dtype=float)
            dims = [MultiArrayDimension(",".join(self.u.env_state_names), len(state), len(state))]
            self.env_pub.publish(Float64MultiArray(MultiArrayLayout(dims, 0), state))
        self._publish_cameras(t)
        if self.ticks % max(1, round(0.1 / self.tick_dt)) == 0:
            reward, success, extra = self.u._evaluate()
            status = (self.episode, bool(success))
            if status != self._status_sent or self.ticks % round(1.0 / self.tick_dt) == 0:
                self._status_sent = status
                info = {k: float(v) for k, v in extra.items() if isinstance(v, (int, float, np.floating))}
                self.status_pub.publish(
                    String(
                        json.dumps(
                            {
                                "episode": self.episode,
                                "success": bool(success),
                                "reward": float(reward),
                                "time": t,
                                "rejected": self.rejected,
                                **info,
                            }
                        )
                    )
                )

    def spin_once(self, timeout: float = 0.1) -> None:
        if time.monotonic() >= self._next_robot_check:  # a robot that comes up later on this domain stops the sim
            self._next_robot_check = time.monotonic() + 1.0
            why = other_robot(self, 0.0)
            if why:
                self.log.error("stopping: %s", why)
                self.exit_code = 1
                self.shutdown()
                return
        # physics runs here rather than in a timer: ticks catch up after a slow frame instead of being skipped
        if not self.realtime:
            super().spin_once(0.0)
            self.tick()
            return
        now = time.monotonic()
        if now < self._next_tick:
            super().spin_once(min(timeout, self._next_tick - now))
            return
        super().spin_once(0.0)
        self.tick()
        self._next_tick += self.tick_dt
        if time.monotonic() - self._next_tick > 1.0:  # more than 1 s behind: drop the backlog, do not race
            self.log.warning("sim mirror cannot keep real time; dropping %.1f s", time.monotonic() - self._next_tick)
            self._next_tick = time.monotonic()

    def close(self) -> None:
        for cam in self.cameras:
            cam["renderer"].close()
        self.env.close()
        super().close()


def main(argv: list[str] | None = None) -> int:
    return run_node("sim_mirror", SimMirror, argv)
