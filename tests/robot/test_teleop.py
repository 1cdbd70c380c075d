"""Teleop without ROS: terminal key parsing on a real pseudo-terminal, key maps, Joy mapping, and the commander's
IK on the real arm6 MJCF (an EE +x intent moves the forward-kinematics EE position in +x, within joint limits)."""

from __future__ import annotations

import importlib.util
import os
import pty
import subprocess
import sys
import termios
import threading

import numpy as np
import pytest

from realloop.robot.msgs import Joy
from realloop.robot.spec import load_robot_spec
from realloop.robot.teleop import (
    ArmCommander,
    BaseCommander,
    Event,
    Intent,
    JoyMapper,
    KeyboardMapper,
    KeyReader,
    LocalGamepad,
    NotATerminal,
    make_commander,
    parse_action,
    parse_keys,
)

ARM = load_robot_spec("arm6")
QUAD = load_robot_spec("quad12")
LO = np.array([j.lower for j in ARM.joints])
HI = np.array([j.upper for j in ARM.joints])


# ---------------------------------------------------------------------------------------------- key bytes


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (b"wasd", ["w", "a", "s", "d"]),
        (b"W ", ["W", "space"]),
        (b"\x1b[A\x1b[B\x1b[C\x1b[D", ["up", "down", "right", "left"]),
        (b"\x1bOA\x1bOD", ["up", "left"]),  # application cursor mode (SS3)
        (b"\x1b[1;5A\x1b[1;2C", ["up", "right"]),  # Ctrl+up, Shift+right: modifiers dropped
        (b"\x1b[5~\x1b[6~\x1b[3~\x1b[H\x1b[F", ["pageup", "pagedown", "delete", "home", "end"]),
        (b"\x1b[15~\x1bOP", ["f5", "f1"]),
        (b"\n\r\t\x7f\x08", ["enter", "enter", "tab", "backspace", "backspace"]),
        (b"\x03\x04\x01", ["ctrl+c", "ctrl+d", "ctrl+a"]),
        (b"\x1bx", ["alt+x"]),
        (b"\x1b\x1b[A", ["esc", "up"]),
        ("é?".encode(), ["é", "?"]),
        (b"\x1b[99~", ["unknown:99~"]),
    ],
)
def test_parse_keys(data: bytes, keys: list[str]) -> None:
    assert parse_keys(data) == (keys, b"")


def test_parse_keys_holds_back_incomplete_sequences() -> None:
    assert parse_keys(b"w\x1b") == (["w"], b"\x1b")
    assert parse_keys(b"\x1b[1;") == ([], b"\x1b[1;")
    assert parse_keys("é".encode()[:1]) == ([], b"\xc3")
    # once no more bytes come, a lone ESC is the Escape key
    assert parse_keys(b"\x1b", final=True) == (["esc"], b"")
    keys, rest = parse_keys(b"\x1b[")
    assert keys == []
    assert parse_keys(rest + b"A") == (["up"], b"")


def test_key_reader_on_a_real_pty_sets_cbreak_and_restores() -> None:
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        assert before[3] & termios.ICANON
        with KeyReader(slave) as reader:
            mode = termios.tcgetattr(slave)
            assert not mode[3] & termios.ICANON and not mode[3] & termios.ECHO
            assert mode[3] & termios.ISIG  # Ctrl-C still interrupts
            assert reader.read(0.0) == []
            os.write(master, b"w\x1b[Ai")
            assert reader.read(2.0) == ["w", "up", "i"]
            os.write(master, b"\x1b")  # a lone Escape key: decided after the escape timeout
            assert reader.read(2.0) == ["esc"]
        assert termios.tcgetattr(slave) == before
        # a sequence split across two writes parses as one key when its tail comes within the escape timeout
        with KeyReader(slave, escape_timeout=5.0) as reader:
            os.write(master, b"\x1b[")
            late = threading.Timer(0.05, os.write, (master, b"B"))
            late.start()
            assert reader.read(2.0) == ["down"]
            late.join()
    finally:
        os.close(master)
        os.close(slave)


def test_key_reader_restores_the_terminal_when_the_process_exits() -> None:
    """A process that exits without closing its reader (an exception, sys.exit) leaves a sane terminal."""
    master, slave = pty.openpty()
    try:
        code = (
            "import sys; from realloop.robot.teleop import KeyReader; r = KeyReader(0).open(); "
            "print('open', flush=True); sys.exit(3)"
        )
        proc = subprocess.run([sys.executable, "-c", code], stdin=slave, capture_output=True, timeout=60)
        assert proc.returncode == 3 and b"open" in proc.stdout
        assert termios.tcgetattr(slave)[3] & termios.ICANON
    finally:
        os.close(master)
        os.close(slave)


def test_key_reader_refuses_a_non_terminal() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(NotATerminal):
            KeyReader(r)
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------------------------------------- key map


def test_keyboard_mapper_holds_motion_then_releases() -> None:
    km = KeyboardMapper(hold_s=0.2)
    i = km.update(["w"], now=10.0)
    assert i.motion.tolist() == [1, 0, 0, 0, 0, 0] and i.events == []
    assert km.update([], now=10.1).motion[0] == 1.0  # still held (auto-repeat gap)
    assert not km.update([], now=10.25).moving  # released
    i = km.update(["down", "c", "."], now=11.0)
    assert i.motion[0] == -1.0 and i.motion[5] == 1.0 and i.gripper == 1.0
    i = km.update(["0"], now=11.05)  # halt clears held motion at once
    assert not i.moving and i.events == [Event.HALT]


def test_keyboard_mapper_events_and_caps_lock() -> None:
    km = KeyboardMapper()
    i = km.update(["n", "Y", "u", "k", "m", "i", "space", "j", "h", "?", "ctrl+d", "backspace", "F"], now=0.0)
    assert i.events == [
        Event.START,
        Event.SUCCESS,
        Event.FAILURE,
        Event.DISCARD,
        Event.STOP,
        Event.INTERVENTION,
        Event.GRIPPER,
        Event.MODE,
        Event.HOME,
        Event.HELP,
        Event.QUIT,
        Event.DISCARD,
    ]
    assert i.motion[2] == -1.0  # "F" (caps lock) is f: -z


def test_keymap_config_errors_and_unbinding() -> None:
    with pytest.raises(ValueError, match="unknown teleop action 'jump'"):
        KeyboardMapper({"w": "jump"})
    km = KeyboardMapper({"w": None, "o": "+x"})
    assert km.update(["w"], 0.0).motion[0] == 0.0
    assert km.update(["o"], 0.0).motion[0] == 1.0
    assert parse_action("-YAW") == ("yaw", -1.0)
    assert parse_action("discard") is Event.DISCARD
    lines = "\n".join(KeyboardMapper().help_lines())
    assert "x: w,up / s,down" in lines and "y success" in lines


# ---------------------------------------------------------------------------------------------- Joy


def joy(axes=(0.0,) * 6, buttons=(0,) * 15) -> Joy:
    return Joy(axes=np.array(axes, dtype=np.float32), buttons=np.array(buttons, dtype=np.int32))


def press(*idx: int, n: int = 15) -> list[int]:
    b = [0] * n
    for i in idx:
        b[i] = 1
    return b


def test_joy_xbox_layout_sticks_and_deadzone() -> None:
    m = JoyMapper("xbox", deadzone=0.1)
    i = m.update(joy([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))  # left stick fully up: forward
    assert i.motion.tolist() == [1, 0, 0, 0, 0, 0]
    i = m.update(joy([0.55, 0.05, -1.0, 1.0, 0.0, 0.0]))  # half left, noise in the deadzone, right stick
    assert i.motion[1] == pytest.approx(0.5) and i.motion[0] == 0.0
    assert i.motion[2] == 1.0 and i.motion[5] == -1.0
    i = m.update(joy(buttons=press(11, 14)))  # d-pad up and right
    assert i.motion[4] == 1.0 and i.motion[3] == 1.0


def test_joy_buttons_fire_on_rising_edges_only() -> None:
    m = JoyMapper("xbox")
    assert m.update(joy(buttons=press(6))).events == [Event.START]
    assert m.update(joy(buttons=press(6))).events == []  # held: no repeat
    assert m.update(joy()).events == []
    assert m.update(joy(buttons=press(0, 3))).events == [Event.SUCCESS, Event.INTERVENTION]
    assert m.update(joy(buttons=press(1, 2, 4))).events == [Event.STOP, Event.FAILURE, Event.DISCARD]
    # a shorter message (another pad, a driver restart) is not an error; missing buttons read released
    assert m.update(joy(buttons=[0])).events == []
    assert m.update(joy(buttons=[1])).events == [Event.SUCCESS]


def test_joy_triggers_and_gripper() -> None:
    m = JoyMapper("xbox")
    assert m.update(joy([0, 0, 0, 0, 0.0, -1.0])).gripper == -1.0  # right trigger pressed: close
    assert m.update(joy([0, 0, 0, 0, -0.6, 0.0])).gripper == pytest.approx((0.6 - 0.1) / 0.9)  # left: open
    legacy = JoyMapper("xbox_joy_node")
    # joy_linux reports 0 for a trigger until first touched: that is not "half pressed"
    assert legacy.update(joy([0.0] * 8, [0] * 11)).gripper == 0.0
    assert legacy.update(joy([0, 0, 1.0, 0, 0, 1.0, 0, 0], [0] * 11)).gripper == 0.0  # at rest
    assert legacy.update(joy([0, 0, 1.0, 0, 0, -1.0, 0, 0], [0] * 11)).gripper == -1.0  # RT pressed
    assert legacy.update(joy([0, 0, 0, 0, 0, 0, 0, 1.0], press(7, n=11))).events == [Event.START]


def test_joy_custom_mapping_enable_button_and_timeout() -> None:
    m = JoyMapper(
        "xbox",
        {"motion": {"z": ["-axis1"], "x": []}, "buttons": {"start": 0, "success": None}},
        enable_button=5,
        timeout_s=0.5,
    )
    assert not m.update(joy([0, 1.0, 0, 0, 0, 0]), now=0.0).moving  # dead-man not held
    i = m.update(joy([0, 1.0, 0, 0, 0, 0], press(5, 0)), now=1.0)
    assert i.motion.tolist() == [0, 0, -1, 0, 0, 0] and i.events == [Event.START]
    assert m.current(1.3).motion[2] == -1.0
    assert not m.current(1.6).moving  # no message for longer than timeout_s
    with pytest.raises(ValueError, match="bad joy source"):
        JoyMapper("xbox", {"motion": {"x": ["stick1"]}})
    with pytest.raises(ValueError, match="unknown joy layout"):
        JoyMapper("ps9")
    with pytest.raises(ValueError, match="unknown joy motion channel"):
        JoyMapper("xbox", {"motion": {"w": ["axis1"]}})


def test_local_gamepad_without_a_pad_or_without_pygame() -> None:
    if importlib.util.find_spec("pygame") is None:
        with pytest.raises(RuntimeError, match=r"realloop\[joystick\]"):
            LocalGamepad()
    else:  # pygame installed: SDL runs headless and finds no pad on this machine
        with pytest.raises(RuntimeError, match="no gamepad at index 0"):
            LocalGamepad()


def test_intent_combine_clips() -> None:
    a = Intent(np.array([1.0, 0, 0, 0, 0, 0]), 1.0, [Event.START])
    b = Intent(np.array([0.5, -1.0, 0, 0, 0, 0]), 0.5, [Event.STOP])
    c = Intent.combine([a, b])
    assert c.motion.tolist() == [1.0, -1.0, 0, 0, 0, 0] and c.gripper == 1.0 and c.events == [Event.START, Event.STOP]


# ---------------------------------------------------------------------------------------------- commander


def arm(rate: float = 20.0, **kw) -> ArmCommander:
    c = ArmCommander(ARM, rate, **kw)
    c.sync([*ARM.joint_names, "finger_left"], [*ARM.default_positions, 0.04])
    c.resync()
    return c


def motion(**axes: float) -> Intent:
    from realloop.robot.teleop import MOTION_AXES

    return Intent(np.array([axes.get(a, 0.0) for a in MOTION_AXES]))


def test_ee_plus_x_moves_the_fk_end_effector_in_plus_x() -> None:
    c = arm(rate=20.0, linear_speed=0.05)
    p0 = c.ee_position()
    for _ in range(20):  # one second at full +x
        q, g = c.step(motion(x=1.0))
    p1 = c.ee_position(q)
    d = p1 - p0
    assert d[0] == pytest.approx(0.05, abs=0.005)  # 0.05 m/s for 1 s
    assert abs(d[1]) < 0.002 and abs(d[2]) < 0.002
    assert g == pytest.approx(0.04)
    for _ in range(20):
        q, _ = c.step(motion(z=-1.0))
    d = c.ee_position(q) - p1
    assert d[2] == pytest.approx(-0.05, abs=0.005) and abs(d[0]) < 0.002


def test_commands_stay_within_joint_limits() -> None:
    c = arm(rate=10.0, linear_speed=1.0, angular_speed=3.0)
    prev, _ = c.targets()
    vel = np.array([j.velocity for j in ARM.joints])
    for _ in range(200):  # far past the workspace and spinning: the IK saturates at limits
        q, _ = c.step(motion(x=1.0, z=1.0, yaw=1.0, roll=1.0))
        assert np.all(q >= LO - 1e-9) and np.all(q <= HI + 1e-9)
        assert np.all(np.abs(q - prev) <= vel / 10.0 + 1e-9)  # velocity limits per step
        prev = q
    assert np.isclose(np.minimum(q - LO, HI - q), 0.0).any()  # it did push some joints onto their limits
    c.handle(Event.MODE)
    assert c.mode == "joint"
    for _ in range(400):
        q, _ = c.step(motion(x=1.0, y=-1.0))
    assert q[0] == pytest.approx(HI[0]) and q[1] == pytest.approx(LO[1])


def test_joint_mode_gripper_home_and_resync() -> None:
    c = arm(rate=20.0, joint_speed=0.5)
    assert "2:shoulder_lift" in c.handle(Event.MODE)
    q0, _ = c.targets()
    q, _ = c.step(motion(pitch=1.0))  # channel 5 -> joint 5 (wrist_pitch)
    np.testing.assert_allclose(q - q0, np.eye(6)[4] * 0.5 * ARM.joints[4].velocity / 20.0)
    assert c.handle(Event.GRIPPER) == "gripper: close"
    assert c.targets()[1] == 0.0
    _, g = c.step(Intent(gripper=1.0))  # open at the gripper's speed
    assert g == pytest.approx(ARM.gripper.velocity / 20.0)
    c.handle(Event.HOME)
    for _ in range(100):
        q, _ = c.step(Intent())
    np.testing.assert_allclose(q, ARM.default_positions)
    assert not c.homing
    moved = np.array(ARM.default_positions) + 0.1
    c.sync(ARM.joint_names, moved)
    np.testing.assert_allclose(c.targets()[0], ARM.default_positions)  # syncing never moves the set-point
    c.resync()
    np.testing.assert_allclose(c.targets()[0], moved)


def test_commander_needs_joint_states_first() -> None:
    c = ArmCommander(ARM, 20.0)
    assert not c.ready
    c.sync(ARM.joint_names[:3], [0.0, 0.0, 0.0])
    assert not c.ready
    with pytest.raises(RuntimeError, match="no joint state"):
        c.step(Intent())


def test_quad_maps_to_cmd_vel() -> None:
    c = make_commander(QUAD, 50.0, "auto", {"base_linear_speed": 0.4, "base_angular_speed": 0.8})
    assert isinstance(c, BaseCommander)
    assert c.step(motion(x=1.0, y=-0.5, yaw=0.25, z=1.0)) == pytest.approx((0.4, -0.2, 0.2))
    assert c.step(Intent()) == (0.0, 0.0, 0.0)
    assert isinstance(make_commander(ARM, 20.0, "auto"), ArmCommander)
    joint_only = make_commander(QUAD, 50.0, "arm")  # no ee_site: joint jogging only
    assert isinstance(joint_only, ArmCommander) and joint_only.mode == "joint"
    with pytest.raises(ValueError, match="target must be"):
        make_commander(ARM, 20.0, "boat")
