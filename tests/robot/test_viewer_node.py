"""The viewer node as a process on real DDS, next to a real camera node (reading a video file) and a real recorder:
its page, /status.json, the newest frame (the camera's JPEG bytes, passed through), the MJPEG stream, a PNG
camera re-encoded, and a port already in use."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from realloop.robot.msgs import CompressedImage, JointState, header
from realloop.robot.node import Node
from realloop.robot.nodes.viewer import camera_name
from realloop.robot.spec import load_robot_spec

W, H, N_FRAMES = 160, 120, 12
ARM = load_robot_spec("arm6")
JS_NAMES = [*ARM.joint_names, ARM.gripper.joints[0]]
TIMEOUT = 60.0  # node start-up on a loaded 2-core machine


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short MJPG .avi of frames that all differ (a moving block)."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (W, H))
    assert writer.isOpened()
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(N_FRAMES):
        f = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, i * 20)], axis=-1).astype(np.uint8)
        f[20:44, i * 10 : i * 10 + 24] = 255
        writer.write(f)
    writer.release()
    return path


def fetch(url: str, timeout: float = 10.0) -> tuple[int, str, bytes]:
    """(status code, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def viewer_url(proc: subprocess.Popen, node: Node) -> str:
    """The URL the viewer logs once it serves (port=0: the port the OS chose)."""
    pattern = re.compile(r"viewer: (http://127\.0\.0\.1:\d+/)")
    assert node.spin_until(lambda: proc.poll() is not None or bool(pattern.search(proc.log_text())), TIMEOUT)
    m = pattern.search(proc.log_text())
    assert m and proc.poll() is None, proc.log_text()
    return m[1]


def wait_status(node: Node, url: str, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """Poll /status.json (spinning the test node, whose timers publish) until ``pred`` holds."""
    end = time.monotonic() + TIMEOUT
    status: dict[str, Any] = {}
    while time.monotonic() < end:
        status = json.loads(fetch(url + "status.json")[2])
        if pred(status):
            return status
        node.spin(0.2)
    raise AssertionError(f"timed out waiting for {what}; last /status.json: {status}")


def read_part(stream: Any) -> bytes:
    """One part of a multipart/x-mixed-replace body: boundary line, headers, blank line, Content-Length bytes."""
    line = stream.readline()
    while line in (b"\r\n", b"\n"):  # the CRLF that ends the previous part
        line = stream.readline()
    assert line.strip() == b"--realloopframe", line
    headers = {}
    while (line := stream.readline().strip()) != b"":
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    assert headers["content-type"] == "image/jpeg"
    return stream.read(int(headers["content-length"]))


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not an image"
    return img


def test_camera_names_come_from_their_topics() -> None:
    assert camera_name("/front/image_raw/compressed") == "front"
    assert camera_name("/arm/wrist/image_raw/compressed") == "arm_wrist"
    assert camera_name("/head/compressed") == "head"
    assert camera_name("/image_raw/compressed") == "image_raw"  # a camera without a namespace keeps a name


def test_viewer_serves_cameras_joint_states_and_the_recorder_status(
    start_node: Callable[..., subprocess.Popen], test_node: Node, video: Path, tmp_path: Path
) -> None:
    published: list[bytes] = []
    test_node.create_subscription(
        "/front/image_raw/compressed", CompressedImage, lambda m: published.append(bytes(m.data)), qos="sensor"
    )
    js = test_node.create_publisher("/joint_states", JointState)
    q = np.linspace(-0.5, 0.5, len(JS_NAMES))
    test_node.create_timer(0.05, lambda: js.publish(JointState(header(time.time()), JS_NAMES, q, 0 * q, np.zeros(0))))
    streams = {
        "state": {"feature": "observation.state", "topic": "/joint_states", "type": "JointState"}
        | {"joints": "robot.joint_states", "rate_hz": 20},
        "front": {"feature": "observation.images.front", "topic": "/front/image_raw/compressed"}
        | {"type": "CompressedImage", "rate_hz": 20},
    }
    streams_file = tmp_path / "streams.yaml"
    streams_file.write_text(yaml.safe_dump({"streams": streams}))

    viewer = start_node("viewer", "port=0", "robot=arm6")  # default cameras: front and wrist
    start_node("camera", "name=front", f"file={video}", "rate_hz=20", "image_raw=false")
    start_node(
        "recorder",
        f"dataset={tmp_path / 'rec.zarr'}",
        f"streams_file={streams_file}",
        "auto_start=true",
        "durable=false",
    )
    url = viewer_url(viewer, test_node)

    code, ctype, body = fetch(url + "camera/wrist.jpg")  # no wrist camera runs
    assert code == 503 and b"no frame on /wrist/image_raw/compressed yet" in body

    st = wait_status(
        test_node,
        url,
        lambda s: (
            s["cameras"]["front"]["frames"] > 5
            and s["joint_states"] is not None
            and (s["recorder"] or {}).get("state") == "recording"
        ),
        "frames, joint states and a recording recorder",
    )
    assert st["joint_states"]["name"] == JS_NAMES
    np.testing.assert_allclose(st["joint_states"]["position"], q)
    front = st["cameras"]["front"]
    assert front["topic"] == "/front/image_raw/compressed" and front["shape"] == [H, W, 3]
    assert front["format"] == "bgr8; jpeg compressed bgr8" and front["age_s"] < 5.0
    assert st["cameras"]["wrist"]["frames"] == 0
    assert st["recorder"]["episode"] == 0 and set(st["recorder"]["streams"]) == {
        "observation.state",
        "observation.images.front",
    }
    # the line teleop shows, steps counted at arm6's control rate (10 Hz)
    m = re.fullmatch(
        r"REC ep 0 \| recording (\d+\.\d) s \| (\d+) steps \| dropped \d+ \| dead: none", st["recorder_line"]
    )
    assert m and abs(int(m[2]) - float(m[1]) * 10) <= 1, st["recorder_line"]  # the time is rounded, steps not

    code, ctype, page = fetch(url)
    assert code == 200 and ctype.startswith("text/html")
    assert b'src="/camera/front.mjpg"' in page and b'src="/camera/wrist.mjpg"' in page
    assert b'fetch("/status.json"' in page

    code, ctype, jpg = fetch(url + "camera/front.jpg")
    assert code == 200 and ctype == "image/jpeg"
    assert decode(jpg).shape == (H, W, 3)
    test_node.spin(0.3)
    assert jpg in published  # the camera's JPEG bytes, not re-encoded

    with urllib.request.urlopen(url + "camera/front.mjpg", timeout=10) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=realloopframe"
        first, second = read_part(r), read_part(r)
    assert decode(first).shape == (H, W, 3) and decode(second).shape == (H, W, 3)
    assert first != second  # live: the next part is the next frame

    # a PNG camera (compressed_image_transport's png format) is re-encoded as JPEG for the browser
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 32:] = (0, 0, 255)
    png = cv2.imencode(".png", img)[1].tobytes()
    wrist = test_node.create_publisher("/wrist/image_raw/compressed", CompressedImage, qos="sensor")
    test_node.create_timer(
        0.1, lambda: wrist.publish(CompressedImage(header(time.time()), "bgr8; png compressed", png))
    )
    wait_status(test_node, url, lambda s: s["cameras"]["wrist"]["frames"] > 0, "a PNG frame")
    code, ctype, jpg = fetch(url + "camera/wrist.jpg")
    assert code == 200 and jpg[:2] == b"\xff\xd8"
    got = decode(jpg)
    assert got.shape == (48, 64, 3) and np.abs(got.astype(int) - img).mean() < 5
    st = json.loads(fetch(url + "status.json")[2])
    assert st["cameras"]["wrist"]["shape"] == [48, 64, 3]

    code, _, body = fetch(url + "camera/nope.jpg")
    assert code == 404 and b"/camera/front.jpg" in body
    assert viewer.poll() is None, viewer.log_text()


def test_a_port_in_use_is_one_line_naming_the_fix(start_node: Callable[..., subprocess.Popen], test_node: Node) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        viewer = start_node("viewer", f"port={port}")
        assert viewer.wait(TIMEOUT) == 2, viewer.log_text()
    assert f"port {port} on 127.0.0.1 is already in use (another viewer?): set port=" in viewer.log_text()
    assert "Traceback" not in viewer.log_text()
