"""The safety filter's core: every command from a policy, teleop or script passes through here before the robot.

Transport-free (the ROS 2 node in robot/nodes/safety_filter.py wraps it), driven by explicit times, so each rule
is unit-testable. Rules, in the order they are applied to an arm command (joint positions in spec order):

1. e-stop latched: every command is rejected and the hold is output, until :meth:`SafetyFilter.reset_estop`.
2. wrong length or any NaN/inf: rejected.
3. any joint outside the spec's position limits: **rejected**, not clamped. A policy asking for an
   unreachable position is wrong, and clamping would silently send a different pose than the one it checked.
4. end effector (MuJoCo forward kinematics of the spec's MJCF at ``spec.ee_site``) outside the spec's
   ``workspace`` box: rejected. Robots whose spec has no workspace have no box.
5. no reference yet (nothing sent and no measured state): rejected, since the step cannot be limited.
6. rate limit: the step from the last sent command is limited per joint to ``max_step`` and to an allowance that
   accrues at ``velocity * velocity_scale`` and is spent by each step (a token bucket holding at most
   ``BURST_STEPS`` x ``max_step``). So the target's speed stays within the limit over any stretch of commands,
   while a command that comes early after a late one (control-loop jitter), or the first one after a hold, keeps
   its full step: limiting each step by the time since the previous send instead cut those steps short, and a
   delta policy that continues from what was forwarded never got the motion back. A larger jump is **clamped**
   toward the target, scaling the whole step by one factor so the joint-space direction is kept.
   The clamped command is box-checked too (a straight joint-space line can leave the box).

A rejected command sends nothing new (a position-controlled robot keeps its last target); if no command is
accepted for ``watchdog_timeout`` seconds, :meth:`SafetyFilter.tick` switches to **hold**: the measured joint
positions at the moment the watchdog fired, republished until a fresh command is accepted (rate-limited from the
hold). The filter also starts in hold. The gripper (one opening) is checked for NaN/inf and its limits, and
rate-limited toward its target; a single command is ramped to completion by :meth:`SafetyFilter.tick`, because
gripper commands are often sent once per open/close. During a hold the gripper keeps its last command (holding
the measured opening would loosen a grasp); during an e-stop it stops where it is.

Counters are exact; log lines for rejections are rate-limited per reason (``log_period``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from realloop.robot.spec import RobotSpec

OK, HOLD, ESTOP = "ok", "hold", "estop"
BURST_STEPS = 2.0  # the rate limit's allowance holds this many max_steps: one command of jitter tolerance

# Rejection reasons (counter keys); gripper rejections are counted as "gripper_<reason>".
NON_FINITE = "non_finite"
WRONG_LENGTH = "wrong_length"
POSITION_LIMIT = "position_limit"
WORKSPACE = "workspace"
NO_STATE = "no_state"
ESTOPPED = "estop"
NO_GRIPPER = "no_gripper"


@dataclass(frozen=True)
class SafetyConfig:
    """Filter settings. ``None`` step limits are derived from the spec: velocity limit × ``command_period``."""

    watchdog_timeout: float = 0.5
    command_period: float | None = None  # s; None: 1 / spec.control_rate_hz
    max_step: float | tuple[float, ...] | None = None  # rad (or m) per command, one value or one per joint
    velocity_scale: float = 1.0  # fraction of the spec's velocity limits allowed
    gripper_max_step: float | None = None
    log_period: float = 1.0  # s between log lines of one rejection reason

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SafetyConfig:
        """From the node's parameters (configs/node/safety_filter.yaml); ValueError names a bad parameter."""

        def num(key: str, value: Any, *, positive: bool = True) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"safety_filter: {key} must be a finite number, got {value!r}")
            if positive and value <= 0:
                raise ValueError(f"safety_filter: {key} must be > 0, got {value!r}")
            return float(value)

        def num_or_none(key: str, value: Any) -> float | None:
            return None if value is None else num(key, value)

        raw_step = params.get("max_step")
        max_step: float | tuple[float, ...] | None
        if isinstance(raw_step, (list, tuple)):
            max_step = tuple(num(f"max_step[{i}]", v) for i, v in enumerate(raw_step))
        else:
            max_step = num_or_none("max_step", raw_step)
        return cls(
            watchdog_timeout=num("watchdog_timeout", params.get("watchdog_timeout", 0.5)),
            command_period=num_or_none("command_period", params.get("command_period")),
            max_step=max_step,
            velocity_scale=num("velocity_scale", params.get("velocity_scale", 1.0)),
            gripper_max_step=num_or_none("gripper_max_step", params.get("gripper_max_step")),
            log_period=num("log_period", params.get("log_period", 1.0), positive=False),
        )


@dataclass
class Decision:
    """What to do with one candidate command: ``command`` is what to send (None: send nothing).

    ``status`` is ``accepted``, ``clamped`` (sent, but limited), or ``rejected`` (``reason`` says why; during an
    e-stop ``command`` is the hold)."""

    status: str
    command: np.ndarray | None = None
    reason: str | None = None

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"


@dataclass
class TickOutput:
    """What :meth:`SafetyFilter.tick` wants sent now (None: nothing) and whether the state changed."""

    arm: np.ndarray | None = None
    gripper: float | None = None
    state_changed: bool = False


@dataclass
class _RateLog:
    last: float = -math.inf
    suppressed: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class SafetyFilter:
    """Checks arm and gripper commands against a robot spec; holds on a stale command stream; latches e-stops."""

    def __init__(self, spec: RobotSpec, config: SafetyConfig | None = None, logger: logging.Logger | None = None):
        self.spec, self.config = spec, config or SafetyConfig()
        self.log = logger or logging.getLogger("safety_filter")
        cfg = self.config
        n = len(spec.joints)
        self.lower = np.array([j.lower for j in spec.joints])
        self.upper = np.array([j.upper for j in spec.joints])
        self.velocity = np.array([j.velocity for j in spec.joints]) * cfg.velocity_scale
        period = cfg.command_period or 1.0 / spec.control_rate_hz
        if cfg.max_step is None:
            self.max_step = self.velocity * period
        elif isinstance(cfg.max_step, tuple):
            if len(cfg.max_step) != n:
                raise ValueError(
                    f"safety_filter: max_step has {len(cfg.max_step)} values, robot {spec.name!r} has {n} joints"
                )
            self.max_step = np.array(cfg.max_step, dtype=float)
        else:
            self.max_step = np.full(n, float(cfg.max_step))
        g = spec.gripper
        self.gripper_velocity = None if g is None else g.velocity * cfg.velocity_scale
        self.gripper_max_step = (
            None if self.gripper_velocity is None else (cfg.gripper_max_step or self.gripper_velocity * period)
        )

        self._fk = None
        self.box: tuple[np.ndarray, np.ndarray] | None = None
        if spec.workspace is not None:  # the spec guarantees an ee_site and an MJCF with it
            self.box = (np.array(spec.workspace.min), np.array(spec.workspace.max))
            self._fk = _ForwardKinematics(spec)

        self.counters: dict[str, Any] = {
            "accepted": 0,
            "clamped": 0,
            "watchdog": 0,
            "estops": 0,
            "resets": 0,
            "gripper_accepted": 0,
            "gripper_clamped": 0,
            "rejected": {},
        }
        self._logs: dict[str, _RateLog] = {}
        self.estopped = False
        self.holding = True  # until the first accepted command
        self.hold_reason: str | None = "no command yet"
        self.hold: np.ndarray | None = None
        self.measured: np.ndarray | None = None
        self.measured_gripper: float | None = None
        self.last_sent: np.ndarray | None = None
        self.last_fresh_t: float | None = None
        self._allowance = self.max_step.copy()  # per joint: motion the rate limit allows now (token bucket)
        self._allowance_t: float | None = None
        self.gripper_sent: float | None = None
        self.gripper_sent_t: float | None = None
        self.gripper_target: float | None = None

    # ------------------------------------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """``estop`` (latched), ``hold`` (watchdog, start-up, after a reset) or ``ok``."""
        return ESTOP if self.estopped else HOLD if self.holding else OK

    @property
    def n_rejected(self) -> int:
        return sum(self.counters["rejected"].values())

    def status(self) -> dict[str, Any]:
        """A JSON-able summary: state, why it holds, counters, the hold position."""
        return {
            "state": self.state,
            "reason": self.hold_reason if self.state != OK else None,
            "robot": self.spec.name,
            "counters": {**self.counters, "rejected": dict(self.counters["rejected"])},
            "rejected_total": self.n_rejected,
            "hold": None if self.hold is None or self.state == OK else [round(float(x), 6) for x in self.hold],
        }

    def update_measured(
        self, positions: Sequence[float] | np.ndarray | None = None, gripper: float | None = None
    ) -> None:
        """Record the robot's measured joint positions (spec order) and gripper opening."""
        if positions is not None:
            q = np.asarray(positions, dtype=float)
            if q.shape == self.lower.shape and np.all(np.isfinite(q)):
                self.measured = q.copy()
        if gripper is not None and math.isfinite(gripper):
            self.measured_gripper = float(gripper)

    # ------------------------------------------------------------------------------------------------ arm
    def filter_arm(
        self, command: Sequence[float] | np.ndarray, t: float, measured: Sequence[float] | np.ndarray | None = None
    ) -> Decision:
        """Check one arm command (joint positions, spec order) received at time ``t`` (s)."""
        self.update_measured(measured)
        if self.estopped:
            return self._reject(ESTOPPED, "e-stop latched", command=self.hold)
        q = np.asarray(command, dtype=float).ravel()
        if q.shape != self.lower.shape:
            return self._reject(WRONG_LENGTH, f"{q.size} values, robot {self.spec.name!r} has {self.lower.size} joints")
        if not np.all(np.isfinite(q)):
            return self._reject(NON_FINITE, f"NaN/inf in {_fmt(q)}")
        out = (q < self.lower) | (q > self.upper)
        if out.any():
            names = [self.spec.joints[i].name for i in np.flatnonzero(out)]
            return self._reject(POSITION_LIMIT, f"{', '.join(names)} outside limits: {_fmt(q)}")
        if (why := self._outside_box(q)) is not None:
            return self._reject(WORKSPACE, f"target {why}")
        ref = self.last_sent if self.last_sent is not None else self.measured
        if ref is None:
            return self._reject(NO_STATE, "no measured joint state yet to limit the step from")

        if self._allowance_t is not None:
            self._allowance = np.minimum(
                self._allowance + self.velocity * max(t - self._allowance_t, 0.0), BURST_STEPS * self.max_step
            )
        self._allowance_t = t
        limit = np.minimum(self.max_step, self._allowance)
        delta = q - ref
        clamped = bool(np.any(np.abs(delta) > limit + 1e-12))
        if clamped:
            with np.errstate(divide="ignore"):
                scale = float(np.min(np.where(delta != 0, limit / np.abs(delta), np.inf)))
            q = ref + delta * min(max(scale, 0.0), 1.0)
            if (why := self._outside_box(q)) is not None:
                return self._reject(WORKSPACE, f"rate-limited step {why}")

        self._allowance = np.maximum(self._allowance - np.abs(q - ref), 0.0)
        self.last_sent, self.last_fresh_t = q.copy(), t
        if self.holding:
            self.log.info("fresh command accepted: resuming from hold (%s)", self.hold_reason)
        self.holding, self.hold_reason = False, None
        self.counters["accepted"] += 1
        if clamped:
            self.counters["clamped"] += 1
            return Decision("clamped", q)
        return Decision("accepted", q)

    def ee_position(self, q: Sequence[float]) -> np.ndarray | None:
        """End-effector position (world frame, m) of joint positions ``q``; None when no box is checked."""
        return None if self._fk is None else self._fk.ee_position(np.asarray(q, dtype=float))

    def _outside_box(self, q: np.ndarray) -> str | None:
        if self.box is None or self._fk is None:
            return None
        p = self._fk.ee_position(q)
        lo, hi = self.box
        if np.all(p >= lo) and np.all(p <= hi):
            return None
        return f"puts the end effector at {_fmt(p, 3)}, outside the workspace box {_fmt(lo, 3)}..{_fmt(hi, 3)}"

    # ------------------------------------------------------------------------------------------------ gripper
    def filter_gripper(
        self, opening: float | Sequence[float] | np.ndarray, t: float, measured: float | None = None
    ) -> Decision:
        """Check a gripper command (opening, e.g. m); the accepted target is approached at the gripper's rate."""
        self.update_measured(gripper=measured)
        g = self.spec.gripper
        if g is None:
            return self._reject("gripper_" + NO_GRIPPER, f"robot {self.spec.name!r} has no gripper")
        if self.estopped:
            held = self.gripper_sent
            return self._reject(
                "gripper_" + ESTOPPED, "e-stop latched", command=None if held is None else np.array([held])
            )
        v = np.asarray(opening, dtype=float).ravel()
        if v.size != 1:
            return self._reject("gripper_" + WRONG_LENGTH, f"{v.size} values, expected 1 (the opening)")
        x = float(v[0])
        if not math.isfinite(x):
            return self._reject("gripper_" + NON_FINITE, f"opening {x}")
        if not g.lower <= x <= g.upper:
            return self._reject("gripper_" + POSITION_LIMIT, f"opening {x:g} outside [{g.lower:g}, {g.upper:g}]")
        if self.gripper_sent is None and self.measured_gripper is None:
            return self._reject("gripper_" + NO_STATE, "no measured gripper opening yet to limit the step from")
        self.gripper_target = x
        step = self._gripper_step(t)
        self.counters["gripper_accepted"] += 1
        if step != x:
            self.counters["gripper_clamped"] += 1
            return Decision("clamped", np.array([step]))
        return Decision("accepted", np.array([step]))

    def _gripper_step(self, t: float) -> float:
        """Move the sent gripper command toward the target by at most one step; returns what to send."""
        assert self.gripper_target is not None and self.gripper_max_step is not None
        ref = self.gripper_sent if self.gripper_sent is not None else self.measured_gripper
        assert ref is not None
        limit = self.gripper_max_step
        if self.gripper_sent is not None and self.gripper_sent_t is not None and self.gripper_velocity is not None:
            limit = min(limit, self.gripper_velocity * max(t - self.gripper_sent_t, 0.0))
        d = self.gripper_target - ref
        out = self.gripper_target if abs(d) <= limit + 1e-12 else ref + math.copysign(limit, d)
        self.gripper_sent, self.gripper_sent_t = out, t
        return out

    # ------------------------------------------------------------------------------------------------ timer
    def tick(self, t: float, measured: Sequence[float] | None = None) -> TickOutput:
        """Periodic check at time ``t``: fire the watchdog, return the hold to republish and the gripper ramp."""
        self.update_measured(measured)
        res = TickOutput()
        fresh = self.last_fresh_t
        if not self.holding and not self.estopped and fresh is not None and t - fresh > self.config.watchdog_timeout:
            self._enter_hold(
                f"watchdog: no accepted command for {t - fresh:.3f} s (timeout {self.config.watchdog_timeout:g} s)"
            )
            self.counters["watchdog"] += 1
            self.log.warning("%s; holding %s", self.hold_reason, _fmt(self.hold) if self.hold is not None else "-")
            res.state_changed = True
        if self.estopped or self.holding:
            if self.hold is None:  # start-up: hold where the robot is once it is known
                self.hold = self.measured.copy() if self.measured is not None else None
            if self.hold is not None:
                res.arm = self.hold.copy()
                # resuming is rate-limited from the hold, which is what the robot was last told
                self.last_sent = self.hold.copy()
        if self.spec.gripper is not None:
            if self.estopped:
                res.gripper = self.gripper_sent
            elif self.gripper_target is not None and self.gripper_sent != self.gripper_target:
                res.gripper = self._gripper_step(t)
            elif self.holding:
                res.gripper = self.gripper_sent
        return res

    def _enter_hold(self, reason: str) -> None:
        self.holding, self.hold_reason = True, reason
        src = self.measured if self.measured is not None else self.last_sent
        self.hold = None if src is None else src.copy()

    # ------------------------------------------------------------------------------------------------ e-stop
    def estop(self, t: float, measured: Sequence[float] | None = None) -> bool:
        """Latch the e-stop (hold the measured position); True if it was not latched already."""
        self.update_measured(measured)
        if self.estopped:
            return False
        if not self.holding:
            self._enter_hold("e-stop")
        self.estopped = True
        self.hold_reason = f"e-stop latched (since t={t:.3f})"
        # a ramping gripper stops where it is
        self.gripper_target = self.gripper_sent
        self.counters["estops"] += 1
        self.log.error(
            "E-STOP latched; holding %s until /estop_reset",
            _fmt(self.hold) if self.hold is not None else "(no joint state yet)",
        )
        return True

    def reset_estop(self, t: float) -> bool:
        """Clear a latched e-stop; the filter then holds until a fresh command is accepted. True if it was latched."""
        if not self.estopped:
            return False
        self.estopped = False
        self.holding, self.hold_reason = True, "e-stop reset: waiting for a fresh command"
        self.counters["resets"] += 1
        self.log.warning("e-stop reset at t=%.3f; holding until a fresh command arrives", t)
        return True

    # ------------------------------------------------------------------------------------------------ counting
    def _reject(self, reason: str, detail: str, command: np.ndarray | None = None) -> Decision:
        rej = self.counters["rejected"]
        rej[reason] = rej.get(reason, 0) + 1
        self._log_rejection(reason, detail)
        return Decision("rejected", None if command is None else np.array(command, dtype=float), reason)

    def _log_rejection(self, reason: str, detail: str) -> None:
        now = time.monotonic()  # log throttling is about humans reading logs: wall time, whatever the clock
        entry = self._logs.setdefault(reason, _RateLog())
        if now - entry.last < self.config.log_period:
            entry.suppressed += 1
            return
        more = f" (+{entry.suppressed} more since the last message)" if entry.suppressed else ""
        self.log.warning(
            "rejected command [%s]: %s; total %d%s", reason, detail, self.counters["rejected"][reason], more
        )
        entry.last, entry.suppressed = now, 0


class _ForwardKinematics:
    """End-effector position of a joint configuration, by MuJoCo kinematics on the spec's MJCF."""

    def __init__(self, spec: RobotSpec) -> None:
        import mujoco

        from realloop.sim.mjcf import load_model  # first: realloop.sim picks the GL backend before MuJoCo loads

        self._mj = mujoco
        self.model = load_model(spec, "the workspace check (forward kinematics)")
        self.data = mujoco.MjData(self.model)
        self.qpos_adr = np.array([self.model.jnt_qposadr[self.model.joint(j.name).id] for j in spec.joints])
        self.site = self.model.site(spec.ee_site).id

    def ee_position(self, q: np.ndarray) -> np.ndarray:
        self.data.qpos[self.qpos_adr] = q
        self._mj.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy()


def _fmt(x: np.ndarray, digits: int = 4) -> str:
    return "[" + ", ".join(f"{v:.{digits}g}" for v in np.asarray(x, dtype=float).ravel()) + "]"
