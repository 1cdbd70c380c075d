"""Policy runner node: runs a realloop policy at the control rate and publishes its commands.

Each control tick it assembles the policy's observation from topics with the dataset's alignment rule (for the
tick time t, the last sample at or before t - offset in each stream; ``realloop.data.align``). Two ways:

- ``task`` set: it mirrors the samples into a MuJoCo model of the task (``sync_robot``, ``set_task_state``) whose
  ``observation()`` gives exactly the features a dataset recorded in sim holds; the scripted expert needs this.
- ``task: null``: only the ``robot`` spec and a checkpoint. ``observation.state`` is built from ``/joint_states`` by
  the checkpoint's entry names (``realloop.robot.observation``, as the recorder builds it), other numeric features
  come from the Float64MultiArray topics mapped in ``topics``, and the action mode follows from the checkpoint's
  action names (joint modes need no model of the robot; ee_delta needs its MJCF).

It executes the policy's action chunks on their timestamps (t0 + k / rate; actions whose time passed are
dropped, never bunched). A learned policy predicts its next chunk in a worker thread, started ``inference_lead``
control steps before the queue runs out (default: follows the measured inference time), so inference does not
stall the robot or drop actions (chunk_schedule.py). Actions become joint targets through the action mode (IK on
the robot's MJCF for ee_delta, clipped ``workspace_margin`` inside the spec's workspace box) and go out on
``<command_prefix>/<controller>/commands`` and the gripper's, i.e. into the safety filter by default.

Behind a safety filter (``command_prefix`` set) it also listens to the filter's output: an ee_delta step must
start from the target the robot really has, so when the filter clamped, rejected (forwarded nothing) or held a
command, the next step starts from what it last forwarded (``rebased`` in the status), not from where the policy
wanted to be. Otherwise a policy pressing into a forbidden region would walk its targets ever further in, and
every later command, the recovery too, would be rejected until the walk came back.

Image policies get their ``observation.images.<cam>`` from camera topics (``cameras``: camera -> topic; by
default ``/<cam>/image_raw/compressed`` for each camera of the robot spec), aligned like the other streams,
decoded to RGB, centre-cropped to the training frames' aspect ratio and resized to their size.

While ``/intervention`` is true (a human drives with teleop) it publishes nothing; on release it restarts from
the measured state. The task's status (``status_topic``: JSON ``{"episode", "success"}``, from the sim mirror
or any success detector) ends an episode on success and starts a new one when its episode changes, with or
without a task model. With ``max_episode_s`` an episode that has not succeeded that long after its first action
ends as a failure: the runner holds and (``report_success``) sends ``failure`` to the recorder, which commits it.
Stale joint states (older than ``max_state_age``) stop it acting until fresh ones come.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realloop.data.align import last_at_or_before
from realloop.data.images import fit_image

from ..msgs import Bool, CompressedImage, Float64MultiArray, Image, JointState, String, json_object
from ..node import Node
from ..observation import STATE, JointStateObserver
from ..recorder.streams import InvalidSample, message_to_rgb
from ..spec import load_robot_spec
from ..targets import JOINT_MODES, JointTargets, joint_action_names
from . import run_node
from .chunk_schedule import ChunkSchedule

if TYPE_CHECKING:
    from realloop.sim.robot import SimRobot

ENV_STATE = "observation.environment_state"
MAX_TRACE_TICKS = 100_000  # a trace is for checking and debugging runs, not for hours


def task_model_env(task: str, control_mode: str | None = None, robot: str | None = None) -> Any:
    """The sim task model the runner keeps in sync with the robot (MuJoCo; imported only when a task is set)."""
    from .sim_mirror import task_model_env as make

    return make(task, control_mode, robot=robot)


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
        """The last sample at or before ``t`` (None if there is none): the dataset's alignment rule."""
        i = int(last_at_or_before(np.fromiter(self.stamps, float, len(self.stamps)), t))
        return None if i < 0 else (self.stamps[i], self.values[i])


IMAGES = "observation.images."


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
        self.echoed = (
            last is not None
            and last.shape == self.forwarded.shape
            and bool(np.allclose(last, self.forwarded, rtol=0.0, atol=1e-9))
        )

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

        task, robot = self.param("task"), self.param("robot")
        policy_cfg = dict(self.param("policy") or {"kind": "expert"})
        self.rate = 0.0
        topics = self.param("cameras")
        if task:  # a model of the task (MuJoCo): the scripted expert, the task's own environment state
            self.env = task_model_env(str(task), self.param("control_mode"), robot=robot)
            self.u = self.env.unwrapped
            self.robot, self.spec, self.mode = self.u.robot, self.u.robot.spec, self.u.action_mode
        else:
            if not robot:
                raise ValueError("param 'robot' (a robot spec name or path) is needed when 'task' is null")
            if policy_cfg.get("kind") != "checkpoint":
                raise ValueError(
                    f"policy kind {policy_cfg.get('kind')!r} needs a task model: set 'task', or run a "
                    "checkpoint (policy.kind=checkpoint policy.path=RUN)"
                )
            self.env = self.u = None
            self.spec = load_robot_spec(str(robot))
        topics = topics or {c.name: f"/{c.name}/image_raw/compressed" for c in self.spec.cameras}
        topics = {str(k): str(v) for k, v in dict(topics).items() if v}
        # observation.<name> -> topic (the keys leave out "observation.": ROS parameter names split at dots)
        self.feature_topics = {f"observation.{k}": str(v) for k, v in dict(self.param("topics") or {}).items() if v}
        provided = {IMAGES + c for c in topics}
        if self.u is None:
            provided |= {STATE, *self.feature_topics}
        self.policy = make_policy(policy_cfg, self.u, provided=provided)
        self.log.info("policy %s loaded: %s", type(self.policy).__name__, policy_cfg)
        threads = self.param("torch_threads", 1)
        if threads and "torch" in sys.modules:  # inference shares the robot computer with the other nodes
            sys.modules["torch"].set_num_threads(int(threads))
        self.rate = float(self.param("rate_hz") or self.spec.control_rate_hz)
        self.kinematics: SimRobot | None = None  # a MuJoCo model of the robot alone: ee_delta's IK
        self.observer = JointStateObserver(self.spec, [])  # joint values by name (task mode: the model observes)
        if self.u is None:
            self._build_robot_model()
        self._set_workspace(self.param("workspace_margin"))
        self.offsets = dict(self.param("offsets", {}) or {})
        self.max_state_age = float(self.param("max_state_age", 0.5))

        self.joints = StreamBuffer()
        self.create_subscription("/joint_states", JointState, self._on_joint_states)
        # numeric features (Float64MultiArray topics; no header: stamped on arrival with this node's clock)
        self.numeric: dict[str, StreamBuffer] = {}
        needed = [k for k in self._policy_keys() if k != STATE and not k.startswith(IMAGES)]
        if self.u is not None:
            needed = [ENV_STATE] if self.u.env_state_names else []
        for key in needed:
            if key not in self.feature_topics:
                raise ValueError(
                    f"the policy needs feature {key!r}: map it to a Float64MultiArray topic in param "
                    f"'topics' (topics.{key.removeprefix('observation.')}=/my/topic)"
                )
            buf = self.numeric[key] = StreamBuffer()

            def on_numeric(m: Float64MultiArray, b: StreamBuffer = buf) -> None:
                b.add(self.now(), np.asarray(m.data, dtype=float))

            self.create_subscription(self.feature_topics[key], Float64MultiArray, on_numeric)
        # the policy's image features, from camera topics: feature -> (camera, topic, frames, (H, W, C))
        shapes = self.policy.image_shapes() if hasattr(self.policy, "image_shapes") else {}
        self.cameras: dict[str, tuple[str, str, StreamBuffer, tuple[int, ...]]] = {}
        for key, shape in shapes.items():
            cam = key[len(IMAGES) :]
            topic = topics[cam]
            buf = StreamBuffer(maxlen=64)
            compressed = topic.rstrip("/").endswith("compressed")
            msg_type: type[CompressedImage | Image] = CompressedImage if compressed else Image

            def on_image(m: CompressedImage | Image, b: StreamBuffer = buf) -> None:
                b.add(m.header.stamp.to_sec(), m)

            self.create_subscription(topic, msg_type, on_image, qos="sensor")
            self.cameras[key] = (cam, topic, buf, shape)
        self.max_image_age = float(self.param("max_image_age", 0.5))
        self.create_subscription("/intervention", Bool, self._on_intervention)
        status_topic = self.param("status_topic")
        if status_topic:  # task success and episode resets (the sim mirror's status, or a success detector's)
            self.create_subscription(str(status_topic), String, self._on_sim_status, qos="latched")

        prefix = str(self.param("command_prefix", "/unsafe")).rstrip("/")
        ctrl = self.spec.command.controller
        self.cmd_pub = self.create_publisher(f"{prefix}/{ctrl}/commands", Float64MultiArray)
        self.grip_pub = (
            self.create_publisher(f"{prefix}/{self.spec.gripper.controller}/commands", Float64MultiArray)
            if self.robot.has_gripper and self.spec.gripper.controller
            else None
        )
        # behind a safety filter: its output says what the robot was really commanded
        self.arm_echo: FilterEcho | None = None
        self.grip_echo: FilterEcho | None = None
        if prefix:
            arm_echo = self.arm_echo = FilterEcho()
            self.create_subscription(f"/{ctrl}/commands", Float64MultiArray, lambda m: arm_echo.on_forwarded(m.data))
            if self.grip_pub is not None:
                grip_echo = self.grip_echo = FilterEcho()
                self.create_subscription(
                    f"/{self.spec.gripper.controller}/commands",
                    Float64MultiArray,
                    lambda m: grip_echo.on_forwarded(m.data),
                )
        self.status_pub = self.create_publisher("~/status", String, qos="latched")
        # sim graphs: the task's success (from /sim/status) ends the recorder's episode as a success
        self.recorder_pub = (
            self.create_publisher("/recorder/command", String) if self.param("report_success", False) else None
        )

        lead = self.param("inference_lead")
        self.schedule = ChunkSchedule(self.rate, None if lead in (None, "auto") else int(lead))
        self.paused = False
        self.synced = False  # the model's targets start at the measured pose (no jump on the first command)
        self.sim_episode: int | None = None
        self.stop_on_success = bool(self.param("stop_on_success", True))
        limit = self.param("max_episode_s")
        self.max_episode_s = float(limit) if limit is not None else None
        if self.max_episode_s is not None and not self.max_episode_s > 0:
            raise ValueError(f"param 'max_episode_s' must be > 0 s or null (no limit), got {limit!r}")
        self.episode_start: float | None = None  # node-clock time of the episode's first action
        self.done = False
        self.steps = 0
        self.stale = 0
        self.rebased = 0  # arm steps started from the filter's target instead of this node's
        self.rebased_gripper = 0  # gripper targets the filter changed (ramped, clamped, rejected)
        trace = self.param("trace")
        self.trace_path = Path(str(trace)) if trace else None
        self.trace: list[tuple[float, dict[str, np.ndarray]]] = []
        self.create_timer(1.0 / self.rate, self.tick)
        self._status("waiting")

    def _policy_keys(self) -> list[str]:
        return list(getattr(self.policy, "obs_keys", []))

    def _build_robot_model(self) -> None:
        """Without a task: the state from the checkpoint's state names, and the action mode from its action names
        (joint modes need only the spec; ee_delta and ee.* state entries need the MJCF's kinematics)."""
        from realloop.policies.agent import PolicyAgent

        assert isinstance(self.policy, PolicyAgent), "without a task model the policy is a checkpoint's"
        features = self.policy.policy.features
        mode = self.param("control_mode")
        action_names = list(features["action"].names or [])
        if mode is None:
            candidates = {m: joint_action_names(self.spec, m) for m in JOINT_MODES}
            mode = next((m for m, names in candidates.items() if names == action_names), "ee_delta")
        state_names = list(features[STATE].names or []) if STATE in features else []
        self.observer = JointStateObserver(self.spec, state_names)
        if mode == "ee_delta":
            from realloop.sim.control import make_action_mode
            from realloop.sim.robot import SimRobot

            kinematics = SimRobot.from_spec(self.spec, "ee_delta control")
            kinematics.control_dt = 1.0 / self.rate  # its action mode's per-step bounds: the runner's period

            self.robot = self.kinematics = kinematics
            self.mode = make_action_mode("ee_delta", kinematics)
        else:
            self.robot = self.mode = JointTargets(self.spec, str(mode), self.rate)
        if list(self.mode.names) != action_names:
            raise ValueError(
                f"the checkpoint's actions are {action_names}; control mode {mode!r} of robot "
                f"{self.spec.name!r} has {list(self.mode.names)}: set control_mode to the training data's"
            )

    def _set_workspace(self, margin: Any) -> None:
        """End-effector targets clipped into the spec's workspace box, ``margin`` m inside it (ee_delta): a step
        that would leave the safety filter's box keeps its in-box part; sent whole, the filter would reject it,
        and a policy pressing on in the same direction would have every later command rejected too."""
        from_box = self.spec.workspace
        if margin is None or from_box is None or self.mode.name != "ee_delta":
            return
        try:
            box = from_box.inset(float(margin))
        except (TypeError, ValueError) as e:
            raise ValueError(f"param 'workspace_margin' must be a number of m or null, got {margin!r} ({e})") from None
        self.mode.set_workspace(box.min, box.max)

    # --- inputs --------------------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        self.joints.add(msg.header.stamp.to_sec(), msg)

    def _on_intervention(self, msg: Bool) -> None:
        if msg.data != self.paused:
            self.paused = bool(msg.data)
            self._restart()
            self._status("intervention" if self.paused else "running")

    def _on_sim_status(self, msg: String) -> None:
        status = json_object(msg.data)
        if status is None:
            return
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
        self.log.info(
            "%s after %d steps; holding",
            "task success" if state == "success" else f"no success within max_episode_s={self.max_episode_s:g} s",
            self.steps,
        )
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
        q, v, g = self.observer.joint_values(msg)
        numeric = {}
        for key, buf in self.numeric.items():
            sample = buf.at(t - float(self.offsets.get(key.rsplit(".", 1)[-1], 0.0)))
            if sample is None or t - sample[0] > self.max_state_age:
                return None
            numeric[key] = sample[1]
        if self.u is not None:
            self.u.sync_robot(q, v, g)
            if ENV_STATE in numeric:
                self.u.set_task_state(numeric[ENV_STATE])
            obs = self.u.observation()
        else:
            obs = {k: np.asarray(x, dtype=np.float32) for k, x in numeric.items()}
            if self.observer.names:
                obs[STATE] = self.observer(msg)
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
        if (
            self.max_episode_s is not None
            and self.episode_start is not None
            and t - self.episode_start > self.max_episode_s
        ):
            self._end_episode("timeout", "failure")
            return
        obs = self.observe(t)
        if obs is None:
            self.stale += 1
            self.schedule.clear()
            if self.stale == 1 or self.stale % round(5 * self.rate) == 0:
                self.log.warning(
                    "no fresh observation at t=%.3f (joint states, environment state or a camera "
                    "missing or older than its max age)",
                    t,
                )
            self._status("waiting")
            return
        if self.trace_path is not None and len(self.trace) < MAX_TRACE_TICKS:
            self.trace.append((t, {k: v for k, v in obs.items() if not k.startswith(IMAGES)}))
        self.policy.observe(obs)
        self._rebase()
        chunks = self.schedule.chunks
        if self.schedule.due(t):
            prepare = getattr(self.policy, "prepare_chunk", None)
            if prepare is not None:  # a learned policy: its model runs in the worker thread
                self.schedule.start(t, prepare(obs))
            else:  # the scripted expert reads the task model this thread keeps in sync: run it now
                self.schedule.start(t, lambda: self.policy.action_chunk(obs), background=False)
        action = self.schedule.next_action(t)
        if action is None:
            return
        refine = getattr(self.policy, "refine", None)
        if refine is not None:  # a residual policy corrects the chunk's action for this step's observation
            action = refine(action)
        if self.episode_start is None:
            self.episode_start = t
        q, g = self.mode.targets(np.asarray(action, dtype=np.float32))
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
        self.robot.command(
            self.robot.joint_targets() if q is None else q, float(g[0]) if g is not None and g.size else None
        )
        self.rebased += q is not None
        self.rebased_gripper += g is not None
        if q is not None and (self.rebased == 1 or self.rebased % 50 == 0):
            self.log.info(
                "the safety filter changed %d arm command(s): continuing from what it forwarded", self.rebased
            )

    def _inference_ms(self) -> list[float]:
        """The recent inference times of the schedule's window, in ms."""
        return [1e3 * x for x in self.schedule.latency_s]

    def _status(self, state: str) -> None:
        self.state = state
        s = self.schedule
        ms = self._inference_ms()
        self.status_pub.publish(
            String(
                json.dumps(
                    {
                        "state": state,
                        "steps": self.steps,
                        "chunks": s.chunks,
                        "rebased": self.rebased,
                        "rebased_gripper": self.rebased_gripper,
                        "inference_ms_mean": float(np.mean(ms)) if ms else None,
                        "inference_ms_max": max(ms) if ms else None,
                        "lead": s.lead,
                        "dropped": s.dropped,
                        "waits": s.waits,
                    }
                )
            )
        )

    def _write_trace(self, path: Path) -> None:
        """The observations this node built, per tick: ``t`` and one array per numeric feature (npz, no pickle)."""
        arrays: dict[str, np.ndarray] = {"t": np.array([t for t, _ in self.trace])}
        for key in self.trace[0][1] if self.trace else ():
            arrays[key] = np.stack([obs[key] for _, obs in self.trace])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, allow_pickle=False, **arrays)
        self.log.info("trace of %d observations written to %s", len(self.trace), path)

    def close(self) -> None:
        s = self.schedule
        ms = self._inference_ms()
        self.log.info(
            "totals: %d steps, %d chunks (inference %s ms mean of the last %d), %d actions dropped, "
            "%d waits; the safety filter changed %d arm and %d gripper commands",
            self.steps,
            s.chunks,
            f"{np.mean(ms):.0f}" if ms else "-",
            len(ms),
            s.dropped,
            s.waits,
            self.rebased,
            self.rebased_gripper,
        )
        self._status(self.state)  # the closing totals, as data (the state stays the episode's)
        self.schedule.close()
        if self.trace_path is not None:
            self._write_trace(self.trace_path)
        if self.env is not None:
            self.env.close()
        super().close()


def main(argv: list[str] | None = None) -> int:
    return run_node("policy_runner", PolicyRunner, argv)
