"""Driver node: any :class:`realloop.robot.drivers.Driver` served as a ros2_control-style robot.

Publishes ``/joint_states`` (JointState: the spec's joints, then the gripper's) at ``state_rate_hz`` and writes
``/<controller>/commands`` (joint positions, spec order) and ``/<gripper controller>/commands`` ([opening]) to
the driver. Those are the safety filter's output topics, so everything a command source sends reaches the
hardware through the filter. A command the driver refuses (wrong length, NaN) is logged and counted, never
executed; the robot keeps its last target. ``~/status`` (latched JSON) reports commands written and refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..drivers import DriverError, make_driver
from ..msgs import Float64MultiArray, Header, JointState, String, Time
from ..node import Node
from ..spec import load_robot_spec
from . import run_node


class DriverNode(Node):
    def __init__(self, name: str = "driver", params: Mapping[str, Any] | None = None, **kw: Any):
        super().__init__(name, params, **kw)
        self.spec = load_robot_spec(str(self.param("robot")))
        driver_cfg = self.param("driver")
        if not isinstance(driver_cfg, Mapping) or "kind" not in driver_cfg:
            raise ValueError(f"param 'driver' must be a mapping with a kind, got {driver_cfg!r}")
        self.driver = make_driver(self.spec, dict(driver_cfg))
        try:
            self.driver.connect()
        except DriverError as e:
            raise ValueError(f"driver {driver_cfg['kind']!r} cannot connect to robot {self.spec.name!r}: {e}") from e
        self.frame_id = str(self.param("frame_id", "") or "")
        self.arm_target: np.ndarray = np.asarray(self.driver.read_state().position[: len(self.spec.joints)])
        self.gripper_target: float | None = None
        self.written = 0
        self.refused = 0
        # reliable, as ros2_control's joint_state_broadcaster publishes it
        self.state_pub = self.create_publisher("/joint_states", JointState)
        self.status_pub = self.create_publisher("~/status", String, qos="latched")
        self.create_subscription(f"/{self.spec.command.controller}/commands", Float64MultiArray, self._on_arm)
        g = self.spec.gripper
        if g is not None and g.controller:
            self.create_subscription(f"/{g.controller}/commands", Float64MultiArray, self._on_gripper)
        rate = float(self.param("state_rate_hz", 100))
        if not rate > 0:
            raise ValueError(f"param 'state_rate_hz' must be > 0, got {rate}")
        self.create_timer(1.0 / rate, self._publish_state)
        self.log.info(
            "driver %s serving robot %s: /joint_states at %g Hz, commands on /%s/commands",
            driver_cfg["kind"],
            self.spec.name,
            rate,
            self.spec.command.controller,
        )
        self._status()

    def _write(self, q: np.ndarray, g: float | None) -> None:
        try:
            self.driver.write_command(q, g)
        except DriverError as e:
            self.refused += 1
            self.log.warning("command refused by the driver: %s (the robot keeps its last target)", e)
            self._status()
            return
        self.arm_target = np.asarray(q, dtype=float)
        if g is not None:
            self.gripper_target = g
        self.written += 1
        if self.written == 1:
            self._status()

    def _on_arm(self, msg: Float64MultiArray) -> None:
        self._write(np.asarray(msg.data, dtype=float), self.gripper_target)

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        if len(msg.data) != 1:
            self.refused += 1
            self.log.warning("gripper command of %d values refused: expected [opening]", len(msg.data))
            return
        self._write(self.arm_target, float(msg.data[0]))

    def _publish_state(self) -> None:
        r = self.driver.read_state()
        self.state_pub.publish(
            JointState(
                header=Header(stamp=Time.from_sec(r.stamp), frame_id=self.frame_id),
                name=list(r.names),
                position=r.position,
                velocity=r.velocity,
                effort=r.effort,
            )
        )

    def _status(self) -> None:
        self.status_pub.publish(
            String(json.dumps({"robot": self.spec.name, "written": self.written, "refused": self.refused}))
        )

    def close(self) -> None:
        self.driver.close()
        super().close()


def main(argv: list[str] | None = None) -> int:
    return run_node("driver", DriverNode, argv)
