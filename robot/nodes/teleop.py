"""Teleop node: terminal keyboard, ``/joy`` or a local gamepad -> arm joint commands or a base's ``/cmd_vel``.

``realloop-teleop [key=value ...]`` (or ``realloop-node teleop``); parameters in configs/node/teleop.yaml.

- Arms (a spec with an ``ee_site``): end-effector velocity intents go through differential IK on the robot's
  MJCF, synced from ``/joint_states``, to joint position targets on ``<prefix>/<controller>/commands``; the
  gripper opening on ``<prefix>/<gripper controller>/commands``. Joint jogging is the other mode.
- Legged bases (no ``ee_site``): ``<prefix>/cmd_vel`` TwistStamped.
- Episode keys/buttons publish ``start|stop|success|failure|discard`` on ``/recorder/command``; the intervention
  key toggles ``/intervention`` (Bool, latched). With ``intervention_mode: true`` (a policy is running) the node
  commands the robot only while intervening, and motion input starts an intervention (``auto_intervene``).

Nothing is commanded before the operator's first input: starting teleop never moves the robot, and each time
control is taken (first input, start of an intervention, first input after an episode key) the set-point starts
from the measured joints.
When stdin is not a terminal (under realloop-launch, systemd, a pipe) the keyboard is off and ``/joy`` works.

The recorder's ``/recorder/status`` is shown as one line (``REC ep 12 | recording 8.4 s | 84 steps | dropped 0 |
dead: none | mode ee``, :mod:`realloop.robot.teleop.status`): rewritten in place when stdout is a terminal, else
logged at each change of state (``status_line: false`` turns it off).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..msgs import Bool, Float64MultiArray, JointState, Joy, String, Twist, TwistStamped, Vector3, header, json_object
from ..node import Node
from ..teleop.commander import ArmCommander, BaseCommander, make_commander
from ..teleop.gamepad import JoyMapper, LocalGamepad
from ..teleop.intents import EPISODE_EVENTS, MOTION_AXES, Event, Intent
from ..teleop.keyboard import KeyboardMapper, KeyReader, NotATerminal
from ..teleop.status import StatusLine, format_status, status_key
from . import run_node

DEVICES = ("keyboard", "joy", "joystick")
ROBOT_EVENTS = (Event.GRIPPER, Event.MODE, Event.NEXT_JOINTS, Event.HOME, Event.HALT)
STATUS_STALE_S = 3.0  # the recorder publishes its status every status_period (0.5 s): silence this long is news


def _topic(prefix: str, name: str) -> str:
    """``<prefix>/<name>`` as an absolute topic (``command_prefix: /unsafe`` -> ``/unsafe/cmd_vel``)."""
    p = str(prefix or "").strip("/")
    return f"/{p}/{name}" if p else f"/{name}"


class TeleopNode(Node):
    """The teleop node. ``stdin_fd`` is the terminal to read keys from (default: this process's stdin)."""

    def __init__(
        self,
        name: str = "teleop",
        params: Mapping[str, Any] | None = None,
        *,
        namespace: str = "/",
        remaps: Mapping[str, str] | None = None,
        transport: str = "auto",
        domain_id: int | None = None,
        localhost_only: bool | None = None,
        stdin_fd: int | None = None,
    ):
        super().__init__(
            name,
            params,
            transport=transport,
            domain_id=domain_id,
            localhost_only=localhost_only,
            namespace=namespace,
            remaps=remaps,
        )
        try:
            self._setup(stdin_fd)
        except BaseException:
            self.close()  # leave no terminal in cbreak mode and no DDS participant behind
            raise

    # ------------------------------------------------------------------------------------------ setup

    def _setup(self, stdin_fd: int | None) -> None:
        from realloop.robot.spec import load_robot_spec

        device = str(self.param("device", "keyboard"))
        if device not in DEVICES:
            raise ValueError(f"teleop device must be one of {', '.join(DEVICES)}, got {device!r}")
        self.spec = load_robot_spec(str(self.param("robot", "arm6")))
        self.rate_hz = float(self.param("rate_hz", 20.0))
        if not self.rate_hz > 0:
            raise ValueError(f"teleop rate_hz must be > 0, got {self.rate_hz}")
        self.commander: ArmCommander | BaseCommander = make_commander(
            self.spec, self.rate_hz, str(self.param("target", "auto")), self.param("speeds", {})
        )
        self.is_arm = isinstance(self.commander, ArmCommander)
        prefix = str(self.param("command_prefix", "") or "")
        self.intervention_mode = bool(self.param("intervention_mode", False))
        self.auto_intervene = bool(self.param("auto_intervene", True))
        self.cmd_vel_frame = str(self.param("cmd_vel_frame", "base_link"))

        self.arm_pub = self.gripper_pub = self.cmd_vel_pub = None
        if self.is_arm:
            self.arm_pub = self.create_publisher(
                _topic(prefix, f"{self.spec.command.controller}/commands"), Float64MultiArray
            )
            g = self.spec.gripper
            if g is not None and g.controller:
                self.gripper_pub = self.create_publisher(_topic(prefix, f"{g.controller}/commands"), Float64MultiArray)
            self.create_subscription("/joint_states", JointState, self._on_joint_states, qos="sensor")
        else:
            self.cmd_vel_pub = self.create_publisher(_topic(prefix, "cmd_vel"), TwistStamped)
        self.recorder_pub = self.create_publisher("/recorder/command", String)
        self.intervention_pub = self.create_publisher("/intervention", Bool, qos="latched")
        self.status_line: StatusLine | None = None
        self._recorder_status: dict[str, Any] | None = None
        self._status_at = 0.0  # time.monotonic() of the last /recorder/status
        if self.param("status_line", True):
            self.status_line = StatusLine(sys.stdout, self.log)
            self.status_line.install()
            self.create_subscription("/recorder/status", String, self._on_recorder_status, qos="latched")

        self.intervening = False
        self.engaged = False  # commanding the robot (after the first input, or during an intervention)
        self._waiting_logged = False
        self._auto_armed = True  # auto_intervene may take over on the next motion input
        self._joy_events: list[Event] = []

        joy_cfg = self.param("joy", {}) or {}
        self.joy_mapper = JoyMapper(
            str(joy_cfg.get("layout", "xbox")),
            joy_cfg.get("mapping") or {},
            float(joy_cfg.get("deadzone", 0.1)),
            joy_cfg.get("enable_button"),
            float(joy_cfg.get("timeout_s", 0.5)),
        )
        self.pad: LocalGamepad | None = None
        self.pad_pub = None
        self.joy_topic = joy_topic = str(joy_cfg.get("topic", "/joy"))
        if device == "joystick":
            js = self.param("joystick", {}) or {}
            try:
                self.pad = LocalGamepad(int(js.get("index", 0)))
            except RuntimeError as e:
                raise ValueError(str(e)) from e
            self.log.info("local gamepad %r (%s layout)", self.pad.name, self.pad.layout)
            if self.pad.layout != "xbox":
                self.log.warning(
                    "this gamepad is not in SDL's controller database: its axes and buttons come in "
                    "raw order; set joy.mapping for it"
                )
            if js.get("publish", True):
                self.pad_pub = self.create_publisher(joy_topic, Joy, qos="sensor")
        else:
            self.create_subscription(joy_topic, Joy, self._on_joy, qos="sensor")

        kb = self.param("keyboard", {}) or {}
        self.key_mapper = KeyboardMapper(kb.get("keymap"), float(kb.get("hold_s", 0.2)))
        self.keys: KeyReader | None = None
        self.create_timer(1.0 / self.rate_hz, self._tick)
        if device == "keyboard":  # last: nothing after this may fail and leave the terminal in cbreak mode
            try:
                self.keys = KeyReader(stdin_fd).open()
            except NotATerminal as e:
                self.log.info("%s: keyboard teleop disabled (%s works)", e, joy_topic)
        self._print_help()
        self.intervention_pub.publish(Bool(False))  # latched: the recorder and policy runner start from "no"

    def _print_help(self) -> None:
        c = self.commander
        outs = [p.topic for p in (self.arm_pub, self.gripper_pub, self.cmd_vel_pub) if p is not None]  # arm or base
        if isinstance(c, ArmCommander):  # is_arm
            what = f"{self.spec.name} arm, {c.mode} mode"
        else:
            what = f"{self.spec.name} base (x forward, y left, yaw turn)"
        lines = [
            f"teleop: {what} -> {', '.join(outs)}"
            + ("; commands only while intervening" if self.intervention_mode else "")
        ]
        if self.keys is not None and isinstance(c, ArmCommander):
            events = [e for e in Event if e is not Event.GRIPPER or self.spec.gripper is not None]
            if c.ee is None:
                events.remove(Event.MODE)
            if len(self.spec.joints) <= len(MOTION_AXES):
                events.remove(Event.NEXT_JOINTS)
            lines += [
                "  " + line
                for line in self.key_mapper.help_lines(
                    (*MOTION_AXES, "gripper") if self.spec.gripper else MOTION_AXES, events
                )
            ]
        elif self.keys is not None:
            base_events = [e for e in Event if e not in ROBOT_EVENTS or e is Event.HALT]
            lines += ["  " + line for line in self.key_mapper.help_lines(("x", "y", "yaw"), base_events)]
        src = f"local pad {self.pad.name!r}" if self.pad is not None else self.joy_topic
        lines.append(
            f"  gamepad ({src}, {self.param('joy.layout', 'xbox')} layout) buttons: "
            + ", ".join(f"{e.value}={i}" for e, i in self.joy_mapper.buttons.items())
        )
        if self.status_line is not None:
            self.status_line.clear()  # the help starts on a line of its own; the next tick redraws the status
        print("\n".join(lines), flush=True)

    # ------------------------------------------------------------------------------------------ inputs

    def _on_joint_states(self, msg: JointState) -> None:
        if isinstance(self.commander, ArmCommander):  # subscribed for arms only
            self.commander.sync(msg.name, msg.position)

    def _on_recorder_status(self, msg: String) -> None:
        status = json_object(msg.data)
        if status is None:
            self.log.warning("/recorder/status is not a JSON object: %.80r", msg.data)
            return
        self._recorder_status, self._status_at = status, time.monotonic()
        self._show_status()

    def _show_status(self) -> None:
        st = self._recorder_status
        if self.status_line is None or st is None:
            return
        age = time.monotonic() - self._status_at
        stale = age if age > STATUS_STALE_S and st.get("state") != "stopped" else None
        mode = self.commander.mode if isinstance(self.commander, ArmCommander) else "base"
        line = format_status(st, mode, stale, self.spec.control_rate_hz)
        self.status_line.show(line, (status_key(st), stale is not None))

    def _on_joy(self, msg: Joy) -> None:
        intent = self.joy_mapper.update(msg, time.monotonic())
        self._joy_events += intent.events  # handled on the next tick, in order with the keyboard's

    def _read_inputs(self) -> Intent:
        now = time.monotonic()
        intents = []
        if self.keys is not None:
            try:
                keys = self.keys.read(0.0)
            except (OSError, EOFError) as e:  # the terminal went away (ssh dropped, pty closed)
                self.log.warning("keyboard lost (%s): keyboard teleop disabled", e)
                self.keys.close()
                self.keys, keys = None, []
            intents.append(self.key_mapper.update(keys, now))
        if self.pad is not None:
            joy = self.pad.read(self.now())
            if self.pad_pub is not None:
                self.pad_pub.publish(joy)
            intents.append(self.joy_mapper.update(joy, now))
        else:
            held = self.joy_mapper.current(now)
            held.events, self._joy_events = self._joy_events, []
            intents.append(held)
        return Intent.combine(intents)

    # ------------------------------------------------------------------------------------------ events

    def set_intervention(self, on: bool) -> None:
        if on != self.intervening:
            self.intervening = on
            self.log.info("intervention: %s", "on" if on else "off")
        self.intervention_pub.publish(Bool(on))

    def _on_event(self, ev: Event) -> None:
        if ev in EPISODE_EVENTS:
            self.recorder_pub.publish(String(ev.value))
            self.log.info("episode: %s", ev.value)
            # between episodes the robot may be reset or moved by hand: stop holding the old set-point, and take
            # the measured pose as the start of the next motion
            self.engaged = False
        elif ev is Event.INTERVENTION:
            self.set_intervention(not self.intervening)
            # handing back while a key or stick is still held must not take over again at once: auto-intervene
            # waits until the input has been idle
            self._auto_armed = self.intervening
        elif ev is Event.HELP:
            self._print_help()
        elif ev is Event.QUIT:
            self.log.info("quit")
            self.shutdown()

    # ------------------------------------------------------------------------------------------ commands

    def _tick(self) -> None:
        self._show_status()  # the mode may have changed, a log line may have erased it, the recorder gone quiet
        intent = self._read_inputs()
        robot_events = [e for e in intent.events if e in ROBOT_EVENTS]
        for ev in intent.events:
            if ev not in ROBOT_EVENTS:
                self._on_event(ev)
        if not self.ok:
            return
        wants_control = intent.moving or any(e is not Event.HALT for e in robot_events)
        if self.intervention_mode:
            if not wants_control:
                self._auto_armed = True
            if wants_control and self.auto_intervene and self._auto_armed and not self.intervening:
                self.set_intervention(True)
            active = self.intervening
        else:
            active = self.engaged or wants_control
        if self.is_arm and not self.commander.ready:
            if wants_control and not self._waiting_logged:
                self.log.warning("no /joint_states yet: the arm is not commanded until they arrive")
                self._waiting_logged = True
            return
        if not active:
            self.engaged = False
            return
        if not self.engaged and isinstance(self.commander, ArmCommander):  # is_arm
            self.commander.resync()
        self.engaged = True
        for ev in robot_events:
            status = self.commander.handle(ev)
            if status:
                self.log.info("%s", status)
        self._command(intent)

    def _command(self, intent: Intent) -> None:
        c = self.commander
        if isinstance(c, ArmCommander):  # is_arm
            assert self.arm_pub is not None, "an arm's teleop has a command publisher"
            q, g = c.step(intent)
            self.arm_pub.publish(Float64MultiArray(data=np.asarray(q, dtype=float)))
            if self.gripper_pub is not None and g is not None:
                self.gripper_pub.publish(Float64MultiArray(data=np.array([g], dtype=float)))
        else:
            self._publish_twist(*c.step(intent))

    def _publish_twist(self, vx: float, vy: float, wz: float) -> None:
        assert self.cmd_vel_pub is not None, "a base's teleop has a cmd_vel publisher"
        msg = TwistStamped(header(self.now(), self.cmd_vel_frame), Twist(Vector3(vx, vy, 0.0), Vector3(0.0, 0.0, wz)))
        self.cmd_vel_pub.publish(msg)

    def close(self) -> None:
        try:
            if getattr(self, "cmd_vel_pub", None) is not None and getattr(self, "engaged", False):
                self._publish_twist(0.0, 0.0, 0.0)  # leave a walking base standing, not walking on
        finally:
            keys, pad = getattr(self, "keys", None), getattr(self, "pad", None)  # None: _setup failed before them
            line = getattr(self, "status_line", None)
            if line is not None:
                line.close()
            if keys is not None:
                keys.close()
            if pad is not None:
                pad.close()
            super().close()


def main(argv: list[str] | None = None) -> int:
    """``realloop-teleop [key=value ...] [--ros-args ...]``."""
    return run_node("teleop", TeleopNode, argv)


if __name__ == "__main__":
    sys.exit(main())
