"""Transports under the node API: ``dds`` (Cyclone DDS, no ROS install) and ``rclpy`` (ROS 2 sourced).

Both move the same CDR bytes (:mod:`realloop.robot.msgs`); a transport knows topics, types and QoS, not messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from realloop.registry import Registry

from .qos import CLOCK, LATCHED, RELIABLE, SENSOR, QoS, qos_profile

__all__ = [
    "CLOCK",
    "LATCHED",
    "RELIABLE",
    "SENSOR",
    "TRANSPORTS",
    "QoS",
    "Transport",
    "make_transport",
    "qos_profile",
    "rclpy_available",
    "resolve_domain",
]


class Transport(Protocol):
    """What a node needs from the middleware."""

    def advertise(self, topic: str, ros_type: str, qos: QoS) -> Callable[[bytes], None]: ...

    def subscribe(self, topic: str, ros_type: str, qos: QoS, callback: Callable[[bytes], None]) -> None: ...

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds for data, then run the callbacks of what arrived."""

    def wake(self) -> None:
        """Make a blocked :meth:`wait` return now (thread-safe)."""

    def close(self) -> None: ...


def rclpy_available() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def auto_transport(node_name: str, domain_id: int, localhost_only: bool) -> Transport:
    """Transport ``auto``: rclpy when it imports (ROS 2 sourced), else dds."""
    return TRANSPORTS.get("rclpy" if rclpy_available() else "dds")(node_name, domain_id, localhost_only)


# kind -> class or factory, called as (node_name, domain_id, localhost_only)
TRANSPORTS = Registry("transport", {
    "auto": "realloop.robot.transport:auto_transport",
    "dds": "realloop.robot.transport.dds:DdsTransport",
    "rclpy": "realloop.robot.transport.rclpy_bridge:RclpyTransport",
})  # fmt: skip


DEFAULT_DOMAIN = 0  # ROS 2's own default


def resolve_domain(domain_id: Any = None) -> tuple[int, str]:
    """The DDS domain of a node and where it came from, one rule for every node (docs/ros2.md "Which DDS
    domain"): the node's ``domain_id`` parameter when set, else ``ROS_DOMAIN_ID``, else 0 (ROS 2's default).
    Raises ValueError for a value that is not a domain id (0..232)."""
    if domain_id is not None:
        value, source = domain_id, "the domain_id parameter"
    elif os.environ.get("ROS_DOMAIN_ID", "").strip():
        value, source = os.environ["ROS_DOMAIN_ID"].strip(), "ROS_DOMAIN_ID"
    else:
        return DEFAULT_DOMAIN, "the default: domain_id and ROS_DOMAIN_ID unset"
    try:
        number = int(value)
        if isinstance(value, bool) or not 0 <= number <= 232:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a DDS domain id from 0 to 232, got {value!r}") from None
    return number, source


def make_transport(
    kind: str, node_name: str, domain_id: int | None = None, localhost_only: bool | None = None
) -> Transport:
    """``kind`` is ``auto`` (rclpy when it imports, else dds), ``dds`` or ``rclpy`` (:data:`TRANSPORTS`).
    ``domain_id`` defaults to ROS_DOMAIN_ID (else 0); ``localhost_only`` to ROS_LOCALHOST_ONLY=1 or
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST."""
    factory = TRANSPORTS.get(kind)
    if domain_id is None:
        domain_id = resolve_domain()[0]
    if localhost_only is None:
        localhost_only = (
            os.environ.get("ROS_LOCALHOST_ONLY") == "1"
            or os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
        )
    return factory(node_name, domain_id, localhost_only)
