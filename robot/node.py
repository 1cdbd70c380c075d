"""The node API every realloop node is written against: publishers, subscriptions, timers, a clock
(wall or simulated from /clock) and parameters, over the ``dds`` or ``rclpy`` transport.

Callbacks and timers run on the thread that calls :meth:`Node.spin`, one at a time, as in rclpy's
single-threaded executor. Names follow ROS: relative topics resolve under the namespace, ``~/x`` under the
node's name, and remaps (``from:=to``) apply to resolved names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from .msgs import CdrError, Clock, decode, encode, ros_type_of
from .transport import CLOCK, QoS, Transport, make_transport, qos_profile, resolve_domain

M = TypeVar("M")


def resolve_topic(name: str, namespace: str = "/", node_name: str = "") -> str:
    """ROS 2 name resolution: ``x`` -> ``<ns>/x``, ``~/x`` -> ``<ns>/<node>/x``, ``/x`` stays."""
    ns = "/" + namespace.strip("/")
    if name.startswith("/"):
        out = name
    elif name.startswith("~"):
        out = f"{ns.rstrip('/')}/{node_name}/{name[1:].lstrip('/')}"
    else:
        out = f"{ns.rstrip('/')}/{name}"
    out = "/" + "/".join(p for p in out.split("/") if p)
    if out == "/" or not all(c.isalnum() or c in "_/" for c in out):
        raise ValueError(f"invalid topic name {name!r}: use letters, digits, '_' and '/'")
    return out


class Publisher(Generic[M]):
    def __init__(self, topic: str, msg_type: type[M], write: Callable[[bytes], None]):
        self.topic, self.msg_type, self._write = topic, msg_type, write
        self.count = 0

    def publish(self, msg: M) -> None:
        if not isinstance(msg, self.msg_type):
            raise TypeError(f"{self.topic} carries {self.msg_type.__name__}, not {type(msg).__name__}")
        self.publish_raw(encode(msg))

    def publish_raw(self, data: bytes) -> None:
        """Publish bytes already CDR-encoded (e.g. replayed from a rosbag2 file)."""
        self._write(data)
        self.count += 1


class Subscription(Generic[M]):
    def __init__(self, node: Node, topic: str, msg_type: type[M], callback: Callable[[M], None]):
        self.topic, self.msg_type, self.callback = topic, msg_type, callback
        self.received = 0
        self.errors = 0
        self._node = node

    def _on_data(self, data: bytes) -> None:
        try:
            msg = decode(self.msg_type, data)
        except CdrError as e:
            self.errors += 1
            self._node.log.warning("dropping undecodable message on %s: %s", self.topic, e)
            return
        self.received += 1
        self.callback(msg)


class Timer:
    def __init__(self, period: float, callback: Callable[[], None], start: float):
        if not period > 0:
            raise ValueError(f"timer period must be > 0 s, got {period}")
        self.period, self.callback = period, callback
        self.next_due = start + period
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Node:
    """A ROS 2 node. ``params`` are the node's parameters (from its hydra config and ``--ros-args -p``);
    ``use_sim_time: true`` among them makes :meth:`now` and timers follow ``/clock``."""

    def __init__(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        transport: str | Transport = "auto",
        domain_id: int | None = None,
        localhost_only: bool | None = None,
        namespace: str = "/",
        remaps: Mapping[str, str] | None = None,
    ):
        self.name = name
        self.namespace = namespace
        self.params: dict[str, Any] = dict(params or {})
        self.log = logging.getLogger(name)
        self._remaps = {
            resolve_topic(k, namespace, name): resolve_topic(v, namespace, name) for k, v in (remaps or {}).items()
        }
        self.domain_id: int | None = None  # None: a Transport object was given
        if isinstance(transport, str):
            # one rule for every node: the domain_id argument or parameter, else ROS_DOMAIN_ID, else 0
            self.domain_id, source = resolve_domain(
                domain_id if domain_id is not None else self.params.get("domain_id")
            )
            self.log.info("domain %d (from %s)", self.domain_id, source)
            self.transport: Transport = make_transport(transport, name, self.domain_id, localhost_only)
        else:
            self.transport = transport
        self.publishers: list[Publisher] = []
        self.subscriptions: list[Subscription] = []
        self._timers: list[Timer] = []
        self._stop = threading.Event()
        self.use_sim_time = bool(self.params.get("use_sim_time", False))
        self._sim_now: float | None = None
        if self.use_sim_time:
            self.create_subscription("/clock", Clock, self._on_clock, qos=CLOCK)

    # --- parameters and names ----------------------------------------------------------------------------------
    def param(self, key: str, default: Any = None) -> Any:
        """A parameter; dotted keys reach into nested config (``limits.max_velocity``)."""
        node: Any = self.params
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def resolve(self, topic: str) -> str:
        full = resolve_topic(topic, self.namespace, self.name)
        return self._remaps.get(full, full)

    # --- endpoints ---------------------------------------------------------------------------------------------
    def create_publisher(self, topic: str, msg_type: type[M], qos: str | QoS = "reliable") -> Publisher[M]:
        full = self.resolve(topic)
        pub = Publisher(full, msg_type, self.transport.advertise(full, ros_type_of(msg_type), qos_profile(qos)))
        self.publishers.append(pub)
        return pub

    def create_subscription(
        self, topic: str, msg_type: type[M], callback: Callable[[M], None], qos: str | QoS = "reliable"
    ) -> Subscription[M]:
        full = self.resolve(topic)
        sub = Subscription(self, full, msg_type, callback)
        self.transport.subscribe(full, ros_type_of(msg_type), qos_profile(qos), sub._on_data)
        self.subscriptions.append(sub)
        return sub

    def create_timer(self, period: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` every ``period`` seconds of the node's clock (sim time when ``use_sim_time``)."""
        timer = Timer(period, callback, self.now() if self._clock_ready() else 0.0)
        self._timers.append(timer)
        return timer

    # --- clock -------------------------------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds: wall time, or the last /clock with ``use_sim_time`` (0.0 before the first one)."""
        if self.use_sim_time:
            return self._sim_now or 0.0
        return time.time()

    def _clock_ready(self) -> bool:
        return not self.use_sim_time or self._sim_now is not None

    def _on_clock(self, msg: Clock) -> None:
        t = msg.clock.to_sec()
        if self._sim_now is None:  # timers created before the first /clock start counting from it
            for timer in self._timers:
                timer.next_due = t + timer.period
        self._sim_now = t

    # --- executor ----------------------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return not self._stop.is_set()

    def spin_once(self, timeout: float = 0.1) -> None:
        """Wait for data or the next timer (at most ``timeout`` s), then run what is due."""
        self._timers = [t for t in self._timers if not t.cancelled]
        if self._timers and self._clock_ready():
            wait = min(t.next_due for t in self._timers) - self.now()
            if self.use_sim_time:
                wait = min(wait, 0.005)  # sim time advances on /clock arrivals; poll briefly
            timeout = min(timeout, max(wait, 0.0))
        self.transport.wait(timeout)
        if not self._clock_ready():
            return
        now = self.now()
        for timer in list(self._timers):
            if timer.cancelled or now < timer.next_due:
                continue
            # skip missed periods instead of bursting to catch up
            behind = int((now - timer.next_due) // timer.period)
            timer.next_due += (behind + 1) * timer.period
            timer.callback()

    def spin(self, duration: float | None = None) -> None:
        """Run callbacks until :meth:`shutdown` (from a callback, a signal handler or another thread) or for
        ``duration`` seconds of wall time."""
        end = None if duration is None else time.monotonic() + duration
        while self.ok:
            left = 0.1 if end is None else end - time.monotonic()
            if left <= 0:
                break
            self.spin_once(min(left, 0.1))

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Spin until ``predicate()`` is true; False if ``timeout`` wall seconds pass first."""
        end = time.monotonic() + timeout
        while self.ok and not predicate():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.spin_once(min(left, 0.05))
        return predicate()

    def shutdown(self) -> None:
        self._stop.set()
        self.transport.wake()

    def close(self) -> None:
        self.shutdown()
        self.transport.close()
