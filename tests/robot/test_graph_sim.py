"""The sim graphs end to end, as real processes on real DDS: the sim mirror recorded by the recorder, and a
scripted policy lifting the cube through the safety filter while the recorder records it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import node_env

from realloop.data import Dataset
from realloop.data.verify import verify
from realloop.robot.msgs import String
from realloop.robot.node import Node


def _status_watch(node: Node, topic: str) -> Callable[[], dict | None]:
    last: list[dict] = []
    node.create_subscription(topic, String, lambda m: last.append(json.loads(m.data)), qos="latched")
    return lambda: last[-1] if last else None


def _check_stream_coverage(ds: Dataset, name: str, rate_hz: float, min_fraction: float = 0.99) -> int:
    """Stamps strictly increase, and at least `min_fraction` of the frames the sim published within the
    episode's span (it publishes on a fixed sim-time schedule) are in the dataset."""
    ep = ds.episode(len(ds) - 1)
    t = ep.stream(name).timestamps
    assert np.all(np.diff(t) > 0), f"{name}: stamps not strictly increasing"
    expected = int(np.floor((t[-1] - t[0]) * rate_hz + 1e-6)) + 1
    assert len(t) >= min_fraction * expected, f"{name}: {len(t)} of {expected} frames"
    return len(t)


def test_sim_mirror_to_recorder(start_node, test_node: Node, tmp_path: Path) -> None:
    path = tmp_path / "mirror.zarr"
    start_node("sim_mirror", "task=arm_lift", "seed=0")  # both cameras, 320x240 JPEG at 30 fps, state at 100 Hz
    rec = start_node("recorder", f"dataset={path}", "auto_start=true", "source=sim", "task=lift the red cube")
    status = _status_watch(test_node, "/recorder/status")
    assert test_node.spin_until(
        lambda: (s := status()) is not None and s["state"] == "recording" and (s["elapsed_s"] or 0) >= 6.0, 90
    ), status()
    cmd = test_node.create_publisher("/recorder/command", String)
    for _ in range(10):
        cmd.publish(String("success"))
        if test_node.spin_until(lambda: (s := status()) is not None and s["last"] is not None, 2.0):
            break
    last = status()["last"]
    assert last["outcome"] == "committed" and last["success"] is True, status()
    rec.send_signal(signal.SIGINT)
    assert rec.wait(20) == 0, rec.log_text()

    ds = Dataset.open(path)
    assert len(ds) == 1
    ep = ds.episode(0)
    assert ep.meta["source"] == "sim" and ep.success is True
    n_state = _check_stream_coverage(ds, "observation.state", 100.0)
    n_front = _check_stream_coverage(ds, "observation.images.front", 30.0)
    n_wrist = _check_stream_coverage(ds, "observation.images.wrist", 30.0)
    assert n_state >= 500 and min(n_front, n_wrist) >= 150  # several seconds of data
    assert ep.stream("observation.images.front")[0].shape == (240, 320, 3)
    report = ep.meta["attributes"]["recorder"]["streams"]
    assert report["observation.images.front"]["dead"] is False
    assert verify(path).ok


def test_scripted_policy_lifts_the_cube_through_the_safety_filter(
    domain_id: int, test_node: Node, tmp_path: Path
) -> None:
    """The sim_arm_policy graph as shipped (configs/graph), started by realloop-launch."""
    path = tmp_path / "policy.zarr"
    overrides = [
        f"domain_id={domain_id}",
        f"nodes.recorder.params.dataset={path}",
        "nodes.sim_mirror.params.seed=5",
        "nodes.sim_mirror.params.cameras=[front]",
        "nodes.recorder.params.streams.wrist=null",
    ]
    launch = subprocess.Popen(
        [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_arm_policy", *overrides],
        cwd=tmp_path,
        env=node_env(domain_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sim = _status_watch(test_node, "/sim/status")
    rec = _status_watch(test_node, "/recorder/status")
    safety = _status_watch(test_node, "/safety/status")
    try:
        ok = test_node.spin_until(lambda: (r := rec()) is not None and r["last"] is not None, 120)
    finally:
        launch.send_signal(signal.SIGINT)
        out, _ = launch.communicate(timeout=60)
    assert ok, out[-3000:]
    assert sim()["success"] is True, out[-3000:]
    assert rec()["last"]["outcome"] == "committed" and rec()["last"]["success"] is True
    # once the policy stops on success the filter's watchdog holds the arm: "hold" is fine, rejections are not
    assert safety() is not None and safety()["state"] in ("ok", "hold") and safety()["rejected_total"] == 0
    assert launch.returncode == 130, out[-3000:]

    ds = Dataset.open(path)
    assert len(ds) == 1 and ds.episode(0).success is True and ds.episode(0).meta["source"] == "policy"
    actions = ds.episode(0).stream("action").read()
    assert len(actions) >= 10  # the filtered commands that drove the arm were recorded
    assert verify(path).ok


def test_sim_mirror_runs_faster_than_real_time_on_sim_time(start_node, test_node: Node) -> None:
    from realloop.robot.msgs import Clock

    clock: list[float] = []
    test_node.create_subscription("/clock", Clock, lambda m: clock.append(m.clock.to_sec()), qos="clock")
    start_node("sim_mirror", "task=arm_reach", "realtime=false", "cameras=[]")
    assert test_node.spin_until(lambda: bool(clock), 60)
    t0, w0 = clock[-1], time.monotonic()
    test_node.spin(3.0)
    sim_elapsed, wall = clock[-1] - t0, time.monotonic() - w0
    assert clock[0] < 1e3  # sim time starts at 0, not at the wall clock
    assert sim_elapsed > 1.5 * wall, (sim_elapsed, wall)  # 100 Hz ticks of 5 substeps run far faster than real time


def test_sim_graphs_run_on_their_own_domain() -> None:
    from realloop.robot.launch.graph import load_graph

    for name in ("sim_arm_teleop", "sim_arm_policy", "sim_quad_teleop"):
        assert load_graph(name).domain_id == 42  # never the robot's ROS_DOMAIN_ID (docs/ros2.md)


def test_sim_mirror_randomizes_each_episode_from_its_seed(domain_id: int) -> None:
    """randomize=true: each /sim/reset draws the task's physics and camera poses from the episode's seed; the
    same seed gives the same draw, and the clock runs on across resets."""
    from realloop.robot.nodes.sim_mirror import SimMirror

    def draw(mirror: SimMirror) -> np.ndarray:
        m = mirror.model
        return np.concatenate([m.geom_friction[:, 0], m.body_mass, m.cam_pos.ravel(), m.cam_quat.ravel()])

    plain = SimMirror(params={"task": "arm_lift", "seed": 3, "cameras": [], "robot_check_s": 0}, domain_id=domain_id)
    nominal = draw(plain)
    plain.close()
    mirror = SimMirror(
        params={"task": "arm_lift", "seed": 3, "cameras": [], "robot_check_s": 0, "randomize": True},
        domain_id=domain_id,
    )
    try:
        first = draw(mirror)
        assert not np.allclose(first, nominal)
        t0 = mirror.sim_now()
        for _ in range(5):
            mirror.tick()
        mirror._on_reset(String("4"))
        second = draw(mirror)
        assert not np.allclose(second, first)
        assert mirror.sim_now() >= t0 + 5 * mirror.tick_dt - 1e-9  # stamps never go back on a reset
        mirror._on_reset(String("3"))
        assert np.allclose(draw(mirror), first)
    finally:
        mirror.close()
