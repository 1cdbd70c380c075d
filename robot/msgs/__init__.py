"""ROS 2 messages and their CDR codec, shared by every transport (DDS, rclpy) and by rosbag2 files."""

from __future__ import annotations

import functools
import json
from typing import Any

from .cdr import CdrError, decode, encode, ros_fields
from .types import (
    REGISTRY,
    Bool,
    CameraInfo,
    Clock,
    CompressedImage,
    Duration,
    Float64MultiArray,
    Header,
    Image,
    Imu,
    JointState,
    JointTrajectory,
    JointTrajectoryPoint,
    Joy,
    MultiArrayDimension,
    MultiArrayLayout,
    Point,
    Pose,
    PoseStamped,
    Quaternion,
    RegionOfInterest,
    String,
    Time,
    Twist,
    TwistStamped,
    Vector3,
    message,
    ros_type_of,
)

__all__ = [
    "REGISTRY",
    "Bool",
    "CameraInfo",
    "CdrError",
    "Clock",
    "CompressedImage",
    "Duration",
    "Float64MultiArray",
    "Header",
    "Image",
    "Imu",
    "JointState",
    "JointTrajectory",
    "JointTrajectoryPoint",
    "Joy",
    "MultiArrayDimension",
    "MultiArrayLayout",
    "Point",
    "Pose",
    "PoseStamped",
    "Quaternion",
    "RegionOfInterest",
    "String",
    "Time",
    "Twist",
    "TwistStamped",
    "Vector3",
    "dds_type_name",
    "decode",
    "encode",
    "header",
    "json_object",
    "message",
    "ros_fields",
    "ros_type_of",
    "type_hash",
]


def header(t: float, frame_id: str = "") -> Header:
    """A std_msgs/Header stamped ``t`` seconds."""
    return Header(Time.from_sec(t), frame_id)


def dds_type_name(ros_type: str) -> str:
    """``sensor_msgs/msg/Image`` -> ``sensor_msgs::msg::dds_::Image_`` (the ROS 2 DDS mapping)."""
    pkg, kind, name = ros_type.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


@functools.cache
def type_hash(ros_type: str) -> str:
    """The ROS 2 Jazzy type hash (``RIHS01_<sha256>``) of a type, computed by `rosbags` from its definition."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY).hash_rihs01(ros_type)


def json_object(text: str) -> dict[str, Any] | None:
    """A JSON status message's object (``/recorder/status``, ``/sim/status``, ``~/status``), or None when the text
    is not a JSON object: a status from another publisher must not stop the node that reads it."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
