"""The recorder node as a real process on real DDS: episodes committed and discarded on command, header stamps
kept, counts, gaps and dead streams reported, SIGINT discards the episode in progress, bad configs exit 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from realloop.data import Dataset
from realloop.robot.msgs import Clock, CompressedImage, Float64MultiArray, JointState, String, Time, header
from realloop.robot.node import Node
from realloop.robot.recorder import report_path_for
from realloop.robot.spec import load_robot_spec

ARM = load_robot_spec("arm6")
JS_NAMES = [*ARM.joint_names, ARM.gripper.joints[0]]
STREAMS = {
    "state": {
        "feature": "observation.state",
        "topic": "/joint_states",
        "type": "JointState",
        "joints": "robot.joint_states",
        "rate_hz": 100,
    },
    "velocity": {
        "feature": "observation.velocity",
        "topic": "/joint_states",
        "type": "JointState",
        "field": "velocity",
        "joints": "robot.joint_states",
        "rate_hz": 100,
    },
    "front": {
        "feature": "observation.images.front",
        "topic": "/front/image_raw/compressed",
        "type": "CompressedImage",
        "rate_hz": 30,
    },
    "action": {
        "feature": "action",
        "topic": "/arm_controller/commands",
        "type": "Float64MultiArray",
        "names": "robot.joints",
    },
}


def _jpeg(k: int) -> bytes:
    rng = np.random.default_rng(k)
    img = cv2.resize(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


FRAMES = [_jpeg(k) for k in range(8)]


def _sec(t: float) -> float:
    """A stamp as the header carries it (nanosecond resolution)."""
    return Time.from_sec(t).to_sec()


class Rig:
    """The test's side of the graph: publishers of the recorded topics, the recorder's status, commands."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.js = node.create_publisher("/joint_states", JointState)
        self.cam = node.create_publisher("/front/image_raw/compressed", CompressedImage, qos="sensor")
        self.cmd = node.create_publisher("/arm_controller/commands", Float64MultiArray)
        self.rec = node.create_publisher("/recorder/command", String)
        self.status: dict | None = None
        node.create_subscription("/recorder/status", String, self._on_status, qos="latched")
        self.sent: dict[str, list[float]] = {"observation.state": [], "observation.images.front": [], "action": []}

    def _on_status(self, msg: String) -> None:
        self.status = json.loads(msg.data)

    def wait(self, pred: Callable[[dict], bool], timeout: float = 20.0, what: str = "") -> dict:
        ok = self.node.spin_until(lambda: self.status is not None and pred(self.status), timeout)
        assert ok, f"timed out waiting for {what or 'the recorder'}; last status: {self.status}"
        assert self.status is not None
        return self.status

    def state(self, t: float) -> None:
        pos = np.arange(len(JS_NAMES)) + t
        # the driver lists the gripper first: the recorder reorders by name
        order = [len(JS_NAMES) - 1, *range(len(JS_NAMES) - 1)]
        self.js.publish(JointState(header(t), [JS_NAMES[i] for i in order], pos[order], -pos[order], np.zeros(0)))
        self.sent["observation.state"].append(_sec(t))

    def image(self, t: float, k: int = 0) -> None:
        self.cam.publish(CompressedImage(header(t, "front"), "bgr8; jpeg compressed bgr8", FRAMES[k % len(FRAMES)]))
        self.sent["observation.images.front"].append(_sec(t))

    def action(self) -> None:
        self.cmd.publish(Float64MultiArray(data=np.full(len(ARM.joint_names), 0.5)))
        self.sent["action"].append(time.time())

    def command(self, cmd: str, until: Callable[[dict], bool]) -> dict:
        """Send a command until the status shows its effect (the first may precede DDS discovery)."""
        for _ in range(5):
            self.rec.publish(String(cmd))
            if self.node.spin_until(lambda: self.status is not None and until(self.status), 4.0):
                assert self.status is not None
                return self.status
        raise AssertionError(f"command {cmd!r} had no effect; last status: {self.status}")

    def warm_up(self) -> None:
        """Publish until the recorder has heard every stream (discovery done), while it is idle."""
        t = 1.0
        for _ in range(200):
            t += 0.01
            self.state(t)
            self.image(t)
            self.action()
            if self.node.spin_until(
                lambda: self.status is not None and all(s["heard"] > 0 for s in self.status["streams"].values()), 0.05
            ):
                break
        self.wait(lambda s: all(v["heard"] > 0 for v in s["streams"].values()), what="discovery")
        for v in self.sent.values():
            v.clear()


def play(schedule: list[tuple[float, Callable[[], None]]]) -> None:
    """Run each callable at its time offset (s) from now, in real time."""
    t0 = time.monotonic()
    for off, fn in sorted(schedule, key=lambda x: x[0]):
        delay = t0 + off - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fn()


def _streams_file(tmp_path: Path, streams: dict) -> Path:
    p = tmp_path / "streams.yaml"
    p.write_text(yaml.safe_dump({"streams": streams}))
    return p


def _cli_verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "realloop-dataset"), "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_episodes_gaps_and_dead_streams(start_node, test_node: Node, tmp_path: Path) -> None:
    ds_path = tmp_path / "rec.zarr"
    proc = start_node(
        "recorder",
        f"dataset={ds_path}",
        f"streams_file={_streams_file(tmp_path, STREAMS)}",
        "robot=arm6",
        "task=pick the cube",
        "source=teleop",
        "dead_after=0.5",
    )
    rig = Rig(test_node)
    rig.wait(lambda s: s["state"] == "waiting", what="the recorder to come up")  # for the first frame's size
    rig.warm_up()
    rig.wait(lambda s: s["state"] == "idle", what="the dataset to be created")
    recording = lambda s: s["state"] == "recording"  # noqa: E731

    # episode 0: 1 s at 100 Hz (state) and 30 Hz (camera), a few actions -> success
    rig.command("start", recording)
    base = 2000.0
    play(
        [(i / 100, lambda i=i: rig.state(base + i / 100)) for i in range(100)]
        + [(k / 30, lambda k=k: rig.image(base + k / 30, k)) for k in range(30)]
        + [(j / 10, rig.action) for j in range(10)]
    )
    counts = {f: len(v) for f, v in rig.sent.items()}
    rig.wait(lambda s: all(s["streams"][f]["written"] == n for f, n in counts.items()), what="all samples")
    st = rig.command("success", lambda s: s["state"] == "idle" and s["last"]["outcome"] == "committed")
    assert st["last"] == {"episode": 0, "outcome": "committed", "success": True, "ended_by": "success"}
    sent0 = {f: list(v) for f, v in rig.sent.items()}
    for v in rig.sent.values():
        v.clear()

    # episode "1": discarded
    rig.command("start", recording)
    play([(i / 100, lambda i=i: rig.state(base + 10 + i / 100)) for i in range(20)])
    rig.wait(lambda s: s["streams"]["observation.state"]["written"] == 20, what="the discarded episode's samples")
    rig.command("discard", lambda s: s["state"] == "idle" and s["last"]["outcome"] == "discarded")
    for v in rig.sent.values():
        v.clear()

    # episode 1: frames 10..14 skipped (a gap of 6 periods), then the camera stops while the state goes on
    rig.command("start", recording)
    base = 3000.0
    n_frames, skipped = 30, set(range(10, 15))
    play(
        [(i / 100, lambda i=i: rig.state(base + i / 100)) for i in range(200)]
        + [(k / 30, lambda k=k: rig.image(base + k / 30, k)) for k in range(n_frames) if k not in skipped]
    )
    st = rig.wait(lambda s: s["streams"]["observation.images.front"]["dead"], what="the camera reported dead")
    assert not st["streams"]["observation.state"]["dead"]
    rig.command("failure", lambda s: s["state"] == "idle" and s["last"]["episode"] == 1)
    sent1 = {f: list(v) for f, v in rig.sent.items()}

    ds = Dataset.open(ds_path)
    assert ds.robot["name"] == "arm6" and len(ds) == 2
    ep0, ep1 = ds.episode(0), ds.episode(1)
    assert (ep0.success, ep1.success) == (True, False)
    assert ep0.meta["task"] == "pick the cube" and ep0.meta["source"] == "teleop" and ep0.meta["robot"] == "arm6"
    for ep, sent in ((ep0, sent0), (ep1, sent1)):
        for f in ("observation.state", "observation.images.front"):
            np.testing.assert_allclose(ep.stream(f).timestamps, sent[f], rtol=0, atol=1e-9)
        assert np.all(np.diff(ep.stream("observation.velocity").timestamps) > 0)
    state = ep0.stream("observation.state").read()
    assert ep0.stream("observation.state").feature.names == tuple(JS_NAMES)
    t0 = np.asarray(sent0["observation.state"])
    np.testing.assert_allclose(state, t0[:, None] + np.arange(len(JS_NAMES)), rtol=1e-6)  # joint i is at t + i
    np.testing.assert_allclose(ep0.stream("observation.velocity").read(), -state, rtol=1e-6)
    act = ep0.stream("action").timestamps  # no header: receive time on the recorder's (wall) clock
    assert len(act) == 10 and np.all(np.diff(act) > 0)
    assert sent0["action"][0] - 1.0 < act[0] and act[-1] < sent0["action"][-1] + 5.0
    frame = cv2.cvtColor(cv2.imdecode(np.frombuffer(FRAMES[5], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(ep0.stream("observation.images.front")[5], frame)  # the camera's JPEG, as sent

    r0 = ep0.meta["attributes"]["recorder"]["streams"]
    assert r0["observation.state"]["received"] == 100 and r0["observation.state"]["dropped"] == 0
    assert r0["observation.images.front"]["received"] == 30 and r0["observation.images.front"]["dropped"] == 0
    assert not any(s["dead"] for s in r0.values() if "expected_rate_hz" in s)
    r1 = ep1.meta["attributes"]["recorder"]["streams"]
    cam = r1["observation.images.front"]
    assert cam["received"] == n_frames - len(skipped) and cam["written"] == cam["received"]
    assert (cam["dropped"], cam["gaps"]) == (len(skipped), 1)
    assert cam["largest_gap_s"] == pytest.approx((len(skipped) + 1) / 30, abs=1e-6)
    assert cam["dead"] and len(cam["silences"]) == 1 and cam["silences"][0][1] is None
    assert 0.5 < cam["silences"][0][0] < 4.0  # silent from the last frame (~1 s in) to the end
    assert r1["observation.state"]["dropped"] == 0 and not r1["observation.state"]["dead"]
    assert r1["observation.state"]["received"] == 200

    report = json.loads(report_path_for(ds_path).read_text())
    assert [(e["outcome"], e["episode"], e["success"]) for e in report["episodes"]] == [
        ("committed", 0, True),
        ("discarded", None, None),
        ("committed", 1, False),
    ]
    log = proc.log_text()
    assert "episode 1 committed (failure" in log and "~5 dropped in 1 gap;" in log and "DEAD" in log

    res = _cli_verify(ds_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_sigint_discards_the_episode_in_progress(start_node, test_node: Node, tmp_path: Path) -> None:
    ds_path = tmp_path / "rec.zarr"
    streams = {k: STREAMS[k] for k in ("state", "front")}
    streams["front"] = {**streams["front"], "shape": None}  # learned from the first frame
    proc = start_node(
        "recorder",
        f"dataset={ds_path}",
        f"streams_file={_streams_file(tmp_path, streams)}",
        "robot=arm6",
        "auto_start=true",
    )
    rig = Rig(test_node)
    st = rig.wait(lambda s: s["state"] in ("waiting", "recording"), what="the recorder to come up")
    if st["state"] == "waiting":  # the dataset is created at the first frame, then the episode starts
        assert st["waiting_for"] == ["observation.images.front"] and st["start_pending"]
    t = 5000.0
    for _ in range(400):
        t += 0.01
        rig.state(t)
        rig.image(t)
        if test_node.spin_until(
            lambda: (
                rig.status is not None
                and rig.status["state"] == "recording"
                and rig.status["streams"]["observation.state"]["written"] > 10
            ),
            0.01,
        ):
            break
    rig.wait(
        lambda s: s["state"] == "recording" and s["streams"]["observation.state"]["written"] > 10,
        what="samples recorded",
    )
    second = start_node("recorder", f"dataset={ds_path}", f"streams_file={_streams_file(tmp_path, streams)}")
    assert second.wait(30) == 2 and "another process is writing" in second.log_text()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, proc.log_text()
    assert rig.wait(lambda s: s["state"] == "stopped", what="the final status")["last"]["ended_by"] == "shutdown"
    ds = Dataset.open(ds_path)
    assert len(ds) == 0 and ds.features["observation.images.front"].shape == (48, 64, 3)
    assert not any((ds_path / ".staging").glob("*"))
    entries = json.loads(report_path_for(ds_path).read_text())["episodes"]
    assert [(e["outcome"], e["ended_by"]) for e in entries] == [("discarded", "shutdown")]
    assert entries[0]["streams"]["observation.state"]["written"] > 10
    assert "discarded" in proc.log_text()
    assert _cli_verify(ds_path).returncode == 0


def test_sim_time_stamps_headerless_commands_on_the_sim_clock(start_node, test_node: Node, tmp_path: Path) -> None:
    """With ``use_sim_time`` (the sim graphs) a command without a header is stamped on /clock, the clock the
    sim's joint states carry, so actions and states line up; auto start waits for the first /clock."""
    ds_path = tmp_path / "rec.zarr"
    streams = {k: STREAMS[k] for k in ("state", "action")}
    start_node(
        "recorder",
        f"dataset={ds_path}",
        f"streams_file={_streams_file(tmp_path, streams)}",
        "robot=arm6",
        "auto_start=true",
        "use_sim_time=true",
    )
    rig = Rig(test_node)
    clock = test_node.create_publisher("/clock", Clock, qos="clock")
    rig.wait(lambda s: s["state"] is not None, what="the recorder to come up")
    for _ in range(50):  # no /clock yet: nothing can be stamped, so no episode starts
        rig.state(7.0)
        rig.action()
        test_node.spin_until(lambda: False, 0.02)
    assert rig.status is not None and rig.status["state"] != "recording"
    base = 500.0
    sim = {"t": base}

    def tick() -> None:
        sim["t"] += 0.01
        clock.publish(Clock(Time.from_sec(sim["t"])))
        rig.state(sim["t"])

    for _ in range(500):  # the clock runs: auto start
        tick()
        if test_node.spin_until(lambda: rig.status is not None and rig.status["state"] == "recording", 0.01):
            break
    rig.wait(lambda s: s["state"] == "recording", what="auto start on the first /clock")
    play([(i / 100, tick) for i in range(100)] + [(0.2 + j / 10, rig.action) for j in range(5)])
    for _ in range(500):  # the status is published on the recorder's (sim) clock: keep it running
        tick()
        if test_node.spin_until(
            lambda: rig.status is not None and rig.status["streams"]["action"].get("written", 0) >= 5, 0.01
        ):
            break
    rig.wait(lambda s: s["state"] == "recording" and s["streams"]["action"]["written"] >= 5, what="the actions")
    rig.command("stop", lambda s: s["state"] == "idle" and s["last"]["outcome"] == "committed")
    ep = Dataset.open(ds_path).episode(0)
    states, acts = ep.stream("observation.state").timestamps, ep.stream("action").timestamps
    assert base < states[0] and states[-1] <= sim["t"] + 1e-6  # none of the stamp-7.0 states before the clock
    assert len(acts) >= 5 and base <= acts[0] and acts[-1] <= sim["t"] + 1e-6  # sim time, not the wall clock


@pytest.mark.parametrize(
    ("streams", "message"),
    [
        (
            {"cloud": {"topic": "/points", "type": "PointCloud2", "feature": "observation.points"}},
            "unknown message type 'PointCloud2'",
        ),
        ({"state": {**STREAMS["state"], "field": "torque"}}, "JointState has no field 'torque'"),
    ],
)
def test_bad_config_exits_2(start_node, tmp_path: Path, streams: dict, message: str) -> None:
    proc = start_node("recorder", f"dataset={tmp_path / 'x.zarr'}", f"streams_file={_streams_file(tmp_path, streams)}")
    assert proc.wait(30) == 2
    assert message in proc.log_text()
    assert not (tmp_path / "x.zarr").exists()
