"""Stream specs: which topic feeds which dataset feature, and how one message becomes one timestamped sample.

A recorder config maps stream names to specs (``configs/node/recorder.yaml``)::

    streams:
      state: {feature: observation.state, topic: /joint_states, type: JointState, field: position,
              joints: robot.joint_states, rate_hz: 100}
      front: {feature: observation.images.front, topic: /front/image_raw/compressed, type: CompressedImage,
              rate_hz: 30}

``feature`` defaults to the stream's key, so a YAML file may also key streams by feature name. Short keys keep
``streams.front.topic:=/cam0/image_raw/compressed`` (ROS parameter names split at dots) working.

Keys of a spec:

- ``topic`` (required), ``type`` (required): JointState, Float64MultiArray, Image, CompressedImage, Imu,
  TwistStamped, Twist, PoseStamped, Joy, Bool (short names or ``pkg/msg/Name``).
- ``field``: what to extract (see :data:`FIELDS`; each type has a default). JointState's ``state`` is the
  robot's ``observation.state`` (joint positions, velocities, gripper opening, end-effector pose by forward
  kinematics where the spec has an MJCF), built exactly as the policy runner builds it live; ``names`` may
  choose its entries.
- ``joints``: JointState only, the joints to keep, in this order (messages are reordered by name); or
  ``robot.joint_states`` (the robot spec's joints, then its gripper joint: the ``/joint_states`` convention)
  or ``robot.joints`` (the spec's arm joints, the command order).
- ``names``: names of the last axis (the same aliases work), ``shape``, ``dtype`` (numeric default float32),
  ``units``, ``description``.
- ``rate_hz``: the expected rate; with it the recorder estimates dropped samples from stamp gaps and reports
  the stream dead after ``dead_after`` seconds of silence.
- ``stamp``: ``header`` (default where the message has one) or ``receive``. Messages without a header
  (Float64MultiArray, Twist, Bool) are stamped with their receive time on the node clock (wall time, or
  ``/clock`` with ``use_sim_time``); the episode attributes (``timestamp_source``) say which.
- ``qos``: ``sensor`` (best effort; default for images and Imu) or ``reliable`` (default otherwise);
  ``depth``: the subscription's queue (default 100, images 30): a recorder must ride out a stall (disk, a
  busy CPU) without losing samples, and the reader's depth does not affect QoS matching.
- images (``observation.images.<camera>``): ``shape`` ``[H, W, 3]`` or ``null`` (learned from the first
  frame), ``image_format`` (jpeg, png, webp), ``image_quality``, ``passthrough`` (default true: JPEG frames
  of a jpeg feature are stored as received, without decoding or re-encoding; the stored quality is then the
  camera's). Every other image is decoded to RGB ``H x W x 3`` uint8 with OpenCV and encoded by the dataset.
- ``latch``: for event streams stamped on receipt (an intervention flag published on change): the last value
  received before an episode starts is written at the episode's start.
- ``dead_after``: seconds of silence after which the stream is reported dead (default: the recorder's, for
  streams with a ``rate_hz``; event streams without one are never dead).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from realloop.data.codecs import FORMATS
from realloop.data.convert import ConvertError
from realloop.data.convert.rosbag2 import image_to_rgb as _image_to_rgb
from realloop.data.schema import IMAGE_PREFIX, Feature, SchemaError, make_feature

from ..msgs import (
    Bool,
    CompressedImage,
    Float64MultiArray,
    Image,
    Imu,
    JointState,
    Joy,
    PoseStamped,
    Twist,
    TwistStamped,
)

MSG_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (JointState, Float64MultiArray, Image, CompressedImage, Imu, TwistStamped, Twist, PoseStamped, Joy, Bool)
}
IMAGE_TYPES = ("Image", "CompressedImage")
SPEC_KEYS = (
    "feature",
    "topic",
    "type",
    "field",
    "joints",
    "names",
    "shape",
    "dtype",
    "units",
    "description",
    "rate_hz",
    "stamp",
    "qos",
    "depth",
    "image_format",
    "image_quality",
    "passthrough",
    "latch",
    "dead_after",
    "gripper_topic",
)
ROBOT_ALIASES = ("robot.joints", "robot.joint_states")
DEFAULT_DTYPE = "float32"


class StreamConfigError(ValueError):
    """A stream spec that cannot work (unknown type or field, missing shape...); the message names the key."""


class InvalidSample(ValueError):
    """One message that does not fit its stream (wrong size, missing joint, undecodable image): not written."""


@dataclass(frozen=True)
class EncodedImage:
    """An image frame kept in its transport encoding (a camera's JPEG), stored without re-encoding."""

    data: bytes
    shape: tuple[int, ...]


def _vec(*names: str) -> Callable[[Any], np.ndarray]:
    """Getter of the attributes ``a.b`` named in ``names`` as a float64 vector."""
    paths = [n.split(".") for n in names]

    def get(msg: Any) -> np.ndarray:
        out = []
        for path in paths:
            v = msg
            for p in path:
                v = getattr(v, p)
            out.append(v)
        return np.asarray(out, dtype=np.float64)

    return get


@dataclass(frozen=True)
class FieldDef:
    """How to read one field: ``get(msg)``; ``names`` of its entries when fixed (Imu...), None when variable;
    ``dtype`` the feature's default, ``source`` the message's own (a feature dtype must hold it, same kind)."""

    get: Callable[[Any], np.ndarray]
    names: tuple[str, ...] | None = None
    dtype: str = DEFAULT_DTYPE
    source: str = "float64"


_QUAT = ("qx", "qy", "qz", "qw")
_IMU = _vec(
    "orientation.x",
    "orientation.y",
    "orientation.z",
    "orientation.w",
    "angular_velocity.x",
    "angular_velocity.y",
    "angular_velocity.z",
    "linear_acceleration.x",
    "linear_acceleration.y",
    "linear_acceleration.z",
)
_TWIST = ("vx", "vy", "vz", "wx", "wy", "wz")
_POSE = _vec(
    "pose.position.x",
    "pose.position.y",
    "pose.position.z",
    "pose.orientation.x",
    "pose.orientation.y",
    "pose.orientation.z",
    "pose.orientation.w",
)


def _twist_fields(prefix: str) -> dict[str, FieldDef]:
    lin = [f"{prefix}linear.{a}" for a in "xyz"]
    ang = [f"{prefix}angular.{a}" for a in "xyz"]
    return {
        "twist": FieldDef(_vec(*lin, *ang), _TWIST),
        "linear": FieldDef(_vec(*lin), _TWIST[:3]),
        "angular": FieldDef(_vec(*ang), _TWIST[3:]),
    }


# Per message type: its fields, the first being the default. Images have the single field "image".
FIELDS: dict[str, dict[str, FieldDef]] = {
    "JointState": {
        **{f: FieldDef(operator.attrgetter(f)) for f in ("position", "velocity", "effort")},
        # the robot's observation.state (realloop.robot.observation.JointStateObserver), built per stream
        "state": FieldDef(lambda m: m),
    },
    "Float64MultiArray": {
        "data": FieldDef(lambda m: m.data),
        # the robot's whole command: arm targets from `topic` and the gripper opening from `gripper_topic`
        "command": FieldDef(lambda m: m.data),
    },
    "Image": {"image": FieldDef(lambda m: m)},
    "CompressedImage": {"image": FieldDef(lambda m: m)},
    "Imu": {
        "all": FieldDef(_IMU, (*_QUAT, "wx", "wy", "wz", "ax", "ay", "az")),
        "orientation": FieldDef(_vec(*(f"orientation.{a}" for a in "xyzw")), _QUAT),
        "angular_velocity": FieldDef(_vec(*(f"angular_velocity.{a}" for a in "xyz")), ("wx", "wy", "wz")),
        "linear_acceleration": FieldDef(_vec(*(f"linear_acceleration.{a}" for a in "xyz")), ("ax", "ay", "az")),
    },
    "TwistStamped": _twist_fields("twist."),
    "Twist": _twist_fields(""),
    "PoseStamped": {
        "pose": FieldDef(_POSE, ("x", "y", "z", *_QUAT)),
        "position": FieldDef(_vec(*(f"pose.position.{a}" for a in "xyz")), ("x", "y", "z")),
        "orientation": FieldDef(_vec(*(f"pose.orientation.{a}" for a in "xyzw")), _QUAT),
    },
    "Joy": {
        "axes": FieldDef(lambda m: m.axes, source="float32"),
        "buttons": FieldDef(lambda m: m.buttons, dtype="int32", source="int32"),
    },
    "Bool": {"data": FieldDef(lambda m: np.asarray(m.data, dtype=bool), (), "bool", "bool")},
}
HAS_HEADER = {name: any(f.name == "header" for f in dataclasses.fields(cls)) for name, cls in MSG_TYPES.items()}


def robot_names(alias: str, robot: Any) -> tuple[str, ...]:
    """``robot.joints`` (arm joints, command order) or ``robot.joint_states`` (those, then the gripper joint)."""
    if robot is None:
        raise StreamConfigError(f"{alias!r} needs a robot spec: set the recorder's 'robot' parameter (e.g. arm6)")
    names = tuple(robot.joint_names)
    if alias == "robot.joint_states" and robot.gripper is not None:
        names += (robot.gripper.joints[0],)
    return names


@dataclass(frozen=True)
class StreamSpec:
    """One recorded stream: a topic, a message type, the field extracted, and the feature it is stored as.

    ``shape`` is None for an image stream whose size comes from its first frame (see :meth:`with_shape`).
    """

    name: str
    feature: str
    topic: str
    msg_type: str
    field: str
    shape: tuple[int, ...] | None
    dtype: str
    names: tuple[str, ...] | None = None
    joints: tuple[str, ...] | None = None
    units: str | None = None
    description: str = ""
    rate_hz: float | None = None
    stamp: str = "header"
    qos: str = "reliable"
    depth: int = 100
    image_format: str | None = None
    image_quality: int | None = None
    passthrough: bool = True
    latch: bool = False
    dead_after: float | None = None
    convert: Callable[[Any], np.ndarray] | None = dataclasses.field(default=None, compare=False, repr=False)
    gripper_topic: str | None = None
    joiner: CommandJoiner | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the stream takes samples from."""
        return (self.topic,) if self.gripper_topic is None else (self.topic, self.gripper_topic)

    # -- derived -----------------------------------------------------------------------------------------
    @property
    def msg_class(self) -> type:
        return MSG_TYPES[self.msg_type]

    @property
    def is_image(self) -> bool:
        return self.msg_type in IMAGE_TYPES

    @property
    def period(self) -> float | None:
        return 1.0 / self.rate_hz if self.rate_hz else None

    @property
    def timestamp_source(self) -> str:
        return "header.stamp" if self.stamp == "header" else "receive time (node clock)"

    def with_shape(self, shape: tuple[int, ...]) -> StreamSpec:
        return dataclasses.replace(self, shape=tuple(int(s) for s in shape))

    def feature_def(self) -> Feature:
        """The dataset feature this stream is stored as (its shape must be known)."""
        if self.shape is None:
            raise SchemaError(f"stream {self.name}: the image size is not known yet (no frame received)")
        kw: dict[str, Any] = {"dtype": self.dtype, "shape": self.shape, "rate_hz": self.rate_hz}
        if self.is_image:
            kw.update(image_format=self.image_format, image_quality=self.image_quality)
        else:
            kw.update(names=self.names, units=self.units)
        if self.description:
            kw["description"] = self.description
        return make_feature(self.feature, **kw)

    def describe(self) -> dict[str, Any]:
        """Where the stream comes from, for the episode attributes."""
        d: dict[str, Any] = {"topic": self.topic, "type": self.msg_type, "timestamp_source": self.timestamp_source}
        if not self.is_image:
            d["field"] = self.field
        if self.rate_hz:
            d["expected_rate_hz"] = self.rate_hz
        return d

    # -- messages to samples -----------------------------------------------------------------------------
    def stamp_of(self, msg: Any) -> float | None:
        """The message's header stamp in seconds, or None when the stream is stamped on receipt.

        Raises InvalidSample for a zero stamp (the publisher does not stamp its messages)."""
        if self.stamp != "header":
            return None
        st = msg.header.stamp
        if st.sec == 0 and st.nanosec == 0:
            raise InvalidSample(
                f"{self.topic}: header.stamp is zero (the publisher does not stamp its messages); "
                f"set 'stamp: receive' for stream {self.name} to use the receive time"
            )
        return st.sec + st.nanosec * 1e-9

    def value_of(self, msg: Any, topic: str | None = None) -> np.ndarray | EncodedImage | None:
        """The sample a message carries, checked against the stream's shape (when known); ``topic`` is the topic it
        came on (a joined command stream has two). None: no sample yet (a gripper command before any arm one)."""
        if self.joiner is not None:
            try:
                return self.joiner.sample(msg.data, gripper=topic is not None and topic == self.gripper_topic)
            except ValueError as e:
                raise InvalidSample(f"{topic or self.topic}: {e}") from None
        if self.msg_type == "CompressedImage":
            return self._compressed(msg)
        if self.msg_type == "Image":
            return self._check_image(image_to_rgb(msg))
        if self.convert is not None:
            try:
                return self.convert(msg)
            except ValueError as e:
                raise InvalidSample(f"{self.topic}: {e}") from None
        value = np.asarray(FIELDS[self.msg_type][self.field].get(msg))
        if self.joints is not None:
            value = self._reorder(msg, value)
        if self.shape is not None and value.shape != self.shape:
            if value.size != int(np.prod(self.shape)):
                raise InvalidSample(
                    f"{self.topic}: {self.field} has {value.size} values, stream {self.name} "
                    f"expects shape {list(self.shape)}"
                )
            value = value.reshape(self.shape)
        return value

    def _reorder(self, msg: Any, values: np.ndarray) -> np.ndarray:
        assert self.joints is not None
        names = msg.name
        if len(names) != len(values):
            raise InvalidSample(
                f"{self.topic}: a JointState with {len(names)} names and {len(values)} {self.field} values"
            )
        if tuple(names[: len(self.joints)]) == self.joints:
            return values[: len(self.joints)]  # the common case: the driver's order, maybe more joints after
        pos = {n: i for i, n in enumerate(names)}
        missing = [j for j in self.joints if j not in pos]
        if missing:
            raise InvalidSample(f"{self.topic}: the JointState lacks joints {missing} (it has {list(names)})")
        return values[[pos[j] for j in self.joints]]

    def _check_image(self, img: np.ndarray) -> np.ndarray:
        self._check_size(img.shape)
        return img

    def _check_size(self, shape: tuple[int, ...]) -> None:
        if self.shape is not None and shape != self.shape:
            raise InvalidSample(
                f"{self.topic}: a {shape[1]}x{shape[0]} frame, stream {self.name} records "
                f"{self.shape[1]}x{self.shape[0]} (set its 'shape', or record into a new dataset)"
            )

    def _compressed(self, msg: Any) -> np.ndarray | EncodedImage:
        fmt = compressed_format(msg.format)
        if fmt is None:
            raise InvalidSample(f"{self.topic}: CompressedImage format {msg.format!r} is not JPEG or PNG")
        data = bytes(msg.data)
        if self.passthrough and fmt == "jpeg" and self.image_format == "jpeg":
            shape = jpeg_shape(data)
            if shape is not None and shape[2] == 3:
                self._check_size(shape)
                return EncodedImage(data, shape)
        return self._check_image(decode_compressed(data, msg.format, self.topic))


def decode_compressed(data: bytes, fmt: str, topic: str) -> np.ndarray:
    """A CompressedImage's JPEG/PNG bytes as an RGB H x W x 3 uint8 array (ROS encodes BGR)."""
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InvalidSample(f"{topic}: a CompressedImage ({fmt!r}, {len(data)} bytes) does not decode")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def compressed_format(fmt: str) -> str | None:
    """``jpeg`` or ``png`` from a CompressedImage format (``"bgr8; jpeg compressed bgr8"``, ``"jpeg"``...)."""
    f = fmt.lower()
    if "compresseddepth" in f:
        return None
    if "jpeg" in f or "jpg" in f:
        return "jpeg"
    if "png" in f:
        return "png"
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_shape(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's frame header, or None if ``data`` is not a whole JPEG.

    Reads the markers only (microseconds), so frames are stored without decoding them."""
    n = len(data)
    if n < 4 or data[:2] != b"\xff\xd8" or b"\xff\xd9" not in data[-64:]:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if marker in _SOF:
            if i + 10 > n:
                return None
            h = int.from_bytes(data[i + 5 : i + 7], "big")
            w = int.from_bytes(data[i + 7 : i + 9], "big")
            return (h, w, data[i + 9]) if h and w else None
        if marker == 0xDA:  # scan data before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def image_to_rgb(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/Image`` as ``H x W x 3`` RGB uint8 (the rosbag2 converter's decoding)."""
    try:
        return _image_to_rgb(msg)
    except ConvertError as e:
        raise InvalidSample(str(e)) from None


def message_to_rgb(msg: Image | CompressedImage, topic: str) -> np.ndarray:
    """An ``Image`` or a JPEG/PNG ``CompressedImage`` as ``H x W x 3`` RGB uint8; InvalidSample if it cannot be."""
    if isinstance(msg, CompressedImage):
        if compressed_format(msg.format) is None:
            raise InvalidSample(f"{topic}: CompressedImage format {msg.format!r} is not JPEG or PNG")
        return decode_compressed(bytes(msg.data), msg.format, topic)
    return image_to_rgb(msg)


# -- parsing a config ----------------------------------------------------------------------------------------
def parse_streams(config: Mapping[str, Any], robot: Any = None, dead_after: float | None = 1.0) -> list[StreamSpec]:
    """Stream specs from a ``streams`` mapping (stream name -> spec); ``robot`` is a RobotSpec or None.

    Raises StreamConfigError naming the stream and key for anything that cannot work. A stream whose spec is
    null is left out (so ``streams.front=null`` removes a default stream)."""
    if not isinstance(config, Mapping) or not config:
        raise StreamConfigError("'streams' must map stream names to specs ({topic, type, ...}); it is empty")
    specs = [parse_stream(str(name), spec, robot, dead_after) for name, spec in config.items() if spec is not None]
    if not specs:
        raise StreamConfigError("every stream is disabled (null); record at least one")
    seen: dict[str, str] = {}
    for s in specs:
        if s.feature in seen:
            raise StreamConfigError(f"streams {seen[s.feature]} and {s.name} both record feature {s.feature}")
        seen[s.feature] = s.name
    return specs


def parse_stream(name: str, spec: Any, robot: Any = None, dead_after: float | None = 1.0) -> StreamSpec:
    """One stream spec (see the module docstring for its keys)."""
    where = f"stream {name}"

    def fail(msg: str) -> StreamConfigError:
        return StreamConfigError(f"{where}: {msg}")

    if not isinstance(spec, Mapping):
        raise fail(f"expected a mapping with 'topic' and 'type', got {spec!r}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise fail(f"unknown keys {unknown}; allowed: {list(SPEC_KEYS)}")
    feature = spec.get("feature") or name
    topic = spec.get("topic")
    if not isinstance(topic, str) or not topic.startswith("/"):
        raise fail(f"'topic' must be an absolute topic name like /joint_states, got {topic!r}")
    raw_type = spec.get("type")
    msg_type = str(raw_type).rsplit("/", 1)[-1] if raw_type else ""
    if msg_type not in MSG_TYPES:
        raise fail(f"unknown message type {raw_type!r}; supported: {', '.join(MSG_TYPES)}")
    fields = FIELDS[msg_type]
    fld = spec.get("field") or next(iter(fields))
    if fld not in fields:
        raise fail(f"{msg_type} has no field {fld!r} to record; choose one of {list(fields)}")
    is_image = msg_type in IMAGE_TYPES
    if is_image != feature.startswith(IMAGE_PREFIX):
        raise fail(
            f"an image topic records into a feature named {IMAGE_PREFIX}<camera> and only an image topic "
            f"does; {msg_type} -> {feature!r} does not fit"
        )
    stamp = spec.get("stamp") or ("header" if HAS_HEADER[msg_type] else "receive")
    if stamp not in ("header", "receive"):
        raise fail(f"'stamp' is 'header' or 'receive', not {stamp!r}")
    if stamp == "header" and not HAS_HEADER[msg_type]:
        raise fail(f"{msg_type} has no header; it is stamped with its receive time (remove 'stamp: header')")
    rate = spec.get("rate_hz")
    if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0):
        raise fail(f"'rate_hz' must be a positive number, got {rate!r}")
    qos = spec.get("qos") or ("sensor" if is_image or msg_type == "Imu" else "reliable")
    if qos not in ("sensor", "reliable"):
        raise fail(f"'qos' is 'sensor' (best effort) or 'reliable', not {qos!r}")
    depth = spec.get("depth", 30 if is_image else 100)
    if not isinstance(depth, int) or depth < 1:
        raise fail(f"'depth' must be a positive integer, got {depth!r}")
    latch = bool(spec.get("latch", False))
    if latch and stamp != "receive":
        raise fail("'latch' is for streams stamped on receipt (the latched value is stamped at the episode start)")
    stream_dead = spec.get("dead_after", dead_after if rate else None)
    if stream_dead is not None and (not isinstance(stream_dead, (int, float)) or stream_dead <= 0):
        raise fail(f"'dead_after' must be a positive number of seconds or null, got {stream_dead!r}")

    def names_of(key: str) -> tuple[str, ...] | None:
        v = spec.get(key)
        if v is None:
            return None
        if isinstance(v, str):
            if v not in ROBOT_ALIASES:
                raise fail(f"'{key}' is a list of names or one of {ROBOT_ALIASES}, not {v!r}")
            try:
                return robot_names(v, robot)
            except StreamConfigError as e:
                raise fail(str(e)) from None
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise fail(f"'{key}' must be a list of strings or one of {ROBOT_ALIASES}")
        return tuple(v)

    shape_cfg = spec.get("shape")
    if shape_cfg is not None and (
        not isinstance(shape_cfg, (list, tuple)) or not all(isinstance(s, int) and s > 0 for s in shape_cfg)
    ):
        raise fail(f"'shape' must be a list of positive integers, got {shape_cfg!r}")
    common: dict[str, Any] = {
        "name": name,
        "feature": feature,
        "topic": topic,
        "msg_type": msg_type,
        "field": fld,
        "rate_hz": float(rate) if rate else None,
        "stamp": stamp,
        "qos": qos,
        "depth": depth,
        "latch": latch,
        "dead_after": float(stream_dead) if stream_dead is not None else None,
        "description": str(spec.get("description") or ""),
    }
    if is_image:
        for key in ("joints", "names", "units", "dtype"):
            if spec.get(key) is not None:
                raise fail(f"'{key}' does not apply to an image stream")
        shape = None
        if shape_cfg is not None:
            if len(shape_cfg) != 3 or shape_cfg[2] != 3:
                raise fail(f"an image 'shape' is [H, W, 3] (RGB), not {list(shape_cfg)}")
            shape = tuple(shape_cfg)
        fmt = spec.get("image_format") or "jpeg"
        if fmt not in FORMATS:
            raise fail(f"'image_format' {fmt!r} is unknown; use one of {sorted(FORMATS)}")
        out = StreamSpec(
            **common,
            shape=shape,
            dtype="uint8",
            image_format=fmt,
            image_quality=spec.get("image_quality"),
            passthrough=bool(spec.get("passthrough", True)),
        )
    else:
        for key in ("image_format", "image_quality", "passthrough"):
            if spec.get(key) is not None:
                raise fail(f"'{key}' applies to image streams only")
        fdef = fields[fld]
        if msg_type == "JointState" and fld == "state":
            return _state_stream(common, spec, robot, fail)
        if fld == "command":
            return _command_stream(common, spec, robot, fail)
        if spec.get("gripper_topic") is not None:
            raise fail("'gripper_topic' applies to field 'command' only")
        joints = names_of("joints")
        if joints is not None and msg_type != "JointState":
            raise fail("'joints' applies to JointState streams only; use 'names' to label entries")
        names = names_of("names") or joints or fdef.names or None
        if shape_cfg is not None:
            shape = tuple(shape_cfg)
        elif fdef.names is not None:
            shape = (len(fdef.names),) if fdef.names else ()
        elif joints is not None:
            shape = (len(joints),)
        elif names is not None:
            shape = (len(names),)
        else:
            raise fail(f"the size of {msg_type}.{fld} is not fixed: give 'joints' (JointState), 'names' or 'shape'")
        if names is not None and (not shape or len(names) != shape[-1]):
            raise fail(f"{len(names)} names for a last axis of size {shape[-1] if shape else 'none (scalar)'}")
        if joints is not None and int(np.prod(shape)) != len(joints):
            raise fail(f"{len(joints)} joints do not fill shape {list(shape)}")
        dtype = spec.get("dtype") or fdef.dtype
        try:
            dtype = np.dtype(dtype).name
        except TypeError:
            raise fail(f"dtype {dtype!r} is not a numpy dtype") from None
        if not np.can_cast(fdef.source, dtype, casting="same_kind"):
            raise fail(f"{msg_type}.{fld} holds {fdef.source}, which cannot be stored as {dtype}")
        out = StreamSpec(**common, shape=shape, dtype=dtype, names=names, joints=joints, units=spec.get("units"))
    if out.shape is not None:
        try:
            out.feature_def()
        except SchemaError as e:
            raise fail(str(e)) from None
    return out


def _state_stream(
    common: dict[str, Any], spec: Mapping[str, Any], robot: Any, fail: Callable[[str], StreamConfigError]
) -> StreamSpec:
    """A JointState stream recorded as the robot's ``observation.state`` (``names``: its entries, default the
    robot's full state), built as the policy runner builds it live."""
    from realloop.robot.observation import JointStateObserver

    if robot is None:
        raise fail("field 'state' builds the robot's observation.state: set the recorder's 'robot' parameter")
    for key in ("joints", "shape", "units"):
        if spec.get(key) is not None:
            raise fail(f"'{key}' does not apply to field 'state' (its entries are the state's 'names')")
    names = spec.get("names")
    if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
        raise fail(f"'names' of field 'state' lists state entries (e.g. [shoulder_pan.pos, ee.z]), got {names!r}")
    try:
        observer = JointStateObserver(robot, names)
    except ValueError as e:
        raise fail(str(e)) from None
    return StreamSpec(
        **common, shape=(len(observer.names),), dtype="float32", names=tuple(observer.names), convert=observer
    )


class CommandJoiner:
    """The robot's whole command from its two ros2_control topics: the last arm targets followed by the last gripper
    opening, one sample per message on either. The gripper counts as at its spec default until its first command;
    a gripper command before any arm command gives no sample (the arm's target is not known yet)."""

    def __init__(self, n_joints: int, gripper_default: float | None) -> None:
        self.n_joints = n_joints
        self.arm: np.ndarray | None = None
        self.gripper = gripper_default

    def sample(self, data: Any, gripper: bool) -> np.ndarray | None:
        values = np.asarray(data, dtype=np.float64)
        if gripper:
            if values.shape != (1,):
                raise ValueError(f"a gripper command has {values.size} values, expected [opening]")
            self.gripper = float(values[0])
        else:
            if values.shape != (self.n_joints,):
                raise ValueError(f"an arm command has {values.size} values, the robot has {self.n_joints} joints")
            self.arm = values
        if self.arm is None:
            return None
        return self.arm if self.gripper is None else np.append(self.arm, self.gripper)


def _command_stream(
    common: dict[str, Any], spec: Mapping[str, Any], robot: Any, fail: Callable[[str], StreamConfigError]
) -> StreamSpec:
    """A Float64MultiArray stream recorded as the robot's whole command (``action``: the arm's joint targets, then
    the gripper opening from ``gripper_topic``), the layout realloop-collect writes in joint_position control."""
    if robot is None:
        raise fail("field 'command' lays out the robot's joints: set the recorder's 'robot' parameter")
    for key in ("joints", "names", "shape"):
        if spec.get(key) is not None:
            raise fail(f"'{key}' does not apply to field 'command' (its entries are the robot's joints and gripper)")
    gripper_topic = spec.get("gripper_topic")
    if robot.gripper is not None and not gripper_topic:
        raise fail(f"robot {robot.name!r} has a gripper: give its command topic as 'gripper_topic'")
    if robot.gripper is None and gripper_topic:
        raise fail(f"robot {robot.name!r} has no gripper: drop 'gripper_topic'")
    if gripper_topic is not None and (not isinstance(gripper_topic, str) or not gripper_topic.startswith("/")):
        raise fail(f"'gripper_topic' must be an absolute topic name, got {gripper_topic!r}")
    from realloop.robot.targets import joint_action_names

    names = tuple(joint_action_names(robot, "joint_position"))
    dtype = spec.get("dtype") or DEFAULT_DTYPE
    joiner = CommandJoiner(len(robot.joints), robot.gripper.default if robot.gripper is not None else None)
    return StreamSpec(
        **common,
        shape=(len(names),),
        dtype=np.dtype(dtype).name,
        names=names,
        units=spec.get("units"),
        gripper_topic=gripper_topic,
        joiner=joiner,
    )
