"""rosbag2 (sqlite3 and mcap) -> realloop dataset, on real bags written here with rosbags."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from realloop.configs import config_file
from realloop.data.convert import ConvertError, add_convert_arguments, run_convert
from realloop.data.convert.rosbag2 import (
    TopicMapping,
    UnsupportedMessage,
    compressed_image_to_rgb,
    convert_rosbag2,
    image_to_rgb,
    load_mappings,
)
from realloop.data.dataset import Dataset

TS = get_typestore(Stores.ROS2_HUMBLE)
T = TS.types
JOINTS = ["shoulder", "elbow", "wrist", "gripper"]
H, W = 12, 16
STORAGE = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def header(t: float) -> object:
    sec = int(t)
    stamp = T["builtin_interfaces/msg/Time"](sec=sec, nanosec=round((t - sec) * 1e9))
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="base")


def seconds(h: object) -> float:
    return h.stamp.sec + h.stamp.nanosec * 1e-9  # type: ignore[attr-defined]


def frame(k: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth RGB frame (JPEG keeps it close)."""
    yy, xx = np.mgrid[0:h, 0:w]
    chans = [127.5 + 100 * np.sin(xx / 5 + yy / 7 + k + c) for c in range(3)]
    return np.stack(chans, axis=-1).astype(np.uint8)


def write_bag(path: Path, storage: str, n: int = 6, t0: float = 1_700_000_000.25, skip: tuple[str, ...] = ()) -> dict:
    """A bag like a robot records: cameras (raw bgr8 + JPEG), joint states, commands, and topics we don't map.

    Returns what was written: header stamps, receive times and values per topic.
    """
    sent: dict[str, dict[str, list]] = {}
    topics = {
        "/front/image_raw": "sensor_msgs/msg/Image",
        "/wrist/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/arm_controller/commands": "std_msgs/msg/Float64MultiArray",
        "/chatter": "std_msgs/msg/String",
        "/rosout_text": "std_msgs/msg/String",
    }
    with Writer(path, version=9, storage_plugin=STORAGE[storage]) as w:
        conns = {t: w.add_connection(t, ty, typestore=TS) for t, ty in topics.items() if t not in skip}
        for k in range(n):
            stamp = t0 + 0.1 * k
            msgs = {
                "/front/image_raw": T["sensor_msgs/msg/Image"](
                    header=header(stamp),
                    height=H,
                    width=W,
                    encoding="bgr8",
                    is_bigendian=0,
                    step=W * 3,
                    data=np.ascontiguousarray(frame(k)[..., ::-1]).reshape(-1),
                ),
                "/wrist/image_raw/compressed": T["sensor_msgs/msg/CompressedImage"](
                    header=header(stamp + 0.01),
                    format="bgr8; jpeg compressed bgr8",
                    data=cv2.imencode(".jpg", frame(k + 3)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].reshape(-1),
                ),
                # the driver lists joints in its own order, which changes between messages
                "/joint_states": T["sensor_msgs/msg/JointState"](
                    header=header(stamp + 0.002),
                    name=JOINTS[::-1] if k % 2 else JOINTS,
                    position=np.array([k + i / 10 for i in range(4)][:: -1 if k % 2 else 1]),
                    velocity=np.array([-k - i / 10 for i in range(4)][:: -1 if k % 2 else 1]),
                    effort=np.array([], dtype=np.float64),
                ),
                "/arm_controller/commands": T["std_msgs/msg/Float64MultiArray"](
                    layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                    data=np.array([0.5 * k, 1.0, -0.25 * k]),
                ),
                "/chatter": T["std_msgs/msg/String"](data=f"hello {k}"),
                "/rosout_text": T["std_msgs/msg/String"](data="log"),
            }
            for topic, msg in msgs.items():
                if topic not in conns:
                    continue
                recv = round((stamp + 0.005) * 1e9)  # received 5 ms after the stamp
                w.write(conns[topic], recv, TS.serialize_cdr(msg, msg.__msgtype__))
                rec = sent.setdefault(topic, {"stamp": [], "recv": [], "msg": []})
                rec["stamp"].append(seconds(msg.header) if hasattr(msg, "header") else None)
                rec["recv"].append(recv * 1e-9)
                rec["msg"].append(msg)
    return sent


CONFIG = {
    "typestore": "ros2_humble",
    "topics": {
        "/front/image_raw": {"feature": "observation.images.front"},
        "/wrist/image_raw/compressed": "observation.images.wrist",
        "/joint_states": [
            {"feature": "observation.state", "field": "position", "joints": JOINTS, "units": "rad"},
            {"feature": "observation.velocity", "field": "velocity", "dtype": "float64"},
        ],
        "/arm_controller/commands": {"feature": "action", "names": ["x", "y", "z"]},
        "/chatter": {"feature": "observation.chatter"},
    },
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="realloop-dataset convert")
    add_convert_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_to_episode(tmp_path: Path, storage: str, caplog: pytest.LogCaptureFixture) -> None:
    sent = write_bag(tmp_path / "bag", storage)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    mappings, typestore = load_mappings(tmp_path / "config.yaml")
    with caplog.at_level(logging.WARNING, logger="realloop.data.convert"):
        summary = convert_rosbag2(
            [tmp_path / "bag"],
            tmp_path / "out",
            mappings=mappings,
            typestore=typestore or "ros2_humble",
            task="stack",
            image_format="png",
            progress=False,
        )
    assert summary.episodes == [0]
    assert "std_msgs/msg/String is not supported" in summary.skipped["/chatter"]
    assert any("/chatter" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    assert summary.unmapped == {"/rosout_text": "std_msgs/msg/String"}

    ds = Dataset.open(tmp_path / "out")
    assert set(ds.features) == {
        "observation.images.front",
        "observation.images.wrist",
        "observation.state",
        "observation.velocity",
        "action",
    }
    state = ds.features["observation.state"]
    assert state.names == tuple(JOINTS) and state.units == "rad" and state.dtype == "float32"
    assert ds.features["observation.velocity"].names == tuple(JOINTS)  # from the first message
    ep = ds.episode(0)

    js = sent["/joint_states"]
    np.testing.assert_array_equal(ep.stream("observation.state").timestamps, js["stamp"])
    expected = np.array([[k + i / 10 for i in range(4)] for k in range(6)])  # in JOINTS order
    np.testing.assert_allclose(ep.stream("observation.state").read(), expected, rtol=1e-6)
    np.testing.assert_array_equal(ep.stream("observation.velocity").read(), -expected)  # float64: exact

    front = sent["/front/image_raw"]
    np.testing.assert_array_equal(ep.stream("observation.images.front").timestamps, front["stamp"])
    np.testing.assert_array_equal(ep.stream("observation.images.front").read(), np.stack([frame(k) for k in range(6)]))
    wrist = ep.stream("observation.images.wrist")
    np.testing.assert_array_equal(wrist.timestamps, sent["/wrist/image_raw/compressed"]["stamp"])
    err = np.abs(wrist.read().astype(int) - np.stack([frame(k + 3) for k in range(6)]))
    assert err.mean() < 6, err.mean()  # JPEG: close, not exact

    cmd = sent["/arm_controller/commands"]
    np.testing.assert_array_equal(ep.stream("action").timestamps, cmd["recv"])  # no header: receive time
    np.testing.assert_allclose(ep.stream("action").read(), [m.data for m in cmd["msg"]])
    attrs = ep.meta["attributes"]
    assert attrs["timestamp_source"]["action"] == "bag receive time"
    assert attrs["timestamp_source"]["observation.state"] == "header.stamp"
    assert attrs["topics"]["observation.images.wrist"] == "/wrist/image_raw/compressed"
    assert ep.meta["task"] == "stack" and attrs["converted_from"] == "rosbag2"


def test_cli_several_bags_with_topic_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bag(tmp_path / "bags" / "run_a", "mcap", n=3)
    write_bag(tmp_path / "bags" / "run_b", "sqlite3", n=4, t0=1_700_000_100.0)
    write_bag(tmp_path / "run_c", "mcap", n=2, skip=("/joint_states",))
    mcap_file = next((tmp_path / "run_c").glob("*.mcap"))  # a bare storage file is a bag too
    args = parse(
        [
            "--from", "rosbag2", str(tmp_path / "bags"), str(mcap_file),
            str(tmp_path / "out"), "--topic", "/joint_states=observation.state:velocity",
            "--topic", "/arm_controller/commands=action", "--source", "intervention",
        ]
    )  # fmt: skip
    assert run_convert(args) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("converted 2 episodes (#0-1), 14 samples, from 3 rosbag2 sources")
    assert "lacks mapped topics ['/joint_states']" in out.err

    summary = json.loads((tmp_path / "out.convert.json").read_text())
    assert summary["episodes"] == [0, 1] and summary["samples"] == {"observation.state": 7, "action": 7}
    assert list(summary["skipped_sources"]) == [str(mcap_file)]
    assert "/front/image_raw" in summary["unmapped"]
    ds = Dataset.open(tmp_path / "out")
    assert [ds.episode(i).meta["attributes"]["bag"] for i in range(2)] == [
        str(tmp_path / "bags" / "run_a"),
        str(tmp_path / "bags" / "run_b"),
    ]
    assert ds.episode(1).meta["source"] == "intervention"
    np.testing.assert_allclose(ds.episode(1).stream("observation.state").read()[3], [-3, -3.1, -3.2, -3.3], rtol=1e-6)

    # the bag without joint states, written anyway when asked
    mappings, _ = load_mappings(None, args.topics)
    summary = convert_rosbag2(
        [tmp_path / "bags" / "run_a", tmp_path / "run_c"],
        tmp_path / "out",
        mappings=mappings,
        allow_missing_topics=True,
        progress=False,
    )
    assert summary.episodes == [2, 3] and not summary.skipped_sources
    assert Dataset.open(tmp_path / "out").episode(3).stream_names == ["action"]


def test_image_encodings() -> None:
    rgb = frame(1, 5, 7)

    def image(encoding: str, pixels: np.ndarray, pad: int = 0) -> object:
        rows = pixels.reshape(pixels.shape[0], -1)
        rows = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1)
        return T["sensor_msgs/msg/Image"](
            header=header(1.0),
            height=pixels.shape[0],
            width=pixels.shape[1],
            encoding=encoding,
            is_bigendian=0,
            step=rows.shape[1],
            data=rows.reshape(-1),
        )

    np.testing.assert_array_equal(image_to_rgb(image("rgb8", rgb, pad=3)), rgb)
    np.testing.assert_array_equal(image_to_rgb(image("bgr8", rgb[..., ::-1])), rgb)
    np.testing.assert_array_equal(image_to_rgb(image("rgba8", np.dstack([rgb, np.full((5, 7), 9, np.uint8)]))), rgb)
    np.testing.assert_array_equal(image_to_rgb(image("bgra8", np.dstack([rgb[..., ::-1], rgb[..., :1]]))), rgb)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(image_to_rgb(image("mono8", gray, pad=1)), np.dstack([gray] * 3))
    with pytest.raises(UnsupportedMessage, match=r"encoding '16UC1' is not supported"):
        image_to_rgb(image("16UC1", np.zeros((5, 14), np.uint8)))
    png = T["sensor_msgs/msg/CompressedImage"](
        header=header(1.0), format="png", data=cv2.imencode(".png", rgb[..., ::-1])[1].reshape(-1)
    )
    np.testing.assert_array_equal(compressed_image_to_rgb(png), rgb)  # lossless
    broken = T["sensor_msgs/msg/CompressedImage"](header=header(1.0), format="jpeg", data=np.zeros(10, np.uint8))
    with pytest.raises(ConvertError, match="could not decode"):
        compressed_image_to_rgb(broken)


def test_bad_input_gives_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "not_a_bag").mkdir()
    maps = [TopicMapping("/joint_states", "observation.state")]
    with pytest.raises(ConvertError, match=r"not_a_bag is not a rosbag2 bag: it has no metadata.yaml"):
        convert_rosbag2([tmp_path / "not_a_bag"], tmp_path / "out", mappings=maps)
    (tmp_path / "junk.mcap").write_bytes(b"this is not an mcap file")
    with pytest.raises(ConvertError, match=r"junk.mcap is not a readable rosbag2 bag"):
        convert_rosbag2([tmp_path / "junk.mcap"], tmp_path / "out", mappings=maps)
    with pytest.raises(ConvertError, match=r"ROS 1 bag"):
        (tmp_path / "old.bag").write_bytes(b"")
        convert_rosbag2([tmp_path / "old.bag"], tmp_path / "out", mappings=maps)

    write_bag(tmp_path / "bag", "sqlite3", n=2)
    with pytest.raises(ConvertError, match=r"no topic is mapped.*--config PATH"):
        convert_rosbag2([tmp_path / "bag"], tmp_path / "out", mappings=[])
    with pytest.raises(ConvertError, match=r"/joint_state .*in none of the bags; their topics: .*/joint_states"):
        convert_rosbag2([tmp_path / "bag"], tmp_path / "out", mappings=[TopicMapping("/joint_state", "x")])
    with pytest.raises(ConvertError, match=r"field 'effort' is empty"):
        convert_rosbag2([tmp_path / "bag"], tmp_path / "out", mappings=[TopicMapping("/joint_states", "s", "effort")])
    with pytest.raises(ConvertError, match=r"image topic: map it to a feature named observation.images.<camera>"):
        convert_rosbag2([tmp_path / "bag"], tmp_path / "out", mappings=[TopicMapping("/front/image_raw", "front")])
    with pytest.raises(ConvertError, match=r"none of the mapped topics can be converted"):
        convert_rosbag2([tmp_path / "bag"], tmp_path / "out", mappings=[TopicMapping("/chatter", "observation.x")])
    assert not (tmp_path / "out").exists()

    (tmp_path / "bad.yaml").write_text("topics:\n  /joint_states: {feature: observation.state, feld: position}\n")
    with pytest.raises(ConvertError, match=r"unknown keys \['feld'\]"):
        load_mappings(tmp_path / "bad.yaml")
    assert (
        run_convert(
            parse(
                [
                    "--from",
                    "rosbag2",
                    str(tmp_path / "not_a_bag"),
                    str(tmp_path / "out"),
                    "--topic",
                    "/joint_states=observation.state",
                ]
            )
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "error: " in err and "not a rosbag2 bag" in err


def test_example_config_parses() -> None:
    mappings, typestore = load_mappings(config_file("dataset", "rosbag2_example"))
    assert typestore == "ros2_humble"
    by_feature = {m.feature: m for m in mappings}
    assert by_feature["observation.state"].topic == "/joint_states"
    assert any(f.startswith("observation.images.") for f in by_feature)


def test_stamps_drops_and_resize(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Non-increasing header stamps are dropped and counted; unset stamps need `stamp: receive`."""
    stamps = [5.0, 5.1, 5.1, 5.05, 5.2]  # a duplicate, then one going backwards
    big = frame(0, 24, 32)
    with Writer(tmp_path / "bag", version=9) as w:
        js = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=TS)
        grip = w.add_connection("/gripper/joint_states", "sensor_msgs/msg/JointState", typestore=TS)
        cam = w.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=TS)
        for k, t in enumerate(stamps):
            for conn, h in ((js, header(t)), (grip, header(0.0))):
                msg = T["sensor_msgs/msg/JointState"](
                    header=h,
                    name=["a"],
                    position=np.array([float(k)]),
                    velocity=np.array([]),
                    effort=np.array([]),
                )
                w.write(conn, 10**9 * (k + 10), TS.serialize_cdr(msg, msg.__msgtype__))
            img = T["sensor_msgs/msg/Image"](
                header=header(5.0 + k), height=24, width=32, encoding="rgb8", is_bigendian=0, step=96,
                data=big.reshape(-1),
            )  # fmt: skip
            w.write(cam, 10**9 * (k + 10), TS.serialize_cdr(img, img.__msgtype__))

    base = [
        TopicMapping("/joint_states", "observation.state"),
        TopicMapping("/cam/image_raw", "observation.images.cam", shape=(12, 16)),
    ]
    with pytest.raises(ConvertError, match=r"/gripper/joint_states: header.stamp is zero .*'stamp: receive'"):
        convert_rosbag2(
            [tmp_path / "bag"],
            tmp_path / "out",
            mappings=[*base, TopicMapping("/gripper/joint_states", "observation.gripper")],
        )
    grip_receive = TopicMapping("/gripper/joint_states", "observation.gripper", stamp="receive")
    with caplog.at_level(logging.WARNING, logger="realloop.data.convert"):
        summary = convert_rosbag2(
            [tmp_path / "bag"],
            tmp_path / "out",
            mappings=[*base, grip_receive],
            image_format="png",
            progress=False,
        )
    ep = Dataset.open(tmp_path / "out").episode(0)
    np.testing.assert_allclose(ep.stream("observation.state").timestamps, [5.0, 5.1, 5.2])
    np.testing.assert_array_equal(ep.stream("observation.state").read()[:, 0], [0, 1, 4])
    assert ep.meta["attributes"]["dropped_samples"] == {"observation.state": 2}
    assert any("dropped" in w for w in summary.warnings) and any("dropped" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(ep.stream("observation.gripper").timestamps, np.arange(10, 15, dtype=float))
    assert ep.meta["attributes"]["timestamp_source"]["observation.gripper"] == "bag receive time"
    resized = cv2.resize(big, (16, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(ep.stream("observation.images.cam").read(), np.stack([resized] * 5))
