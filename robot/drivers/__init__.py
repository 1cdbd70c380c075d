"""Drivers: the small contract for robot hardware that does not speak ROS 2, served on ROS 2 topics by the
``driver`` node (robot/nodes/driver.py). See :class:`realloop.robot.drivers.base.Driver`."""

from __future__ import annotations

from typing import Any

from realloop.registry import Registry

from .base import Driver, DriverError, JointReading

DRIVERS = Registry("driver", {
    "kinematic": "realloop.robot.drivers.kinematic:KinematicDriver",
    "sim": "realloop.robot.drivers.sim:SimDriver",
})  # fmt: skip


def make_driver(spec: Any, config: dict[str, Any]) -> Driver:
    """A driver from its node config ``{kind: NAME, ...its keyword arguments}`` for the robot ``spec``."""
    config = dict(config)
    kind = config.pop("kind", None)
    cls = DRIVERS.get(str(kind))
    try:
        return cls(spec, **config)
    except TypeError as e:
        raise ValueError(f"driver {kind!r}: {e}; see {cls.__module__}.{cls.__name__}") from None


__all__ = ["DRIVERS", "Driver", "DriverError", "JointReading", "make_driver"]
