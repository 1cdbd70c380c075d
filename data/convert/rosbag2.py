"""Import rosbag2 bags (sqlite3 ``.db3`` and ``mcap`` storage) into a realloop dataset: one bag, one episode.

Topics map to features through a YAML config (``configs/dataset/rosbag2_example.yaml``) and/or
``--topic TOPIC=FEATURE[:FIELD]`` options. Supported message types:

- ``sensor_msgs/msg/Image`` (rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, 8UC3) and
  ``sensor_msgs/msg/CompressedImage`` (JPEG/PNG, decoded with OpenCV): RGB uint8 ``observation.images.*``;
- ``sensor_msgs/msg/JointState``: one of position, velocity, effort, optionally reordered by joint names;
- ``std_msgs/msg/Float64MultiArray``: ``data``, optionally reshaped.

Samples are stamped with ``header.stamp`` (sec + nanosec, in seconds). Float64MultiArray has no header: its
samples get the bag's receive time, and the episode attributes (``timestamp_source``) say so. Mapped topics
of any other type are skipped with a warning; both skipped and unmapped topics are listed in the summary.
Messages are read with the ``rosbags`` library, using the message definitions stored in the bag, or a
typestore (``ros2_humble`` by default) for bags that carry none.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import yaml
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from realloop.data.convert import (
    ConvertError,
    ConvertSummary,
    conversion_errors,
    finish_episode,
    image_feature,
    open_destination,
)
from realloop.data.schema import IMAGE_PREFIX, Feature, SchemaError, make_feature
from realloop.data.writer import EpisodeWriter

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
SUPPORTED_TYPES = (IMAGE, COMPRESSED_IMAGE, JOINT_STATE, FLOAT64_ARRAY)
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
JOINT_FIELDS = ("position", "velocity", "effort")
MAPPING_KEYS = ("feature", "field", "joints", "shape", "dtype", "names", "units", "stamp")
DEFAULT_TYPESTORE = "ros2_humble"
DEFAULT_DTYPE = "float32"
# encoding -> (channels, OpenCV conversion to RGB or None)
IMAGE_ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "8UC3": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "8UC1": (1, cv2.COLOR_GRAY2RGB),
}
BATCH = {True: 8, False: 1024}  # samples buffered per feature before writing (image, numeric)

__all__ = [
    "SUPPORTED_TYPES",
    "TopicMapping",
    "compressed_image_to_rgb",
    "convert_from_args",
    "convert_rosbag2",
    "find_bags",
    "image_to_rgb",
    "load_mappings",
    "parse_topic_option",
    "stamp_seconds",
]


# -- mapping configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopicMapping:
    """How one topic becomes one feature (a topic may feed several features, e.g. position and velocity)."""

    topic: str
    feature: str
    field: str | None = None
    joints: tuple[str, ...] | None = None
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    names: tuple[str, ...] | None = None
    units: str | None = None
    stamp: str | None = None  # header (default where the message has one) or receive

    @property
    def label(self) -> str:
        return self.feature + (f":{self.field}" if self.field else "")

    @classmethod
    def from_spec(cls, topic: str, spec: Any, where: str = "config") -> TopicMapping:
        """From a config entry: ``"FEATURE[:FIELD]"`` or ``{feature: ..., field: ..., joints: [...]}``."""
        if isinstance(spec, str):
            return parse_topic_option(f"{topic}={spec}")
        if not isinstance(spec, Mapping):
            raise ConvertError(f"{where}: topic {topic}: give a feature name or a mapping with 'feature', not {spec!r}")
        unknown = sorted(set(spec) - set(MAPPING_KEYS))
        if unknown:
            raise ConvertError(f"{where}: topic {topic}: unknown keys {unknown}; allowed: {list(MAPPING_KEYS)}")
        if not isinstance(spec.get("feature"), str) or not spec["feature"]:
            raise ConvertError(f"{where}: topic {topic}: 'feature' (e.g. observation.state) is required")

        def str_list(key: str) -> tuple[str, ...] | None:
            v = spec.get(key)
            if v is None:
                return None
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConvertError(f"{where}: topic {topic}: '{key}' must be a list of strings")
            return tuple(v)

        shape = spec.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape)):
            raise ConvertError(f"{where}: topic {topic}: 'shape' must be a list of positive integers, got {shape!r}")
        stamp = spec.get("stamp")
        if stamp not in (None, "header", "receive"):
            raise ConvertError(f"{where}: topic {topic}: 'stamp' is 'header' or 'receive', not {stamp!r}")
        dtype = spec.get("dtype")
        if dtype is not None:
            try:
                np.dtype(dtype)
            except TypeError:
                raise ConvertError(f"{where}: topic {topic}: dtype {dtype!r} is not a numpy dtype") from None
        for key in ("field", "units"):
            if spec.get(key) is not None and not isinstance(spec[key], str):
                raise ConvertError(f"{where}: topic {topic}: '{key}' must be a string")
        return cls(
            topic=_check_topic(topic, where),
            feature=spec["feature"],
            field=spec.get("field"),
            joints=str_list("joints"),
            shape=tuple(shape) if shape is not None else None,
            dtype=dtype,
            names=str_list("names"),
            units=spec.get("units"),
            stamp=stamp,
        )


def _check_topic(topic: str, where: str) -> str:
    if not isinstance(topic, str) or not topic.startswith("/"):
        raise ConvertError(f"{where}: {topic!r} is not a topic name; topics start with '/', e.g. /joint_states")
    return topic


def parse_topic_option(text: str) -> TopicMapping:
    """``--topic TOPIC=FEATURE[:FIELD]``, e.g. ``/joint_states=observation.state:position``."""
    topic, sep, rest = text.partition("=")
    feature, _, fld = rest.partition(":")
    if not sep or not topic or not feature:
        raise ConvertError(
            f"--topic {text!r}: write TOPIC=FEATURE[:FIELD], e.g. --topic /joint_states=observation.state:position"
        )
    return TopicMapping(
        topic=_check_topic(topic.strip(), "--topic"), feature=feature.strip(), field=fld.strip() or None
    )


def load_mappings(
    config: str | Path | None = None, topic_options: Sequence[str] = ()
) -> tuple[list[TopicMapping], str | None]:
    """Read the topic mappings from a YAML config and ``--topic`` options; returns (mappings, typestore).

    A ``--topic`` option for a feature that the config also maps replaces the config's entry.
    """
    mappings: list[TopicMapping] = []
    typestore = None
    if config is not None:
        p = Path(config)
        if not p.is_file():
            raise ConvertError(f"--config {p}: no such file (see configs/dataset/rosbag2_example.yaml)")
        try:
            doc = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConvertError(f"{p} is not valid YAML: {e}") from None
        if not isinstance(doc, Mapping) or not isinstance(doc.get("topics"), Mapping):
            raise ConvertError(
                f"{p}: expected a mapping with a 'topics' section (see configs/dataset/rosbag2_example.yaml)"
            )
        unknown = sorted(set(doc) - {"topics", "typestore"})
        if unknown:
            raise ConvertError(f"{p}: unknown top-level keys {unknown}; allowed: topics, typestore")
        typestore = doc.get("typestore")
        for topic, spec in doc["topics"].items():
            for one in spec if isinstance(spec, list) else [spec]:
                mappings.append(TopicMapping.from_spec(topic, one, str(p)))
    for text in topic_options:
        m = parse_topic_option(text)
        mappings = [x for x in mappings if x.feature != m.feature]
        mappings.append(m)
    return mappings, typestore


def _typestore(name: str) -> Typestore:
    try:
        return get_typestore(Stores(name))
    except ValueError:
        choices = [s.value for s in Stores if s.value.startswith("ros2") or s.value == "latest"]
        raise ConvertError(f"typestore {name!r} is unknown; use one of {choices}") from None


# -- bags ----------------------------------------------------------------------------------------------------
def _is_bag(p: Path) -> bool:
    return (p.is_dir() and (p / "metadata.yaml").is_file()) or (p.is_file() and p.suffix in (".db3", ".mcap"))


def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """Expand the SRC paths: a bag directory, a ``.db3``/``.mcap`` file, or a directory of bag directories."""
    bags: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ConvertError(f"{p} does not exist; give a rosbag2 bag directory or a .db3/.mcap file")
        if p.suffix == ".bag":
            raise ConvertError(f"{p} is a ROS 1 bag; convert it to rosbag2 first (`rosbags-convert --src {p}`)")
        if _is_bag(p):
            found = [p]
        elif p.is_dir():
            found = sorted(c for c in p.iterdir() if c.is_dir() and (c / "metadata.yaml").is_file())
            if not found:
                raise ConvertError(
                    f"{p} is not a rosbag2 bag: it has no metadata.yaml and holds no bag directories; give "
                    "a bag directory (with metadata.yaml) or its .db3/.mcap file"
                )
        else:
            raise ConvertError(
                f"{p} is not a rosbag2 bag: give a bag directory (with metadata.yaml) or a .db3/.mcap file"
            )
        bags += [b for b in found if b not in bags]
    return bags


@contextlib.contextmanager
def _open_bag(path: Path, default: Typestore) -> Iterator[AnyReader]:
    reader = AnyReader([path], default_typestore=default)
    try:
        reader.open()
    except Exception as e:  # rosbags raises several kinds for damaged or foreign files
        raise ConvertError(
            f"{path} is not a readable rosbag2 bag ({type(e).__name__}: {e}); check that the recording "
            "finished (`ros2 bag reindex` repairs a bag whose metadata.yaml is missing)"
        ) from None
    # bags may carry definitions for some types only: fall back to the typestore for the others
    known = reader.typestore.fielddefs
    if any(c.msgtype in SUPPORTED_TYPES and c.msgtype not in known for c in reader.connections):
        reader.typestore.register({k: v for k, v in default.fielddefs.items() if k not in known})
    try:
        yield reader
    finally:
        reader.close()


def _topic_types(reader: AnyReader, path: Path) -> tuple[dict[str, str], dict[str, int]]:
    types: dict[str, str] = {}
    counts: dict[str, int] = {}
    for c in reader.connections:
        if types.setdefault(c.topic, c.msgtype) != c.msgtype:
            raise ConvertError(f"{path}: topic {c.topic} carries two message types ({types[c.topic]}, {c.msgtype})")
        counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
    return types, counts


# -- messages to samples -------------------------------------------------------------------------------------
class UnsupportedMessage(ConvertError):
    """A message of a supported type whose content (e.g. a depth encoding) has no RGB/numeric feature form."""


def stamp_seconds(stamp: Any) -> float:
    """A ``builtin_interfaces/Time`` (sec, nanosec) as float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def image_to_rgb(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/msg/Image`` (rosbags' or realloop.robot.msgs') as ``H x W x 3`` RGB uint8 (row padding
    removed). Used by this converter and by the recorder node."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise UnsupportedMessage(
            f"image encoding {msg.encoding!r} is not supported; supported: {sorted(IMAGE_ENCODINGS)} "
            "(depth and 16-bit images do not fit an RGB uint8 image feature)"
        )
    channels, code = IMAGE_ENCODINGS[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    raw = msg.data  # bytes from realloop's codec, a numpy array from rosbags
    is_bytes = isinstance(raw, (bytes, bytearray, memoryview))
    data = np.frombuffer(raw, np.uint8) if is_bytes else np.asarray(raw, np.uint8)
    if step < w * channels or data.size < h * step:
        raise ConvertError(f"truncated {msg.encoding} image: {data.size} bytes for {h}x{w}, step {step}")
    img = data[: h * step].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if code is None:
        return np.ascontiguousarray(img)
    return cv2.cvtColor(img[..., 0] if channels == 1 else img, code)


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/msg/CompressedImage`` (JPEG, PNG, ...) decoded to ``H x W x 3`` RGB uint8."""
    if "compresseddepth" in msg.format.lower():
        raise UnsupportedMessage(f"compressed depth images ({msg.format!r}) do not fit an RGB uint8 image feature")
    img = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ConvertError(f"OpenCV could not decode a CompressedImage of format {msg.format!r}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _Extractor:
    """Turns the messages of one topic into samples of one feature; the first message fixes the feature."""

    def __init__(self, m: TopicMapping, msgtype: str, first: Any, image_format: str, quality: int | None) -> None:
        self.m = m
        self.msgtype = msgtype
        self.size: tuple[int, int] | None = None  # (W, H) to resize images to
        self.order: tuple[str, ...] | None = None  # joint names, in the feature's order
        self._index: dict[tuple[str, ...], np.ndarray | None] = {}
        if msgtype == FLOAT64_ARRAY:  # no header: the bag's receive time is all there is
            if m.stamp == "header":
                raise ConvertError(f"{m.topic}: {msgtype} has no header; remove 'stamp: header'")
            self.stamp = "receive"
        else:
            self.stamp = m.stamp or "header"
        if self.stamp == "header" and first.header.stamp.sec == 0 and first.header.stamp.nanosec == 0:
            raise ConvertError(
                f"{m.topic}: header.stamp is zero (the publisher does not stamp its messages); add "
                f"'stamp: receive' to its entry in the config to use the bag's receive time"
            )
        if msgtype in IMAGE_TYPES:
            if m.field:
                raise ConvertError(f"{m.topic}: ':{m.field}' applies to JointState topics only; remove it")
            if not m.feature.startswith(IMAGE_PREFIX):
                raise ConvertError(
                    f"{m.topic} is an image topic: map it to a feature named {IMAGE_PREFIX}<camera>, not {m.feature}"
                )
            shape: tuple[int, ...] = self._image(first).shape
            if m.shape is not None:
                if len(m.shape) not in (2, 3) or (len(m.shape) == 3 and m.shape[2] != 3):
                    raise ConvertError(f"{m.topic}: an image shape is [H, W] or [H, W, 3], not {list(m.shape)}")
                shape = (m.shape[0], m.shape[1], 3)
                self.size = (shape[1], shape[0])
            self.feature = image_feature(m.feature, shape, image_format, quality)
            return
        if m.feature.startswith(IMAGE_PREFIX):
            raise ConvertError(f"{m.topic} ({msgtype}) is not an image topic; {m.feature} is an image feature name")
        names = m.names
        if msgtype == JOINT_STATE:
            fld = m.field or "position"
            if fld not in JOINT_FIELDS:
                raise ConvertError(f"{m.topic}: JointState field {fld!r} unknown; use one of {JOINT_FIELDS}")
            self.field = fld
            if m.joints:
                self.order = m.joints
            elif len(first.name):
                self.order = tuple(first.name)
            if len(getattr(first, fld)) == 0:
                raise ConvertError(f"{m.topic}: the JointState field '{fld}' is empty; map position or velocity")
            shape = (len(self.order) if self.order else len(getattr(first, fld)),)
            names = names or self.order
            if m.shape is not None and tuple(m.shape) != shape:
                raise ConvertError(f"{m.topic}: config shape {list(m.shape)} but the messages give {list(shape)}")
        else:  # Float64MultiArray
            if m.field not in (None, "data"):
                raise ConvertError(f"{m.topic}: Float64MultiArray has the field 'data' only, not {m.field!r}")
            n = len(first.data)
            shape = tuple(m.shape) if m.shape is not None else (n,)
            if int(np.prod(shape)) != n:
                raise ConvertError(f"{m.topic}: config shape {list(shape)} does not hold the {n} values of 'data'")
        try:
            self.feature = make_feature(
                m.feature, dtype=m.dtype or DEFAULT_DTYPE, shape=shape, names=names, units=m.units
            )
        except SchemaError as e:
            raise ConvertError(f"{m.topic}: {e}") from None

    def _image(self, msg: Any) -> np.ndarray:
        return image_to_rgb(msg) if self.msgtype == IMAGE else compressed_image_to_rgb(msg)

    def time(self, msg: Any, recv_ns: int) -> float:
        return recv_ns * 1e-9 if self.stamp == "receive" else stamp_seconds(msg.header.stamp)

    def value(self, msg: Any) -> np.ndarray:
        if self.msgtype in IMAGE_TYPES:
            img = self._image(msg)
            if self.size is not None and (img.shape[1], img.shape[0]) != self.size:
                img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
            return img
        if self.msgtype == FLOAT64_ARRAY:
            return np.asarray(msg.data).reshape(self.feature.shape)
        values = np.asarray(getattr(msg, self.field))
        if self.order is None:
            return values
        names = tuple(msg.name)
        if names not in self._index:
            if len(names) != len(values):
                raise ConvertError(
                    f"{self.m.topic}: a JointState has {len(names)} names but {len(values)} {self.field} values"
                )
            pos = {n: i for i, n in enumerate(names)}
            missing = [j for j in self.order if j not in pos]
            if missing:
                raise ConvertError(
                    f"{self.m.topic}: a message lacks joints {missing} (it has {list(names)}); list the "
                    "joints to keep under 'joints:' in the config"
                )
            self._index[names] = None if names == self.order else np.array([pos[j] for j in self.order])
        index = self._index[names]
        return values if index is None else values[index]


@dataclass
class _Batches:
    """Per-feature buffers: drops samples whose timestamp does not increase, writes in small batches."""

    ep: EpisodeWriter
    times: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    values: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    last: dict[str, float] = dataclasses.field(default_factory=dict)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, feature: Feature, t: float, value: np.ndarray) -> None:
        name = feature.name
        if not t > self.last.get(name, -np.inf):
            self.dropped[name] = self.dropped.get(name, 0) + 1
            return
        self.last[name] = t
        self.times.setdefault(name, []).append(t)
        self.values.setdefault(name, []).append(value)
        if len(self.times[name]) >= BATCH[feature.is_image]:
            self.flush(name)

    def flush(self, name: str | None = None) -> None:
        for n in [name] if name else list(self.times):
            if self.times.get(n):
                self.ep.extend(n, self.times[n], np.stack(self.values[n]))
                self.times[n], self.values[n] = [], []


# -- the conversion ------------------------------------------------------------------------------------------
@dataclass
class _Bag:
    path: Path
    types: dict[str, str]
    counts: dict[str, int]
    distro: str | None


def convert_rosbag2(
    bags: Sequence[str | Path],
    dst: str | Path,
    *,
    mappings: Sequence[TopicMapping],
    typestore: str = DEFAULT_TYPESTORE,
    task: str = "",
    source: str = "teleop",
    robot: Mapping[str, Any] | None = None,
    robot_name: str | None = None,
    image_format: str = "jpeg",
    image_quality: int | None = None,
    allow_missing_topics: bool = False,
    progress: bool | None = None,
) -> ConvertSummary:
    """Append one episode per bag to the dataset ``dst`` (created if missing); returns the summary.

    Every bag is opened and checked, and the features are inferred from the first message of each mapped topic
    (or taken from the mapping), before anything is written. A bag that lacks a mapped topic is skipped unless
    ``allow_missing_topics``. ``progress=None`` shows the bar on a terminal only.
    """
    t_start = time.perf_counter()
    paths = find_bags(bags)
    if not paths:
        raise ConvertError("no bag given: pass one or more rosbag2 bags")
    summary = ConvertSummary("rosbag2", [str(p) for p in paths], str(dst))
    if not mappings:
        raise ConvertError(
            "no topic is mapped to a feature: give --config PATH (see configs/dataset/rosbag2_example.yaml) "
            "or --topic TOPIC=FEATURE[:FIELD] options"
        )
    dup = sorted({m.feature for m in mappings if sum(x.feature == m.feature for x in mappings) > 1})
    if dup:
        raise ConvertError(f"features mapped from more than one topic: {dup}; one topic per feature")
    default = _typestore(typestore)
    summary.mapping = {m.topic: ", ".join(x.label for x in mappings if x.topic == m.topic) for m in mappings}

    # 1. open every bag, learn its topics, infer the features from the first messages
    infos: list[_Bag] = []
    extractors: dict[str, _Extractor] = {}  # by feature
    skipped: dict[str, str] = {}  # feature -> reason
    for path in paths:
        with _open_bag(path, default) as reader:
            types, counts = _topic_types(reader, path)
            infos.append(_Bag(path, types, counts, getattr(reader.readers[0], "ros_distro", None)))
            for m in mappings:
                msgtype = types.get(m.topic)
                if msgtype is None or m.feature in skipped:
                    continue
                if m.feature in extractors:
                    if extractors[m.feature].msgtype != msgtype:
                        raise ConvertError(
                            f"{m.topic} is {extractors[m.feature].msgtype} in an earlier bag but {msgtype} in {path}"
                        )
                    continue
                if msgtype not in SUPPORTED_TYPES:
                    skipped[m.feature] = f"{msgtype} is not supported (supported: {', '.join(SUPPORTED_TYPES)})"
                elif msgtype not in reader.typestore.fielddefs:
                    skipped[m.feature] = f"{msgtype} has no message definition in the bag or the typestore"
                elif counts.get(m.topic, 0) > 0:
                    conns = [c for c in reader.connections if c.topic == m.topic]
                    gen = reader.messages(connections=conns)
                    _conn, _t, raw = next(gen)
                    gen.close()
                    msg = reader.deserialize(raw, msgtype)
                    try:
                        extractors[m.feature] = _Extractor(m, msgtype, msg, image_format, image_quality)
                    except UnsupportedMessage as e:
                        skipped[m.feature] = f"{e} (in {path})"
                    except ConvertError as e:
                        raise ConvertError(f"{path}: {e}") from None
    all_topics: dict[str, str] = {}
    for info in infos:
        for topic, msgtype in info.types.items():
            all_topics.setdefault(topic, msgtype)
    mapped_topics = {m.topic for m in mappings}
    summary.unmapped = {t: ty for t, ty in sorted(all_topics.items()) if t not in mapped_topics}
    for m in mappings:
        if m.feature in skipped:
            summary.skipped[m.topic] = skipped[m.feature]
            summary.warn(f"{m.topic} -> {m.feature} skipped: {skipped[m.feature]}")
        elif m.topic not in all_topics:
            raise ConvertError(
                f"topic {m.topic} (mapped to {m.feature}) is in none of the bags; their topics: "
                + ", ".join(f"{t} ({ty})" for t, ty in sorted(all_topics.items()))
            )
        elif m.feature not in extractors:
            summary.skipped[m.topic] = "no messages in any bag"
            summary.warn(f"{m.topic} -> {m.feature} skipped: it has no messages in any bag")
    active = [m for m in mappings if m.feature in extractors]
    if not active:
        raise ConvertError("none of the mapped topics can be converted (see the warnings); nothing to write")
    features = {m.feature: extractors[m.feature].feature for m in active}
    summary.features = {n: f.to_dict() for n, f in features.items()}

    # 2. one episode per bag
    todo: list[_Bag] = []
    for info in infos:
        missing = [m.topic for m in active if info.counts.get(m.topic, 0) == 0]
        if missing and (not allow_missing_topics or len(missing) == len(active)):
            reason = f"lacks mapped topics {missing}"
            summary.skipped_sources[str(info.path)] = reason
            summary.warn(
                f"{info.path}: {reason}; skipped"
                + ("" if allow_missing_topics else " (--allow-missing-topics writes it)")
            )
        else:
            todo.append(info)
    bar = tqdm(
        total=sum(info.counts.get(t, 0) for info in todo for t in {m.topic for m in active}),
        unit="msg",
        desc="convert",
        disable=None if progress is None else not progress,
    )
    by_topic: dict[str, list[_Extractor]] = {}
    for m in active:
        by_topic.setdefault(m.topic, []).append(extractors[m.feature])
    with open_destination(dst, features, robot) as ds, bar:
        for info in todo:
            present = {f: ex for f, ex in extractors.items() if info.counts.get(ex.m.topic, 0) > 0}
            attrs: dict[str, Any] = {  # episode metadata
                "converted_from": "rosbag2",
                "bag": str(info.path),
                "ros_distro": info.distro,
                "topics": {f: ex.m.topic for f, ex in present.items()},
                "timestamp_source": {
                    f: "header.stamp" if ex.stamp == "header" else "bag receive time" for f, ex in present.items()
                },
            }
            ep = ds.begin_episode(task=task, source=source, robot=robot_name, **attrs)
            try:
                with conversion_errors(summary, str(info.path)), _open_bag(info.path, default) as reader:
                    batches = _Batches(ep)
                    conns = [c for c in reader.connections if c.topic in by_topic]
                    for conn, recv_ns, raw in reader.messages(connections=conns):
                        try:
                            msg = reader.deserialize(raw, conn.msgtype)
                        except AnyReaderError as e:
                            raise ConvertError(
                                f"a {conn.topic} message cannot be read ({e}); the bag is damaged"
                            ) from e
                        for ex in by_topic[conn.topic]:
                            batches.add(ex.feature, ex.time(msg, recv_ns), ex.value(msg))
                        bar.update()
                    batches.flush()
                    if batches.dropped:
                        ep.meta["attributes"]["dropped_samples"] = dict(batches.dropped)
                        summary.warn(
                            f"{info.path}: dropped samples whose timestamp did not increase: {batches.dropped}"
                        )
                    finish_episode(ep, summary, str(info.path))
            finally:
                ep.discard()
    summary.seconds = time.perf_counter() - t_start
    return summary


def convert_from_args(args: argparse.Namespace, **common: Any) -> ConvertSummary:
    """``realloop-dataset convert --from rosbag2``: :func:`convert_rosbag2` with the command line's options
    (``common``: the options every converter takes)."""
    mappings, typestore = load_mappings(args.config, args.topics)
    return convert_rosbag2(
        args.src,
        args.dst,
        mappings=mappings,
        typestore=args.typestore or typestore or DEFAULT_TYPESTORE,
        allow_missing_topics=args.allow_missing_topics,
        **common,
    )
