"""rosbag2 round trip: a bag written by `rosbags` (mcap and sqlite3) reads back through our codec unchanged, and
its raw CDR bytes replayed over real DDS by another process (``Publisher.publish_raw``) arrive as the same
messages. (data/convert/rosbag2.py imports bags into datasets with rosbags' own deserialiser; this tests the
robot-side codec and transport on bag bytes.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from test_msgs import assert_same

from realloop.robot.msgs import REGISTRY, decode, encode
from realloop.robot.node import Node
from realloop.robot.transport import QoS

CHILD = Path(__file__).with_name("bag_replay_child.py")
REPLAY_QOS = QoS(reliable=True, depth=1000, transient_local=True)  # as the child publishes
CASES = {"mcap": (StoragePlugin.MCAP, Stores.ROS2_JAZZY), "sqlite3": (StoragePlugin.SQLITE3, Stores.ROS2_HUMBLE)}


def bag_messages(ts: Any, seed: int = 0) -> list[tuple[str, str, int, Any]]:
    """(topic, type, receive time ns, rosbags message) for a short robot recording, in time order."""
    T = ts.types  # rosbags' message classes by type name
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_000_000_000_000

    def header(t_ns: int, frame: str) -> Any:
        return T["std_msgs/msg/Header"](T["builtin_interfaces/msg/Time"](t_ns // 10**9, t_ns % 10**9), frame)

    def vec(v: np.ndarray) -> Any:
        return T["geometry_msgs/msg/Vector3"](*map(float, v))

    joints = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_1", "wrist_2", "wrist_3", "finger_left"]
    out: list[tuple[str, str, int, Any]] = []
    for i in range(60):  # joint states at 500 Hz, with an odd joint count and an empty effort
        t = t0 + i * 2_000_000
        out.append(
            (
                "/joint_states",
                "sensor_msgs/msg/JointState",
                t,
                T["sensor_msgs/msg/JointState"](
                    header(t, ""), joints, rng.normal(size=7), rng.normal(size=7), np.zeros(0)
                ),
            )
        )
    for i in range(40):
        t = t0 + i * 3_000_000
        out.append(
            (
                "/clock",
                "rosgraph_msgs/msg/Clock",
                t,
                T["rosgraph_msgs/msg/Clock"](T["builtin_interfaces/msg/Time"](t // 10**9, t % 10**9)),
            )
        )
    for i in range(6):  # cameras at 30 Hz; 37 px wide so the row step is odd
        t = t0 + i * 33_333_333
        frame = rng.integers(0, 256, size=(24, 37, 3), dtype=np.uint8)
        out.append(
            (
                "/wrist/image_raw",
                "sensor_msgs/msg/Image",
                t,
                T["sensor_msgs/msg/Image"](
                    header(t, "wrist_camera"), 24, 37, "bgr8", 0, 37 * 3, frame.reshape(-1).copy()
                ),
            )
        )
        ok, jpeg = cv2.imencode(".jpg", frame)
        assert ok
        out.append(
            (
                "/wrist/image_raw/compressed",
                "sensor_msgs/msg/CompressedImage",
                t,
                T["sensor_msgs/msg/CompressedImage"](
                    header(t, "wrist_camera"), "bgr8; jpeg compressed bgr8", jpeg.reshape(-1)
                ),
            )
        )
        out.append(
            (
                "/wrist/camera_info",
                "sensor_msgs/msg/CameraInfo",
                t,
                T["sensor_msgs/msg/CameraInfo"](
                    header(t, "wrist_camera"),
                    24,
                    37,
                    "plumb_bob",
                    rng.normal(size=5),
                    rng.normal(size=9),
                    np.eye(3).ravel(),
                    rng.normal(size=12),
                    0,
                    0,
                    T["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False),
                ),
            )
        )
    for i in range(20):
        t = t0 + i * 10_000_000
        out.append(
            (
                "/joy",
                "sensor_msgs/msg/Joy",
                t,
                T["sensor_msgs/msg/Joy"](
                    header(t, "joy"),
                    rng.uniform(-1, 1, size=5).astype(np.float32),
                    rng.integers(0, 2, size=11, dtype=np.int32),
                ),
            )
        )
        out.append(
            (
                "/imu",
                "sensor_msgs/msg/Imu",
                t,
                T["sensor_msgs/msg/Imu"](
                    header(t, "imu"),
                    T["geometry_msgs/msg/Quaternion"](0.0, 0.0, 0.0, 1.0),
                    rng.normal(size=9),
                    vec(rng.normal(size=3)),
                    rng.normal(size=9),
                    vec(rng.normal(size=3)),
                    rng.normal(size=9),
                ),
            )
        )
    for i in range(10):
        t = t0 + i * 100_000_000
        out.append(
            (
                "/cmd_vel",
                "geometry_msgs/msg/TwistStamped",
                t,
                T["geometry_msgs/msg/TwistStamped"](
                    header(t, "base"), T["geometry_msgs/msg/Twist"](vec(rng.normal(size=3)), vec(rng.normal(size=3)))
                ),
            )
        )
        dim = T["std_msgs/msg/MultiArrayDimension"]("joints", 7, 7)
        out.append(
            (
                "/arm_controller/commands",
                "std_msgs/msg/Float64MultiArray",
                t,
                T["std_msgs/msg/Float64MultiArray"](T["std_msgs/msg/MultiArrayLayout"]([dim], 0), rng.normal(size=7)),
            )
        )
    for i in range(3):
        t = t0 + i * 500_000_000
        points = [
            T["trajectory_msgs/msg/JointTrajectoryPoint"](
                rng.normal(size=6),
                rng.normal(size=6) if k % 2 else np.zeros(0),
                np.zeros(0),
                np.zeros(0),
                T["builtin_interfaces/msg/Duration"](k, 250_000_000 * k),
            )
            for k in range(i + 1)
        ]
        out.append(
            (
                "/arm_controller/joint_trajectory",
                "trajectory_msgs/msg/JointTrajectory",
                t,
                T["trajectory_msgs/msg/JointTrajectory"](header(t, "base"), joints[:6], points),
            )
        )
    out.sort(key=lambda m: m[2])
    return out


def write_bag(path: Path, storage: str, messages: list[tuple[str, str, int, Any]]) -> dict[str, list[bytes]]:
    """Write with rosbags; returns the bytes rosbags serialised, per topic in order."""
    plugin, store = CASES[storage]
    ts = get_typestore(store)
    written: dict[str, list[bytes]] = defaultdict(list)
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns: dict[str, Any] = {}
        for topic, typ, t, msg in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, typ, typestore=ts)
            raw = bytes(ts.serialize_cdr(msg, typ, little_endian=True))
            w.write(conns[topic], t, raw)
            written[topic].append(raw)
    return written


def rosbags_by_topic(messages: list[tuple[str, str, int, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for topic, _typ, _t, msg in messages:
        out[topic].append(msg)
    return out


@pytest.mark.parametrize("storage", sorted(CASES))
def test_bag_reads_back_through_codec(tmp_path: Path, storage: str) -> None:
    messages = bag_messages(get_typestore(CASES[storage][1]))
    written = write_bag(tmp_path / "bag", storage, messages)
    expected = rosbags_by_topic(messages)
    seen: dict[str, int] = defaultdict(int)
    with Reader(tmp_path / "bag") as reader:
        assert {c.topic: c.msgtype for c in reader.connections} == {m[0]: m[1] for m in messages}
        times = []
        for conn, t, raw in reader.messages():
            i = seen[conn.topic]
            raw = bytes(raw)
            assert raw == written[conn.topic][i]
            msg = decode(REGISTRY[conn.msgtype], raw)
            assert_same(msg, expected[conn.topic][i], f"{conn.topic}[{i}]")
            assert encode(msg) == raw  # and back to the identical bytes
            seen[conn.topic] += 1
            times.append(t)
    assert dict(seen) == {k: len(v) for k, v in expected.items()}
    assert times == sorted(m[2] for m in messages)


@pytest.mark.parametrize("storage", sorted(CASES))
def test_bag_replays_over_dds(tmp_path: Path, storage: str, domain_id: int, test_node: Node) -> None:
    messages = bag_messages(get_typestore(CASES[storage][1]), seed=1)
    written = write_bag(tmp_path / "bag", storage, messages)
    expected = rosbags_by_topic(messages)
    topics = {m[0]: m[1] for m in messages}

    decoded: dict[str, list[Any]] = defaultdict(list)
    raw_seen: dict[str, list[bytes]] = defaultdict(list)
    for topic, typ in topics.items():
        test_node.create_subscription(topic, REGISTRY[typ], decoded[topic].append, qos=REPLAY_QOS)
        # a raw tap beside the node's subscription, to compare the bytes themselves
        test_node.transport.subscribe(topic, typ, REPLAY_QOS, raw_seen[topic].append)

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_LOCALHOST_ONLY="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "child.log"
    with open(log, "w") as fh:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(tmp_path / "bag")], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        counts = {k: len(v) for k, v in expected.items()}
        done = test_node.spin_until(
            lambda: all(len(decoded[k]) >= n and len(raw_seen[k]) >= n for k, n in counts.items()), timeout=45
        )
        assert done, (
            f"received { ({k: len(decoded[k]) for k in counts}) } of {counts}; "
            f"child exit {child.poll()}: {log.read_text()}"
        )
        test_node.spin(0.3)  # anything extra (duplicates) would show up now
        assert f"published {len(messages)}" in log.read_text()
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    assert child.returncode == 0, log.read_text()

    for topic, msgs in expected.items():
        assert len(decoded[topic]) == len(msgs) == len(raw_seen[topic]), topic
        for i, (ours, theirs) in enumerate(zip(decoded[topic], msgs, strict=True)):
            assert_same(ours, theirs, f"{topic}[{i}]")
        for i, (rx, tx) in enumerate(zip(raw_seen[topic], written[topic], strict=True)):
            # DDS pads samples to 4 bytes and counts the padding in the options byte; the payload is untouched
            pad = rx[3] & 3
            assert rx[:2] == tx[:2] and len(rx) - pad == len(tx) and rx[4 : len(tx)] == tx[4:], f"{topic}[{i}]"
    sub_errors = sum(s.errors for s in test_node.subscriptions)
    assert sub_errors == 0
