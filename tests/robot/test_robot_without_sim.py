"""A robot the sim knows nothing about: a 7-joint ros2_control arm described by a spec YAML without an MJCF and a
graph YAML, no Python. A policy trained on its joint data runs on the real-arm policy graph (policy runner ->
safety filter -> robot, recorder) against a stand-in robot (the driver node's kinematic driver), over Cyclone DDS
between real processes; the recorder writes what went to the robot."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import node_env

from realloop.data import Dataset
from realloop.robot.drivers.kinematic import KinematicDriver
from realloop.robot.msgs import Float64MultiArray, JointState, String
from realloop.robot.node import Node
from realloop.robot.observation import StateBuilder, robot_groups, robot_readings
from realloop.robot.spec import RobotSpecError, load_robot_spec
from realloop.robot.targets import JointTargets

JOINTS = [f"joint{i}" for i in range(1, 8)]
ARM7 = {
    "name": "arm7",
    "control_rate_hz": 10,
    "control_modes": ["joint_position", "joint_delta"],
    "joints": [{"name": n, "position": [-2.5, 2.5], "velocity": 1.5, "effort": 40.0} for n in JOINTS],
    "gripper": {
        "joints": ["finger"],
        "position": [0.0, 0.05],
        "velocity": 0.1,
        "effort": 20.0,
        "default": 0.05,
        "controller": "hand_controller",
    },
    "default_pose": dict.fromkeys(JOINTS, 0.0),
    "command": {"controller": "arm7_controller"},
}
STATE_NAMES = [f"{n}.pos" for n in JOINTS] + [f"{n}.vel" for n in JOINTS] + ["gripper.pos"]
TARGET_NAMES = ["target.x", "target.y", "target.z"]
TARGET = np.array([0.4, 0.1, 0.2])


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "arm7.yaml"
    path.write_text(yaml.safe_dump(ARM7, sort_keys=False))
    return path


def _wave(t: np.ndarray, phase: float) -> np.ndarray:
    """Joint targets of a slow wave (rad): well inside the limits and the velocity limit."""
    return 0.4 * np.sin(0.8 * t[:, None] + phase + np.arange(7)[None, :] * 0.3)


def _dataset(path: Path, spec_path: Path) -> None:
    """Eight 6 s episodes of the arm following a wave, at 10 Hz, with a 3-D target that a perception node would
    publish (``observation.environment_state``): what its recorder would hold."""
    spec = load_robot_spec(spec_path)
    features = {
        "observation.state": {"dtype": "float32", "shape": [15], "names": STATE_NAMES, "rate_hz": 10},
        "observation.environment_state": {"dtype": "float32", "shape": [3], "names": TARGET_NAMES, "rate_hz": 10},
        "action": {"dtype": "float32", "shape": [8], "names": [*JOINTS, "gripper"], "rate_hz": 10},
    }
    with Dataset.create(path, features, robot={"name": spec.name}) as ds:
        for ep in range(8):
            t = np.arange(60) / 10.0
            q_cmd = _wave(t, ep * 0.7)
            q = np.vstack([np.zeros((1, 7)), q_cmd[:-1]])  # the arm reaches each target by the next step
            v = np.gradient(q, 0.1, axis=0)
            g = np.full((60, 1), 0.05)
            writer = ds.begin_episode(task="wave", source="teleop")
            writer.extend("observation.state", t, np.hstack([q, v, g]).astype(np.float32))
            writer.extend("action", t, np.hstack([q_cmd, g]).astype(np.float32))
            writer.extend("observation.environment_state", t, np.tile(TARGET, (60, 1)).astype(np.float32))
            writer.commit(success=True)


def test_a_spec_without_mjcf_describes_a_real_robot_and_refuses_mirror_only_keys(tmp_path: Path) -> None:
    spec = load_robot_spec(_spec(tmp_path))
    assert spec.mjcf is None and spec.workspace is None and spec.gripper.actuator is None
    with pytest.raises(RobotSpecError, match="has no `mjcf`: the MuJoCo mirror needs"):
        spec.require_mjcf("the MuJoCo mirror")
    for key, value, msg in (
        ("ee_site", "tool0", "ee_site is a site of the MJCF"),
        ("home_keyframe", "home", "a keyframe is part of the MJCF"),
        ("workspace", {"min": [0, 0, 0], "max": [1, 1, 1]}, "needs an `ee_site`"),
    ):
        bad = tmp_path / f"bad_{key}.yaml"
        bad.write_text(yaml.safe_dump({**ARM7, key: value}))
        with pytest.raises(RobotSpecError, match=msg):
            load_robot_spec(bad)


def test_joint_targets_and_the_state_builder_need_only_the_spec(tmp_path: Path) -> None:
    spec = load_robot_spec(_spec(tmp_path))
    targets = JointTargets(spec, "joint_delta", rate_hz=10)
    assert targets.names == [f"{n}.delta" for n in JOINTS] + ["gripper"]
    q, g = targets.targets(np.array([1.0, -0.05, 0, 0, 0, 0, 0, 0.2]))
    assert q[0] == pytest.approx(0.15) and q[1] == pytest.approx(-0.05) and g == pytest.approx(0.05)  # bounded
    with pytest.raises(ValueError, match="NaN"):
        targets.targets(np.full(8, np.nan))
    with pytest.raises(ValueError, match="needs a model of the robot"):
        JointTargets(spec, "ee_delta", rate_hz=10)
    groups = robot_groups(spec, ee=False)
    build = StateBuilder(["gripper.pos", "joint3.pos", "joint1.vel"], groups)
    state = build(robot_readings(np.arange(7.0), np.arange(7.0) + 10, 0.03))
    np.testing.assert_allclose(state, [0.03, 2.0, 10.0])
    with pytest.raises(ValueError, match=r"ee\.\* entries need forward kinematics"):
        StateBuilder(["ee.x"], groups)


def test_kinematic_driver_tracks_targets_within_the_velocity_limit(tmp_path: Path) -> None:
    spec = load_robot_spec(_spec(tmp_path))
    now = [0.0]
    driver = KinematicDriver(spec, time_constant=0.0, clock=lambda: now[0])
    driver.connect()
    driver.write_command(np.full(7, 1.0), 0.0)
    now[0] = 0.5
    r = driver.read_state()
    assert r.names == [*JOINTS, "finger"]
    np.testing.assert_allclose(r.position[:7], 0.75)  # 1.5 rad/s for 0.5 s
    assert r.position[7] == pytest.approx(0.0)  # 0.05 m at 0.1 m/s: there
    with pytest.raises(Exception, match="6 joint positions, the robot has 7"):
        driver.write_command(np.zeros(6))


def test_a_new_arm_runs_the_real_arm_policy_graph_against_a_stand_in_robot(
    tmp_path: Path, domain_id: int, test_node: Node
) -> None:
    from realloop.policies.train import compose_config, train

    spec_path = _spec(tmp_path)
    data = tmp_path / "arm7_demos.zarr"
    _dataset(data, spec_path)
    run = tmp_path / "run"
    train(
        compose_config(
            [
                "policy=bc",
                "policy.hidden_dims=[64,64]",
                "policy.obs_keys=[observation.state,observation.environment_state]",
                f"dataset.path={data}",
                "steps=200",
                "batch_size=32",
                f"out={run}",
                "device=cpu",
                "log_every=100",
                "val_every=100",
                "checkpoint_every=200",
            ]
        ),
        progress=False,
    )

    recording = tmp_path / "arm7_policy.zarr"
    graph = {
        "name": "arm7_policy",
        "description": "arm7 (ros2_control topics) + policy runner -> safety filter, recorder",
        "domain_id": None,
        "localhost_only": True,
        "nodes": {
            "robot": {"kind": "driver", "params": {"robot": str(spec_path), "driver": {"kind": "kinematic"}}},
            "safety_filter": {"kind": "safety_filter", "params": {"robot": str(spec_path), "input_prefix": "/unsafe"}},
            "recorder": {
                "kind": "recorder",
                "params": {
                    "dataset": str(recording),
                    "robot": str(spec_path),
                    "task": "wave",
                    "source": "policy",
                    "auto_start": True,
                    "streams": {
                        "action": {
                            "topic": "/arm7_controller/commands",
                            "gripper_topic": "/hand_controller/commands",
                        },
                        "front": None,
                        "wrist": None,
                    },
                },
            },
            "policy_runner": {
                "kind": "policy_runner",
                "params": {
                    "task": None,
                    "robot": str(spec_path),
                    "policy": {"kind": "checkpoint", "path": str(run)},
                    "command_prefix": "/unsafe",
                    "max_episode_s": 4.0,
                    "report_success": True,
                    "topics": {"environment_state": "/perception/target"},  # the numeric feature's topic
                },
            },
        },
    }
    graph_path = tmp_path / "arm7_policy.yaml"
    graph_path.write_text(yaml.safe_dump(graph, sort_keys=False))

    commands: list[np.ndarray] = []
    states: list[JointState] = []
    runner: list[dict] = []
    test_node.create_subscription(
        "/arm7_controller/commands", Float64MultiArray, lambda m: commands.append(np.array(m.data))
    )
    test_node.create_subscription("/joint_states", JointState, states.append, qos="sensor")
    test_node.create_subscription(
        "/policy_runner/status", String, lambda m: runner.append(json.loads(m.data)), qos="latched"
    )
    target = test_node.create_publisher("/perception/target", Float64MultiArray)
    test_node.create_timer(0.05, lambda: target.publish(Float64MultiArray(data=TARGET)))  # a perception node
    proc = subprocess.Popen(
        [sys.executable, "-m", "realloop.robot.launch.cli", f"graph={graph_path}"],
        cwd=tmp_path,
        env=node_env(domain_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        done = test_node.spin_until(lambda: bool(runner) and runner[-1]["state"] == "timeout", 120)
        test_node.spin(1.5)  # the recorder commits the failed (timed-out) episode
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert done, (runner[-1:], out[-3000:])
    assert runner[-1]["steps"] >= 20, runner[-1]  # 4 s at 10 Hz, less what start-up ate
    # the policy's commands reached the robot through the filter: the robot moved and rests at the last one
    assert len(commands) >= 20, out[-3000:]
    assert all(c.shape == (7,) and np.all(np.abs(c) < 2.5) for c in commands)
    assert np.ptp(np.array(commands), axis=0).max() > 0.01, "the policy never moved the arm"
    np.testing.assert_allclose(states[-1].position[:7], commands[-1], atol=1e-3)
    with Dataset.open(recording) as ds:
        assert len(ds) == 1, out[-3000:]
        ep = ds.episode(0)
        assert ep.success is False and ep.meta["robot"] == "arm7"
        action = ep.stream("action")
        assert action.feature.shape == (8,) and len(action) >= 20  # the arm's 7 targets and the gripper
        assert action.feature.names == (*JOINTS, "gripper")
        state = ep.stream("observation.state")
        assert state.feature.names == tuple(STATE_NAMES)  # the robot's state, as the policy saw it
        assert len(state) > 100

    # the same runner without the target's topic: one line naming the feature and the parameter, before acting
    alone = subprocess.run(
        [sys.executable, "-m", "realloop.robot.nodes", "policy_runner", "task=null", f"robot={spec_path}",
         "policy.kind=checkpoint", f"policy.path={run}", "topics.environment_state=null"],
        env=node_env(domain_id), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert alone.returncode == 2, alone.stderr[-2000:]
    errors = [line for line in alone.stderr.splitlines() if line.startswith("[ERROR]")]
    assert len(errors) == 1 and "sees ['observation.environment_state']" in errors[0], alone.stderr
    assert "topics.<name>=/topic for observation.<name>" in alone.stderr
