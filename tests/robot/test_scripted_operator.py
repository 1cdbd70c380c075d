"""The scripted operator: its Joy messages read back through the teleop's mapper, and demonstrations recorded
through the whole teleop graph (real processes over DDS, real MuJoCo, real zarr)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import node_env

from realloop.data import Dataset
from realloop.data.verify import verify
from realloop.robot.teleop.gamepad import LAYOUTS, JoyMapper
from realloop.robot.teleop.intents import Event
from realloop.sim.operator import JoyWriter, LiftPilot


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_joy_writer_reads_back_through_the_teleop_mapper(layout: str) -> None:
    writer, mapper = JoyWriter(layout, deadzone=0.1), JoyMapper(layout, deadzone=0.1)
    motion = {"x": 0.5, "y": -0.25, "z": 1.0, "yaw": -0.8}
    intent = mapper.update(writer.message(0.0, motion, press=["start"]), 0.0)
    got = dict(zip(("x", "y", "z", "roll", "pitch", "yaw"), intent.motion, strict=True))
    for channel, value in motion.items():
        assert got[channel] == pytest.approx(value, abs=1e-6), channel
    assert got["roll"] == got["pitch"] == 0.0
    assert intent.events == [Event.START]
    # below the dead zone in the message's units is still the value asked for: the writer adds the dead zone
    small = mapper.update(writer.message(0.1, {"x": 0.05}), 0.1)
    assert small.motion[0] == pytest.approx(0.05, abs=1e-6)
    # the opening trigger opens, the closing one closes; a held button fires once (a rising edge)
    assert mapper.update(writer.message(0.2, {}, gripper=1.0), 0.2).gripper == pytest.approx(1.0)
    assert mapper.update(writer.message(0.3, {}, gripper=-0.5), 0.3).gripper == pytest.approx(-0.5)
    assert mapper.update(writer.message(0.4, {}, press=["start"]), 0.4).events == [Event.START]
    assert mapper.update(writer.message(0.5, {}, press=["start"]), 0.5).events == []


def _drive(pilot: LiftPilot, ticks: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """The pilot on an ideal servo (the end effector moves as commanded) over a cube at yaw 0.2 + 90 degrees: the
    gripper grasps the cube when it closes with the cube between the fingers, and carries it while closed."""
    cube, ee = np.array([0.45, 0.05, 0.025]), np.array([0.35, 0.0, 0.16])
    phases, presses = [], []
    opening, yaw, holding = 0.04, 0.0, False
    for _ in range(ticks):
        motion, press = pilot.step(ee, yaw, cube, 0.2 + np.pi / 2)  # any face pair will do
        ee = ee + 0.1 / 20 * np.array([motion.get("x", 0.0), motion.get("y", 0.0), motion.get("z", 0.0)])
        yaw += 1.0 / 20 * motion.get("yaw", 0.0)
        presses += press
        if "gripper" in press:
            # off along the gripper's x axis by more than the cube's half width + a finger's: closes on nothing
            across = abs(np.dot(ee[:2] - cube[:2], [np.cos(yaw), np.sin(yaw)]))
            holding = not holding and opening > 0.03 and across < 0.035 and ee[2] < 0.04
            opening = 0.025 if holding else 0.0 if opening > 0.03 else 0.04
        if holding:
            cube = np.array([ee[0], ee[1], ee[2] - 0.002])  # carried
        phases.append(pilot.phase)
    changes = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    return changes, presses, ee, np.array([yaw, *cube])


def test_lift_pilot_goes_through_its_phases_from_what_it_sees() -> None:
    pilot = LiftPilot(rate_hz=20, linear_speed=0.1, angular_speed=1.0)
    pilot.reset(np.random.default_rng(3))
    changes, presses, ee, (yaw, *cube) = _drive(pilot, 400)
    assert changes == ["wait", "hover", "descend", "close", "lift"]
    assert presses == ["gripper"]
    assert ee[2] > 0.16 and cube[2] > 0.13  # lifted the cube towards its goal height
    assert yaw == pytest.approx(0.2, abs=0.05)  # turned the short way to the nearest face pair


def test_lift_pilot_misses_on_purpose_notices_the_empty_gripper_and_grasps_again() -> None:
    pilot = LiftPilot(rate_hz=20, linear_speed=0.1, angular_speed=1.0, miss_prob=1.0)
    pilot.reset(np.random.default_rng(3))
    assert 0.04 <= abs(pilot.miss) <= 0.05
    changes, presses, _, (_, *cube) = _drive(pilot, 900)
    assert changes == ["wait", "hover", "descend", "close", "lift", "hover", "descend", "close", "lift"]
    assert presses == ["gripper"] * 3  # closed beside it, opened once it noticed, closed on it
    assert pilot.attempts == 1 and cube[2] > 0.13  # the second grasp, centred, carried the cube up
    with pytest.raises(ValueError, match=r"miss_prob=1\.5 is not a probability"):
        LiftPilot(rate_hz=20, linear_speed=0.1, angular_speed=1.0, miss_prob=1.5)


@pytest.mark.slow
def test_operator_records_demonstrations_through_teleop_and_the_safety_filter(domain_id: int, tmp_path: Path) -> None:
    """sim_arm_demos as shipped: operator -> /joy -> teleop -> /unsafe -> safety filter -> sim -> recorder, two
    episodes with a sim reset between them; the launch ends when the operator is done."""
    path, summary = tmp_path / "demos.zarr", tmp_path / "operator.json"
    overrides = [
        f"domain_id={domain_id}",
        f"nodes.recorder.params.dataset={path}",
        "nodes.scripted_operator.params.episodes=2",
        "nodes.scripted_operator.params.seed=7",
        f"nodes.scripted_operator.params.summary={summary}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_arm_demos", *overrides],
        cwd=tmp_path, env=node_env(domain_id), capture_output=True, text=True, timeout=240,
    ).stdout  # fmt: skip
    result = json.loads(summary.read_text())
    assert [e["seed"] for e in result["episodes"]] == [7, 8], out[-3000:]
    assert result["successes"] == 2, out[-3000:]
    assert "scripted_operator exited (0)" in out

    ds = Dataset.open(path)
    assert len(ds) == 2 and all(ds.episode(i).success for i in ds.episode_indices)
    assert ds.features["action"].shape == (7,)  # arm targets, then the gripper: what realloop-collect writes
    ends = []
    for i in ds.episode_indices:
        ep = ds.episode(i)
        assert ep.meta["source"] == "teleop"
        for name in ("observation.state", "action", "observation.images.front", "observation.images.wrist"):
            assert len(ep.stream(name)) > 5, (i, name)  # every camera keeps streaming after the sim reset
        t = ep.stream("observation.state").timestamps
        assert np.all(np.diff(t) > 0)
        ends.append((t[0], t[-1]))
        gripper = ep.stream("action").read()[:, 6]
        assert gripper.max() > 0.03 and gripper.min() < 0.03  # opened, then closed on the cube
    assert ends[1][0] > ends[0][1]  # the sim clock runs on across a reset
    assert verify(path).ok


@pytest.mark.slow
def test_operator_walks_the_quadruped_and_the_recorder_records_it(domain_id: int, tmp_path: Path) -> None:
    """sim_quad_demos as shipped: operator -> /joy -> teleop -> /cmd_vel -> the mirror's gait, recorded with the
    velocity command as the action; walks end with stop (success unknown)."""
    path, summary = tmp_path / "quad.zarr", tmp_path / "operator.json"
    overrides = [
        f"domain_id={domain_id}",
        f"nodes.recorder.params.dataset={path}",
        "nodes.scripted_operator.params.episodes=2",
        "nodes.scripted_operator.params.episode_s=3.0",
        f"nodes.scripted_operator.params.summary={summary}",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_quad_demos", *overrides],
        cwd=tmp_path, env=node_env(domain_id), capture_output=True, text=True, timeout=240,
    ).stdout  # fmt: skip
    result = json.loads(summary.read_text())
    assert [e["outcome"] for e in result["episodes"]] == ["stop", "stop"], out[-3000:]
    ds = Dataset.open(path)
    assert len(ds) == 2, out[-3000:]
    assert ds.features["action"].shape == (6,) and ds.features["observation.images.head"].shape[2] == 3
    for i in ds.episode_indices:
        ep = ds.episode(i)
        assert ep.success is None and ep.meta["source"] == "teleop"
        twist = ep.stream("action").read()
        assert twist[:, 0].max() > 0.1  # walked forward
        assert len(ep.stream("observation.images.head")) > 10 and len(ep.stream("observation.state")) > 100
    assert verify(path).ok
