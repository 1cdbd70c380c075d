"""Unit tests of the safety filter's core (robot/safety/filter.py): every rule, counters, watchdog, e-stop latch."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from realloop.robot.args import load_node_config
from realloop.robot.safety import ESTOP, HOLD, OK, SafetyConfig, SafetyFilter
from realloop.robot.safety.filter import (
    BURST_STEPS,
    NO_STATE,
    NON_FINITE,
    POSITION_LIMIT,
    WORKSPACE,
    WRONG_LENGTH,
)
from realloop.robot.spec import load_robot_spec


@pytest.fixture(scope="module")
def arm():
    return load_robot_spec("arm6")


@pytest.fixture(scope="module")
def node_config() -> SafetyConfig:
    """The shipped node defaults (configs/node/safety_filter.yaml), box included."""
    return SafetyConfig.from_params(load_node_config("safety_filter"))


@pytest.fixture(scope="module")
def home(arm) -> np.ndarray:
    return np.array(arm.default_positions)


def dq(*values: float) -> np.ndarray:
    return np.array(values, dtype=float)


def make(spec, config: SafetyConfig, measured=None, gripper=None) -> SafetyFilter:
    f = SafetyFilter(spec, config)
    f.update_measured(measured, gripper)
    return f


def rejections(f: SafetyFilter) -> dict[str, int]:
    return dict(f.counters["rejected"])


# --- accepted commands and the rate limit ---------------------------------------------------------------------


def test_starts_in_hold_and_accepts_a_small_step(arm, node_config, home):
    f = make(arm, node_config)
    assert f.state == HOLD
    assert f.tick(0.0).arm is None  # nothing to hold before the robot's position is known
    f.update_measured(home)
    np.testing.assert_array_equal(f.tick(0.01).arm, home)

    cmd = home + dq(0.1, -0.05, 0.05, 0.1, 0.0, 0.2)
    d = f.filter_arm(cmd, 1.0)
    assert d.status == "accepted" and not d.rejected
    np.testing.assert_array_equal(d.command, cmd)
    assert f.state == OK and f.counters["accepted"] == 1 and f.n_rejected == 0
    assert f.tick(1.05).arm is None  # fresh: nothing republished


def test_jump_larger_than_max_step_is_clamped_toward_target(arm, node_config, home):
    f = make(arm, node_config, home)
    np.testing.assert_allclose(f.max_step, [0.2, 0.2, 0.25, 0.3, 0.3, 0.3])  # velocity limits x 0.1 s (10 Hz)
    target = home + dq(0.8, 0.0, 0.3, 0.0, 0.0, 0.0)
    d = f.filter_arm(target, 1.0)
    assert d.status == "clamped" and f.counters["clamped"] == 1 and f.counters["accepted"] == 1
    # one scale factor for the whole step (pan's 0.2 / 0.8): the joint-space direction is kept
    np.testing.assert_allclose(d.command, home + 0.25 * (target - home))
    assert np.all(np.abs(d.command - home) <= f.max_step + 1e-12)

    outs = [d.command]
    for i in range(1, 6):
        outs.append(f.filter_arm(target, 1.0 + 0.1 * i).command)
    steps = np.abs(np.diff(np.array(outs), axis=0))
    assert np.all(steps <= f.max_step + 1e-9)
    np.testing.assert_allclose(outs[3], target)  # 0.8 rad at 0.2 rad per command: 4 commands
    assert f.filter_arm(target, 1.7).status == "accepted"


def test_velocity_limit_holds_over_a_flood_of_commands(arm, node_config, home):
    """Commands at 50 Hz each asking pan for +0.1 rad (5 rad/s; its limit is 2 rad/s): after the allowance of at
    most BURST_STEPS steps is spent, the target moves at the velocity limit, never faster, one step at most
    max_step."""
    f = make(dataclasses.replace(arm, workspace=None), node_config, home)  # pan turns 2 rad
    assert f.filter_arm(home, 0.0).status == "accepted"
    sent = [home[0]]
    for k in range(1, 51):
        d = f.filter_arm(home + dq(sent[-1] - home[0] + 0.1, 0, 0, 0, 0, 0), 0.02 * k)
        sent.append(d.command[0])
    steps = np.diff(sent)
    assert np.all(steps <= f.max_step[0] + 1e-12) and f.counters["clamped"] >= 40
    moved = sent[-1] - sent[0]
    assert 2.0 * 1.0 - 1e-9 <= moved <= 2.0 * 1.0 + BURST_STEPS * f.max_step[0] + 1e-9
    np.testing.assert_allclose(steps[-20:], 2.0 * 0.02)  # sustained: exactly the velocity limit


def test_jittered_commands_and_the_first_after_a_hold_keep_their_full_step(arm, node_config, home):
    """A 10 Hz loop whose commands come late and then early (140 ms, then 60 ms), each one full max_step: the
    average speed is within the limit, so none is cut short. The first command after a hold republished at 50 Hz
    keeps its full step too."""
    f = make(dataclasses.replace(arm, workspace=None), node_config, home)
    for k in range(5):  # the start-up hold, republished
        np.testing.assert_array_equal(f.tick(0.02 * k).arm, home)
    q = home.copy()
    direction = np.where(home + 7 * f.max_step < f.upper, 1.0, -1.0)  # stay inside the joint limits
    for t in (0.1, 0.24, 0.3, 0.44, 0.5, 0.64, 0.7):
        q = q + direction * f.max_step
        d = f.filter_arm(q, t)
        assert d.status == "accepted", (t, d)
        np.testing.assert_allclose(d.command, q)
    assert f.counters["clamped"] == 0


def test_explicit_max_step_and_velocity_scale(arm, home):
    f = make(arm, SafetyConfig(max_step=0.05), home)
    np.testing.assert_allclose(f.max_step, 0.05)
    assert np.allclose(f.filter_arm(home + 0.3, 1.0).command, home + 0.05)
    f = make(arm, SafetyConfig(max_step=(0.1, 0.1, 0.1, 0.1, 0.1, 0.01)), home)
    np.testing.assert_allclose(f.filter_arm(home + dq(0, 0, 0, 0, 0, 0.1), 1.0).command, home + dq(0, 0, 0, 0, 0, 0.01))
    f = make(arm, SafetyConfig(velocity_scale=0.5), home)
    np.testing.assert_allclose(f.max_step, [0.1, 0.1, 0.125, 0.15, 0.15, 0.15])
    with pytest.raises(ValueError, match="max_step has 2 values"):
        SafetyFilter(arm, SafetyConfig(max_step=(0.1, 0.1)))


# --- rejections -------------------------------------------------------------------------------------------------


def test_non_finite_and_wrong_length_are_rejected_and_counted(arm, node_config, home):
    f = make(arm, node_config, home)
    assert f.filter_arm(home, 0.0).status == "accepted"
    for i, bad in enumerate([np.nan, np.inf, -np.inf]):
        cmd = home.copy()
        cmd[i] = bad
        d = f.filter_arm(cmd, 0.1 * (i + 1))
        assert d.rejected and d.reason == NON_FINITE and d.command is None
    for cmd in ([0.0] * 5, [0.0] * 7, []):
        d = f.filter_arm(cmd, 0.5)
        assert d.rejected and d.reason == WRONG_LENGTH
    assert rejections(f) == {NON_FINITE: 3, WRONG_LENGTH: 3}
    assert f.counters["accepted"] == 1 and f.n_rejected == 6
    np.testing.assert_array_equal(f.last_sent, home)  # nothing rejected ever becomes the reference


def test_out_of_limit_commands_are_rejected_not_clamped(arm, node_config, home):
    f = make(arm, node_config, home)
    for i, j in enumerate(arm.joints):
        for value in (j.upper + 1e-3, j.lower - 1e-3):
            cmd = home.copy()
            cmd[i] = value
            d = f.filter_arm(cmd, 1.0)
            assert d.rejected and d.reason == POSITION_LIMIT and d.command is None, (j.name, value)
    assert rejections(f) == {POSITION_LIMIT: 12}
    assert f.state == HOLD and f.counters["accepted"] == 0
    # exactly at a limit is allowed (wrist roll does not move the end-effector site: the box is not involved)
    at_limit = home.copy()
    at_limit[5] = arm.joints[5].upper
    assert not f.filter_arm(at_limit, 2.0).rejected


def test_workspace_box_rejects_end_effector_outside(arm, node_config, home):
    f = make(arm, node_config, home)
    lo, hi = f.box
    into_table = home + dq(0, 0.6, 0, 0, 0, 0)  # shoulder forward: the gripper goes through the table top
    straight_up = np.zeros(6)  # EE 0.85 m above the table
    behind = home + dq(2.5, 0, 0, 0, 0, 0)  # panned round to behind the base
    for q in (into_table, straight_up, behind):
        p = f.ee_position(q)
        assert not (np.all(p >= lo) and np.all(p <= hi)), p
        d = f.filter_arm(q, 1.0)
        assert d.rejected and d.reason == WORKSPACE
    assert f.ee_position(into_table)[2] < lo[2]
    assert rejections(f) == {WORKSPACE: 3}
    # without a box the same (in-limit) command passes, rate-limited
    free = make(dataclasses.replace(arm, workspace=None), SafetyConfig(), home)
    assert free.box is None and free.filter_arm(into_table, 1.0).status == "clamped"


def test_rate_limited_step_is_box_checked_too(arm, node_config):
    """Both ends inside the box, the clamped step (halfway) outside it: rejected, since what is sent is checked."""
    start = dq(0.04, 0.86, 1.6, 0.0, 0.78, 0.0)  # EE 2 cm above the table
    goal = dq(0.25, 0.86, 1.83, 0.0, 1.16, 0.0)  # EE 2 cm above the table, a bit to the side
    half = np.abs(goal - start) / 2 + dq(0, 1, 0, 1, 0, 1)  # max steps that stop the step halfway
    cfg = dataclasses.replace(node_config, max_step=tuple(half))
    f = make(arm, cfg, start)
    lo, hi = f.box
    for q in (start, goal):
        assert np.all(f.ee_position(q) >= lo) and np.all(f.ee_position(q) <= hi)
    assert f.ee_position((start + goal) / 2)[2] < lo[2]  # the joint-space midpoint dips into the table
    d = f.filter_arm(goal, 1.0)
    assert d.rejected and d.reason == WORKSPACE
    assert f.last_sent is None and f.counters["accepted"] == 0  # nothing went out


def test_first_command_needs_a_reference(arm, node_config, home):
    f = make(arm, node_config)
    d = f.filter_arm(home, 0.0)
    assert d.rejected and d.reason == NO_STATE
    f.update_measured(home + dq(0.05, 0, 0, 0, 0, 0))
    d = f.filter_arm(home, 0.1)
    assert d.status == "accepted"  # limited from the measured position: 0.05 rad is within one step
    f.update_measured([np.nan] * 6)  # a broken measurement never replaces a good one
    np.testing.assert_allclose(f.measured, home + dq(0.05, 0, 0, 0, 0, 0))


# --- watchdog ---------------------------------------------------------------------------------------------------


def test_watchdog_holds_measured_position_then_resumes_rate_limited(arm, node_config, home):
    f = make(arm, node_config, home)
    cmd = home + dq(0.2, 0, 0, 0, 0, 0)
    assert f.filter_arm(cmd, 10.0).status == "accepted"
    lagging = home + dq(0.15, 0.01, 0, 0, 0, 0)  # the robot has not reached the command yet
    out = f.tick(10.4, lagging)
    assert out.arm is None and f.state == OK
    out = f.tick(10.51, lagging)
    assert f.state == HOLD and out.state_changed and f.counters["watchdog"] == 1
    np.testing.assert_array_equal(out.arm, lagging)  # the measured position, not the last command
    out = f.tick(10.6, lagging + 0.05)  # the hold is what was measured when the watchdog fired
    np.testing.assert_array_equal(out.arm, lagging)
    assert f.tick(12.0).arm is not None and f.counters["watchdog"] == 1  # fires once per stale period

    far = home + dq(0.8, 0, 0, 0, 0, 0)
    d = f.filter_arm(far, 12.5)
    assert d.status == "clamped" and f.state == OK
    assert np.all(np.abs(d.command - lagging) <= f.max_step + 1e-12)  # from the hold, not from the old command
    assert f.tick(12.6).arm is None


def test_rejected_commands_do_not_feed_the_watchdog(arm, node_config, home):
    f = make(arm, node_config, home)
    assert f.filter_arm(home, 0.0).status == "accepted"
    bad = home.copy()
    bad[0] = np.nan
    for t in (0.1, 0.2, 0.3, 0.4, 0.5):
        assert f.filter_arm(bad, t).rejected
        f.tick(t)
    assert f.state == OK
    f.tick(0.55)
    assert f.state == HOLD and f.counters["watchdog"] == 1
    assert f.counters["rejected"] == {NON_FINITE: 5}


# --- e-stop -----------------------------------------------------------------------------------------------------


def test_estop_latches_until_reset(arm, node_config, home):
    f = make(arm, node_config, home)
    assert f.filter_arm(home + dq(0.1, 0, 0, 0, 0, 0), 0.0).status == "accepted"
    where = home + dq(0.08, 0, 0, 0, 0, 0)
    assert f.estop(0.05, where) is True
    assert f.state == ESTOP and f.counters["estops"] == 1
    assert f.estop(0.06) is False and f.counters["estops"] == 1  # repeated true: still one latch

    for t in (0.1, 0.2, 5.0, 60.0):  # commands keep coming: rejected, the hold goes out instead
        d = f.filter_arm(home, t)
        assert d.rejected and d.reason == "estop"
        np.testing.assert_array_equal(d.command, where)
        np.testing.assert_array_equal(f.tick(t, home).arm, where)
        assert f.state == ESTOP
    assert f.counters["rejected"]["estop"] == 4 and f.counters["accepted"] == 1
    assert f.counters["watchdog"] == 0  # the e-stop, not the watchdog, is holding

    assert f.reset_estop(61.0) is True and f.counters["resets"] == 1
    assert f.state == HOLD  # not moving again until a fresh command
    np.testing.assert_array_equal(f.tick(61.01).arm, where)
    d = f.filter_arm(home + dq(0.5, 0, 0, 0, 0, 0), 61.5)
    assert d.status == "clamped" and f.state == OK
    np.testing.assert_allclose(d.command, where + dq(0.2, 0, 0, 0, 0, 0))
    assert f.reset_estop(62.0) is False and f.counters["resets"] == 1


def test_estop_before_any_state(arm, node_config, home):
    f = make(arm, node_config)
    f.estop(0.0)
    assert f.state == ESTOP and f.filter_arm(home, 0.1).command is None
    assert f.tick(0.2, home).arm is not None  # once the robot is measured, its position is held
    np.testing.assert_array_equal(f.hold, home)


# --- gripper ----------------------------------------------------------------------------------------------------


def test_gripper_limits_rate_and_ramp(arm, node_config, home):
    f = make(arm, node_config, home, gripper=0.04)
    assert f.gripper_max_step == pytest.approx(0.01)  # 0.1 m/s x 0.1 s
    for bad, reason in (
        (np.nan, "gripper_non_finite"),
        (0.05, "gripper_position_limit"),
        (-0.001, "gripper_position_limit"),
        ([0.01, 0.02], "gripper_wrong_length"),
    ):
        d = f.filter_gripper(bad, 0.0)
        assert d.rejected and d.reason == reason and d.command is None
    d = f.filter_gripper(0.0, 1.0)  # close: one command, ramped by the filter
    assert d.status == "clamped" and d.command[0] == pytest.approx(0.03)
    assert f.filter_arm(home, 1.0).status == "accepted"
    sent = [d.command[0]]
    t = 1.0
    while t < 2.0:
        t += 0.02
        f.filter_arm(home, t)  # keep the arm fresh
        g = f.tick(t).gripper
        if g is not None:
            sent.append(g)
    assert sent[-1] == pytest.approx(0.0)
    assert np.all(np.diff(sent) <= 1e-12) and np.all(np.abs(np.diff(sent)) <= 0.1 * 0.02 + 1e-12)
    assert f.tick(t + 0.02).gripper is None  # reached, not holding: nothing to send
    assert f.counters["gripper_accepted"] == 1 and f.counters["gripper_clamped"] == 1

    f.estop(t + 0.03)
    d = f.filter_gripper(0.04, t + 0.04)
    assert d.rejected and d.reason == "gripper_estop" and d.command[0] == pytest.approx(0.0)


def test_gripper_needs_a_reference(arm, node_config):
    f = make(arm, node_config)
    assert f.filter_gripper(0.02, 0.0).reason == "gripper_no_state"
    f.update_measured(gripper=0.02)
    assert f.filter_gripper(0.025, 0.1).status == "accepted"


# --- counting and logging ---------------------------------------------------------------------------------------


def test_counts_are_exact_and_logging_is_rate_limited(arm, home, caplog):
    f = make(arm, SafetyConfig(log_period=60.0), home)
    bad = home.copy()
    bad[2] = np.inf
    with caplog.at_level(logging.WARNING, logger="safety_filter"):
        for i in range(50):
            f.filter_arm(bad, 0.01 * i)
        for _ in range(3):
            f.filter_arm(home + 10, 1.0)
    assert f.counters["rejected"] == {NON_FINITE: 50, POSITION_LIMIT: 3}
    lines = [r.getMessage() for r in caplog.records if "rejected command" in r.getMessage()]
    assert len(lines) == 2  # one per reason within log_period
    assert "[non_finite]" in lines[0] and "[position_limit]" in lines[1]
    status = json.loads(json.dumps(f.status()))
    assert status["rejected_total"] == 53 and status["state"] == HOLD
    assert status["counters"]["rejected"] == {NON_FINITE: 50, POSITION_LIMIT: 3}


# --- robots and configs -----------------------------------------------------------------------------------------


def test_quadruped_without_gripper_or_ee_site(node_config, caplog):
    quad = load_robot_spec("quad12")
    with caplog.at_level(logging.WARNING, logger="safety_filter"):
        f = SafetyFilter(quad, node_config)  # quad12's spec has no ee_site, so no workspace box
    assert f.box is None and f.ee_position(quad.default_positions) is None
    q0 = np.array(quad.default_positions)
    np.testing.assert_allclose(f.max_step, np.array([j.velocity for j in quad.joints]) / quad.control_rate_hz)
    f.update_measured(q0)
    assert f.filter_arm(q0 + 0.1, 0.0).status == "accepted"
    hips = q0 + np.tile(dq(0, 0.9, 0), 4)  # hip flexion +0.9 rad in 20 ms
    d = f.filter_arm(hips, 0.02)
    assert d.status == "clamped" and np.all(np.abs(d.command - (q0 + 0.1)) <= f.max_step + 1e-9)
    knee = q0.copy()
    knee[2] = -0.5  # above the knee's upper limit of -0.6
    assert f.filter_arm(knee, 0.04).reason == POSITION_LIMIT
    assert f.filter_arm(q0, 0.06).status != "rejected"
    assert f.filter_gripper(0.01, 0.1).reason == "gripper_no_gripper"
    out = f.tick(1.0, q0)
    assert f.state == HOLD and out.gripper is None and out.arm is not None


def test_config_validation():
    with pytest.raises(ValueError, match="max_step"):
        SafetyConfig.from_params({"max_step": -0.1})
    with pytest.raises(ValueError, match=r"max_step\[1\]"):
        SafetyConfig.from_params({"max_step": [0.1, "a"]})
    with pytest.raises(ValueError, match="watchdog_timeout"):
        SafetyConfig.from_params({"watchdog_timeout": 0})
    cfg = SafetyConfig.from_params({"max_step": [0.1, 0.2], "watchdog_timeout": 0.25})
    assert cfg.max_step == (0.1, 0.2) and cfg.watchdog_timeout == 0.25


def test_shipped_box_holds_home_and_the_lift_experts_commands(arm, node_config, home):
    """The configured box contains the home pose and every joint target the lift expert commands."""
    import gymnasium as gym

    import realloop.sim  # noqa: F401 - registers the tasks
    from realloop.sim.experts import make_expert

    f = make(arm, node_config, home)
    p = f.ee_position(home)
    assert np.all(p >= f.box[0]) and np.all(p <= f.box[1])
    env = gym.make("realloop/ArmLift-v0", control_mode="joint_position")
    try:
        n = 0
        for seed in (0, 1):
            obs, _ = env.reset(seed=seed)
            expert = make_expert(env)
            expert.reset(np.random.default_rng(seed))
            f = make(arm, node_config, env.unwrapped.robot.joint_positions())
            t, done = 0.0, False
            while not done:
                action = expert.act(obs)
                d = f.filter_arm(action[:6], t, env.unwrapped.robot.joint_positions())
                assert not d.rejected, d.reason
                obs, _, terminated, truncated, _ = env.step(action)
                done, t, n = terminated or truncated, t + 0.1, n + 1
    finally:
        env.close()
    assert n > 10
