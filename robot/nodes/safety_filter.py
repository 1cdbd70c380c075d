"""safety_filter node: the last node before the robot; command sources publish under ``input_prefix``.

Topics (``<ctrl>``: the spec's ``command.controller``; ``<grip>``: ``gripper.controller``; ``<in>``: ``input_prefix``):

=============================  ==============================  ===========================================
in                             out                             type
=============================  ==============================  ===========================================
``<in>/<ctrl>/commands``       ``/<ctrl>/commands``            Float64MultiArray (joint positions)
``<in>/<grip>/commands``       ``/<grip>/commands``            Float64MultiArray ([opening])
``/joint_states``              ``/safety/status`` (latched)    JointState (best effort: any publisher) / String
``/estop``, ``/estop_reset``                                   Bool (true latches / true clears)
=============================  ==============================  ===========================================

The rules live in :class:`realloop.robot.safety.SafetyFilter`. A timer at ``rate_hz`` fires the watchdog and
republishes the hold while holding (at start-up, after the watchdog, during and after an e-stop, until a fresh
command is accepted). ``/safety/status`` is JSON ``{"state": "ok"|"hold"|"estop", "reason", "counters",
"rejected_total", "hold", ...}``, published on every state change, after rejections (at most once per tick) and
every ``status_period`` seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..msgs import Bool, Float64MultiArray, JointState, String
from ..node import Node
from ..safety.filter import SafetyConfig, SafetyFilter
from . import run_node


class SafetyFilterNode(Node):
    """Runs a :class:`SafetyFilter` between ``<input_prefix>/...`` command topics and the robot's controllers."""

    def __init__(self, name: str = "safety_filter", params: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(name, params, **kwargs)
        from realloop.robot.spec import load_robot_spec

        robot = self.params.get("robot")  # parameter names and types: configs/node/safety_filter.yaml
        if not robot:
            raise ValueError("safety_filter: robot must be a robot spec name or path")
        prefix = self.params.get("input_prefix")
        if not isinstance(prefix, str) or not prefix.strip("/"):
            # an empty prefix would make the filter subscribe to its own output
            raise ValueError(f"safety_filter: input_prefix must be a topic prefix like /unsafe, got {prefix!r}")
        prefix = "/" + prefix.strip("/")
        rate = self.params.get("rate_hz", 50)
        status_period = self.params.get("status_period", 1.0)
        for key, v in (("rate_hz", rate), ("status_period", status_period)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"safety_filter: {key} must be a number > 0, got {v!r}")

        self.spec = load_robot_spec(robot)
        self.filter = SafetyFilter(self.spec, SafetyConfig.from_params(self.params), logger=self.log)
        self.status_period = float(status_period)

        ctrl = self.spec.command.controller
        self.arm_pub = self.create_publisher(f"/{ctrl}/commands", Float64MultiArray)
        self.create_subscription(f"{prefix}/{ctrl}/commands", Float64MultiArray, self._on_arm)
        self.gripper_pub = None
        g = self.spec.gripper
        self._gripper_joint = g.joints[0] if g is not None else None
        if g is not None and g.controller:
            self.gripper_pub = self.create_publisher(f"/{g.controller}/commands", Float64MultiArray)
            self.create_subscription(f"{prefix}/{g.controller}/commands", Float64MultiArray, self._on_gripper)
        elif g is not None:
            self.log.warning(
                "robot %s: the gripper has no controller in the spec; gripper commands are not filtered", self.spec.name
            )
        # best effort matches both reliable and best-effort joint state publishers
        self.create_subscription("/joint_states", JointState, self._on_joint_states, qos="sensor")
        self.create_subscription("/estop", Bool, self._on_estop)
        self.create_subscription("/estop_reset", Bool, self._on_estop_reset)
        self.status_pub = self.create_publisher("/safety/status", String, qos="latched")
        self._layouts: dict[tuple[str, ...], tuple[np.ndarray | None, int | None]] = {}
        self._status_state: str | None = None
        self._status_time = -math.inf
        self._dirty = False
        self.create_timer(1.0 / float(rate), self._tick)
        cfg = self.filter.config
        self.log.info(
            "filtering %s commands %s/%s/commands -> /%s/commands: watchdog %g s, max step %s, workspace %s",
            self.spec.name,
            prefix,
            ctrl,
            ctrl,
            cfg.watchdog_timeout,
            np.round(self.filter.max_step, 4).tolist(),
            "off" if self.filter.box is None else [b.tolist() for b in self.filter.box],
        )
        self.publish_status()

    # --- inputs ------------------------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        key = tuple(msg.name)
        layout = self._layouts.get(key)
        if layout is None:
            index = {n: i for i, n in enumerate(msg.name)}
            arm = (
                np.array([index[n] for n in self.spec.joint_names])
                if all(n in index for n in self.spec.joint_names)
                else None
            )
            layout = self._layouts[key] = (arm, index.get(self._gripper_joint) if self._gripper_joint else None)
        arm, grip = layout
        pos = np.asarray(msg.position, dtype=float)
        if len(pos) != len(msg.name):
            return
        self.filter.update_measured(None if arm is None else pos[arm], None if grip is None else float(pos[grip]))

    def _on_arm(self, msg: Float64MultiArray) -> None:
        d = self.filter.filter_arm(msg.data, self.now())
        if d.command is not None:
            self.arm_pub.publish(Float64MultiArray(data=d.command))
        self._after(d.rejected)

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        d = self.filter.filter_gripper(msg.data, self.now())
        if d.command is not None and self.gripper_pub is not None:
            self.gripper_pub.publish(Float64MultiArray(data=d.command))
        self._after(d.rejected)

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            return  # the latch clears only on /estop_reset
        if self.filter.estop(self.now()):
            self._publish_hold()
        self._after(False)

    def _on_estop_reset(self, msg: Bool) -> None:
        if msg.data:
            self.filter.reset_estop(self.now())
            self._after(False)

    # --- outputs -----------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        out = self.filter.tick(self.now())
        if out.arm is not None:
            self.arm_pub.publish(Float64MultiArray(data=out.arm))
        if out.gripper is not None and self.gripper_pub is not None:
            self.gripper_pub.publish(Float64MultiArray(data=np.array([out.gripper])))
        due = self.now() - self._status_time >= self.status_period
        if self._dirty or due or self.filter.state != self._status_state:
            self.publish_status()

    def _publish_hold(self) -> None:
        out = self.filter.tick(self.now())  # the hold at once, not a tick later
        if out.arm is not None:
            self.arm_pub.publish(Float64MultiArray(data=out.arm))

    def _after(self, rejected: bool) -> None:
        if self.filter.state != self._status_state:
            self.publish_status()
        elif rejected:
            self._dirty = True  # a flood of bad commands updates the status once per tick, not per command

    def publish_status(self) -> None:
        """Publish ``/safety/status`` now."""
        status = self.filter.status()
        status["stamp"] = self.now()
        self.status_pub.publish(String(json.dumps(status)))
        self._status_state, self._status_time, self._dirty = status["state"], self.now(), False

    def close(self) -> None:
        c = self.filter.counters
        self.log.info(
            "totals: %d accepted (%d clamped), gripper %d accepted (%d clamped), rejected %s, "
            "%d watchdog holds, %d e-stops",
            c["accepted"],
            c["clamped"],
            c["gripper_accepted"],
            c["gripper_clamped"],
            json.dumps(c["rejected"], sort_keys=True),
            c["watchdog"],
            c["estops"],
        )
        self.publish_status()  # the closing counters, as data
        super().close()


def main(argv: list[str] | None = None) -> int:
    return run_node("safety_filter", SafetyFilterNode, argv)
