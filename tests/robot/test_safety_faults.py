"""Fault injection on the safety filter node: real processes on real DDS (loopback), the MuJoCo sim mirror as the
robot. A killed command source (robot holds), NaN and out-of-limit commands (rejected), a jump beyond the rate
limit (clamped), the e-stop (latched until reset)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from realloop.robot.msgs import Bool, Float64MultiArray, JointState, String
from realloop.robot.node import Node
from realloop.robot.spec import load_robot_spec

CHILD = Path(__file__).with_name("command_source_child.py")
WATCHDOG = 0.5  # s
SPEC = load_robot_spec("arm6")
HOME = np.array(SPEC.default_positions)
LOWER = np.array([j.lower for j in SPEC.joints])
UPPER = np.array([j.upper for j in SPEC.joints])
MAX_STEP = np.array([j.velocity for j in SPEC.joints]) / SPEC.control_rate_hz  # the node's default


def dq(*values: float) -> np.ndarray:
    return np.array(values, dtype=float)


class Cell:
    """The test's view of the graph: filter status, filtered commands, joint states; and the inputs."""

    def __init__(self, node: Node):
        self.node = node
        self.status: dict = {}
        self.outputs: list[tuple[float, np.ndarray]] = []  # (monotonic receive time, arm command)
        self.gripper_outputs: list[np.ndarray] = []
        self.joints: list[tuple[float, np.ndarray]] = []
        node.create_subscription("/safety/status", String, self._on_status, qos="latched")
        node.create_subscription(
            "/arm_controller/commands",
            Float64MultiArray,
            lambda m: self.outputs.append((time.monotonic(), np.array(m.data))),
        )
        node.create_subscription(
            "/gripper_controller/commands", Float64MultiArray, lambda m: self.gripper_outputs.append(np.array(m.data))
        )
        node.create_subscription(
            "/joint_states", JointState, lambda m: self.joints.append((time.monotonic(), np.array(m.position[:6])))
        )
        self.cmd = node.create_publisher("/unsafe/arm_controller/commands", Float64MultiArray)
        self.gripper = node.create_publisher("/unsafe/gripper_controller/commands", Float64MultiArray)
        self.estop = node.create_publisher("/estop", Bool)
        self.estop_reset = node.create_publisher("/estop_reset", Bool)
        self.procs: list[subprocess.Popen] = []

    def _on_status(self, msg: String) -> None:
        self.status = json.loads(msg.data)

    @property
    def state(self) -> str | None:
        return self.status.get("state")

    def rejected(self) -> dict[str, int]:
        return self.status.get("counters", {}).get("rejected", {})

    def last_output(self) -> np.ndarray | None:
        return self.outputs[-1][1] if self.outputs else None

    def output_is(self, q: np.ndarray, atol: float = 1e-9) -> bool:
        out = self.last_output()
        return out is not None and out.shape == q.shape and bool(np.allclose(out, q, atol=atol, rtol=0))

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        if not self.node.spin_until(predicate, timeout):
            logs = "\n".join(f"--- {p.args[3]}:\n{p.log_text()[-3000:]}" for p in self.procs)
            pytest.fail(f"timed out after {timeout} s waiting for {what}; status {self.status}\n{logs}")

    def stream(
        self,
        command: Callable[[], np.ndarray],
        until: Callable[[], bool],
        timeout: float,
        what: str,
        rate: float = 10.0,
    ) -> None:
        """Be a command source: publish ``command()`` at ``rate`` Hz until ``until()``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.cmd.publish(Float64MultiArray(data=np.asarray(command(), dtype=float)))
            if self.node.spin_until(until, 1.0 / rate):
                return
        self.wait(until, 0.0, what)

    def publish_until(self, pub, msg, until: Callable[[], bool], timeout: float, what: str) -> None:
        """Publish ``msg`` every 0.2 s until ``until()`` (the first sample may precede discovery)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pub.publish(msg)
            if self.node.spin_until(until, 0.2):
                return
        self.wait(until, 0.0, what)


@pytest.fixture
def cell(start_node, test_node, domain_id) -> Cell:
    """The sim mirror (arm_lift, no cameras) as the robot, the safety filter in front of it."""
    c = Cell(test_node)
    c.procs.append(start_node("sim_mirror", "task=arm_lift", f"domain_id={domain_id}", "cameras=[]", "seed=0"))
    c.procs.append(start_node("safety_filter", f"watchdog_timeout={WATCHDOG}"))
    # the filter starts holding where the robot is, once it has heard /joint_states
    c.wait(
        lambda: bool(c.joints) and c.state == "hold" and c.status.get("hold") is not None,
        90,
        "the sim mirror's joint states and the filter's start-up hold",
    )
    for p in c.procs:
        assert p.poll() is None, p.log_text()
    return c


def test_killed_command_source_robot_holds(cell, domain_id):
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_LOCALHOST_ONLY="1", PYTHONUNBUFFERED="1")
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "--rate", "20", "--amplitude", "0.3", "--period", "3", *map(str, HOME)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # the robot follows the source's sine on the first joint through the filter
        cell.wait(
            lambda: cell.state == "ok" and abs(cell.joints[-1][1][0]) > 0.15,
            60,
            "the robot to follow the command source",
        )
        assert child.poll() is None
        n_before = len(cell.outputs)
        child.send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        child.wait(10)
        cell.wait(lambda: cell.state == "hold", WATCHDOG + 10, "the filter to hold after the source died")
        t_hold_status = time.monotonic()
        cell.node.spin(1.0)  # watch the robot hold
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "watchdog" in cell.status["reason"]
    assert cell.status["counters"]["watchdog"] >= 1
    hold = np.array(cell.status["hold"])  # rounded to 1e-6 in the JSON

    outs = cell.outputs[n_before:]
    i_hold = next(i for i, (_, q) in enumerate(outs) if np.allclose(q, hold, atol=2e-6, rtol=0))
    t_hold, q_hold = outs[i_hold]
    # the hold went out within the watchdog timeout (plus scheduling margin on a loaded machine) of the kill
    assert t_hold - t_kill <= WATCHDOG + 2.0
    assert t_hold <= t_hold_status + 0.5
    # ... and is republished, unchanged, while holding
    after = [q for _, q in outs[i_hold:]]
    assert len(after) >= 5
    assert all(np.array_equal(q, q_hold) for q in after)
    # the hold is the measured position when the watchdog fired, and the robot stays there
    near = [q for t, q in cell.joints if t_hold - 0.3 <= t <= t_hold]
    assert near and min(np.max(np.abs(q - q_hold)) for q in near) < 0.01
    later = [q for t, q in cell.joints if t > t_hold + 0.2]
    assert len(later) > 10
    assert max(np.max(np.abs(q - q_hold)) for q in later) < 0.02
    assert abs(q_hold[0]) > 0.1  # it held where the source had taken it, not at home


def test_nan_and_out_of_limit_commands_are_rejected(cell):
    cell.stream(lambda: HOME, lambda: cell.state == "ok" and cell.output_is(HOME), 30, "HOME to pass the filter")
    n0 = len(cell.outputs)

    nan, inf = HOME.copy(), HOME.copy()
    nan[0], inf[2] = np.nan, np.inf
    too_far = HOME + dq(0, 1.8, 0, 0, 0, 0)  # shoulder_lift 2.25 > 2.0
    below = HOME + dq(0, 0, 0, 0, -3.2, 0)  # wrist_pitch -2.13 < -2.0
    into_table = HOME + dq(0, 0.6, 0, 0, 0, 0)  # within the joint limits, end effector below the table top
    bad = [nan, inf, HOME[:5], np.append(HOME, 0.0), too_far, below, into_table]
    for q in bad:
        cell.cmd.publish(Float64MultiArray(data=q))
    for g in (np.nan, 0.08, -0.01):
        cell.gripper.publish(Float64MultiArray(data=dq(g)))
    marker = HOME + dq(0.05, 0, 0, 0, 0, 0)  # a valid command after the bad ones: it passes, they did not
    cell.stream(lambda: marker, lambda: cell.output_is(marker), 15, "the valid command after the bad ones")

    expected = {
        "non_finite": 2,
        "wrong_length": 2,
        "position_limit": 2,
        "workspace": 1,
        "gripper_non_finite": 1,
        "gripper_position_limit": 2,
    }
    cell.wait(lambda: cell.rejected() == expected, 5, f"rejection counters {expected}")
    assert cell.status["state"] == "ok" and cell.status["rejected_total"] == sum(expected.values())
    for _, q in cell.outputs[n0:]:
        assert q.shape == (6,) and np.all(np.isfinite(q))
        assert np.all(q >= LOWER) and np.all(q <= UPPER)
        assert not any(b.shape == q.shape and np.allclose(q, b, atol=1e-6) for b in bad[4:])
    for g in cell.gripper_outputs:
        assert np.all(np.isfinite(g)) and 0.0 <= g[0] <= 0.04
    # nothing bad reached the robot: it still sits near home (the joints follow the forwarded marker a little later)
    cell.wait(lambda: np.max(np.abs(cell.joints[-1][1] - marker)) < 0.05, 10, "the joints to reach the marker")
    assert np.max(np.abs(cell.joints[-1][1] - marker)) < 0.05


def test_jump_larger_than_rate_limit_is_clamped(cell):
    cell.stream(lambda: HOME, lambda: cell.state == "ok" and cell.output_is(HOME), 30, "HOME to pass the filter")
    n0 = len(cell.outputs)
    jump = HOME + dq(0.8, 0, 0, 0, 0, 0)  # 4x the 0.2 rad per-command limit of shoulder_pan
    cell.stream(lambda: jump, lambda: cell.output_is(jump), 20, "the filter's output to reach the jump target")

    outs = [HOME] + [q for _, q in cell.outputs[n0:]]
    first = outs[1]
    assert 0.0 < first[0] - HOME[0] <= MAX_STEP[0] + 1e-9  # clamped toward the target ...
    np.testing.assert_allclose(first[1:], HOME[1:], atol=1e-12)  # ... along the jump's direction
    steps = np.abs(np.diff(np.array(outs), axis=0))
    assert np.all(steps <= MAX_STEP + 1e-9), steps.max(axis=0)
    assert len(outs) - 1 >= 4  # 0.8 rad takes at least four commands
    cell.wait(lambda: cell.status["counters"]["clamped"] >= 3, 5, "the clamp counter")
    assert cell.rejected() == {}
    cell.wait(lambda: abs(cell.joints[-1][1][0] - jump[0]) < 0.02, 15, "the robot to arrive")


def test_estop_latches_until_reset(cell):
    target = {"q": HOME}
    cell.stream(lambda: target["q"], lambda: cell.state == "ok" and cell.output_is(HOME), 30, "HOME to pass")

    def stream_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            cell.cmd.publish(Float64MultiArray(data=target["q"]))
            cell.node.spin(0.1)

    cell.publish_until(cell.estop, Bool(True), lambda: cell.state == "estop", 10, "the e-stop to latch")
    n0 = len(cell.outputs)
    hold = np.array(cell.status["hold"])
    target["q"] = HOME + dq(0.3, 0, 0, 0, 0, 0)  # the source keeps commanding somewhere else

    for _ in range(3):  # releasing the button does not clear the latch
        cell.estop.publish(Bool(False))
        stream_for(0.2)
    stream_for(WATCHDOG + 1.0)
    assert cell.state == "estop"
    for _ in range(3):  # nor does a reset with data false
        cell.estop_reset.publish(Bool(False))
        stream_for(0.2)
    assert cell.state == "estop"
    outs = [q for _, q in cell.outputs[n0:]]
    assert len(outs) > 10 and all(np.allclose(q, hold, atol=2e-6, rtol=0) for q in outs)
    assert cell.rejected().get("estop", 0) >= 10
    moved = max(np.max(np.abs(q - hold)) for t, q in cell.joints[-50:])
    assert moved < 0.02  # the robot held still

    n1 = len(cell.outputs)
    cell.estop_reset.publish(Bool(True))
    cell.stream(lambda: target["q"], lambda: cell.output_is(target["q"]), 20, "commands to pass after the reset")
    assert cell.state == "ok"
    counters = cell.status["counters"]
    assert counters["estops"] == 1 and counters["resets"] == 1
    resumed = [hold] + [q for _, q in cell.outputs[n1:]]
    assert np.all(np.abs(np.diff(np.array(resumed), axis=0)) <= MAX_STEP + 1e-9)  # rate-limited from the hold
    cell.wait(lambda: abs(cell.joints[-1][1][0] - 0.3) < 0.02, 15, "the robot to move again")


def test_misconfigured_filter_refuses_to_start(start_node):
    proc = start_node("safety_filter", "watchdog_timout=0.2")  # misspelt: must not fall back to the default
    assert proc.wait(60) == 2
    assert "watchdog_timout" in proc.log_text()
    proc = start_node("safety_filter", "input_prefix=/")  # would subscribe to its own output
    assert proc.wait(60) == 2
    assert "input_prefix" in proc.log_text()
