"""Policy runner node: runs a realloop policy at the control rate and publishes its commands.

Each control tick it assembles the policy's observation from topics with the dataset's aligned view (for the
tick time t, the last sample at or before t - offset in each stream), mirrors it into a MuJoCo model of the
task (``sync_robot``, ``set_task_state``) whose ``_observe`` gives exactly the features a dataset recorded in sim
holds, and executes the policy's action chunks on their timestamps (t0 + k / rate; actions whose time passed are
dropped, never bunched). A learned policy predicts its next chunk in a worker thread, started ``inference_lead``
control steps before the queue runs out (default: follows the measured inference time), so inference does not
stall the robot or drop actions (chunk_schedule.py). Actions in the task's action
space (ee_delta by default) become joint targets through the same action mode (IK on the robot's MJCF) and go
out on ``<command_prefix>/<controller>/commands`` and the gripper's, i.e. into the safety filter by default.

Behind a safety filter (``command_prefix`` set) it also listens to the filter's output: an ee_delta step must
start from the target the robot really has, so when the filter clamped, rejected (forwarded nothing) or held a
command, the next step starts from what it last forwarded (``rebased`` in the status), not from where the policy
wanted to be. Otherwise a policy pressing into a forbidden region would walk its targets ever further in, and
every later command, the recovery too, would be rejected until the walk came back.

Image policies get their ``observation.images.<cam>`` from camera topics (``cameras``: camera -> topic; by
default ``/<cam>/image_raw/compressed`` for each camera of the robot spec), aligned like the other streams,
decoded to RGB, centre-cropped to the training frames' aspect ratio and resized to their size.

While ``/intervention`` is true (a human drives with teleop) it publishes nothing; on release it restarts from
the measured state. With ``max_episode_s`` an episode that has not succeeded that long after its first action
ends as a failure: the runner holds and (``report_success``) sends ``failure`` to the recorder, which commits it.
Stale joint states (older than ``max_state_age``) stop it acting until fresh ones come.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from ..msgs import Bool, CompressedImage, Float64MultiArray, Image, JointState, String
from ..node import Node
from ..recorder.streams import InvalidSample, message_to_rgb
from . import run_node
from .chunk_schedule import ChunkSchedule
from .sim_mirror import task_model_env


class StreamBuffer:
    """Recent (stamp, value) samples of one stream; ``at(t)`` is the dataset's alignment rule."""

    def __init__(self, maxlen: int = 256):
        self.stamps: deque[float] = deque(maxlen=maxlen)
        self.values: deque[Any] = deque(maxlen=maxlen)

    def add(self, t: float, value: Any) -> None:
        if self.stamps and t < self.stamps[-1]:
            return  # out of order: the aligned view only moves forward
        self.stamps.append(t)
        self.values.append(value)

    def at(self, t: float) -> tuple[float, Any] | None:
        """The last sample at or before ``t`` (None if there is none)."""
        i = int(np.searchsorted(np.fromiter(self.stamps, float, len(self.stamps)), t, side="right")) - 1
        return None if i < 0 else (self.stamps[i], self.values[i])


IMAGES = "observation.images."


def fit_image(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``img`` (H x W x 3) centre-cropped to the aspect ratio of ``shape`` (H, W, ...) and resized to it: a
    camera's frames as the training frames were framed (a sim camera rendered at the training size keeps its
    vertical field of view, so a wider frame loses its sides, not its top and bottom)."""
    h, w = img.shape[:2]
    th, tw = int(shape[0]), int(shape[1])
    if (h, w) == (th, tw):
        return img
    if w * th > tw * h:  # too wide: crop the sides
        cw = max(1, round(h * tw / th))
        x0 = (w - cw) // 2
        img = img[:, x0 : x0 + cw]
    elif w * th < tw * h:  # too tall: crop top and bottom
        ch = max(1, round(w * th / tw))
        y0 = (h - ch) // 2
        img = img[y0 : y0 + ch]
    return cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)


class FilterEcho:
    """What a safety filter did with the commands this node sent, from the filter's output topic: forwarded as
    sent, clamped (a shorter step forwarded), rejected (nothing forwarded; the robot keeps the last accepted
    target) or held (the hold forwarded). Messages on one topic arrive in order, so the newest one decides."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget what was sent (a restart from the measured state)."""
        self.last_sent: np.ndarray | None = None
        self.forwarded: np.ndarray | None = None
        self.echoed = False

    def sent(self, values: np.ndarray) -> None:
        self.last_sent = np.array(values, dtype=float)
        self.echoed = False

    def on_forwarded(self, values: Any) -> None:
        self.forwarded = np.array(values, dtype=float)
        last = self.last_sent
        self.echoed = (last is not None and last.shape == self.forwarded.shape
                       and bool(np.allclose(last, self.forwarded, rtol=0.0, atol=1e-9)))

    def actual(self) -> np.ndarray | None:
        """The robot's target when it is not what this node last sent (None: it took that, or nothing is known).
        A command the filter forwards comes back within milliseconds, well inside one control period."""
        if self.last_sent is None or self.forwarded is None or self.echoed:
            return None
        return self.forwarded


class PolicyRunner(Node):
    def __init__(self, name: str = "policy_runner", params: Mapping[str, Any] | None = None, **kw: Any):
        super().__init__(name, params, **kw)
        from realloop.policies.base import make_policy

        self.env = task_model_env(str(self.param("task", "arm_lift")), self.param("control_mode"))
        self.u = self.env.unwrapped
        self.robot, self.spec = self.u.robot, self.u.robot.spec
        topics = self.param("cameras") or {c.name: f"/{c.name}/image_raw/compressed" for c in self.spec.cameras}
        topics = {str(k): str(v) for k, v in dict(topics).items() if v}
        self.policy = make_policy(dict(self.param("policy", {"kind": "expert"})), self.u,
                                  provided={IMAGES + c for c in topics})
        self.log.info("policy %s loaded: %s", type(self.policy).__name__, dict(self.param("policy", {})))
        threads = self.param("torch_threads", 1)
        if threads and "torch" in sys.modules:  # inference shares the robot computer with the other nodes
            sys.modules["torch"].set_num_threads(int(threads))
        self._set_workspace(self.param("workspace"))
        self.rate = float(self.param("rate_hz") or self.spec.control_rate_hz)
        self.offsets = dict(self.param("offsets", {}) or {})
        self.max_state_age = float(self.param("max_state_age", 0.5))

        self.joints = StreamBuffer()
        self.env_state = StreamBuffer()
        self.create_subscription("/joint_states", JointState, self._on_joint_states)
        if self.u.env_state_names:
            self.create_subscription(str(self.param("environment_state_topic", "/sim/environment_state")),
                                     Float64MultiArray, self._on_env_state)
        # the policy's image features, from camera topics: feature -> (camera, topic, frames, (H, W, C))
        shapes = self.policy.image_shapes() if hasattr(self.policy, "image_shapes") else {}
        self.cameras: dict[str, tuple[str, str, StreamBuffer, tuple[int, ...]]] = {}
        for key, shape in shapes.items():
            cam = key[len(IMAGES):]
            topic = topics[cam]
            buf = StreamBuffer(maxlen=64)
            msg_type = CompressedImage if topic.rstrip("/").endswith("compressed") else Image
            self.create_subscription(topic, msg_type, lambda m, b=buf: b.add(m.header.stamp.to_sec(), m),
                                     qos="sensor")
            self.cameras[key] = (cam, topic, buf, shape)
        self.max_image_age = float(self.param("max_image_age", 0.5))
        self.create_subscription("/intervention", Bool, self._on_intervention)
        self.create_subscription("/sim/status", String, self._on_sim_status, qos="latched")

        prefix = str(self.param("command_prefix", "/unsafe")).rstrip("/")
        ctrl = self.spec.command.controller if self.spec.command else "joint_controller"
        self.cmd_pub = self.create_publisher(f"{prefix}/{ctrl}/commands", Float64MultiArray)
        self.grip_pub = (self.create_publisher(f"{prefix}/{self.spec.gripper.controller}/commands", Float64MultiArray)
                         if self.robot.has_gripper and self.spec.gripper.controller else None)
        # behind a safety filter: its output says what the robot was really commanded
        self.arm_echo = self.grip_echo = None
        if prefix:
            self.arm_echo = FilterEcho()
            self.create_subscription(f"/{ctrl}/commands", Float64MultiArray,
                                     lambda m: self.arm_echo.on_forwarded(m.data))
            if self.grip_pub is not None:
                self.grip_echo = FilterEcho()
                self.create_subscription(f"/{self.spec.gripper.controller}/commands", Float64MultiArray,
                                         lambda m: self.grip_echo.on_forwarded(m.data))
        self.status_pub = self.create_publisher("~/status", String, qos="latched")
        # sim graphs: the task's success (from /sim/status) ends the recorder's episode as a success
        self.recorder_pub = (self.create_publisher("/recorder/command", String)
                             if self.param("report_success", False) else None)

        lead = self.param("inference_lead")
        self.schedule = ChunkSchedule(self.rate, None if lead in (None, "auto") else int(lead))
        self.paused = False
        self.synced = False  # the model's targets start at the measured pose (no jump on the first command)
        self.sim_episode: int | None = None
        self.stop_on_success = bool(self.param("stop_on_success", True))
        limit = self.param("max_episode_s")
        self.max_episode_s = float(limit) if limit not in (None, "null") else None
        if self.max_episode_s is not None and not self.max_episode_s > 0:
            raise ValueError(f"param 'max_episode_s' must be > 0 s or null (no limit), got {limit!r}")
        self.episode_start: float | None = None  # node-clock time of the episode's first action
        self.done = False
        self.steps = 0
        self.stale = 0
        self.rebased = 0  # arm steps started from the filter's target instead of this node's
        self.rebased_gripper = 0  # gripper targets the filter changed (ramped, clamped, rejected)
        self.create_timer(1.0 / self.rate, self.tick)
        self._status("waiting")

    def _set_workspace(self, ws: Any) -> None:
        """End-effector targets clipped into the box (ee_delta): a step that would leave the safety filter's box
        keeps its in-box part; sent whole, the filter would reject it, and a policy pressing on in the same
        direction would have every later command rejected too."""
        if not ws:
            return
        from realloop.sim.control import EEDelta

        mode = self.u.action_mode
        if not isinstance(mode, EEDelta):
            self.log.warning("param 'workspace' clips end-effector targets of ee_delta control; %s ignores it",
                             type(mode).__name__)
            return
        try:
            mode.set_workspace(ws["min"], ws["max"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"param 'workspace' must be {{min: [x, y, z], max: [x, y, z]}} or null, got {ws!r} "
                             f"({e})") from None

    # --- inputs --------------------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        self.joints.add(msg.header.stamp.to_sec(), msg)

    def _on_env_state(self, msg: Float64MultiArray) -> None:
        # Float64MultiArray has no header: its samples are stamped on arrival with this node's clock
        self.env_state.add(self.now(), np.asarray(msg.data, dtype=float))

    def _on_intervention(self, msg: Bool) -> None:
        if msg.data != self.paused:
            self.paused = bool(msg.data)
            self._restart()
            self._status("intervention" if self.paused else "running")

    def _on_sim_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        episode = status.get("episode")
        if self.sim_episode is not None and episode != self.sim_episode:  # the sim was reset: new episode
            self.policy.reset()
            self._restart()
            self.done = False
            self.steps = 0
            self.episode_start = None
        self.sim_episode = episode
        if status.get("success") and self.stop_on_success and not self.done:
            self._end_episode("success", "success")

    def _end_episode(self, state: str, outcome: str) -> None:
        """Stop acting (the robot holds its last targets) and, on sim graphs, end the recorder's episode."""
        self.done = True
        self.schedule.clear()
        self._status(state)
        self.log.info("%s after %d steps; holding", "task success" if state == "success" else
                      f"no success within max_episode_s={self.max_episode_s:g} s", self.steps)
        if self.recorder_pub is not None:
            self.recorder_pub.publish(String(outcome))

    def _restart(self) -> None:
        """Drop the pending actions and start again from the measured state."""
        self.schedule.clear()
        self.synced = False
        for echo in (self.arm_echo, self.grip_echo):
            if echo is not None:
                echo.reset()

    # --- observation ---------------------------------------------------------------------------------------
    def observe(self, t: float) -> dict[str, np.ndarray] | None:
        """The policy observation at time t, or None when a stream is missing or stale."""
        js = self.joints.at(t - float(self.offsets.get("joint_states", 0.0)))
        if js is None or t - js[0] > self.max_state_age:
            return None
        msg: JointState = js[1]
        index = {n: i for i, n in enumerate(msg.name)}
        try:
            q = np.array([msg.position[index[n]] for n in self.spec.joint_names])
            v = (np.array([msg.velocity[index[n]] for n in self.spec.joint_names])
                 if len(msg.velocity) == len(msg.name) else None)
            g = msg.position[index[self.spec.gripper.joints[0]]] if self.robot.has_gripper else None
        except KeyError as e:
            raise ValueError(f"/joint_states lacks joint {e}; it has {msg.name}") from None
        self.u.sync_robot(q, v, g)
        if self.u.env_state_names:
            es = self.env_state.at(t - float(self.offsets.get("environment_state", 0.0)))
            if es is None or t - es[0] > self.max_state_age:
                return None
            self.u.set_task_state(es[1])
        obs = self.u._observe()
        for key, (cam, topic, buf, shape) in self.cameras.items():
            frame = buf.at(t - float(self.offsets.get(cam, 0.0)))
            if frame is None or t - frame[0] > self.max_image_age:
                return None
            try:
                obs[key] = fit_image(message_to_rgb(frame[1], topic), shape)
            except InvalidSample as e:
                self.log.warning("%s", e)
                return None
        if not self.synced:
            self.robot.command(q, g)  # targets = measured pose
            self.synced = True
        return obs

    # --- control -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.paused or self.done:
            return
        t = self.now()
        if self.max_episode_s is not None and self.episode_start is not None \
                and t - self.episode_start > self.max_episode_s:
            self._end_episode("timeout", "failure")
            return
        obs = self.observe(t)
        if obs is None:
            self.stale += 1
            self.schedule.clear()
            if self.stale == 1 or self.stale % round(5 * self.rate) == 0:
                self.log.warning("no fresh observation at t=%.3f (joint states, environment state or a camera "
                                 "missing or older than its max age)", t)
            self._status("waiting")
            return
        self.policy.observe(obs)
        self._rebase()
        chunks = self.schedule.chunks
        if self.schedule.due(t):
            prepare = getattr(self.policy, "prepare_chunk", None)
            if prepare is not None:  # a learned policy: its model runs in the worker thread
                self.schedule.start(t, prepare(obs))
            else:  # the scripted expert reads the task model this thread keeps in sync: run it now
                self.schedule.start(t, lambda: self.policy.predict_action_chunk(obs), background=False)
        action = self.schedule.next_action(t)
        if action is None:
            return
        if self.episode_start is None:
            self.episode_start = t
        q, g = self.u.action_mode.targets(np.asarray(action, dtype=np.float32))
        self.robot.command(q, g)  # the model's targets: the base of the next ee_delta step
        self._send(self.cmd_pub, self.arm_echo, self.robot.joint_targets())
        if self.grip_pub is not None and g is not None:
            self._send(self.grip_pub, self.grip_echo, np.array([self.robot.gripper_target()]))
        self.steps += 1
        if self.stale or self.schedule.chunks != chunks:  # a status per chunk: progress, and the inference time
            self.stale = 0
            self._status("running")

    @staticmethod
    def _send(pub: Any, echo: FilterEcho | None, values: np.ndarray) -> None:
        data = np.asarray(values, dtype=float)
        pub.publish(Float64MultiArray(data=data))
        if echo is not None:
            echo.sent(data)

    def _rebase(self) -> None:
        """Start the next step from the targets the safety filter really forwarded, where they differ."""
        q = self.arm_echo.actual() if self.arm_echo is not None else None
        g = self.grip_echo.actual() if self.grip_echo is not None else None
        if q is None and g is None:
            return
        if q is not None and q.shape != (self.robot.n_joints,):
            return  # not this robot's command: leave the targets alone
        self.robot.command(self.robot.joint_targets() if q is None else q,
                           float(g[0]) if g is not None and g.size else None)
        self.rebased += q is not None
        self.rebased_gripper += g is not None
        if q is not None and (self.rebased == 1 or self.rebased % 50 == 0):
            self.log.info("the safety filter changed %d arm command(s): continuing from what it forwarded",
                          self.rebased)

    def _inference_ms(self) -> list[float]:
        """The recent inference times of the schedule's window, in ms."""
        return [1e3 * x for x in self.schedule.latency_s]

    def _status(self, state: str) -> None:
        s = self.schedule
        ms = self._inference_ms()
        self.status_pub.publish(String(json.dumps({
            "state": state, "steps": self.steps, "chunks": s.chunks, "rebased": self.rebased,
            "rebased_gripper": self.rebased_gripper,
            "inference_ms_mean": float(np.mean(ms)) if ms else None, "inference_ms_max": max(ms) if ms else None,
            "lead": s.lead, "dropped": s.dropped, "waits": s.waits})))

    def close(self) -> None:
        s = self.schedule
        ms = self._inference_ms()
        self.log.info("totals: %d steps, %d chunks (inference %s ms mean of the last %d), %d actions dropped, "
                      "%d waits; the safety filter changed %d arm and %d gripper commands", self.steps, s.chunks,
                      f"{np.mean(ms):.0f}" if ms else "-", len(ms), s.dropped, s.waits, self.rebased,
                      self.rebased_gripper)
        self.schedule.close()
        self.env.close()
        super().close()


def main(argv: list[str] | None = None) -> int:
    return run_node("policy_runner", PolicyRunner, argv)
