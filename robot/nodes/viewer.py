"""Viewer node: a web page with the cameras live, the joint states and the recorder status, for teleoperating
without looking at the robot (or with the robot in simulation).

Subscribes the ``cameras`` (sensor_msgs/CompressedImage topics), ``/joint_states`` and ``/recorder/status`` and
serves, with the standard library's ``http.server`` in a thread, on ``http://<host>:<port>/`` (it logs the URL):

- ``/``: the page: each camera live, the recorder's status line (as the teleop terminal shows it) and streams,
  the joint table, refreshed from ``/status.json`` a few times a second;
- ``/camera/<name>.mjpg``: the camera as an MJPEG stream (``multipart/x-mixed-replace``), newest frame first:
  a slow client skips frames instead of falling behind;
- ``/camera/<name>.jpg``: the newest frame (503 before the first one);
- ``/status.json``: per camera frames, rate, age and size; the joint states; the recorder status and its line.

A camera's name is its topic without ``/image_raw/compressed`` (``/front/image_raw/compressed`` -> ``front``).
JPEG frames (the camera node's and the sim mirror's) are served as they arrive, never re-encoded; other formats
(PNG) are decoded and re-encoded as JPEG by OpenCV when a client asks for them.

    realloop-node viewer                           # http://127.0.0.1:8765/, front and wrist cameras
    realloop-node viewer cameras=[/head/image_raw/compressed] port=0     # any free port: read the URL it logs

A port already in use or a bad parameter exits with code 2 and a message naming the parameter.
"""

from __future__ import annotations

import collections
import errno
import json
import math
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

from ..msgs import CompressedImage, JointState, String, json_object
from ..node import Node, resolve_topic
from ..recorder.streams import jpeg_shape
from ..teleop.status import format_status
from . import run_node

CAMERA_SUFFIXES = ("/image_raw/compressed", "/compressed", "/image_raw")
BOUNDARY = "realloopframe"
JPEG_QUALITY = 90  # re-encoding a non-JPEG frame for the browser
RATE_WINDOW_S = 2.0  # a camera's rate is measured over its frames of the last this many seconds
STREAM_WAIT_S = 1.0  # an MJPEG stream checks this often whether the node is shutting down


def camera_name(topic: str) -> str:
    """``/front/image_raw/compressed`` -> ``front``; ``/arm/wrist/image_raw/compressed`` -> ``arm_wrist``."""
    t = "/" + topic.strip("/")
    for suffix in CAMERA_SUFFIXES:
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[: -len(suffix)]
            break
    return t.strip("/").replace("/", "_")


def _finite(values: Any) -> list[float | None]:
    """Floats for JSON: NaN and infinities (which JSON cannot carry, and browsers refuse) become null."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]


@dataclass
class _Frame:
    data: bytes  # as it arrived
    fmt: str
    seq: int
    received: float  # time.monotonic()
    jpeg: bytes | None = None  # data itself when it is a JPEG, else encoded on first request
    shape: tuple[int, ...] | None = None


@dataclass
class _Camera:
    name: str
    topic: str
    frame: _Frame | None = None
    count: int = 0
    times: collections.deque[float] = field(default_factory=collections.deque)
    warned: bool = False


class Frames:
    """The newest frame of each camera, written by the node's thread and read by the HTTP threads."""

    def __init__(self, cameras: Mapping[str, str]) -> None:
        self.cameras = {name: _Camera(name, topic) for name, topic in cameras.items()}
        self._cond = threading.Condition()
        self.closed = False

    def put(self, name: str, data: bytes, fmt: str) -> None:
        now = time.monotonic()
        shape = jpeg_shape(data)  # the frame header only: microseconds
        with self._cond:
            cam = self.cameras[name]
            cam.count += 1
            cam.times.append(now)
            while cam.times and cam.times[0] < now - RATE_WINDOW_S:
                cam.times.popleft()
            cam.frame = _Frame(data, fmt, cam.count, now, data if shape else None, shape)
            self._cond.notify_all()

    def _jpeg(self, cam: _Camera, frame: _Frame) -> bytes | None:
        if frame.jpeg is None:
            img = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR)
            ok, buf = False, None
            if img is not None:
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if img is None or not ok or buf is None:
                cam.warned = True  # reported in /status.json; the page shows the camera as undecodable
                return None
            frame.jpeg, frame.shape = buf.tobytes(), tuple(img.shape)
        return frame.jpeg

    def latest(self, name: str) -> tuple[int, bytes] | None:
        """(sequence number, JPEG bytes) of the newest frame, or None before the first decodable one."""
        with self._cond:
            cam = self.cameras[name]
            frame = cam.frame
        if frame is None:
            return None
        jpeg = self._jpeg(cam, frame)
        return None if jpeg is None else (frame.seq, jpeg)

    def wait_next(self, name: str, after: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest frame once it is newer than sequence number ``after``; None after ``timeout`` s or close."""
        with self._cond:
            self._cond.wait_for(lambda: self.closed or self._seq(name) > after, timeout)
            if self.closed:
                return None
        got = self.latest(name)
        return got if got is not None and got[0] > after else None

    def _seq(self, name: str) -> int:
        frame = self.cameras[name].frame
        return 0 if frame is None else frame.seq

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        out = {}
        with self._cond:
            for name, cam in self.cameras.items():
                f = cam.frame
                times = [t for t in cam.times if t >= now - RATE_WINDOW_S]
                rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
                out[name] = {
                    "topic": cam.topic,
                    "frames": cam.count,
                    "rate_hz": None if rate is None else round(rate, 1),
                    "age_s": None if f is None else round(now - f.received, 3),
                    "format": None if f is None else f.fmt,
                    "shape": None if f is None or f.shape is None else list(f.shape),
                    "undecodable": cam.warned,
                }
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an MJPEG client left open never holds the process at exit

    def __init__(self, address: tuple[str, int], viewer: ViewerNode) -> None:
        self.viewer = viewer
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (getfqdn), which can hang for seconds without DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.viewer.log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        self.server.viewer.log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        viewer = self.server.viewer
        path = urlsplit(self.path).path
        try:
            if path in ("/", "/index.html"):
                self._send(200, viewer.page().encode(), "text/html; charset=utf-8")
            elif path == "/status.json":
                self._send(200, json.dumps(viewer.status()).encode(), "application/json")
            elif (m := re.fullmatch(r"/camera/(\w+)\.(jpg|mjpg)", path)) and m[1] in viewer.frames.cameras:
                if m[2] == "jpg":
                    self._send_frame(m[1])
                else:
                    self._stream(m[1])
            else:
                known = ", ".join(f"/camera/{n}.jpg" for n in viewer.frames.cameras)
                self._send(404, f"no {path} here; try /, /status.json, {known}\n".encode(), "text/plain")
        except (BrokenPipeError, ConnectionResetError):  # the browser went away
            pass

    def _send_frame(self, name: str) -> None:
        got = self.server.viewer.frames.latest(name)
        if got is None:
            topic = self.server.viewer.frames.cameras[name].topic
            self._send(503, f"no frame on {topic} yet\n".encode(), "text/plain")
        else:
            self._send(200, got[1], "image/jpeg")

    def _stream(self, name: str) -> None:
        frames = self.server.viewer.frames
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seq = 0
        while not frames.closed:
            got = frames.wait_next(name, seq, STREAM_WAIT_S)
            if got is None:
                continue
            seq, jpeg = got
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            self.wfile.write(head + jpeg + b"\r\n")


class ViewerNode(Node):
    """See the module docstring; parameters are in configs/node/viewer.yaml."""

    def __init__(
        self,
        name: str = "viewer",
        params: Mapping[str, Any] | None = None,
        *,
        namespace: str = "/",
        remaps: Mapping[str, str] | None = None,
        transport: str = "auto",
        **node_kwargs: Any,
    ) -> None:
        params = dict(params or {})
        cameras: dict[str, str] = {}
        for topic in params.get("cameras") or []:
            full = resolve_topic(str(topic), namespace, name)
            cam = camera_name(full)
            if cam in cameras:
                raise ValueError(f"param 'cameras': {cameras[cam]} and {full} are both camera {cam!r}; list one")
            cameras[cam] = full
        self.rate_hz: float | None = None  # the robot's control rate: recording time -> steps in the status line
        if params.get("robot"):
            from realloop.robot.spec import load_robot_spec

            self.rate_hz = load_robot_spec(str(params["robot"])).control_rate_hz
        host = str(params.get("host") or "127.0.0.1")
        port = params.get("port", 8765)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"param 'port' must be 0..65535 (0: any free port), got {port!r}")
        # bound before joining the DDS domain: a port in use fails at once, with nothing to clean up
        try:
            self.server = _Server((host, port), self)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"port {port} on {host} is already in use (another viewer?): set port=<a free port>, or port=0"
                ) from None
            raise ValueError(f"cannot serve on {host}:{port} (params 'host', 'port'): {e.strerror or e}") from None
        try:
            super().__init__(name, params, transport=transport, namespace=namespace, remaps=remaps, **node_kwargs)
        except BaseException:
            self.server.server_close()
            raise
        self.frames = Frames(cameras)
        self._lock = threading.Lock()
        self._joints: tuple[JointState, float] | None = None
        self._recorder: tuple[dict[str, Any], float] | None = None
        for cam, topic in cameras.items():
            self.create_subscription(topic, CompressedImage, self._frame_callback(cam), qos="sensor")
        self.joint_topic = str(params.get("joint_states") or "")
        if self.joint_topic:
            self.joint_topic = self.create_subscription(
                self.joint_topic, JointState, self._on_joints, qos="sensor"
            ).topic
        self.status_topic = str(params.get("recorder_status") or "")
        if self.status_topic:
            self.status_topic = self.create_subscription(
                self.status_topic, String, self._on_recorder_status, qos="latched"
            ).topic
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.2,), name=f"{name}-http", daemon=True)
        self._thread.start()
        self.port = int(self.server.server_address[1])
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else host  # all interfaces: a name others can use
        self.url = f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}/"
        watched = [*cameras.values(), self.joint_topic, self.status_topic]
        self.log.info("viewer: %s (%s)", self.url, ", ".join(t for t in watched if t) or "no topics")

    # --- subscriptions (the node's thread) ----------------------------------------------------------------------
    def _frame_callback(self, cam: str) -> Callable[[CompressedImage], None]:
        def on_frame(msg: CompressedImage) -> None:
            self.frames.put(cam, bytes(msg.data), msg.format)

        return on_frame

    def _on_joints(self, msg: JointState) -> None:
        with self._lock:
            self._joints = (msg, time.monotonic())

    def _on_recorder_status(self, msg: String) -> None:
        status = json_object(msg.data)
        if status is None:
            status = {"state": "unreadable", "data": msg.data[:200]}
        with self._lock:
            self._recorder = (status, time.monotonic())

    # --- what the HTTP threads serve ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``/status.json`` document."""
        now = time.monotonic()
        with self._lock:
            joints, recorder = self._joints, self._recorder
        js = None
        if joints is not None:
            msg, at = joints
            js = {
                "topic": self.joint_topic,
                "name": list(msg.name),
                "position": _finite(msg.position),
                "velocity": _finite(msg.velocity),
                "effort": _finite(msg.effort),
                "stamp": msg.header.stamp.to_sec(),
                "age_s": round(now - at, 3),
            }
        rec = None if recorder is None else recorder[0]
        return {
            "cameras": self.frames.status(),
            "joint_states": js,
            "recorder": rec,
            "recorder_line": None if rec is None else format_status(rec, rate_hz=self.rate_hz),
            "recorder_age_s": None if recorder is None else round(now - recorder[1], 3),
            "topics": {"joint_states": self.joint_topic or None, "recorder_status": self.status_topic or None},
        }

    def page(self) -> str:
        """The HTML page: one live image per camera, the recorder line and streams, the joint table."""
        figures = "\n".join(
            f'<figure><img src="/camera/{n}.mjpg" alt="{n}" data-src="/camera/{n}.mjpg">'
            f'<figcaption><b>{n}</b> <span id="cam-{n}"></span></figcaption></figure>'
            for n in self.frames.cameras
        )
        return PAGE.replace("{{figures}}", figures or "<p>no cameras (param <code>cameras</code>)</p>")

    def close(self) -> None:
        frames = getattr(self, "frames", None)
        if frames is not None:
            frames.close()  # ends the MJPEG streams
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.is_alive():
            self.server.shutdown()
        if getattr(self, "server", None) is not None:
            self.server.server_close()
        super().close()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>realloop viewer</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1em; background: #111; color: #ddd; }
#cams { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } img { max-width: 48vw; min-width: 320px; background: #222; display: block; }
#rec { font: 16px monospace; padding: .4em .6em; background: #333; margin: 1em 0 .5em; white-space: pre; }
#rec.recording { background: #a00; color: #fff; } #rec.stale { background: #640; }
table { border-collapse: collapse; font-family: monospace; margin-right: 2em; vertical-align: top; }
td, th { padding: 1px 10px; text-align: right; } td:first-child, th:first-child { text-align: left; }
.dead { color: #f55; } .tables { display: flex; flex-wrap: wrap; } #err { color: #f55; }
</style></head><body>
<div id="cams">{{figures}}</div>
<div id="rec">no /recorder/status yet</div><div id="err"></div>
<div class="tables"><table id="joints"></table><table id="streams"></table></div>
<script>
const f3 = v => (v === null || v === undefined ? "" : v.toFixed(3));
const stale = s => s.recorder && s.recorder.state !== "stopped" && s.recorder_age_s > 3;
function fill(id, head, rows) {
  const t = document.getElementById(id);
  t.textContent = "";
  const tr = t.insertRow();
  head.forEach(h => { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
  rows.forEach(r => { const row = t.insertRow(); r.forEach(c => { row.insertCell().textContent = c; }); });
  return t;
}
function camText(c) {
  if (c.frames === 0) return `${c.topic}: no frames yet`;
  const size = c.shape ? `${c.shape[1]}x${c.shape[0]} ` : "";
  return `${c.topic} ${size}${c.rate_hz ?? 0} Hz, ${c.age_s.toFixed(1)} s ago${c.undecodable ? " (undecodable)" : ""}`;
}
async function refresh() {
  try {
    const s = await (await fetch("/status.json", {cache: "no-store"})).json();
    document.getElementById("err").textContent = "";
    const rec = document.getElementById("rec"), r = s.recorder;
    rec.textContent = s.recorder_line ?? "no /recorder/status yet (is a recorder running?)";
    if (stale(s)) rec.textContent += ` | no status for ${s.recorder_age_s.toFixed(0)} s`;
    rec.className = stale(s) ? "stale" : (r && r.state === "recording" ? "recording" : "");
    for (const [n, c] of Object.entries(s.cameras)) {
      const el = document.getElementById("cam-" + n);
      if (el) el.textContent = camText(c);
    }
    const j = s.joint_states;
    const joints = j ? j.name.map((n, i) => [n, f3(j.position[i]), f3(j.velocity[i])])
                     : [["no " + (s.topics.joint_states ?? "joint states") + " yet", "", ""]];
    fill("joints", ["joint", "position", "velocity"], joints);
    const st = r && r.streams ? Object.entries(r.streams) : [];
    const rows = st.map(([n, x]) => [n, x.heard ?? "", x.written ?? "", x.dropped ?? "", x.dead ? "DEAD" : ""]);
    const t = fill("streams", ["stream", "heard", "written", "dropped", "dead"], rows);
    st.forEach(([n, x], i) => { if (x.dead) t.rows[i + 1].className = "dead"; });
  } catch (e) {
    document.getElementById("err").textContent = "viewer not reachable: " + e;
  }
}
// an MJPEG stream ends when the viewer restarts: reconnect
document.querySelectorAll("img[data-src]").forEach(img => {
  img.onerror = () => setTimeout(() => { img.src = img.dataset.src + "?t=" + Date.now(); }, 1000);
});
setInterval(refresh, 250);
refresh();
</script></body></html>
"""


def main(argv: list[str] | None = None) -> int:
    return run_node("viewer", ViewerNode, argv)
