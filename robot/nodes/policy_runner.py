"""Policy runner node: runs a realloop policy at the control rate and publishes its commands.

Each control tick it assembles the policy's observation from topics with the dataset's aligned view (for the
tick time t, the last sample at or before t - offset in each stream), mirrors it into a MuJoCo model of the
task (``sync_robot``, ``set_task_state``) whose ``_observe`` gives exactly the features a dataset recorded in sim
holds, asks the policy for an action chunk when the queue is empty, and executes the chunk's actions on their
timestamps (t0 + k / rate; actions whose time passed are dropped, never bunched). Actions in the task's action
space (ee_delta by default) become joint targets through the same action mode (IK on the robot's MJCF) and go
out on ``<command_prefix>/<controller>/commands`` and the gripper's, i.e. into the safety filter by default.

While ``/intervention`` is true (a human drives with teleop) it publishes nothing; on release it restarts from
the measured state. Stale joint states (older than ``max_state_age``) stop it acting until fresh ones come.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..msgs import Bool, Float64MultiArray, JointState, String
from ..node import Node
from . import run_node
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


class PolicyRunner(Node):
    def __init__(self, name: str = "policy_runner", params: Mapping[str, Any] | None = None, **kw: Any):
        super().__init__(name, params, **kw)
        from realloop.policies.base import make_policy

        self.env = task_model_env(str(self.param("task", "arm_lift")), self.param("control_mode"))
        self.u = self.env.unwrapped
        self.robot, self.spec = self.u.robot, self.u.robot.spec
        self.policy = make_policy(dict(self.param("policy", {"kind": "expert"})), self.u)
        self.log.info("policy %s loaded: %s", type(self.policy).__name__, dict(self.param("policy", {})))
        self.rate = float(self.param("rate_hz") or self.spec.control_rate_hz)
        self.offsets = dict(self.param("offsets", {}) or {})
        self.max_state_age = float(self.param("max_state_age", 0.5))

        self.joints = StreamBuffer()
        self.env_state = StreamBuffer()
        self.create_subscription("/joint_states", JointState, self._on_joint_states)
        if self.u.env_state_names:
            self.create_subscription(str(self.param("environment_state_topic", "/sim/environment_state")),
                                     Float64MultiArray, self._on_env_state)
        self.create_subscription("/intervention", Bool, self._on_intervention)
        self.create_subscription("/sim/status", String, self._on_sim_status, qos="latched")

        prefix = str(self.param("command_prefix", "/unsafe")).rstrip("/")
        ctrl = self.spec.command.controller if self.spec.command else "joint_controller"
        self.cmd_pub = self.create_publisher(f"{prefix}/{ctrl}/commands", Float64MultiArray)
        self.grip_pub = (self.create_publisher(f"{prefix}/{self.spec.gripper.controller}/commands", Float64MultiArray)
                         if self.robot.has_gripper and self.spec.gripper.controller else None)
        self.status_pub = self.create_publisher("~/status", String, qos="latched")
        # sim graphs: the task's success (from /sim/status) ends the recorder's episode as a success
        self.recorder_pub = (self.create_publisher("/recorder/command", String)
                             if self.param("report_success", False) else None)

        self.queue: deque[tuple[float, np.ndarray]] = deque()
        self.paused = False
        self.synced = False  # the model's targets start at the measured pose (no jump on the first command)
        self.sim_episode: int | None = None
        self.stop_on_success = bool(self.param("stop_on_success", True))
        self.done = False
        self.steps = 0
        self.chunks = 0
        self.stale = 0
        self.inference_ms: deque[float] = deque(maxlen=100)
        self.create_timer(1.0 / self.rate, self.tick)
        self._status("waiting")

    # --- inputs --------------------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        self.joints.add(msg.header.stamp.to_sec(), msg)

    def _on_env_state(self, msg: Float64MultiArray) -> None:
        # Float64MultiArray has no header: its samples are stamped on arrival with this node's clock
        self.env_state.add(self.now(), np.asarray(msg.data, dtype=float))

    def _on_intervention(self, msg: Bool) -> None:
        if msg.data != self.paused:
            self.paused = bool(msg.data)
            self.queue.clear()
            self.synced = False
            self._status("intervention" if self.paused else "running")

    def _on_sim_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        episode = status.get("episode")
        if self.sim_episode is not None and episode != self.sim_episode:  # the sim was reset: new episode
            self.policy.reset()
            self.queue.clear()
            self.synced = False
            self.done = False
            self.steps = 0
        self.sim_episode = episode
        if status.get("success") and self.stop_on_success and not self.done:
            self.done = True
            self._status("success")
            self.log.info("task success after %d steps; holding", self.steps)
            if self.recorder_pub is not None:
                self.recorder_pub.publish(String("success"))

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
        if not self.synced:
            self.robot.command(q, g)  # targets = measured pose
            self.synced = True
        return self.u._observe()

    # --- control -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.paused or self.done:
            return
        t = self.now()
        obs = self.observe(t)
        if obs is None:
            self.stale += 1
            self.queue.clear()
            if self.stale == 1 or self.stale % round(5 * self.rate) == 0:
                self.log.warning("no fresh observation at t=%.3f (joint states or environment state missing)", t)
            self._status("waiting")
            return
        self.policy.observe(obs)
        half = 0.5 / self.rate
        while self.queue and self.queue[0][0] < t - half:
            self.queue.popleft()  # its time has passed: drop it rather than execute late
        new_chunk = not self.queue
        if new_chunk:
            start = time.perf_counter()
            chunk = np.atleast_2d(self.policy.predict_action_chunk(obs))
            self.inference_ms.append(1e3 * (time.perf_counter() - start))
            self.chunks += 1
            self.queue.extend((t + k / self.rate, a) for k, a in enumerate(chunk))
        _, action = self.queue.popleft()
        q, g = self.u.action_mode.targets(np.asarray(action, dtype=np.float32))
        self.robot.command(q, g)  # the model's targets: the base of the next ee_delta step
        self.cmd_pub.publish(Float64MultiArray(data=np.asarray(self.robot.joint_targets(), dtype=float)))
        if self.grip_pub is not None and g is not None:
            self.grip_pub.publish(Float64MultiArray(data=np.array([self.robot.gripper_target()])))
        self.steps += 1
        if self.stale or new_chunk:  # a status per chunk: progress, and the inference time
            self.stale = 0
            self._status("running")

    def _status(self, state: str) -> None:
        ms = list(self.inference_ms)
        self.status_pub.publish(String(json.dumps({
            "state": state, "steps": self.steps, "chunks": self.chunks,
            "inference_ms_mean": float(np.mean(ms)) if ms else None})))

    def close(self) -> None:
        self.env.close()
        super().close()


def main(argv: list[str] | None = None) -> int:
    return run_node("policy_runner", PolicyRunner, argv)
