"""The message codec against `rosbags` (the reference CDR implementation rosbag2 tooling uses), for the ROS 2
Humble and Jazzy typestores: field definitions, bytes both ways, big-endian input, type hashes, bad input."""

from __future__ import annotations

import contextlib
import json
import math
from hashlib import sha256
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.base import Nodetype

from realloop.robot import msgs
from realloop.robot.msgs import CdrError, decode, encode, ros_fields, ros_type_of
from realloop.robot.msgs.cdr import PRIMITIVES, FieldType

STORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}
TYPES = sorted(msgs.REGISTRY)
SAMPLES_PER_TYPE = 30

# Published ROS 2 Jazzy hashes (``ros2 topic info -v`` / share/<pkg>/msg/<T>.json of the Jazzy packages): an
# anchor that does not come from rosbags.
JAZZY_HASHES = {
    "builtin_interfaces/msg/Time": "b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197",
    "std_msgs/msg/Header": "f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01",
    "std_msgs/msg/String": "df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18",
    "std_msgs/msg/MultiArrayDimension": "5e773a60a4c7fc8a54985f307c7837aa2994252a126c301957a24e31282c9cbe",
    "std_msgs/msg/MultiArrayLayout": "4c66e6f78e740ac103a94cf63259f968e48c617e7699e829b63c21a5cb50dac6",
    "std_msgs/msg/Float64MultiArray": "1025ddc6b9552d191f89ef1a8d2f60f3d373e28b283d8891ddcc974e8c55397f",
    "sensor_msgs/msg/Image": "d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
    "sensor_msgs/msg/CompressedImage": "15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a",
    "sensor_msgs/msg/CameraInfo": "b3dfd68ff46c9d56c80fd3bd4ed22c7a4ddce8c8348f2f59c299e73118e7e275",
    "sensor_msgs/msg/RegionOfInterest": "ad16bcba5f9131dcdba6fbded19f726f5440e3c513b4fb586dd3027eeed8abb1",
    "sensor_msgs/msg/JointState": "a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
    "sensor_msgs/msg/Imu": "7d9a00ff131080897a5ec7e26e315954b8eae3353c3f995c55faf71574000b5b",
    "trajectory_msgs/msg/JointTrajectory": "179b33eba59d676f6d967ac71fe35e7ca2f64b2f3928f4a018cec115e213796e",
}


@pytest.fixture(scope="module", params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Any:
    return get_typestore(STORES[request.param])


# --- random messages --------------------------------------------------------------------------------------------

STRINGS = ["", "a", "abc", "base_link", "joint_7", "héllo wörld", "日本語のフレーム", "robot 🤖", "x" * 31]
INT_RANGES = {k: (np.iinfo(v[1]).min, np.iinfo(v[1]).max) for k, v in PRIMITIVES.items() if v[1][0] in "iu"}


def rand_float(rng: np.random.Generator, f32: bool) -> float:
    r = rng.random()
    if r < 0.05:
        v = [math.inf, -math.inf, math.nan, -0.0, 0.0][int(rng.integers(5))]
    else:
        v = float(rng.normal() * 10.0 ** rng.integers(-6, 7))
    return float(np.float32(v)) if f32 else v


def rand_scalar(base: str, rng: np.random.Generator) -> Any:
    if base == "string":
        if rng.random() < 0.5:
            return STRINGS[int(rng.integers(len(STRINGS)))]
        return "".join(chr(c) for c in rng.integers(32, 0x2FF, size=int(rng.integers(0, 12))))
    if base == "bool":
        return bool(rng.random() < 0.5)
    if base in ("float32", "float64"):
        return rand_float(rng, base == "float32")
    lo, hi = INT_RANGES[base]
    edge = rng.random()
    if edge < 0.1:
        return int(lo)
    if edge < 0.2:
        return int(hi)
    return int(rng.integers(lo, hi, endpoint=True))


def rand_value(ft: FieldType, rng: np.random.Generator, depth: int) -> Any:
    if ft.length is None:
        return rand_message(ft.base, rng, depth + 1) if ft.is_message else rand_scalar(ft.base, rng)
    # odd lengths and empties exercise every alignment path; nested sequences stay short
    n = ft.length if ft.length >= 0 else int(rng.choice([0, 0, 1, 2, 3, 5, 7] if depth < 2 else [0, 1, 2]))
    if ft.is_message:
        return [rand_message(ft.base, rng, depth + 1) for _ in range(n)]
    if ft.base == "string":
        return [rand_scalar("string", rng) for _ in range(n)]
    dtype = PRIMITIVES[ft.base][1]
    if ft.base in ("uint8", "byte", "char") and ft.length == -1:
        return rng.bytes(n)
    return np.array([rand_scalar(ft.base, rng) for _ in range(n)], dtype=dtype)


def rand_message(cls: type, rng: np.random.Generator, depth: int = 0) -> Any:
    return cls(**{name: rand_value(ft, rng, depth) for name, ft in ros_fields(cls)})


def samples(cls: type) -> list[Any]:
    """Default instance first, then seeded random ones (seeded per type so a failure reproduces alone)."""
    rng = np.random.default_rng(sum(ros_type_of(cls).encode()))
    return [cls()] + [rand_message(cls, rng) for _ in range(SAMPLES_PER_TYPE)]


def to_rosbags(ts: Any, msg: Any) -> Any:
    """The same message as an instance of the rosbags typestore's class."""
    kwargs = {}
    for name, ft in ros_fields(type(msg)):
        v = getattr(msg, name)
        if ft.is_message:
            v = [to_rosbags(ts, x) for x in v] if ft.length == -1 else to_rosbags(ts, v)
        elif isinstance(v, bytes):
            v = np.frombuffer(v, np.uint8).copy()
        elif isinstance(v, np.ndarray):
            v = v.copy()
        kwargs[name] = v
    return ts.types[ros_type_of(msg)](**kwargs)


def same_scalar(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def assert_same(ours: Any, other: Any, path: str = "") -> None:
    """Field-by-field equality of one of our messages with ours or a rosbags message (NaN equals NaN)."""
    if hasattr(other, "__msgtype__"):  # a rosbags message: the same ROS type
        assert ros_type_of(ours) == other.__msgtype__, path
    for name, ft in ros_fields(type(ours)):
        a, b, where = getattr(ours, name), getattr(other, name), f"{path}.{name}"
        if ft.is_message and ft.length == -1:
            assert len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                assert_same(x, y, f"{where}[{i}]")
        elif ft.is_message:
            assert_same(a, b, where)
        elif ft.length is None:
            assert same_scalar(a, b), f"{where}: {a!r} != {b!r}"
            assert type(a) is (
                str
                if ft.base == "string"
                else bool
                if ft.base == "bool"
                else float
                if ft.base.startswith("float")
                else int
            ), f"{where}: {type(a)}"
        elif ft.base == "string":
            assert list(a) == list(b), where
        elif isinstance(a, bytes) or isinstance(b, bytes):
            assert isinstance(a, bytes), f"{where}: uint8[] must decode to bytes, got {type(a)}"
            assert a == (b if isinstance(b, bytes) else np.asarray(b, np.uint8).tobytes()), where
        else:
            assert isinstance(a, np.ndarray) and a.dtype == np.dtype(PRIMITIVES[ft.base][1]), f"{where}: {a!r}"
            assert a.shape == (len(b),), where
            np.testing.assert_array_equal(a, np.asarray(b), err_msg=where)


# --- definitions ------------------------------------------------------------------------------------------------


def rosbags_fielddef(ft: FieldType) -> tuple:
    inner = (Nodetype.NAME, ros_type_of(ft.base)) if ft.is_message else (Nodetype.BASE, (ft.base, 0))
    if ft.length is None:
        return inner
    if ft.length == -1:
        return (Nodetype.SEQUENCE, (inner, 0))
    return (Nodetype.ARRAY, (inner, ft.length))


@pytest.mark.parametrize("ros_type", TYPES)
def test_fields_match_typestore(store: Any, ros_type: str) -> None:
    cls = msgs.REGISTRY[ros_type]
    ours = [(name, rosbags_fielddef(ft)) for name, ft in ros_fields(cls)]
    assert ours == list(store.fielddefs[ros_type][1])
    for _, ft in ros_fields(cls):  # every nested type is registered, so the codec can reach it by name
        if ft.is_message:
            assert msgs.REGISTRY[ros_type_of(ft.base)] is ft.base


def test_registry_covers_the_issue_types() -> None:
    wanted = [
        "builtin_interfaces/msg/Time",
        "std_msgs/msg/Header",
        "std_msgs/msg/Float64MultiArray",
        "sensor_msgs/msg/Image",
        "sensor_msgs/msg/CompressedImage",
        "sensor_msgs/msg/CameraInfo",
        "sensor_msgs/msg/JointState",
        "sensor_msgs/msg/Joy",
        "sensor_msgs/msg/Imu",
        "geometry_msgs/msg/Twist",
        "geometry_msgs/msg/TwistStamped",
        "geometry_msgs/msg/Pose",
        "geometry_msgs/msg/PoseStamped",
        "trajectory_msgs/msg/JointTrajectory",
        "rosgraph_msgs/msg/Clock",
    ]
    assert set(wanted) <= set(msgs.REGISTRY)


# --- bytes both ways --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ros_type", TYPES)
def test_encode_matches_rosbags(store: Any, ros_type: str) -> None:
    for i, msg in enumerate(samples(msgs.REGISTRY[ros_type])):
        ref = bytes(store.serialize_cdr(to_rosbags(store, msg), ros_type, little_endian=True))
        assert encode(msg) == ref, f"sample {i}: {msg}"


@pytest.mark.parametrize("ros_type", TYPES)
def test_decode_rosbags_bytes_both_endians(store: Any, ros_type: str) -> None:
    cls = msgs.REGISTRY[ros_type]
    for i, msg in enumerate(samples(cls)):
        rb = to_rosbags(store, msg)
        for little in (True, False):
            data = bytes(store.serialize_cdr(rb, ros_type, little_endian=little))
            assert data[1] == little
            got = decode(cls, data)
            assert type(got) is cls
            assert_same(got, msg, f"sample {i} {'LE' if little else 'BE'}")
            assert_same(got, rb, f"sample {i} {'LE' if little else 'BE'} vs rosbags")


@pytest.mark.parametrize("ros_type", TYPES)
def test_rosbags_decodes_our_bytes(store: Any, ros_type: str) -> None:
    for i, msg in enumerate(samples(msgs.REGISTRY[ros_type])):
        data = encode(msg)
        assert_same(msg, store.deserialize_cdr(data, ros_type), f"sample {i}")
        # as Cyclone delivers it: padded to 4 bytes, the option bits counting the padding
        pad = -len(data) % 4
        padded = data[:3] + bytes([pad]) + data[4:] + b"\0" * pad
        assert_same(decode(type(msg), padded), msg, f"sample {i} padded")


def test_golden_bytes() -> None:
    """Literal vectors (rosbags 0.11 output, matching captures from rmw): a codec and rosbags changing together
    would still be caught."""
    assert encode(msgs.String("hello")).hex() == "000100000600000068656c6c6f00"
    assert encode(msgs.String("")).hex() == "000100000100000000"
    assert decode(msgs.String, bytes.fromhex("000000000000000668656c6c6f00")).data == "hello"
    js = msgs.JointState(msgs.Header(msgs.Time(1, 2), "base"), ["j1", "j2"], np.array([0.5, -1.0]))
    golden = (
        "00010000010000000200000005000000626173650000000002000000030000006a310000030000006a32000002000000"
        "00000000000000000000e03f000000000000f0bf0000000000000000"
    )
    assert encode(js).hex() == golden
    assert_same(decode(msgs.JointState, bytes.fromhex(golden)), js)
    fma = msgs.Float64MultiArray(data=np.array([0.25, -0.5, 1.0]))
    assert encode(fma).hex() == (
        "0001000000000000000000000300000000000000000000000000d03f000000000000e0bf000000000000f03f"
    )


def test_sequences_accept_lists_and_images() -> None:
    a = msgs.JointState(name=["a"], position=np.array([1.0, 2.0]), velocity=np.array([3.0], np.float32))
    b = msgs.JointState(name=["a"], position=[1.0, 2.0], velocity=[3.0])
    assert encode(a) == encode(b)
    frame = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # an HxWx3 frame goes in without .tobytes()
    img = msgs.Image(height=2, width=3, encoding="bgr8", step=9, data=frame)
    assert decode(msgs.Image, encode(img)).data == frame.tobytes()


def test_nested_message_sequences_roundtrip() -> None:
    pts = [
        msgs.JointTrajectoryPoint(positions=np.arange(k, dtype=float), time_from_start=msgs.Duration(k, 7))
        for k in range(4)
    ]
    traj = msgs.JointTrajectory(msgs.header(12.5, "world"), ["a", "bb", "ccc"], pts)
    got = decode(msgs.JointTrajectory, encode(traj))
    assert_same(got, traj)
    assert [p.positions.tolist() for p in got.points] == [[], [0.0], [0.0, 1.0], [0.0, 1.0, 2.0]]
    assert got.header.stamp.to_sec() == 12.5


# --- type hashes ------------------------------------------------------------------------------------------------

TYPE_IDS = {
    "int8": 2,
    "uint8": 3,
    "int16": 4,
    "uint16": 5,
    "int32": 6,
    "uint32": 7,
    "int64": 8,
    "uint64": 9,
    "float32": 10,
    "float64": 11,
    "char": 13,
    "bool": 15,
    "byte": 16,
    "string": 17,
}


def rihs01_from_our_definitions(ros_type: str) -> str:
    """REP-2016 type hash computed from our dataclass definitions (not from a typestore)."""
    described: dict[str, dict] = {}

    def describe(cls: type) -> dict:
        name = ros_type_of(cls)
        if name not in described:
            fields = []
            for fname, ft in ros_fields(cls):
                offset = {None: 0, -1: 144}.get(ft.length, 48)
                if ft.is_message:
                    describe(ft.base)
                tid = offset + (1 if ft.is_message else TYPE_IDS[ft.base])
                fields.append(
                    {
                        "name": fname,
                        "type": {
                            "type_id": tid,
                            "capacity": ft.length if ft.length and ft.length > 0 else 0,
                            "string_capacity": 0,
                            "nested_type_name": ros_type_of(ft.base) if ft.is_message else "",
                        },
                    }
                )
            described[name] = {"type_name": name, "fields": fields}
        return described[name]

    top = describe(msgs.REGISTRY[ros_type])
    doc = {
        "type_description": top,
        "referenced_type_descriptions": [d for n, d in sorted(described.items()) if n != ros_type],
    }
    return "RIHS01_" + sha256(json.dumps(doc, separators=(", ", ": ")).encode()).hexdigest()


@pytest.mark.parametrize("ros_type", TYPES)
def test_type_hash(ros_type: str) -> None:
    jazzy = get_typestore(Stores.ROS2_JAZZY).hash_rihs01(ros_type)
    assert msgs.type_hash(ros_type) == jazzy
    assert rihs01_from_our_definitions(ros_type) == jazzy
    if ros_type in JAZZY_HASHES:
        assert jazzy == "RIHS01_" + JAZZY_HASHES[ros_type]


# --- bad input --------------------------------------------------------------------------------------------------


def bad_input_samples() -> list[Any]:
    rng = np.random.default_rng(7)
    return [
        msgs.String("héllo"),
        msgs.JointState(msgs.header(3.25, "base"), ["j1", "j2", "j3"], np.arange(3.0), np.ones(3), np.zeros(0)),
        msgs.Image(msgs.header(1.0, "cam"), 2, 3, "bgr8", 0, 9, rng.bytes(18)),
        msgs.CameraInfo(msgs.header(2.0, "cam"), 480, 640, "plumb_bob", np.arange(5.0), np.arange(9.0)),
        msgs.JointTrajectory(msgs.header(1.0), ["a"], [msgs.JointTrajectoryPoint(np.ones(1), np.ones(1))]),
        msgs.Float64MultiArray(msgs.MultiArrayLayout([msgs.MultiArrayDimension("x", 3, 3)]), np.ones(3)),
    ]


@pytest.mark.parametrize("msg", bad_input_samples(), ids=lambda m: type(m).__name__)
def test_every_truncation_raises(msg: Any) -> None:
    data = encode(msg)
    cls = type(msg)
    for n in range(len(data)):
        with pytest.raises(CdrError, match=r"truncated|corrupt|not a plain CDR") as e:
            decode(cls, data[:n])
        assert str(e.value), n


@pytest.mark.parametrize("msg", bad_input_samples(), ids=lambda m: type(m).__name__)
def test_garbage_raises_cdr_error_only(msg: Any) -> None:
    """Corrupted bytes decode to something or raise CdrError: never another exception, never a hang."""
    data = encode(msg)
    cls = type(msg)
    rng = np.random.default_rng(11)
    for _ in range(300):
        buf = bytearray(data)
        for pos in rng.integers(4, len(buf), size=int(rng.integers(1, 4))):
            buf[pos] = int(rng.integers(256))
        with contextlib.suppress(CdrError):
            decode(cls, bytes(buf))
    for _ in range(100):
        with contextlib.suppress(CdrError):
            decode(cls, b"\x00\x01\x00\x00" + rng.bytes(int(rng.integers(0, 64))))


def test_bad_headers_and_huge_lengths() -> None:
    with pytest.raises(CdrError, match="not a plain CDR String"):
        decode(msgs.String, b"")
    with pytest.raises(CdrError, match="XCDR2"):
        decode(msgs.String, bytes.fromhex("00070000") + b"\x01\0\0\0\0")  # an XCDR2 little-endian header
    huge = (0xFFFFFFF0).to_bytes(4, "little")
    with pytest.raises(CdrError, match="truncated"):  # a string claiming 4 GB
        decode(msgs.String, b"\x00\x01\x00\x00" + huge + b"abc\0")
    with pytest.raises(CdrError, match="truncated"):  # a byte array claiming 4 GB must not allocate it
        decode(msgs.CompressedImage, encode(msgs.CompressedImage(format="jpeg"))[:-4] + huge + b"x")
    with pytest.raises(CdrError, match="corrupt"):
        decode(msgs.String, b"\x00\x01\x00\x00\x03\0\0\0\xff\xfe\0")  # not UTF-8


def test_wrong_fixed_array_length_raises() -> None:
    with pytest.raises(CdrError, match=r"'k' is float64\[9\] but got 8"):
        encode(msgs.CameraInfo(k=np.zeros(8)))
    with pytest.raises(CdrError, match=r"'p' is float64\[12\] but got 13"):
        encode(msgs.CameraInfo(p=np.zeros(13)))
    with pytest.raises(CdrError, match=r"'orientation_covariance' is float64\[9\]"):
        encode(msgs.Imu(orientation_covariance=[0.0] * 10))
    with pytest.raises(CdrError, match="1-D"):
        encode(msgs.JointState(position=np.zeros((2, 2))))
    with pytest.raises(CdrError, match="cannot encode Time"):
        encode(msgs.Time(sec=2**31))  # int32 overflow
