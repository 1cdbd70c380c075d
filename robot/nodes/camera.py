"""Camera node: an OpenCV capture device (or a video file) on ROS 2 camera topics.

Publishes ``<camera>/image_raw`` (sensor_msgs/Image, bgr8) and/or ``<camera>/image_raw/compressed``
(CompressedImage, ``"bgr8; jpeg compressed bgr8"``) plus ``<camera>/camera_info``, all with the same header,
stamped with the acquisition time (the node clock read right after the frame is grabbed, not when it is
published). A device is read by its own thread so frames never queue up in the driver; the timer publishes the
newest frame at ``rate_hz`` and never the same frame twice. A video file is read at ``rate_hz`` (its own frame
rate is ignored), looping or stopping at the end.

Exit codes: 0 on a clean stop (signal, or the end of a non-looping file), 2 on a bad configuration or a source
that cannot be opened (the message names the parameter), 1 when a device stops delivering frames (unplugged).

    realloop-node camera name=wrist device=/dev/video2 width=640 height=480 rate_hz=30
    realloop-node camera name=front file=demo.mp4 image_raw=false

``source: auto`` (the default) reads ``file`` when it is set, else ``device``; ``source: device`` or ``file``
forces one.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from ..msgs import CameraInfo, CompressedImage, Image, header
from ..node import Node
from . import run_node

JPEG_FORMAT = "bgr8; jpeg compressed bgr8"


def _get(params: Mapping[str, Any], key: str, default: Any = None) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return default
        node = node[part]
    return node


def _floats(value: Any, n: int | None, param: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"param {param!r} must be a list of numbers, got {value!r}") from None
    if n is not None and arr.size != n:
        raise ValueError(f"param {param!r} needs {n} values, got {arr.size}")
    return arr


def _positive(value: Any, param: str, kind: type = float) -> Any:
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"param {param!r} must be a positive number, got {value!r}") from None
    if not v > 0 or (kind is float and not math.isfinite(v)):
        raise ValueError(f"param {param!r} must be > 0, got {value!r}")
    return v


@dataclasses.dataclass
class Intrinsics:
    """Calibration to publish on camera_info: from params, a camera_calibration YAML, or a default pinhole.
    ``k``/``p`` hold for ``size`` (w, h) and are scaled to the output size; None size = the output size."""

    k: np.ndarray | None
    d: np.ndarray
    r: np.ndarray
    p: np.ndarray | None
    distortion_model: str
    size: tuple[int, int] | None
    hfov_deg: float

    @classmethod
    def from_params(cls, cfg: Mapping[str, Any]) -> Intrinsics:
        if cfg.get("file"):
            return cls.from_calibration_file(
                Path(str(cfg["file"])).expanduser(), _positive(cfg.get("hfov_deg", 69.0), "camera_info.hfov_deg")
            )
        w, h = cfg.get("width"), cfg.get("height")
        if (w is None) != (h is None):
            raise ValueError("params 'camera_info.width' and 'camera_info.height' go together")
        size = None if w is None else (_positive(w, "camera_info.width", int), _positive(h, "camera_info.height", int))
        hfov = _positive(cfg.get("hfov_deg", 69.0), "camera_info.hfov_deg")
        if not hfov < 180:
            raise ValueError(f"param 'camera_info.hfov_deg' must be below 180, got {hfov}")
        return cls(
            k=None if cfg.get("k") is None else _floats(cfg["k"], 9, "camera_info.k"),
            d=_floats(cfg.get("d") or [], None, "camera_info.d"),
            r=np.eye(3).ravel() if cfg.get("r") is None else _floats(cfg["r"], 9, "camera_info.r"),
            p=None if cfg.get("p") is None else _floats(cfg["p"], 12, "camera_info.p"),
            distortion_model=str(cfg.get("distortion_model") or "plumb_bob"),
            size=size,
            hfov_deg=hfov,
        )

    @classmethod
    def from_calibration_file(cls, path: Path, hfov_deg: float = 69.0) -> Intrinsics:
        """Read the YAML that ROS's camera_calibration writes (image_width, camera_matrix.data, ...)."""
        if not path.is_file():
            raise ValueError(f"calibration file {path} (param 'camera_info.file') does not exist")
        try:
            cal = yaml.safe_load(path.read_text()) or {}
            return cls(
                k=_floats(cal["camera_matrix"]["data"], 9, "camera_matrix"),
                d=_floats(cal.get("distortion_coefficients", {}).get("data", []), None, "distortion_coefficients"),
                r=_floats(
                    cal.get("rectification_matrix", {}).get("data", np.eye(3).ravel()), 9, "rectification_matrix"
                ),
                p=(
                    _floats(cal["projection_matrix"]["data"], 12, "projection_matrix")
                    if "projection_matrix" in cal
                    else None
                ),
                distortion_model=str(cal.get("distortion_model", "plumb_bob")),
                size=(int(cal["image_width"]), int(cal["image_height"])),
                hfov_deg=hfov_deg,
            )
        except (yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(
                f"calibration file {path} (param 'camera_info.file') is not a camera_calibration YAML: {e}"
            ) from None

    def camera_info(self, width: int, height: int) -> CameraInfo:
        """The CameraInfo for frames of ``width`` x ``height`` (intrinsics scaled from the calibrated size)."""
        if self.k is None:
            f = 0.5 * width / math.tan(math.radians(self.hfov_deg) / 2)
            k = np.array([f, 0, width / 2, 0, f, height / 2, 0, 0, 1.0])
            sx = sy = 1.0
        else:
            k = self.k.copy()
            cw, ch = self.size or (width, height)
            sx, sy = width / cw, height / ch
            k[[0, 2]] *= sx  # fx, cx
            k[[4, 5]] *= sy  # fy, cy
        if self.p is None:
            p = np.concatenate([k.reshape(3, 3), np.zeros((3, 1))], axis=1).ravel()
        else:
            p = self.p.copy()
            p[[0, 2, 3]] *= sx  # fx', cx', Tx (= -fx' * baseline)
            p[[5, 6, 7]] *= sy
        return CameraInfo(
            height=height,
            width=width,
            distortion_model=self.distortion_model,
            d=self.d.copy(),
            k=k,
            r=self.r.copy(),
            p=p,
        )


def output_size(src_w: int, src_h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """Requested output size; one side given keeps the source's aspect ratio."""
    if width and height:
        return width, height
    if width:
        return width, max(1, round(src_h * width / src_w))
    if height:
        return max(1, round(src_w * height / src_h)), height
    return src_w, src_h


def open_source(params: Mapping[str, Any]) -> tuple[cv2.VideoCapture, str, bool]:
    """Open the configured source: (capture, description for logs, is_device). Raises ValueError naming the
    parameter when it is missing or cannot be opened."""
    source = _get(params, "source", "auto")
    if source == "auto":  # one rule: a file when one is given, else the device
        source = "file" if _get(params, "file") else "device"
    if source == "file":
        file = _get(params, "file")
        if not file:
            raise ValueError("source is 'file' but param 'file' (a video path) is not set")
        path = Path(str(file)).expanduser()
        if not path.is_file():
            raise ValueError(f"video file {path} (param 'file') does not exist")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise ValueError(f"OpenCV cannot read video file {path} (param 'file')")
        return cap, f"file {path}", False
    if source != "device":
        raise ValueError(f"param 'source' must be 'auto', 'device' or 'file', got {source!r}")
    dev = _get(params, "device", 0)  # an int or a str: run_node checks the declared types
    if isinstance(dev, str) and dev.startswith("/dev/") and not Path(dev).exists():
        raise ValueError(f"camera device {dev} (param 'device') does not exist")
    cap = cv2.VideoCapture(dev)
    if not cap.isOpened():
        raise ValueError(f"cannot open camera device {dev!r} (param 'device'): not connected, busy or no access")
    return cap, f"device {dev}", True


class CameraNode(Node):
    """See the module docstring; parameters are in configs/node/camera.yaml."""

    def __init__(
        self,
        name: str,
        params: Mapping[str, Any],
        namespace: str = "/",
        remaps: Mapping[str, str] | None = None,
        transport: str = "auto",
        **node_kwargs: Any,
    ):
        params = dict(params)
        # validate everything and open the source before joining the ROS graph
        self.rate_hz = _positive(_get(params, "rate_hz", 30.0), "rate_hz")
        self.width = None if _get(params, "width") is None else _positive(params["width"], "width", int)
        self.height = None if _get(params, "height") is None else _positive(params["height"], "height", int)
        self.quality = _positive(_get(params, "jpeg_quality", 90), "jpeg_quality", int)
        if not 1 <= self.quality <= 100:
            raise ValueError(f"param 'jpeg_quality' must be in 1..100, got {self.quality}")
        want_raw, want_jpeg = bool(_get(params, "image_raw", True)), bool(_get(params, "compressed", True))
        if not (want_raw or want_jpeg):
            raise ValueError("params 'image_raw' and 'compressed' are both false: nothing to publish")
        self.intrinsics = Intrinsics.from_params(_get(params, "camera_info", {}))
        self.loop = bool(_get(params, "loop", True))
        prefix = str(_get(params, "camera") or name).strip("/") or name
        self.frame_id = str(_get(params, "frame_id") or f"{prefix.replace('/', '_')}_optical_frame")
        self.cap, self.source_desc, self.is_device = open_source(params)
        try:
            if self.is_device:  # ask the driver first, so resizing is rarely needed
                if self.width:
                    self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                if self.height:
                    self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
                self.cap.set(cv2.CAP_PROP_FPS, self.rate_hz)
            super().__init__(name, params, transport=transport, namespace=namespace, remaps=remaps, **node_kwargs)
        except BaseException:
            self.cap.release()
            raise
        self.raw_pub = self.create_publisher(f"{prefix}/image_raw", Image, qos="sensor") if want_raw else None
        self.jpeg_pub = (
            self.create_publisher(f"{prefix}/image_raw/compressed", CompressedImage, qos="sensor")
            if want_jpeg
            else None
        )
        self.info_pub = self.create_publisher(f"{prefix}/camera_info", CameraInfo, qos="sensor")
        self.exit_code = 0
        self.frames = 0
        self._info: CameraInfo | None = None
        self._file_frames = 0  # frames read since the file was (re)opened
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, float] | None = None
        self._grab_error: str | None = None
        self._grab_stop = threading.Event()
        self._grabber: threading.Thread | None = None
        if self.is_device:
            self._grabber = threading.Thread(target=self._grab_loop, name=f"{name}-grab", daemon=True)
            self._grabber.start()
        self.create_timer(1.0 / self.rate_hz, self._tick)
        topics = [p.topic for p in (self.raw_pub, self.jpeg_pub, self.info_pub) if p is not None]
        self.log.info("%s -> %s at %g Hz", self.source_desc, ", ".join(topics), self.rate_hz)

    # --- acquisition -------------------------------------------------------------------------------------------
    def _grab(self) -> tuple[np.ndarray, float] | None:
        if not self.cap.grab():
            return None
        t = self.now()  # acquisition time: right after the grab, before the (slower) decode
        ok, frame = self.cap.retrieve()
        return (frame, t) if ok and frame is not None else None

    def _grab_loop(self) -> None:
        """Device thread: keep only the newest frame, so the driver's buffers never add latency."""
        while not self._grab_stop.is_set():
            got = self._grab()
            if got is None:
                self._grab_error = f"{self.source_desc} stopped delivering frames (unplugged or failed)"
                break
            with self._lock:
                self._latest = got
        self.transport.wake()

    def _next_frame(self) -> tuple[np.ndarray, float] | None:
        if self.is_device:
            with self._lock:
                got, self._latest = self._latest, None
            if got is None and self._grab_error:
                self._finish(1, self._grab_error)
            return got
        got = self._grab()
        if got is None and self.loop and self._file_frames > 0:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._file_frames = 0
            got = self._grab()
        if got is None:
            if self._file_frames > 0 and not self.loop:
                self.log.info("end of %s after %d frames", self.source_desc, self._file_frames)
                self._finish(0)
            else:
                self._finish(1, f"cannot read a frame from {self.source_desc}")
            return None
        self._file_frames += 1
        return got

    def _finish(self, code: int, error: str | None = None) -> None:
        if error:
            self.log.error("%s; stopping", error)
        self.exit_code = code
        self.shutdown()

    # --- publishing --------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        got = self._next_frame()
        if got is not None:
            self.publish_frame(*got)

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        h, w = frame.shape[:2]
        ow, oh = output_size(w, h, self.width, self.height)
        if (ow, oh) != (w, h):
            shrink = ow * oh < w * h
            frame = cv2.resize(frame, (ow, oh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def publish_frame(self, frame: np.ndarray, t: float) -> None:
        """Publish one BGR frame acquired at ``t`` on every enabled topic, with one shared header."""
        frame = self._prepare(frame)
        h, w = frame.shape[:2]
        if self._info is None or (self._info.width, self._info.height) != (w, h):
            self._info = self.intrinsics.camera_info(w, h)
        hdr = header(t, self.frame_id)
        if self.raw_pub is not None:
            self.raw_pub.publish(Image(hdr, h, w, "bgr8", 0, 3 * w, frame))
        if self.jpeg_pub is not None:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise RuntimeError(f"JPEG encoding of a {w}x{h} frame failed")
            self.jpeg_pub.publish(CompressedImage(hdr, JPEG_FORMAT, buf.tobytes()))
        self._info.header = hdr
        self.info_pub.publish(self._info)
        self.frames += 1

    def close(self) -> None:
        self._grab_stop.set()
        if self._grabber is not None:
            self._grabber.join(timeout=2.0)
        if self._grabber is None or not self._grabber.is_alive():  # never release under a blocked grab()
            self.cap.release()
        self.log.info("published %d frames", self.frames)
        super().close()


def main(argv: list[str] | None = None) -> int:
    built: list[CameraNode] = []

    def factory(**kwargs: Any) -> CameraNode:
        node = CameraNode(**kwargs)
        built.append(node)
        return node

    code = run_node("camera", factory, argv)
    return code or (built[0].exit_code if built else 0)
