"""The camera node as a process on real DDS, reading a real video file through OpenCV: what arrives on
image_raw / image_raw/compressed / camera_info, rates and stamps, end of file, bad sources and a failing device."""

from __future__ import annotations

import itertools
import math
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from realloop.robot.msgs import CameraInfo, CompressedImage, Image
from realloop.robot.node import Node
from realloop.robot.nodes.camera import Intrinsics, output_size

W, H, N_FRAMES = 160, 120, 12


def make_frames(n: int, w: int = W, h: int = H) -> list[np.ndarray]:
    """Frames that differ a lot from each other: a gradient, a moving block and a per-frame tint."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        f = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, (i * 37) % 256)], axis=-1).astype(np.uint8)
        x0 = (i * 11) % (w - 24)
        f[20:44, x0 : x0 + 24] = (255, 255, 255)
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """A short MJPG .avi and the frames OpenCV decodes from it (what the node reads, bit for bit)."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (W, H))
    assert writer.isOpened()
    for f in make_frames(N_FRAMES):
        writer.write(f)
    writer.release()
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        decoded.append(f)
    assert len(decoded) == N_FRAMES
    return path, decoded


def frame_index(img: np.ndarray, refs: list[np.ndarray]) -> tuple[int, float]:
    """The reference frame closest to ``img`` and their mean absolute difference."""
    diffs = [float(np.abs(img.astype(np.int16) - r.astype(np.int16)).mean()) for r in refs]
    i = int(np.argmin(diffs))
    return i, diffs[i]


def stamp(msg: Image | CompressedImage | CameraInfo) -> float:
    return msg.header.stamp.to_sec()


def collect(node: Node, prefix: str) -> dict[str, list]:
    got: dict[str, list] = {"raw": [], "jpeg": [], "info": []}
    node.create_subscription(f"{prefix}/image_raw", Image, got["raw"].append, qos="sensor")
    node.create_subscription(f"{prefix}/image_raw/compressed", CompressedImage, got["jpeg"].append, qos="sensor")
    node.create_subscription(f"{prefix}/camera_info", CameraInfo, got["info"].append, qos="sensor")
    return got


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(15)


def test_file_source_publishes_all_three_topics(
    start_node: Callable[..., subprocess.Popen], test_node: Node, video: tuple[Path, list[np.ndarray]]
) -> None:
    path, refs = video
    rate = 20.0
    got = collect(test_node, "/cam")
    t_start = time.time()
    proc = start_node("camera", "name=cam", "source=file", f"file={path}", f"rate_hz={rate}", "jpeg_quality=95")
    want = N_FRAMES + 6  # more frames than the file holds: it must loop
    ok = test_node.spin_until(lambda: proc.poll() is not None or all(len(v) >= want for v in got.values()), 40)
    assert ok and proc.poll() is None, f"got { ({k: len(v) for k, v in got.items()}) }: {proc.log_text()}"
    assert stop(proc) == 0, proc.log_text()
    assert re.search(r"published \d+ frames", proc.log_text())

    raw, jpeg, info = got["raw"], got["jpeg"], got["info"]
    # raw frames are the file's frames exactly, in order, wrapping around at the end
    indices = []
    for m in raw:
        assert (m.height, m.width, m.encoding, m.step, m.is_bigendian) == (H, W, "bgr8", 3 * W, 0)
        idx, diff = frame_index(np.frombuffer(m.data, np.uint8).reshape(H, W, 3), refs)
        assert diff == 0.0
        indices.append(idx)
    steps = [(b - a) % N_FRAMES for a, b in itertools.pairwise(indices)]
    assert 0 not in steps and sum(s == 1 for s in steps) > len(steps) // 2, indices  # drops are rare, repeats never
    assert any(b < a for a, b in itertools.pairwise(indices)), f"never looped: {indices}"

    raw_by_stamp = {stamp(m): m for m in raw}
    for m in jpeg:
        assert m.format == "bgr8; jpeg compressed bgr8"
        img = cv2.imdecode(np.frombuffer(m.data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (H, W, 3)
        idx, diff = frame_index(img, refs)
        assert diff < 4.0, diff
        if stamp(m) in raw_by_stamp:  # the same acquisition on both topics
            assert idx == indices[raw.index(raw_by_stamp[stamp(m)])]

    f = 0.5 * W / math.tan(math.radians(69.0) / 2)
    for m in info:
        assert (m.width, m.height, m.distortion_model, m.header.frame_id) == (W, H, "plumb_bob", "cam_optical_frame")
        np.testing.assert_allclose(m.k, [f, 0, W / 2, 0, f, H / 2, 0, 0, 1])
        np.testing.assert_allclose(m.p, [f, 0, W / 2, 0, 0, f, H / 2, 0, 0, 0, 1, 0])
        np.testing.assert_array_equal(m.r, np.eye(3).ravel())
    assert {stamp(m) for m in info} & set(raw_by_stamp), "camera_info shares the images' headers"

    for msgs in (raw, jpeg, info):
        stamps = np.array([stamp(m) for m in msgs])
        assert (np.diff(stamps) > 0).all(), "stamps must increase"
        assert t_start - 1 < stamps[0] and stamps[-1] < time.time() + 1, "stamps are wall-clock acquisition times"
        period = float(np.median(np.diff(stamps)))
        assert 0.5 / rate < period < 2.0 / rate, f"median period {period:.3f}s at {rate} Hz"


def test_file_resized_compressed_only_stops_at_end(
    start_node: Callable[..., subprocess.Popen], test_node: Node, video: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    path, refs = video
    got = collect(test_node, "/front")
    calib = tmp_path / "front.yaml"  # what ROS's camera_calibration writes, calibrated at the source size
    calib.write_text(
        f"image_width: {W}\nimage_height: {H}\ncamera_name: front\n"
        "camera_matrix: {rows: 3, cols: 3, data: [100.0, 0, 79.5, 0, 101.0, 59.5, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [-0.1, 0.01, 0.001, 0.002, 0.0]}\n"
        "rectification_matrix: {rows: 3, cols: 3, data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}\n"
        "projection_matrix: {rows: 3, cols: 4, data: [98.0, 0, 80.0, 0, 0, 99.0, 60.0, 0, 0, 0, 1, 0]}\n"
    )
    # configured through --ros-args, as ros2 launch does; the node name gives the topic prefix
    proc = start_node(
        "camera",
        "source=file",
        f"file={path}",
        ros_args=[
            "-r",
            "__node:=front",
            "-p",
            "loop:=false",
            "-p",
            "rate_hz:=10",
            "-p",
            "width:=80",
            "-p",
            "image_raw:=false",
            "-p",
            "frame_id:=front_link",
            "-p",
            f"camera_info.file:={calib}",
        ],
    )
    ended = test_node.spin_until(lambda: proc.poll() is not None, 40)
    test_node.spin(0.3)
    assert ended and proc.returncode == 0, proc.log_text()
    assert f"end of file {path} after {N_FRAMES} frames" in proc.log_text()
    assert got["raw"] == []
    assert got["jpeg"] and got["info"], proc.log_text()

    small = [cv2.resize(r, (80, 60), interpolation=cv2.INTER_AREA) for r in refs]
    indices = []
    for m in got["jpeg"]:
        img = cv2.imdecode(np.frombuffer(m.data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (60, 80, 3) and m.header.frame_id == "front_link"
        idx, diff = frame_index(img, small)
        assert diff < 5.0
        indices.append(idx)
    assert indices == sorted(set(indices)) and indices[-1] == N_FRAMES - 1, indices  # no loop, ends on the last
    m = got["info"][-1]
    assert (m.width, m.height) == (80, 60)
    np.testing.assert_allclose(m.k, [50.0, 0, 39.75, 0, 50.5, 29.75, 0, 0, 1])  # scaled to the output size
    np.testing.assert_allclose(m.p, [49.0, 0, 40.0, 0, 0, 49.5, 30.0, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(m.d, [-0.1, 0.01, 0.001, 0.002, 0.0])


def test_file_alone_selects_the_file_source(
    start_node: Callable[..., subprocess.Popen], test_node: Node, video: tuple[Path, list[np.ndarray]]
) -> None:
    """The README's ``realloop-node camera file=demo.mp4 rate_hz=30 --ros-args -r __node:=front``: no
    ``source=file`` needed (``source: auto``), the node never opens device 0."""
    path, refs = video
    got = collect(test_node, "/front")
    proc = start_node("camera", f"file={path}", "rate_hz=30", ros_args=["-r", "__node:=front"])
    ok = test_node.spin_until(lambda: proc.poll() is not None or len(got["raw"]) >= 3, 40)
    assert ok and proc.poll() is None, proc.log_text()
    assert stop(proc) == 0, proc.log_text()
    assert f"file {path}" in proc.log_text() and "device" not in proc.log_text()
    m = got["raw"][0]
    assert frame_index(np.frombuffer(m.data, np.uint8).reshape(H, W, 3), refs)[1] == 0.0  # the file's frames


def test_bad_sources_exit_2_naming_the_parameter(start_node: Callable[..., subprocess.Popen], tmp_path: Path) -> None:
    missing = tmp_path / "no_such_clip.mp4"
    not_video = tmp_path / "notes.txt"
    not_video.write_text("not a video")
    cases = [
        (("source=file", f"file={missing}"), [str(missing), "'file'", "does not exist"]),
        ((f"file={missing}",), [str(missing), "'file'", "does not exist"]),  # file= alone selects the file
        (("source=file", f"file={not_video}"), [str(not_video), "'file'"]),
        (("source=device", "device=/dev/video_realloop_missing"), ["/dev/video_realloop_missing", "'device'"]),
        (("source=file",), ["'file'", "not set"]),
        (("source=usb",), ["'source'"]),
        (("source=file", f"file={missing}", "jpeg_quality=0"), ["'jpeg_quality'"]),
        (("source=file", f"file={missing}", "camera_info.k=[1,2,3]"), ["'camera_info.k'", "9 values"]),
    ]
    procs = [(start_node("camera", *args), words) for args, words in cases]
    for proc, words in procs:
        assert proc.wait(30) == 2, proc.log_text()
        log = proc.log_text()
        for w in words:
            assert w in log, f"{w!r} not in {log!r}"
        assert "Traceback" not in log


def test_device_that_stops_delivering_exits_nonzero(
    start_node: Callable[..., subprocess.Popen], video: tuple[Path, list[np.ndarray]]
) -> None:
    """A device read failure mid-stream (unplugged camera): a capture 'device' that OpenCV opens from a URL-like
    path ends after a few frames, like a camera pulled out."""
    path, _ = video
    proc = start_node("camera", "name=usb", "source=device", f"device={path}", "rate_hz=30")
    assert proc.wait(30) == 1, proc.log_text()
    log = proc.log_text()
    assert f"device {path} stopped delivering frames" in log
    assert "Traceback" not in log
    assert int(re.search(r"published (\d+) frames", log).group(1)) >= 1


def test_intrinsics_and_sizes(tmp_path: Path) -> None:
    assert output_size(640, 480, None, None) == (640, 480)
    assert output_size(640, 480, 320, None) == (320, 240)
    assert output_size(640, 480, None, 120) == (160, 120)
    assert output_size(640, 480, 100, 100) == (100, 100)

    info = Intrinsics.from_params({"hfov_deg": 90.0}).camera_info(640, 480)
    np.testing.assert_allclose(info.k, [320, 0, 320, 0, 320, 240, 0, 0, 1])
    assert list(info.d) == [] and info.distortion_model == "plumb_bob"

    k = [500, 0, 319.5, 0, 500, 239.5, 0, 0, 1]
    intr = Intrinsics.from_params({"k": k, "d": [0.1, 0, 0, 0, 0], "width": 640, "height": 480})
    np.testing.assert_allclose(intr.camera_info(640, 480).k, k)
    np.testing.assert_allclose(intr.camera_info(320, 240).k, [250, 0, 159.75, 0, 250, 119.75, 0, 0, 1])
    np.testing.assert_allclose(intr.camera_info(320, 240).p, [250, 0, 159.75, 0, 0, 250, 119.75, 0, 0, 0, 1, 0])

    with pytest.raises(ValueError, match=r"'camera_info.r' needs 9 values"):
        Intrinsics.from_params({"r": [1, 0, 0]})
    with pytest.raises(ValueError, match="go together"):
        Intrinsics.from_params({"k": k, "width": 640})
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_width: 640\n")
    with pytest.raises(ValueError, match=r"bad.yaml \(param 'camera_info.file'\) is not a camera_calibration"):
        Intrinsics.from_params({"file": str(bad)})
    with pytest.raises(ValueError, match="does not exist"):
        Intrinsics.from_params({"file": str(tmp_path / "missing.yaml")})
