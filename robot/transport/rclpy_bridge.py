"""rclpy transport: on a robot with ROS 2 sourced, the node API rides rclpy, publishing and taking the same
CDR bytes (serialised publish, raw subscriptions) so the codec is shared with the DDS transport.

Only the calls into rclpy live here; the name and QoS translations are plain functions, tested without ROS.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .qos import QoS


def ros_class_path(ros_type: str) -> tuple[str, str]:
    """``sensor_msgs/msg/Image`` -> (``sensor_msgs.msg``, ``Image``): where rclpy's generated class lives."""
    pkg, kind, name = ros_type.split("/")
    return f"{pkg}.{kind}", name


def rclpy_qos_kwargs(qos: QoS) -> dict[str, Any]:
    """Keyword arguments for ``rclpy.qos.QoSProfile``, by enum member name."""
    return {
        "history": "KEEP_LAST",
        "depth": qos.depth,
        "reliability": "RELIABLE" if qos.reliable else "BEST_EFFORT",
        "durability": "TRANSIENT_LOCAL" if qos.transient_local else "VOLATILE",
    }


class RclpyTransport:
    def __init__(self, node_name: str, domain_id: int, localhost_only: bool = False):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=domain_id)  # localhost-only comes from the ROS env vars
        self.node = rclpy.create_node(node_name, context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._guard = self.node.create_guard_condition(lambda: None)

    def _qos(self, qos: QoS) -> Any:
        from rclpy import qos as rq

        kw = rclpy_qos_kwargs(qos)
        return rq.QoSProfile(
            history=rq.HistoryPolicy[kw["history"]],
            depth=kw["depth"],
            reliability=rq.ReliabilityPolicy[kw["reliability"]],
            durability=rq.DurabilityPolicy[kw["durability"]],
        )

    @staticmethod
    def _msg_class(ros_type: str) -> type:
        module, name = ros_class_path(ros_type)
        return getattr(importlib.import_module(module), name)

    def advertise(self, topic: str, ros_type: str, qos: QoS) -> Callable[[bytes], None]:
        pub = self.node.create_publisher(self._msg_class(ros_type), topic, self._qos(qos))
        return pub.publish  # rclpy publishes `bytes` as an already serialised message

    def subscribe(self, topic: str, ros_type: str, qos: QoS, callback: Callable[[bytes], None]) -> None:
        self.node.create_subscription(self._msg_class(ros_type), topic, callback, self._qos(qos), raw=True)

    def wait(self, timeout: float) -> None:
        self._executor.spin_once(timeout_sec=max(timeout, 0.0))

    def count_publishers(self, topic: str) -> int:
        """Publishers of ``topic`` in other nodes that discovery has reported so far."""
        own = (self.node.get_name(), self.node.get_namespace())
        return sum(
            1 for info in self.node.get_publishers_info_by_topic(topic) if (info.node_name, info.node_namespace) != own
        )

    def wake(self) -> None:
        self._guard.trigger()

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self._context)
