"""The recorder's stream specs and episode logic, without a transport: synthetic stamps and clock, a real dataset
on disk, real OpenCV images."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from realloop.data import Dataset
from realloop.data.verify import verify
from realloop.robot.msgs import (
    CompressedImage,
    Float64MultiArray,
    Image,
    Imu,
    JointState,
    Joy,
    PoseStamped,
    TwistStamped,
    header,
)
from realloop.robot.recorder import (
    RECORDING,
    WAITING,
    EncodedImage,
    InvalidSample,
    Recorder,
    StreamConfigError,
    jpeg_shape,
    parse_stream,
    parse_streams,
    report_path_for,
)
from realloop.robot.recorder.recorder import IDLE, StreamStats
from realloop.robot.spec import load_robot_spec

JOINTS = ["a", "b", "c"]


def _frame(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A BGR test frame with structure (JPEG of pure noise is not what cameras send)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(frame: np.ndarray, *extra: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85, *extra])
    assert ok
    return buf.tobytes()


def _compressed(t: float, frame: np.ndarray) -> CompressedImage:
    return CompressedImage(header(t, "cam"), "bgr8; jpeg compressed bgr8", _jpeg(frame))


def _js(t: float, names: list[str], pos: list[float]) -> JointState:
    return JointState(header(t), names, np.array(pos, float), np.array(pos, float) * 10, np.zeros(0))


SPECS = {
    "state": {
        "feature": "observation.state",
        "topic": "/joint_states",
        "type": "JointState",
        "joints": JOINTS,
        "rate_hz": 100,
    },
    "front": {
        "feature": "observation.images.front",
        "topic": "/front/image_raw/compressed",
        "type": "CompressedImage",
        "rate_hz": 30,
        "shape": [48, 64, 3],
    },
    "action": {"feature": "action", "topic": "/cmd", "type": "Float64MultiArray", "names": JOINTS},
}


class Clock:
    """Feeds a Recorder: each call stamps with the node clock ``now``."""

    def __init__(self, rec: Recorder, t: float = 1000.0) -> None:
        self.rec, self.now = rec, t

    def state(self, t: float, pos: list[float] | None = None) -> None:
        spec = self.rec.specs["observation.state"]
        msg = _js(t, JOINTS, pos or [t, 2 * t, 3 * t])
        self.rec.on_sample("observation.state", spec.stamp_of(msg), spec.value_of(msg), self.now)

    def image(self, t: float, frame: np.ndarray) -> None:
        spec = self.rec.specs["observation.images.front"]
        msg = _compressed(t, frame)
        self.rec.on_sample("observation.images.front", spec.stamp_of(msg), spec.value_of(msg), self.now)


def _recorder(tmp_path: Path, specs: dict = SPECS, **kw) -> Recorder:
    return Recorder(tmp_path / "rec.zarr", parse_streams(specs, dead_after=0.5), task="t", durable=False, **kw)


# -- stream specs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"topic": "/x", "type": "PointCloud2"}, "unknown message type 'PointCloud2'"),
        ({"topic": "/x", "type": "JointState", "field": "torque", "joints": ["a"]}, "no field 'torque'"),
        ({"topic": "/x", "type": "JointState", "joints": ["a"], "colour": 1}, r"unknown keys \['colour'\]"),
        ({"topic": "x", "type": "Bool"}, "absolute topic name"),
        ({"topic": "/x", "type": "Float64MultiArray"}, "give 'joints' .*, 'names' or 'shape'"),
        ({"topic": "/x", "type": "Float64MultiArray", "shape": [3], "stamp": "header"}, "has no header"),
        ({"topic": "/x", "type": "JointState", "joints": "robot.joints"}, "needs a robot spec"),
        ({"topic": "/x", "type": "CompressedImage"}, "feature named observation.images.<camera>"),
        ({"topic": "/x", "type": "Float64MultiArray", "names": ["a", "b"], "shape": [3]}, "2 names"),
        ({"topic": "/x", "type": "JointState", "joints": ["a"], "latch": True}, "'latch' is for streams stamped"),
        ({"topic": "/x", "type": "JointState", "joints": ["a"], "rate_hz": -5}, "'rate_hz' must be a positive"),
        ({"topic": "/x", "type": "JointState", "joints": ["a"], "dtype": "int32"}, "cannot be stored as int32"),
    ],
)
def test_bad_stream_specs_name_the_problem(spec: dict, match: str) -> None:
    with pytest.raises(StreamConfigError, match=match):
        parse_stream("s", spec)


def test_duplicate_features_and_disabled_streams() -> None:
    s = {"topic": "/x", "type": "Bool", "feature": "flag"}
    with pytest.raises(StreamConfigError, match="both record feature flag"):
        parse_streams({"a": s, "b": s})
    specs = parse_streams({"a": s, "b": None})
    assert [x.name for x in specs] == ["a"]
    with pytest.raises(StreamConfigError, match="every stream is disabled"):
        parse_streams({"a": None})


def test_defaults_and_robot_aliases() -> None:
    arm = load_robot_spec("arm6")
    js = parse_stream(
        "observation.state",
        {
            "topic": "/joint_states",
            "type": "sensor_msgs/msg/JointState",
            "joints": "robot.joint_states",
            "rate_hz": 100,
        },
        arm,
        dead_after=2.0,
    )
    assert js.feature == "observation.state" and js.field == "position" and js.stamp == "header"
    assert js.joints == (*arm.joint_names, "finger_left") and js.shape == (7,) and js.qos == "reliable"
    assert js.dead_after == 2.0
    cmd = parse_stream(
        "action", {"topic": "/arm_controller/commands", "type": "Float64MultiArray", "names": "robot.joints"}, arm
    )
    assert cmd.names == tuple(arm.joint_names) and cmd.stamp == "receive" and cmd.dead_after is None
    cam = parse_stream(
        "front",
        {"feature": "observation.images.front", "topic": "/front/image_raw/compressed", "type": "CompressedImage"},
    )
    assert cam.shape is None and cam.qos == "sensor" and cam.image_format == "jpeg" and cam.passthrough
    imu = parse_stream("imu", {"topic": "/imu", "type": "Imu", "feature": "observation.imu"})
    assert imu.shape == (10,) and imu.qos == "sensor" and imu.names[:4] == ("qx", "qy", "qz", "qw")


def test_joint_state_fields_are_selected_and_reordered_by_name() -> None:
    spec = parse_stream("s", {"topic": "/j", "type": "JointState", "field": "velocity", "joints": ["b", "a"]})
    msg = JointState(
        header(5.25), ["a", "b", "extra"], np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]), np.zeros(0)
    )
    assert spec.stamp_of(msg) == pytest.approx(5.25)
    np.testing.assert_array_equal(spec.value_of(msg), [20.0, 10.0])
    with pytest.raises(InvalidSample, match=r"lacks joints \['b'\]"):
        spec.value_of(JointState(header(1), ["a"], np.array([1.0]), np.array([1.0]), np.zeros(0)))
    with pytest.raises(InvalidSample, match=r"header\.stamp is zero"):
        spec.stamp_of(JointState(header(0.0), ["a", "b"], np.zeros(2), np.zeros(2), np.zeros(0)))


def test_numeric_message_types() -> None:
    imu = Imu(header(1.0))
    imu.orientation.w, imu.angular_velocity.z, imu.linear_acceleration.x = 1.0, 0.5, 9.8
    v = parse_stream("i", {"topic": "/imu", "type": "Imu", "feature": "imu"}).value_of(imu)
    np.testing.assert_allclose(v, [0, 0, 0, 1, 0, 0, 0.5, 9.8, 0, 0])
    tw = TwistStamped(header(1.0))
    tw.twist.linear.x, tw.twist.angular.z = 0.3, -0.2
    np.testing.assert_allclose(
        parse_stream("t", {"topic": "/cmd_vel", "type": "TwistStamped"}).value_of(tw), [0.3, 0, 0, 0, 0, -0.2]
    )
    ps = PoseStamped(header(1.0))
    ps.pose.position.y = 2.0
    np.testing.assert_allclose(
        parse_stream("p", {"topic": "/p", "type": "PoseStamped", "field": "position"}).value_of(ps), [0, 2.0, 0]
    )
    joy = parse_stream("j", {"topic": "/joy", "type": "Joy", "field": "buttons", "names": ["a", "b"]})
    v = joy.value_of(Joy(header(1.0), np.zeros(3, np.float32), np.array([1, 0], np.int32)))
    assert joy.dtype == "int32" and v.tolist() == [1, 0]
    arr = parse_stream("a", {"topic": "/a", "type": "Float64MultiArray", "shape": [2, 2]})
    np.testing.assert_array_equal(arr.value_of(Float64MultiArray(data=np.arange(4.0))), [[0, 1], [2, 3]])
    with pytest.raises(InvalidSample, match="has 3 values"):
        arr.value_of(Float64MultiArray(data=np.arange(3.0)))


def test_images_raw_and_compressed() -> None:
    bgr = _frame(48, 64)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    spec = parse_stream("f", {"feature": "observation.images.f", "topic": "/f", "type": "Image", "shape": [48, 64, 3]})
    padded = np.zeros((48, 64 * 3 + 8), np.uint8)  # rows padded to a larger step
    padded[:, : 64 * 3] = bgr.reshape(48, -1)
    img = Image(header(1.0), 48, 64, "bgr8", 0, 64 * 3 + 8, padded.tobytes())
    np.testing.assert_array_equal(spec.value_of(img), rgb)
    with pytest.raises(InvalidSample, match="encoding '16UC1' is not supported"):
        spec.value_of(Image(header(1.0), 48, 64, "16UC1", 0, 128, bytes(48 * 128)))
    with pytest.raises(InvalidSample, match="a 32x24 frame, stream f records 64x48"):
        spec.value_of(Image(header(1.0), 24, 32, "rgb8", 0, 96, bytes(24 * 96)))

    cam = parse_stream("c", {"feature": "observation.images.c", "topic": "/c", "type": "CompressedImage"})
    msg = _compressed(1.0, bgr)
    out = cam.value_of(msg)
    assert isinstance(out, EncodedImage) and out.data == msg.data and out.shape == (48, 64, 3)
    png = CompressedImage(header(1.0), "bgr8; png compressed bgr8", cv2.imencode(".png", bgr)[1].tobytes())
    np.testing.assert_array_equal(cam.value_of(png), rgb)  # not the feature's format: decoded (lossless here)
    no_pass = parse_stream(
        "c", {"feature": "observation.images.c", "topic": "/c", "type": "CompressedImage", "passthrough": False}
    )
    decoded = no_pass.value_of(msg)
    assert isinstance(decoded, np.ndarray) and decoded.shape == (48, 64, 3)
    with pytest.raises(InvalidSample, match="does not decode"):
        cam.value_of(CompressedImage(header(1.0), "jpeg", b"\xff\xd8 not a jpeg"))
    with pytest.raises(InvalidSample, match="not JPEG or PNG"):
        cam.value_of(CompressedImage(header(1.0), "16UC1; compressedDepth png", b"x"))


def test_jpeg_shape_reads_the_frame_header() -> None:
    bgr = _frame(72, 96)
    assert jpeg_shape(_jpeg(bgr)) == (72, 96, 3)
    assert jpeg_shape(_jpeg(bgr, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)) == (72, 96, 3)
    gray = cv2.imencode(".jpg", bgr[..., 0])[1].tobytes()
    assert jpeg_shape(gray) == (72, 96, 1)
    assert jpeg_shape(_jpeg(bgr)[:200]) is None  # truncated: no end marker
    assert jpeg_shape(cv2.imencode(".png", bgr)[1].tobytes()) is None


# -- accounting ---------------------------------------------------------------------------------------------
def test_gap_accounting_on_synthetic_stamps() -> None:
    spec = parse_stream("s", {"topic": "/s", "type": "Float64MultiArray", "shape": [1], "rate_hz": 100})
    st = StreamStats(spec, start=0.0)
    rng = np.random.default_rng(0)
    stamps = np.arange(200) * 0.01 + rng.uniform(-0.002, 0.002, 200)  # jitter: gaps stay under 1.5 periods
    keep = np.ones(200, bool)
    keep[50:53] = False  # 3 missing -> one gap of 4 periods
    keep[120] = False  # 1 missing -> a gap of 2 periods
    written = [st.accept(t) for t in stamps[keep]]
    assert all(written)
    assert (st.dropped, st.gaps, st.written) == (4, 2, 196)
    assert st.largest_gap == pytest.approx(stamps[53] - stamps[49])
    # a duplicate and a stamp going back: counted, not written
    assert not st.accept(stamps[keep][-1]) and not st.accept(1.0)
    assert (st.non_monotonic, st.written) == (2, 196)
    d = st.to_dict()
    assert d["dropped"] == 4 and d["rate_hz"] == pytest.approx(100, rel=0.05)

    no_rate = StreamStats(parse_stream("s", {"topic": "/s", "type": "Float64MultiArray", "shape": [1]}), 0.0)
    for t in (0.0, 0.1, 5.0):
        no_rate.accept(t)
    assert no_rate.dropped == 0 and no_rate.largest_gap == pytest.approx(4.9)
    assert "dropped" not in no_rate.to_dict()


# -- episodes -----------------------------------------------------------------------------------------------
def test_commit_discard_and_stop(tmp_path: Path) -> None:
    rec = _recorder(tmp_path, robot={"name": "toy"})
    feed = Clock(rec)
    assert rec.state == IDLE
    feed.state(1.0)  # idle: not recorded
    assert rec.start(feed.now, operator="ada")
    assert rec.state == RECORDING and not rec.start(feed.now)  # a second start is ignored
    frames = [_frame(seed=i) for i in range(10)]
    for i in range(100):
        feed.now += 0.01
        feed.state(2.0 + i * 0.01)
        if i % 10 == 0:
            feed.image(2.0 + i * 0.01, frames[i // 10])
    spec = rec.specs["action"]
    rec.on_sample("action", spec.stamp_of(Float64MultiArray()), np.ones(3), feed.now)  # receive time
    report = rec.commit(feed.now, True, ended_by="success")
    assert report is not None and report["episode"] == 0 and report["outcome"] == "committed"
    s = report["streams"]["observation.state"]
    assert (s["received"], s["written"], s["dropped"], s["non_monotonic"], s["dead"]) == (100, 100, 0, 0, False)
    assert report["streams"]["observation.images.front"]["dropped"] == 18  # 10 Hz frames, 30 Hz expected: 9 x 2

    rec.start(feed.now)
    feed.state(9.0)
    assert rec.discard(feed.now)["outcome"] == "discarded"
    rec.start(feed.now)
    feed.state(10.0)
    feed.state(10.01)
    assert rec.commit(feed.now, None, ended_by="stop")["episode"] == 1
    assert rec.commit(feed.now, True) is None  # nothing to commit
    rec.close(feed.now)

    ds = Dataset.open(tmp_path / "rec.zarr")
    assert ds.robot == {"name": "toy"} and len(ds) == 2
    ep = ds.episode(0)
    assert ep.success is True and ep.meta["task"] == "t" and ep.meta["robot"] == "toy"
    attrs = ep.meta["attributes"]
    assert attrs["operator"] == "ada" and attrs["topics"]["observation.state"] == "/joint_states"
    assert attrs["timestamp_source"]["action"] == "receive time (node clock)"
    assert attrs["recorder"]["streams"]["observation.state"]["written"] == 100
    st = ep.stream("observation.state")
    np.testing.assert_allclose(st.timestamps, 2.0 + np.arange(100) * 0.01, atol=1e-9)
    np.testing.assert_allclose(st.read()[:, 1], 2 * st.timestamps, rtol=1e-6)
    np.testing.assert_allclose(ep.stream("action").timestamps, [feed.now])
    img = ep.stream("observation.images.front")
    assert len(img) == 10
    # passthrough: the stored JPEG is the camera's, so it decodes to exactly what the camera's JPEG decodes to
    sent = cv2.cvtColor(cv2.imdecode(np.frombuffer(_jpeg(frames[3]), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img[3], sent)
    assert ds.episode(1).success is None
    assert verify(tmp_path / "rec.zarr").ok

    doc = json.loads(report_path_for(tmp_path / "rec.zarr").read_text())
    assert [e["outcome"] for e in doc["episodes"]] == ["committed", "discarded", "committed"]
    assert [e["ended_by"] for e in doc["episodes"]] == ["success", "command", "stop"]


def test_outcomes_are_stamped_with_the_actions(tmp_path: Path) -> None:
    """At commit: next.done at the last action; with a known outcome next.reward, next.success and next.terminated
    (true at the last action of a success): what the replay buffer reads, at the recording's rate."""
    from realloop.policies.rl.buffer import MissingFieldError, ReplayBuffer

    def episode(feed: Clock, success: bool | None) -> list[float]:
        rec = feed.rec
        rec.start(feed.now)
        actions = []
        for i in range(50):  # 0.5 s: the state at 100 Hz, an action every 0.1 s; the state goes on after the last
            feed.now += 0.01
            feed.state(feed.now)
            if i % 10 == 5:
                rec.on_sample("action", None, np.full(3, i), feed.now)  # receive time
                actions.append(feed.now)
        rec.commit(feed.now, success)
        return actions

    rec = _recorder(tmp_path)
    feed = Clock(rec)
    stamps = [episode(feed, True), episode(feed, False)]
    ds = Dataset.open(tmp_path / "rec.zarr")
    for index, success in ((0, True), (1, False)):
        ep = ds.episode(index)
        for name in ("next.reward", "next.success", "next.done", "next.terminated"):
            np.testing.assert_allclose(ep.stream(name).timestamps, stamps[index])
        assert ep.stream("next.done").read().tolist() == [False] * 4 + [True]
        assert ep.stream("next.terminated").read().tolist() == [False] * 4 + [success]
        assert ep.stream("next.reward").read().tolist() == [0.0] * 4 + [float(success)]
    buf = ReplayBuffer(["observation.state"], [tmp_path / "rec.zarr"], rate=10, gamma=0.5)
    assert buf.offline_steps == 10
    batch = buf.sample(200, np.random.default_rng(0))
    t = batch["observation"]["observation.state"][:, 0].numpy()
    success_end = (batch["action"][:, 0].numpy() == 45) & (t < stamps[1][0])
    np.testing.assert_array_equal(batch["reward"].numpy(), success_end)
    np.testing.assert_array_equal(batch["discount"].numpy(), np.where(success_end, 0.0, 0.5))
    np.testing.assert_allclose(batch["next_observation"]["observation.state"][:, 0].numpy() - t, 0.1, atol=0.061)

    episode(feed, None)  # stopped: the outcome is unknown, only the end is
    ep = ds.episode(2)
    assert ep.stream("next.done").read().tolist() == [False] * 4 + [True]
    assert not {"next.reward", "next.success", "next.terminated"} & set(ep.stream_names)
    with pytest.raises(MissingFieldError, match=r"episode 2 of dataset .* has no stream 'next.reward'"):
        ReplayBuffer(["observation.state"], [tmp_path / "rec.zarr"], rate=10)
    rec.close(feed.now)
    assert verify(tmp_path / "rec.zarr").ok

    # without outcomes, and an existing dataset without them: the streams as configured, nothing more
    plain = _recorder(tmp_path / "plain", outcomes=False)
    assert not {n for n in Dataset.open(tmp_path / "plain" / "rec.zarr").features if n.startswith("next.")}
    plain.close(feed.now)
    again = _recorder(tmp_path / "plain")
    assert again.outcomes == []
    episode(Clock(again, feed.now), True)
    assert Dataset.open(tmp_path / "plain" / "rec.zarr").episode(0).stream_names == ["observation.state", "action"]
    again.close(feed.now)


def test_non_monotonic_samples_are_dropped_and_dead_streams_reported(tmp_path: Path, caplog) -> None:
    rec = _recorder(tmp_path)
    feed = Clock(rec)
    rec.start(feed.now)
    start = feed.now
    frame = _frame()
    for i in range(30):  # 1 s of both streams
        feed.now += 1 / 30
        feed.image(100 + i / 30, frame)
        feed.state(100 + i / 30)
        assert not rec.tick(feed.now)
    feed.state(100 + 29 / 30)  # duplicate stamp
    feed.state(99.0)  # back in time
    with caplog.at_level(logging.WARNING, logger="recorder"):
        for _ in range(10):  # the camera stops; the state goes on for 1 s
            feed.now += 0.1
            feed.state(feed.now - start + 100)
            rec.tick(feed.now)
    assert any("stream front is dead" in r.message for r in caplog.records)
    assert rec.stats["observation.images.front"].dead and not rec.stats["observation.state"].dead
    status = rec.status(feed.now)
    assert status["streams"]["observation.images.front"]["dead"] is True
    feed.now += 0.1
    feed.image(150.0, frame)  # it comes back
    assert not rec.stats["observation.images.front"].dead
    report = rec.commit(feed.now, False)
    cam = report["streams"]["observation.images.front"]
    assert cam["dead"] is True and len(cam["silences"]) == 1
    silent_from, silent_to = cam["silences"][0]
    assert silent_from == pytest.approx(1.0, abs=1e-6) and silent_to == pytest.approx(2.1, abs=1e-6)
    state = report["streams"]["observation.state"]
    assert state["non_monotonic"] == 2 and state["written"] == 40 and state["received"] == 42
    ep = Dataset.open(tmp_path / "rec.zarr").episode(0)
    assert np.all(np.diff(ep.stream("observation.state").timestamps) > 0)
    assert ep.success is False and ep.meta["attributes"]["recorder"]["streams"]["observation.images.front"]["dead"]


def test_receive_stamps_sharing_a_clock_reading_keep_arrival_order(tmp_path: Path) -> None:
    """Sim time advances in /clock ticks: commands that arrive within one tick are distinct samples, written in
    arrival order; a receive clock going back further than a tie is still non-monotonic."""
    rec = _recorder(tmp_path)
    rec.start(10.0)
    spec = rec.specs["action"]
    for now, value in ((10.0, 1.0), (10.0, 2.0), (10.0, 3.0), (10.01, 4.0), (9.0, 5.0)):
        rec.on_sample("action", spec.stamp_of(Float64MultiArray()), np.full(3, value), now)
    report = rec.commit(10.02, True)
    assert report["streams"]["action"]["written"] == 4 and report["streams"]["action"]["non_monotonic"] == 1
    action = Dataset.open(tmp_path / "rec.zarr").episode(0).stream("action")
    np.testing.assert_allclose(action.timestamps, [10.0, 10.0 + 1e-6, 10.0 + 2e-6, 10.01], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(action.read()[:, 0], [1.0, 2.0, 3.0, 4.0])


def test_stream_never_heard_is_dead_and_max_episode_commits(tmp_path: Path) -> None:
    rec = _recorder(tmp_path, max_episode_s=2.0)
    feed = Clock(rec)
    rec.start(feed.now)
    for i in range(25):
        feed.now += 0.1
        feed.state(50 + i * 0.1)  # a 100 Hz stream at 10 Hz: 9 missing per gap
        rec.tick(feed.now)
    assert rec.state == IDLE and len(rec.reports) == 1
    r = rec.reports[0]
    assert r["ended_by"] == "max_episode_s" and r["success"] is None and r["episode"] == 0
    cam = r["streams"]["observation.images.front"]
    assert cam["received"] == 0 and cam["dead"] and cam["silences"] == [[0.0, None]]
    s = r["streams"]["observation.state"]
    assert s["dropped"] == 9 * (s["written"] - 1) and s["gaps"] == s["written"] - 1
    assert r["streams"]["action"]["dead"] is False  # no expected rate: an event stream is never dead


def test_invalid_messages_are_counted(tmp_path: Path) -> None:
    rec = _recorder(tmp_path)
    rec.start(0.0)
    rec.on_invalid("observation.images.front", "a 32x24 frame", 0.1)
    report = rec.commit(0.2)
    assert report["outcome"] == "discarded"  # nothing was written
    assert report["streams"]["observation.images.front"]["invalid"] == 1
    assert len(Dataset.open(tmp_path / "rec.zarr")) == 0


def test_image_size_from_first_frame_and_pending_start(tmp_path: Path) -> None:
    specs = {"front": {**SPECS["front"], "shape": None}, "state": SPECS["state"]}
    rec = _recorder(tmp_path, specs)
    feed = Clock(rec)
    assert rec.state == WAITING and rec.waiting_for == ["observation.images.front"]
    assert not (tmp_path / "rec.zarr").exists()
    assert not rec.start(feed.now) and rec.start_pending
    feed.state(1.0)  # not recorded: the episode has not started
    feed.image(1.0, _frame(40, 56))  # fixes the size, creates the dataset, starts the pending episode with it
    assert rec.state == RECORDING and rec.specs["observation.images.front"].shape == (40, 56, 3)
    for i in range(1, 4):
        feed.now += 0.033
        feed.image(1.0 + i / 30, _frame(40, 56))
    feed.state(1.1)
    r = rec.commit(feed.now, True)
    assert r["streams"]["observation.images.front"]["written"] == 4
    rec.close(feed.now)
    assert Dataset.open(tmp_path / "rec.zarr").features["observation.images.front"].shape == (40, 56, 3)

    # reopened: the size comes from the dataset; a stream the dataset lacks, or a different one, is refused
    rec2 = _recorder(tmp_path, specs)
    assert rec2.state == IDLE and rec2.specs["observation.images.front"].shape == (40, 56, 3)
    rec2.close(0.0)
    with pytest.raises(ValueError, match="has no feature 'action'"):
        _recorder(tmp_path, {**specs, "action": SPECS["action"]})
    with pytest.raises(ValueError, match=r"rate_hz: dataset 100\.0, config 50\.0"):
        _recorder(tmp_path, {**specs, "state": {**SPECS["state"], "rate_hz": 50}})


def test_latched_stream_holds_at_the_episode_start(tmp_path: Path) -> None:
    specs = {
        "state": SPECS["state"],
        "flag": {"feature": "intervention", "topic": "/intervention", "type": "Bool", "latch": True},
    }
    rec = _recorder(tmp_path, specs)
    rec.on_sample("intervention", None, np.asarray(True), 5.0)  # before the episode
    rec.start(10.0)
    rec.on_sample("observation.state", 20.0, np.zeros(3), 10.5)
    rec.on_sample("intervention", None, np.asarray(False), 11.0)
    rec.commit(12.0)
    ep = Dataset.open(tmp_path / "rec.zarr").episode(0)
    flag = ep.stream("intervention")
    np.testing.assert_array_equal(flag.timestamps, [10.0, 11.0])
    np.testing.assert_array_equal(flag.read(), [True, False])


FULL_DISK_CHILD = r"""
import json, logging, sys
import numpy as np
from realloop.robot.recorder import Recorder, parse_streams
logging.basicConfig(level=logging.ERROR)
specs = parse_streams({"cam": {"feature": "observation.images.cam", "topic": "/c", "type": "Image",
                               "shape": [256, 256, 3], "image_format": "png"}})
rec = Recorder(sys.argv[1] + "/rec.zarr", specs, durable=False)
rng = np.random.default_rng(0)
rec.start(0.0)
for i in range(400):  # 200 KB of PNG noise per frame: the 2 MiB disk fills long before
    rec.on_sample("observation.images.cam", i / 30, rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), i / 30)
    if rec.episode is None:
        break
first = rec.last
rec.start(100.0)  # recording goes on after the error (into the space the lost episode freed)
rec.on_sample("observation.images.cam", 1.0, np.zeros((256, 256, 3), np.uint8), 100.1)
second = rec.commit(100.2, True)
print(json.dumps({"first": first, "second": second["outcome"], "index": second["episode"]}))
"""


def test_a_full_disk_loses_the_episode_and_recording_goes_on(tmp_path: Path) -> None:
    assert shutil.which("unshare"), "util-linux `unshare` is needed to mount a small tmpfs for this test"
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=2m tmpfs "$1" && exec "$2" -c "$3" "$1"'
    proc = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "_", str(mnt), sys.executable, FULL_DISK_CHILD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    first = out["first"]
    assert first["outcome"] == "write_error" and "disk is full" in first["error"]
    assert first["streams"]["observation.images.cam"]["written"] > 0
    assert (out["second"], out["index"]) == ("committed", 0)


def test_command_stream_joins_the_arm_and_gripper_topics_into_one_action() -> None:
    """``field: command``: one action per command on either topic, the arm's targets then the gripper opening, as
    realloop-collect writes joint_position actions."""
    arm6 = load_robot_spec("arm6")
    spec = parse_stream(
        "action",
        {"topic": "/arm_controller/commands", "type": "Float64MultiArray", "field": "command",
         "gripper_topic": "/gripper_controller/commands"},
        arm6,
    )  # fmt: skip
    assert spec.feature == "action" and spec.shape == (7,) and spec.names == (*arm6.joint_names, "gripper")
    assert spec.topics == ("/arm_controller/commands", "/gripper_controller/commands")
    grip, arm = "/gripper_controller/commands", "/arm_controller/commands"
    assert spec.value_of(Float64MultiArray(data=np.array([0.01])), grip) is None  # no arm target known yet
    q = np.arange(6, dtype=float) / 10
    np.testing.assert_array_equal(spec.value_of(Float64MultiArray(data=q), arm), [*q, 0.01])
    np.testing.assert_array_equal(spec.value_of(Float64MultiArray(data=np.array([0.03])), grip), [*q, 0.03])
    np.testing.assert_array_equal(spec.value_of(Float64MultiArray(data=q + 1), arm), [*(q + 1), 0.03])
    with pytest.raises(InvalidSample, match="an arm command has 5 values, the robot has 6 joints"):
        spec.value_of(Float64MultiArray(data=q[:5]), arm)
    with pytest.raises(InvalidSample, match=r"a gripper command has 2 values, expected \[opening\]"):
        spec.value_of(Float64MultiArray(data=np.zeros(2)), grip)
    # a fresh stream starts from the gripper's spec default
    fresh = parse_stream("action", {"topic": arm, "type": "Float64MultiArray", "field": "command",
                                    "gripper_topic": grip}, arm6)  # fmt: skip
    np.testing.assert_array_equal(fresh.value_of(Float64MultiArray(data=q), arm), [*q, arm6.gripper.default])
    for bad, msg in (
        ({}, "has a gripper: give its command topic as 'gripper_topic'"),
        ({"gripper_topic": grip, "names": ["a"]}, "'names' does not apply to field 'command'"),
        ({"gripper_topic": "gripper"}, "'gripper_topic' must be an absolute topic name"),
    ):
        with pytest.raises(StreamConfigError, match=msg):
            parse_stream("action", {"topic": arm, "type": "Float64MultiArray", "field": "command", **bad}, arm6)
    with pytest.raises(StreamConfigError, match="'gripper_topic' applies to field 'command' only"):
        parse_stream("action", {"topic": arm, "type": "Float64MultiArray", "names": ["a"], "gripper_topic": grip})
    quad = load_robot_spec("quad12")
    legs = parse_stream("action", {"topic": "/leg_controller/commands", "type": "Float64MultiArray",
                                   "field": "command"}, quad)  # fmt: skip
    assert legs.shape == (12,) and legs.topics == ("/leg_controller/commands",)
