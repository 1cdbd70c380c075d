"""The ROS 2 message types realloop speaks, as dataclasses whose fields carry their ROS types.

Field names, order and types follow the ROS 2 Humble/Jazzy definitions exactly (a test compares them with the
`rosbags` typestores), so :mod:`realloop.robot.msgs.cdr` produces the bytes that rmw and rosbag2 do.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:
    from typing_extensions import dataclass_transform

from .cdr import field

T = TypeVar("T")
REGISTRY: dict[str, type] = {}


@dataclass_transform()  # type checkers see the fields as __init__ parameters, each optional (field() gives a default)
def message(ros_type: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: a dataclass message for the ROS type ``pkg/msg/Name``."""

    def wrap(cls: type[T]) -> type[T]:
        msg_cls: Any = dataclasses.dataclass(cls)
        msg_cls.__ros_type__ = ros_type
        REGISTRY[ros_type] = msg_cls
        return msg_cls

    return wrap


def ros_type_of(cls_or_msg: Any) -> str:
    """``pkg/msg/Name`` of a message class or instance."""
    return cls_or_msg.__ros_type__


# --- builtin_interfaces, std_msgs, rosgraph_msgs ----------------------------------------------------------------


def _split_sec(t: float) -> tuple[int, int]:
    """Float seconds as (sec, nanosec), rounded to the nanosecond."""
    ns = round(t * 1e9)
    return int(ns // 1_000_000_000), int(ns % 1_000_000_000)


@message("builtin_interfaces/msg/Time")
class Time:
    sec: int = field("int32")
    nanosec: int = field("uint32")

    @classmethod
    def from_sec(cls, t: float) -> Time:
        """Split float seconds into (sec, nanosec), rounding to the nanosecond."""
        return cls(*_split_sec(t))

    def to_sec(self) -> float:
        return self.sec + self.nanosec * 1e-9


@message("builtin_interfaces/msg/Duration")
class Duration:
    sec: int = field("int32")
    nanosec: int = field("uint32")

    @classmethod
    def from_sec(cls, t: float) -> Duration:
        """Split float seconds into (sec, nanosec), rounding to the nanosecond."""
        return cls(*_split_sec(t))

    def to_sec(self) -> float:
        return self.sec + self.nanosec * 1e-9


@message("std_msgs/msg/Header")
class Header:
    stamp: Time = field(Time)
    frame_id: str = field("string")


@message("std_msgs/msg/String")
class String:
    data: str = field("string")


@message("std_msgs/msg/Bool")
class Bool:
    data: bool = field("bool")


@message("std_msgs/msg/MultiArrayDimension")
class MultiArrayDimension:
    label: str = field("string")
    size: int = field("uint32")
    stride: int = field("uint32")


@message("std_msgs/msg/MultiArrayLayout")
class MultiArrayLayout:
    dim: list[MultiArrayDimension] = field([MultiArrayDimension])
    data_offset: int = field("uint32")


@message("std_msgs/msg/Float64MultiArray")
class Float64MultiArray:
    layout: MultiArrayLayout = field(MultiArrayLayout)
    data: np.ndarray = field("float64[]")


@message("rosgraph_msgs/msg/Clock")
class Clock:
    clock: Time = field(Time)


# --- geometry_msgs ----------------------------------------------------------------------------------------------


@message("geometry_msgs/msg/Vector3")
class Vector3:
    x: float = field("float64")
    y: float = field("float64")
    z: float = field("float64")


@message("geometry_msgs/msg/Point")
class Point:
    x: float = field("float64")
    y: float = field("float64")
    z: float = field("float64")


@message("geometry_msgs/msg/Quaternion")
class Quaternion:
    x: float = field("float64")
    y: float = field("float64")
    z: float = field("float64")
    w: float = dataclasses.field(default=1.0, metadata={"ros": "float64"})  # ROS's default is the identity


@message("geometry_msgs/msg/Pose")
class Pose:
    position: Point = field(Point)
    orientation: Quaternion = field(Quaternion)


@message("geometry_msgs/msg/PoseStamped")
class PoseStamped:
    header: Header = field(Header)
    pose: Pose = field(Pose)


@message("geometry_msgs/msg/Twist")
class Twist:
    linear: Vector3 = field(Vector3)
    angular: Vector3 = field(Vector3)


@message("geometry_msgs/msg/TwistStamped")
class TwistStamped:
    header: Header = field(Header)
    twist: Twist = field(Twist)


# --- sensor_msgs ------------------------------------------------------------------------------------------------


@message("sensor_msgs/msg/Image")
class Image:
    header: Header = field(Header)
    height: int = field("uint32")
    width: int = field("uint32")
    encoding: str = field("string")
    is_bigendian: int = field("uint8")
    step: int = field("uint32")
    data: bytes | np.ndarray = field("uint8[]")  # decoded as bytes; a uint8 frame array encodes without a copy


@message("sensor_msgs/msg/CompressedImage")
class CompressedImage:
    header: Header = field(Header)
    format: str = field("string")
    data: bytes = field("uint8[]")


@message("sensor_msgs/msg/RegionOfInterest")
class RegionOfInterest:
    x_offset: int = field("uint32")
    y_offset: int = field("uint32")
    height: int = field("uint32")
    width: int = field("uint32")
    do_rectify: bool = field("bool")


@message("sensor_msgs/msg/CameraInfo")
class CameraInfo:
    header: Header = field(Header)
    height: int = field("uint32")
    width: int = field("uint32")
    distortion_model: str = field("string")
    d: np.ndarray = field("float64[]")
    k: np.ndarray = field("float64[9]")
    r: np.ndarray = field("float64[9]")
    p: np.ndarray = field("float64[12]")
    binning_x: int = field("uint32")
    binning_y: int = field("uint32")
    roi: RegionOfInterest = field(RegionOfInterest)


@message("sensor_msgs/msg/JointState")
class JointState:
    header: Header = field(Header)
    name: list[str] = field("string[]")
    position: np.ndarray = field("float64[]")
    velocity: np.ndarray = field("float64[]")
    effort: np.ndarray = field("float64[]")


@message("sensor_msgs/msg/Joy")
class Joy:
    header: Header = field(Header)
    axes: np.ndarray = field("float32[]")
    buttons: np.ndarray = field("int32[]")


@message("sensor_msgs/msg/Imu")
class Imu:
    header: Header = field(Header)
    orientation: Quaternion = field(Quaternion)
    orientation_covariance: np.ndarray = field("float64[9]")
    angular_velocity: Vector3 = field(Vector3)
    angular_velocity_covariance: np.ndarray = field("float64[9]")
    linear_acceleration: Vector3 = field(Vector3)
    linear_acceleration_covariance: np.ndarray = field("float64[9]")


# --- trajectory_msgs --------------------------------------------------------------------------------------------


@message("trajectory_msgs/msg/JointTrajectoryPoint")
class JointTrajectoryPoint:
    positions: np.ndarray = field("float64[]")
    velocities: np.ndarray = field("float64[]")
    accelerations: np.ndarray = field("float64[]")
    effort: np.ndarray = field("float64[]")
    time_from_start: Duration = field(Duration)


@message("trajectory_msgs/msg/JointTrajectory")
class JointTrajectory:
    header: Header = field(Header)
    joint_names: list[str] = field("string[]")
    points: list[JointTrajectoryPoint] = field([JointTrajectoryPoint])
