"""The teleop node as a real process on real DDS: keys typed into a real pseudo-terminal (its stdin) drive the
sim mirror's arm, episode keys reach /recorder/command, the intervention key toggles /intervention; Joy messages
from another process drive the arm and a quadruped's /cmd_vel."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from realloop.robot.msgs import Bool, Float64MultiArray, JointState, Joy, String, TwistStamped, header
from realloop.robot.node import Node
from realloop.robot.spec import load_robot_spec
from realloop.robot.teleop import ArmCommander

ARM = load_robot_spec("arm6")
TIMEOUT = 60.0  # generous: node start-up on a loaded 2-core machine


@pytest.fixture
def start_teleop(start_node: Callable[..., subprocess.Popen]) -> Callable[..., subprocess.Popen]:
    """start_node for teleop, with the child's stdin chosen by the test (a pty, or /dev/null)."""

    def start(*overrides: str, stdin: int = subprocess.DEVNULL, console_script: bool = False) -> subprocess.Popen:
        script = Path(sys.executable).with_name("realloop-teleop")
        exe = [str(script)] if console_script and script.exists() else None  # the entry point pyproject declares
        return start_node("teleop", *overrides, stdin=stdin, executable=exe)

    return start


class Recorder:
    """What the test node hears on the teleop's output topics."""

    def __init__(self, node: Node):
        self.arm: list[np.ndarray] = []
        self.gripper: list[float] = []
        self.commands: list[str] = []
        self.intervention: list[bool] = []
        self.measured: np.ndarray | None = None
        node.create_subscription("/arm_controller/commands", Float64MultiArray, lambda m: self.arm.append(m.data))
        node.create_subscription(
            "/gripper_controller/commands", Float64MultiArray, lambda m: self.gripper.append(float(m.data[0]))
        )
        node.create_subscription("/recorder/command", String, lambda m: self.commands.append(m.data))
        node.create_subscription("/intervention", Bool, lambda m: self.intervention.append(m.data), qos="latched")
        node.create_subscription("/joint_states", JointState, self._on_js, qos="sensor")

    def _on_js(self, msg: JointState) -> None:
        idx = {n: i for i, n in enumerate(msg.name)}
        if all(n in idx for n in ARM.joint_names):
            self.measured = np.array([msg.position[idx[n]] for n in ARM.joint_names])


def fk() -> Callable[[np.ndarray], np.ndarray]:
    c = ArmCommander(ARM, 20.0)
    return c.ee_position


def type_keys(node: Node, master: int, keys: bytes, until: Callable[[], bool], period: float = 0.05) -> bool:
    """Type ``keys`` again and again (like a held key's auto-repeat) until ``until()`` or the timeout."""
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        os.write(master, keys)
        if node.spin_until(until, period):
            return True
    return False


def test_keyboard_on_a_pty_drives_the_sim_arm_and_the_recorder(start_node, start_teleop, test_node, domain_id):
    rec = Recorder(test_node)
    mirror = start_node("sim_mirror", "task=arm_lift", f"domain_id={domain_id}", "cameras=[]", "seed=1")
    assert test_node.spin_until(lambda: rec.measured is not None, TIMEOUT), mirror.log_text()
    master, slave = pty.openpty()
    try:
        teleop = start_teleop(stdin=slave)
        # the latched /intervention false says the node is up (and its terminal is in cbreak mode)
        assert test_node.spin_until(lambda: rec.intervention == [False], TIMEOUT), teleop.log_text()
        assert "move    x: w,up / s,down" in teleop.log_text()  # the key help
        ee = fk()
        p_start = ee(rec.measured)
        assert rec.arm == []  # nothing is commanded before the first key

        # w: +x. Commands appear and the EE of the commanded joints moves forward; the mirror's arm follows
        assert type_keys(test_node, master, b"w", lambda: bool(rec.arm) and ee(rec.arm[-1])[0] > p_start[0] + 0.03)
        cmd = ee(rec.arm[-1]) - p_start
        assert abs(cmd[1]) < 0.01 and abs(cmd[2]) < 0.01, cmd
        assert test_node.spin_until(lambda: ee(rec.measured)[0] > p_start[0] + 0.02, TIMEOUT)
        x_now = ee(rec.arm[-1])[0]
        assert type_keys(test_node, master, b"\x1b[B", lambda: ee(rec.arm[-1])[0] < x_now - 0.01)  # down arrow: -x
        n_before = len(rec.gripper)
        os.write(master, b" ")  # space: toggle the gripper (opens at start, so it closes)
        assert test_node.spin_until(lambda: len(rec.gripper) > n_before and rec.gripper[-1] == 0.0, TIMEOUT)

        os.write(master, b"n")
        os.write(master, b"y")
        os.write(master, b"u")
        os.write(master, b"k")
        os.write(master, b"m")
        assert test_node.spin_until(lambda: len(rec.commands) >= 5, TIMEOUT), teleop.log_text()
        assert rec.commands == ["start", "success", "failure", "discard", "stop"]

        os.write(master, b"i")
        assert test_node.spin_until(lambda: rec.intervention[-1:] == [True], TIMEOUT)
        os.write(master, b"i")
        assert test_node.spin_until(lambda: rec.intervention[-2:] == [True, False], TIMEOUT)

        os.write(master, b"\x04")  # Ctrl-D: quit; the node exits cleanly and gives the terminal back
        assert teleop.wait(TIMEOUT) == 0, teleop.log_text()
        assert termios.tcgetattr(slave)[3] & termios.ICANON
    finally:
        os.close(master)
        os.close(slave)


def publish_joint_states(node: Node, q: np.ndarray) -> None:
    pub = node.create_publisher("/joint_states", JointState)
    names = [*ARM.joint_names, "finger_left"]
    node.create_timer(0.05, lambda: pub.publish(JointState(header(time.time()), names, np.append(q, 0.04))))


def test_joy_messages_drive_the_arm_without_a_terminal(start_teleop, test_node):
    rec = Recorder(test_node)
    q0 = np.array(ARM.default_positions)
    publish_joint_states(test_node, q0)
    joy_pub = test_node.create_publisher("/joy", Joy)
    teleop = start_teleop("device=keyboard", "rate_hz=20")  # stdin is /dev/null: keyboard off, /joy on
    assert test_node.spin_until(lambda: rec.intervention == [False], TIMEOUT), teleop.log_text()
    assert test_node.spin_until(lambda: "keyboard teleop disabled" in teleop.log_text(), TIMEOUT)

    def send(axes=(0.0,) * 6, buttons=()) -> None:
        b = np.zeros(15, dtype=np.int32)
        b[list(buttons)] = 1
        joy_pub.publish(Joy(header(time.time(), "joy"), np.array(axes, dtype=np.float32), b))

    ee = fk()
    p0 = ee(q0)
    right_stick_up = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0)  # xbox layout: right stick y -> +z
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end and not (rec.arm and ee(rec.arm[-1])[2] > p0[2] + 0.02):
        send(right_stick_up)  # a driver republishes the held state (autorepeat)
        test_node.spin(0.05)
    assert rec.arm and ee(rec.arm[-1])[2] > p0[2] + 0.02, teleop.log_text()
    assert abs(ee(rec.arm[-1])[0] - p0[0]) < 0.01

    send()  # sticks released: the set-point holds
    test_node.spin_until(lambda: False, 0.5)
    held = rec.arm[-1].copy()
    test_node.spin_until(lambda: False, 0.3)
    np.testing.assert_allclose(rec.arm[-1], held)

    for buttons in ((6,), (), (0,), (), (3,), ()):  # start, success, intervention toggle (rising edges)
        send(buttons=buttons)
        test_node.spin(0.1)
    assert test_node.spin_until(lambda: len(rec.commands) >= 2 and rec.intervention[-1:] == [True], TIMEOUT)
    assert rec.commands == ["start", "success"]


def test_quadruped_joy_to_cmd_vel_via_the_console_script(start_teleop, test_node):
    twists: list[TwistStamped] = []
    test_node.create_subscription("/unsafe/cmd_vel", TwistStamped, twists.append)
    joy_pub = test_node.create_publisher("/joy", Joy)
    teleop = start_teleop(
        "robot=quad12", "device=joy", "command_prefix=/unsafe", "speeds.base_linear_speed=0.4", console_script=True
    )
    forward_left = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=np.float32)  # left stick up, right stick left

    def moving() -> bool:
        return bool(twists) and twists[-1].twist.linear.x > 0.3 and twists[-1].twist.angular.z > 0.5

    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end and not moving():
        joy_pub.publish(Joy(header(time.time(), "joy"), forward_left, np.zeros(15, dtype=np.int32)))
        test_node.spin(0.05)
    assert moving(), teleop.log_text()
    t = twists[-1]
    assert t.twist.linear.x == pytest.approx(0.4) and t.twist.angular.z == pytest.approx(1.0)
    assert t.header.frame_id == "base_link" and abs(t.header.stamp.to_sec() - time.time()) < 30
    joy_pub.publish(Joy(header(time.time(), "joy"), np.zeros(6, dtype=np.float32), np.zeros(15, dtype=np.int32)))
    assert test_node.spin_until(lambda: twists[-1].twist.linear.x == 0.0, TIMEOUT)
    n = len(twists)
    teleop.send_signal(signal.SIGINT)
    assert teleop.wait(TIMEOUT) == 0, teleop.log_text()
    test_node.spin_until(lambda: False, 0.3)
    assert twists[-1].twist.linear.x == 0.0 and len(twists) >= n  # left standing


def test_intervention_mode_commands_only_while_intervening(start_teleop, test_node):
    rec = Recorder(test_node)
    publish_joint_states(test_node, np.array(ARM.default_positions))
    joy_pub = test_node.create_publisher("/joy", Joy)
    teleop = start_teleop("device=joy", "intervention_mode=true", "command_prefix=/unsafe")
    unsafe: list[np.ndarray] = []
    test_node.create_subscription("/unsafe/arm_controller/commands", Float64MultiArray, lambda m: unsafe.append(m.data))
    assert test_node.spin_until(lambda: rec.intervention == [False], TIMEOUT), teleop.log_text()

    def send(axes=(0.0,) * 6, buttons=()) -> None:
        b = np.zeros(15, dtype=np.int32)
        b[list(buttons)] = 1
        joy_pub.publish(Joy(header(time.time(), "joy"), np.array(axes, dtype=np.float32), b))

    test_node.spin_until(lambda: False, 0.5)
    assert unsafe == [] and rec.arm == []  # a policy drives: teleop stays silent
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end and not unsafe:  # moving the stick takes over
        send((0.0, 1.0, 0.0, 0.0, 0.0, 0.0))
        test_node.spin(0.05)
    assert unsafe and rec.intervention[-1] is True, teleop.log_text()
    assert rec.arm == []  # through the safety filter's input, never the plain topic
    stick_up = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    send(stick_up, buttons=(3,))  # Y: hand back to the policy, the stick still pushed
    assert test_node.spin_until(lambda: rec.intervention[-1] is False, TIMEOUT)
    for _ in range(10):  # still pushed: no take-over until the input has been idle
        send(stick_up)
        test_node.spin(0.05)
    send()
    test_node.spin_until(lambda: False, 0.3)
    n = len(unsafe)
    test_node.spin_until(lambda: False, 0.5)
    assert len(unsafe) == n and rec.intervention[-1] is False  # silent again
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end and not rec.intervention[-1]:  # a fresh push takes over again
        send(stick_up)
        test_node.spin(0.05)
    assert rec.intervention[-1] is True
    assert test_node.spin_until(lambda: len(unsafe) > n, TIMEOUT)


def test_bad_config_exits_2_with_a_message(start_teleop):
    teleop = start_teleop("device=spacemouse")
    assert teleop.wait(TIMEOUT) == 2
    assert "teleop device must be one of keyboard, joy, joystick" in teleop.log_text()
    local = start_teleop("device=joystick")  # no pygame (the extra), or no pad on this machine
    assert local.wait(TIMEOUT) == 2
    log = local.log_text()
    assert "realloop[joystick]" in log or "no gamepad at index 0" in log, log
