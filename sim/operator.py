"""A scripted operator: a stand-in for the person at the gamepad, for recording demonstrations on the sim graphs.

It drives the teleop node through the input a gamepad gives, ``sensor_msgs/Joy`` on ``/joy``, so a demonstration
goes teleop -> safety filter -> robot -> recorder exactly as a human's would, episode buttons included. Like a
person it sees the scene: the robot's joint states (``/joint_states``, turned into the end-effector pose with the
robot's MJCF) and the object (``/sim/environment_state``); it judges success from ``/sim/status``, as a person
judges it by eye. Each episode it resets the mirror (``/sim/reset`` with the episode's seed), presses start, and
ends with success or failure; before the next one it homes the robot and opens the gripper (teleop's buttons), as
a person does before the scene is reset.

- :class:`LiftPilot` lifts the arm task's cube: hover over it with the gripper across two faces, descend, close
  (the gripper toggle button), lift. Per episode it draws its own hover height, grasp depth, speeds and pauses.
  When the gripper comes up empty (closed beside the cube, or the cube slipped out) it notices at a height of its
  own, opens and grasps again. With ``miss_prob`` it misses the first grasp on purpose, closing beside the cube,
  so the demonstrations show a policy how to recover from the miss it is most likely to make.
- :class:`WalkPilot` walks a legged base: forward and turning, varied per episode, for the quadruped graph.
- :class:`JoyWriter` turns the pilot's channel values into the axes and buttons of a layout (the inverse of the
  teleop's :class:`~realloop.robot.teleop.gamepad.JoyMapper`, dead zone included).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from realloop.robot.msgs import Float64MultiArray, JointState, Joy, String, header, json_object
from realloop.robot.node import Node
from realloop.robot.nodes import run_node
from realloop.robot.spec import RobotSpec, load_robot_spec
from realloop.robot.teleop.gamepad import Source, resolve_mapping

N_AXES, N_BUTTONS = 8, 15  # an Xbox pad through game_controller_node


def _wrap(angle: float, period: float = 2 * np.pi) -> float:
    """``angle`` into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


class JoyWriter:
    """Joy messages from channel values in [-1, 1] and pressed events, for a teleop ``layout`` and ``deadzone``.

    Each motion channel is written to the first axis source the layout gives it, scaled past the dead zone so the
    teleop reads back the value given; buttons by their index in the layout."""

    def __init__(self, layout: str = "xbox", mapping: Mapping[str, Any] | None = None, deadzone: float = 0.1):
        m = resolve_mapping(layout, mapping)
        self.deadzone = float(deadzone)
        self.axes: dict[str, tuple[int, float]] = {}
        for channel, sources in m["motion"].items():
            for text in [sources] if isinstance(sources, str) else sources:
                s = Source.parse(text)
                if s.kind == "axis":
                    self.axes[channel] = (s.index, float(s.sign))
                    break
        self.buttons = {name: int(i) for name, i in m["buttons"].items() if i is not None}
        released, pressed = (float(v) for v in m["trigger_range"])
        self.trigger_range = (released, pressed)
        self.rest = np.zeros(N_AXES, dtype=np.float32)
        self.triggers: dict[float, tuple[int, float]] = {}  # gripper direction -> (axis, sign)
        for text in m["gripper"]:  # triggers at rest (-1 or 1 on some layouts, not 0)
            s = Source.parse(text)
            if s.kind == "trigger":
                self.rest[s.index] = released
                self.triggers.setdefault(float(s.sign), (s.index, float(s.sign)))

    def message(
        self, stamp: float, motion: Mapping[str, float], press: Sequence[str] = (), gripper: float = 0.0
    ) -> Joy:
        """A Joy message holding ``motion`` (channel -> value in [-1, 1]) with the ``press`` buttons down and the
        gripper trigger that opens (``gripper`` > 0) or closes (< 0) the gripper pressed that far."""
        axes = self.rest.copy()
        if gripper:
            index, sign = self.triggers[1.0 if gripper > 0 else -1.0]
            released, pressed = self.trigger_range
            fraction = self.deadzone + min(abs(gripper), 1.0) * (1.0 - self.deadzone)  # the channel's dead zone
            axes[index] = released + fraction * (pressed - released)
        for channel, value in motion.items():
            if channel not in self.axes:
                raise ValueError(f"the joy layout has no axis for motion channel {channel!r}")
            v = float(np.clip(value, -1.0, 1.0))
            raw = 0.0 if v == 0.0 else np.sign(v) * (self.deadzone + abs(v) * (1.0 - self.deadzone))
            index, sign = self.axes[channel]
            axes[index] = sign * raw
        buttons = np.zeros(N_BUTTONS, dtype=np.int32)
        for name in press:
            buttons[self.buttons[name]] = 1
        return Joy(header(stamp), axes, buttons)


class LiftPilot:
    """The arm lift task from the scene a person sees: end-effector position and yaw, the cube's position and yaw
    (an empty gripper shows as the cube staying behind when the gripper lifts). :meth:`step` returns the motion
    channels (in [-1, 1] of the teleop's full speed) and the buttons to press this tick."""

    def __init__(self, rate_hz: float, linear_speed: float, angular_speed: float, miss_prob: float = 0.0) -> None:
        if not 0.0 <= miss_prob <= 1.0:
            raise ValueError(f"miss_prob={miss_prob} is not a probability: give a value in [0, 1]")
        self.dt = 1.0 / rate_hz
        self.linear_speed, self.angular_speed = linear_speed, angular_speed
        self.miss_prob = miss_prob
        self.reset(np.random.default_rng(0))

    def reset(self, rng: np.random.Generator) -> None:
        self.phase, self.ticks = "wait", 0
        self.wait_ticks = int(rng.integers(2, 8))  # a person's reaction time after pressing start
        self.hover_z = float(rng.uniform(0.09, 0.14))
        self.grasp_z = float(rng.uniform(0.024, 0.030))
        self.offset = rng.uniform(-0.003, 0.003, 2)
        self.gain = float(rng.uniform(2.0, 3.5))  # 1/s: how briskly the person closes the gap
        self.close_ticks = int(rng.integers(10, 15))
        self.lift_xy = rng.uniform(-0.03, 0.03, 2)
        self.lift_z = float(rng.uniform(0.17, 0.21))
        self.notice_dz = float(rng.uniform(0.05, 0.13))  # how far above the cube an empty gripper is noticed
        # a miss: the fingers close beside the cube, off along the axis they do not close on (cube half 0.025 +
        # finger half width 0.01 < 0.04)
        self.miss = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.05)) if rng.random() < self.miss_prob else 0.0
        self.attempts = 0

    def _toward(self, goal: np.ndarray, ee: np.ndarray, yaw_error: float) -> dict[str, float]:
        v = self.gain * (goal - ee) / self.linear_speed
        w = self.gain * yaw_error / self.angular_speed
        return {"x": v[0], "y": v[1], "z": v[2], "yaw": w}

    def step(
        self, ee: np.ndarray, ee_yaw: float, cube: np.ndarray, cube_yaw: float
    ) -> tuple[dict[str, float], list[str]]:
        self.ticks += 1
        # the fingers close across two faces: any multiple of 90 degrees of the cube's yaw will do
        yaw_error = _wrap(cube_yaw - ee_yaw, np.pi / 2)
        over = cube[:2] + self.offset
        if self.miss and self.attempts == 0:
            over = over + self.miss * np.array([np.cos(ee_yaw), np.sin(ee_yaw)])  # along the gripper's x axis
        press: list[str] = []
        if self.phase == "wait":
            motion: dict[str, float] = {}
            if self.ticks >= self.wait_ticks:
                self.phase, self.ticks = "hover", 0
        elif self.phase == "hover":
            goal = np.array([*over, self.hover_z])
            motion = self._toward(goal, ee, yaw_error)
            if np.linalg.norm(goal[:2] - ee[:2]) < 0.006 and abs(yaw_error) < 0.05 and abs(goal[2] - ee[2]) < 0.02:
                self.phase, self.ticks = "descend", 0
        elif self.phase == "descend":
            motion = self._toward(np.array([*over, self.grasp_z]), ee, yaw_error)
            motion["z"] = max(motion["z"], -0.6)  # slower on the way down, as a careful person would be
            if ee[2] < self.grasp_z + 0.006:
                self.phase, self.ticks = "close", 0
                press.append("gripper")  # the toggle: open -> closed
        elif self.phase == "close":
            motion = {}
            if self.ticks >= self.close_ticks:
                self.phase, self.ticks = "lift", 0
                self.lift_goal = np.array([*(ee[:2] + self.lift_xy), self.lift_z])
        else:  # lift
            motion = self._toward(self.lift_goal, ee, 0.0)
            if ee[2] - cube[2] > self.notice_dz:  # the gripper came up empty: open and grasp again
                press.append("gripper")
                self.phase, self.ticks = "hover", 0
                self.attempts += 1
        return {k: float(np.clip(v, -1.0, 1.0)) for k, v in motion.items()}, press


class WalkPilot:
    """A legged base walked around: forward at a per-episode speed, turning now and then."""

    def __init__(self, rate_hz: float) -> None:
        self.dt = 1.0 / rate_hz
        self.reset(np.random.default_rng(0))

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.forward = float(rng.uniform(0.4, 1.0))
        self.turn, self.turn_ticks = 0.0, 0

    def step(self) -> tuple[dict[str, float], list[str]]:
        if self.turn_ticks <= 0:
            self.turn = float(self.rng.choice([-1.0, 0.0, 0.0, 1.0])) * float(self.rng.uniform(0.3, 0.8))
            self.turn_ticks = int(self.rng.integers(10, 40))
        self.turn_ticks -= 1
        return {"x": self.forward, "yaw": self.turn}, []


class ScriptedOperator(Node):
    """Records ``episodes`` demonstrations through the teleop node, seeds ``seed``, ``seed + 1``, ...; exits when
    done (the launch then stops the graph). See the module doc."""

    def __init__(self, name: str = "scripted_operator", params: Mapping[str, Any] | None = None, **kw: Any):
        super().__init__(name, params, **kw)
        self.spec: RobotSpec = load_robot_spec(str(self.param("robot", "arm6")))
        self.rate = float(self.param("rate_hz", 20))
        speeds = dict(self.param("speeds") or {})
        joy = dict(self.param("joy") or {})
        self.writer = JoyWriter(
            str(joy.get("layout", "xbox")), joy.get("mapping") or {}, float(joy.get("deadzone", 0.1))
        )
        self.episodes, self.first_seed = int(self.param("episodes", 10)), int(self.param("seed", 0))
        self.episode_s = float(self.param("episode_s", 30.0))
        self.rng_seed = int(self.param("operator_seed", 0))
        self.arm = self.spec.ee_site is not None
        if self.arm:
            from realloop.sim.robot import SimRobot

            self.model = SimRobot.from_spec(self.spec, "the scripted operator's view of the arm")
            self.pilot: LiftPilot | WalkPilot = LiftPilot(
                self.rate,
                float(speeds.get("linear_speed", 0.05)),
                float(speeds.get("angular_speed", 0.5)),
                float(self.param("miss_prob", 0.0)),
            )
        else:
            self.pilot = WalkPilot(self.rate)
        self.names = {n: i for i, n in enumerate(self.spec.joint_names)}
        self.gripper_joint = self.spec.gripper.joints[0] if self.spec.gripper else None
        self.q: np.ndarray | None = None
        self.opening = 0.0
        self.env_state: np.ndarray | None = None
        self.sim: dict[str, Any] = {}
        self.recorder: dict[str, Any] = {}
        self.joy_pub = self.create_publisher(str(joy.get("topic", "/joy")), Joy, qos="sensor")
        self.reset_pub = self.create_publisher("/sim/reset", String)
        self.create_subscription("/joint_states", JointState, self._on_joint_states)
        self.create_subscription("/sim/environment_state", Float64MultiArray, self._on_env)
        self.create_subscription("/sim/status", String, self._on_json(self.sim), qos="latched")
        self.create_subscription("/recorder/status", String, self._on_json(self.recorder), qos="latched")
        self.index = 0  # episodes done
        self.results: list[dict[str, Any]] = []
        self.state, self.state_t = "idle", 0.0
        self.sim_episode = -1
        self.create_timer(1.0 / self.rate, self._tick)
        self.log.info("scripted operator: %d episodes from seed %d", self.episodes, self.first_seed)

    # --- what the operator sees -----------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        q = np.full(len(self.names), np.nan) if self.q is None else self.q
        for n, p in zip(msg.name, msg.position, strict=False):
            i = self.names.get(n)
            if i is not None:
                q[i] = p
            elif n == self.gripper_joint:
                self.opening = float(p)
        self.q = q

    def _on_env(self, msg: Float64MultiArray) -> None:
        self.env_state = np.asarray(msg.data, dtype=float)

    def _on_json(self, store: dict[str, Any]) -> Any:
        def on_status(msg: String) -> None:
            status = json_object(msg.data)
            if status is not None:
                store.clear()
                store.update(status)

        return on_status

    def _scene(self) -> tuple[np.ndarray, float, np.ndarray, float] | None:
        if self.q is None or np.isnan(self.q).any() or self.env_state is None or len(self.env_state) < 9:
            return None
        r = self.model
        r.data.qpos[r.qpos_adr] = self.q
        pos, mat = r.forward_kinematics()
        m = mat.reshape(3, 3)
        ee_yaw = float(np.arctan2(-m[0, 1], m[1, 1]))  # the closing axis (ee y) of a gripper pointing down
        cube = self.env_state[:3]
        cube_yaw = float(np.arctan2(self.env_state[4], self.env_state[3]))  # r21, r11
        return pos, ee_yaw, cube, cube_yaw

    # --- the episode loop -----------------------------------------------------------------------------------
    def _send(self, motion: Mapping[str, float] | None = None, press: Sequence[str] = (), gripper: float = 0.0) -> None:
        self.joy_pub.publish(self.writer.message(self.now(), motion or {}, press, gripper))

    def _goto(self, state: str) -> None:
        self.state, self.state_t = state, self.now()

    def _tick(self) -> None:
        now = self.now()
        waited = now - self.state_t
        seed = self.first_seed + self.index
        if self.state == "idle":
            self._send()
            if self.index >= self.episodes:
                self._finish()
            elif self.recorder.get("state") != "recording" and waited > 0.3:
                # as a person would: the robot home and the gripper open before the scene is reset
                self._send(press=["home"] if self.arm else [])
                self._goto("homing")
        elif self.state == "homing":
            self._send(gripper=1.0)  # the opening trigger held: the measured opening of a grasp reads closed
            if self._at_home() and waited > 0.3:
                self.sim_episode = int(self.sim.get("episode", -1))
                self.reset_pub.publish(String(str(seed)))
                self._goto("resetting")
            elif waited > 15.0:  # the press was lost: press again
                self._goto("idle")
        elif self.state == "resetting":
            self._send()
            if int(self.sim.get("episode", -1)) > self.sim_episode and waited > 0.3:
                self.pilot.reset(np.random.default_rng([self.rng_seed, seed]))
                self._send(press=["start"])
                self._goto("driving")
            elif waited > 5.0:  # the reset was lost: ask again
                self._goto("idle")
        elif self.state == "driving":
            if self.recorder.get("state") != "recording" and waited < 2.0:
                self._send()  # the recorder has not started the episode yet
                return
            if self.arm:
                scene = self._scene()
                if scene is None:
                    self._send()
                    return
                motion, press = self.pilot.step(*scene)  # type: ignore[call-arg]
            else:
                motion, press = self.pilot.step()  # type: ignore[call-arg]
            success = bool(self.sim.get("success")) and int(self.sim.get("episode", -1)) > self.sim_episode
            if (success and self.arm) or waited > self.episode_s:
                # an arm's task is done once it succeeds; a walk is judged at its end (success unknown: stop)
                outcome = "success" if success else "failure" if self.arm else "stop"
                self._send(press=[outcome])
                self.results.append({"seed": seed, "outcome": outcome, "seconds": round(waited, 2)})
                self.log.info("episode %d (seed %d): %s after %.1f s", self.index, seed, outcome, waited)
                self.index += 1
                self._goto("idle")
            else:
                self._send(motion, press)

    def _at_home(self) -> bool:
        if not self.arm:
            return True
        if self.q is None or np.isnan(self.q).any():
            return False
        g = self.spec.gripper
        opened = g is None or self.opening > g.lower + 0.8 * (g.upper - g.lower)
        return bool(np.abs(self.q - self.model.default_q).max() < 0.03 and opened)

    def _finish(self) -> None:
        ok = sum(r["outcome"] == "success" for r in self.results)
        self.log.info("scripted operator done: %d/%d episodes succeeded", ok, len(self.results))
        out = self.param("summary")
        if out:
            Path(str(out)).parent.mkdir(parents=True, exist_ok=True)
            with open(str(out), "w") as f:
                json.dump({"episodes": self.results, "successes": ok}, f, indent=1)
        self.shutdown()


def main(argv: list[str] | None = None) -> int:
    return run_node("scripted_operator", ScriptedOperator, argv)
