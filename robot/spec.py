"""Robot spec: the one description of a robot that its drivers, nodes, policies and MuJoCo mirror all load.

A spec is a plain YAML file (configs/robot/<name>.yaml, loadable by omegaconf as well). Only the MuJoCo side
(the sim mirror, forward/inverse kinematics, the ee_delta control mode and the safety filter's workspace check)
needs an MJCF; a real robot is fully described without one::

    name: arm6
    mjcf: ../../sim/models/arm6.xml  # optional; relative to this YAML's folder, or absolute
    home_keyframe: home              # optional MJCF keyframe whose joint positions equal default_pose
    ee_site: ee_site                 # MJCF site of the end effector (needs mjcf); required by ee_delta
    control_rate_hz: 10
    control_modes: [joint_position, joint_delta, ee_delta]
    joints:                          # command / state order
      - {name: shoulder_pan, position: [-2.9, 2.9], velocity: 2.0, effort: 80.0}   # optional: actuator: NAME
    gripper:                         # optional; actuator: the MJCF actuator (mirror only)
      {actuator: gripper, joints: [finger_left, finger_right], position: [0, 0.04], velocity: 0.1,
       effort: 60, default: 0.04, controller: gripper_controller}
    default_pose: {shoulder_pan: 0.0, ...}
    cameras:
      - {name: front, width: 640, height: 480, fps: 30, mount: front_cam}   # mount: MJCF camera (mirror only)
    command: {controller: arm_controller, interface: position}              # ros2_control controller
    workspace: {min: [0.1, -0.45, 0.015], max: [0.75, 0.45, 0.6]}        # optional end-effector box, m

The workspace box is a safety limit: the safety filter rejects commands that put ``ee_site`` outside it and
the policy runner clips its end-effector targets a margin inside it, so both read the one box from here.

Your own robot (e.g. a MuJoCo Menagerie MJCF) plugs in by writing such a file; ``realloop.sim.mjcf`` checks a
spec against its MJCF (``check_against_model``) and reports every joint, limit, actuator, camera or site that
the two disagree on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from realloop.configs import ConfigNotFoundError, config_file

CONTROL_MODES = ("joint_position", "joint_delta", "ee_delta")
COMMAND_INTERFACES = ("position",)


class RobotSpecError(ValueError):
    """A robot spec is malformed or disagrees with its MJCF model."""


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint: position limits [rad or m], velocity limit, effort limit, optional actuator name."""

    name: str
    lower: float
    upper: float
    velocity: float
    effort: float
    actuator: str | None = None


@dataclass(frozen=True)
class GripperSpec:
    """A gripper with one command (e.g. finger opening in m, bounded by `lower`/`upper`); `joints` are the
    finger joints in /joint_states (the first one's position is the opening); `actuator` drives them in the
    MJCF (the mirror)."""

    actuator: str | None
    joints: tuple[str, ...]
    lower: float
    upper: float
    velocity: float
    effort: float
    default: float
    controller: str | None = None


@dataclass(frozen=True)
class CameraSpec:
    """A camera stream: resolution, rate and the MJCF camera it is mounted as in the mirror (None: no mirror)."""

    name: str
    width: int
    height: int
    fps: float
    mount: str | None = None


@dataclass(frozen=True)
class CommandSpec:
    """The ros2_control command interface: commands go to `<controller>/commands`."""

    controller: str
    interface: str = "position"


@dataclass(frozen=True)
class WorkspaceSpec:
    """An axis-aligned end-effector box in the world frame (m): the safety filter's limit."""

    min: tuple[float, float, float]
    max: tuple[float, float, float]

    def inset(self, margin: float) -> WorkspaceSpec:
        """The box shrunk by ``margin`` on every side (a target clipped into it passes the full box)."""
        lo = _xyz(v + margin for v in self.min)
        hi = _xyz(v - margin for v in self.max)
        if not all(a < b for a, b in zip(lo, hi, strict=True)):
            raise ValueError(f"a margin of {margin} m leaves nothing of the workspace {self.min}..{self.max}")
        return WorkspaceSpec(lo, hi)


def _xyz(values: Iterable[float]) -> tuple[float, float, float]:
    """Three numbers as an (x, y, z) tuple."""
    x, y, z = values
    return x, y, z


@dataclass(frozen=True)
class RobotSpec:
    """A robot: joints, control modes and rate, cameras, default pose, command interface, workspace box and
    (optionally) the MJCF model of its mirror."""

    name: str
    mjcf: Path | None
    joints: tuple[JointSpec, ...]
    control_modes: tuple[str, ...]
    control_rate_hz: float
    cameras: tuple[CameraSpec, ...]
    default_pose: dict[str, float]
    command: CommandSpec
    gripper: GripperSpec | None = None
    ee_site: str | None = None
    home_keyframe: str | None = None
    workspace: WorkspaceSpec | None = None
    source: Path | None = field(default=None, compare=False)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def default_positions(self) -> list[float]:
        """Default pose in joint order."""
        return [self.default_pose[j.name] for j in self.joints]

    def require_mjcf(self, purpose: str) -> Path:
        """The MJCF path, or a RobotSpecError saying that ``purpose`` needs one."""
        if self.mjcf is None:
            where = f" ({self.source})" if self.source else ""
            raise RobotSpecError(
                f"robot {self.name!r}{where} has no `mjcf`: {purpose} needs a MuJoCo model of the "
                "robot; add `mjcf: path/to/robot.xml` to its spec"
            )
        return self.mjcf


# ---------------------------------------------------------------------------------------------- loading

_TOP_KEYS = {
    "name", "mjcf", "joints", "control_modes", "control_rate_hz", "cameras", "default_pose", "command",
    "gripper", "ee_site", "home_keyframe", "workspace",
}  # fmt: skip
_REQUIRED = ("name", "joints", "control_modes", "control_rate_hz", "default_pose", "command")


def _resolve_spec_path(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.is_file() or len(p.parts) > 1:
        if not p.is_file():
            raise RobotSpecError(f"robot spec file {p} does not exist")
        return p.resolve()
    try:
        return config_file("robot", str(p))
    except ConfigNotFoundError as e:
        raise RobotSpecError(
            f"unknown robot {str(p)!r}: no {e.path}; known robots: {', '.join(e.known) or 'none'}"
        ) from None


class _Reader:
    """Typed access to the raw YAML with error messages that name the file and the key."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> RobotSpecError:
        return RobotSpecError(f"{self.source}: {where}: {msg}")

    def mapping(self, where: str, value: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        missing = [k for k in required if k not in value]
        if missing:
            raise self.fail(where, f"missing key(s) {', '.join(missing)}")
        unknown = sorted(set(value) - set(required) - set(optional))
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(map(str, unknown))}")
        return value

    def string(self, where: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value

    def number(self, where: str, value: Any, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, f"expected a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(where, f"must be > 0, got {value!r}")
        return float(value)

    def limits(self, where: str, value: Any) -> tuple[float, float]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise self.fail(where, f"expected [lo, hi], got {value!r}")
        lo, hi = self.number(where, value[0]), self.number(where, value[1])
        if lo >= hi:
            raise self.fail(where, f"position limits lo ({lo:g}) >= hi ({hi:g})")
        return lo, hi

    def sequence(self, where: str, value: Any) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return value


def _parse(raw: Any, source: Path) -> RobotSpec:
    r = _Reader(source)
    raw = r.mapping("top level", raw, _REQUIRED, tuple(_TOP_KEYS - set(_REQUIRED)))
    name = r.string("name", raw["name"])

    mjcf: Path | None = None
    if raw.get("mjcf") is not None:
        mjcf = Path(r.string("mjcf", raw["mjcf"]))
        if not mjcf.is_absolute():
            mjcf = source.parent / mjcf
        if not mjcf.is_file():
            raise r.fail("mjcf", f"MJCF file {mjcf} does not exist (a relative path is relative to the spec's folder)")
        mjcf = mjcf.resolve()

    joints: list[JointSpec] = []
    for i, jraw in enumerate(r.sequence("joints", raw["joints"])):
        where = f"joints[{i}]"
        jraw = r.mapping(where, jraw, ("name", "position", "velocity", "effort"), ("actuator",))
        jname = r.string(f"{where}.name", jraw["name"])
        where = f"joints[{i}] ({jname})"
        lo, hi = r.limits(f"{where}.position", jraw["position"])
        act = jraw.get("actuator")
        joints.append(
            JointSpec(
                name=jname,
                lower=lo,
                upper=hi,
                velocity=r.number(f"{where}.velocity", jraw["velocity"], positive=True),
                effort=r.number(f"{where}.effort", jraw["effort"], positive=True),
                actuator=None if act is None else r.string(f"{where}.actuator", act),
            )
        )
    if not joints:
        raise r.fail("joints", "at least one joint is required")
    names = [j.name for j in joints]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise r.fail("joints", f"duplicate joint name(s) {', '.join(dupes)}")

    modes = tuple(r.string("control_modes", m) for m in r.sequence("control_modes", raw["control_modes"]))
    if not modes:
        raise r.fail("control_modes", "at least one control mode is required")
    for m in modes:
        if m not in CONTROL_MODES:
            raise r.fail("control_modes", f"unknown control mode {m!r}; known: {', '.join(CONTROL_MODES)}")
    ee_site = raw.get("ee_site")
    ee_site = None if ee_site is None else r.string("ee_site", ee_site)
    if "ee_delta" in modes and ee_site is None:
        raise r.fail("control_modes", "ee_delta needs an `ee_site` (the MJCF site of the end effector)")
    if ee_site is not None and mjcf is None:
        raise r.fail("ee_site", "an ee_site is a site of the MJCF: set `mjcf` too, or drop ee_site (and ee_delta)")

    rate = r.number("control_rate_hz", raw["control_rate_hz"], positive=True)

    cameras: list[CameraSpec] = []
    for i, craw in enumerate(r.sequence("cameras", raw.get("cameras") or [])):
        where = f"cameras[{i}]"
        craw = r.mapping(where, craw, ("name", "width", "height", "fps"), ("mount",))
        dims = []
        for key in ("width", "height"):
            v = craw[key]
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise r.fail(f"{where}.{key}", f"expected a positive integer, got {v!r}")
            dims.append(v)
        cameras.append(
            CameraSpec(
                name=r.string(f"{where}.name", craw["name"]),
                width=dims[0],
                height=dims[1],
                fps=r.number(f"{where}.fps", craw["fps"], positive=True),
                mount=None if craw.get("mount") is None else r.string(f"{where}.mount", craw["mount"]),
            )
        )
    cam_names = [c.name for c in cameras]
    if len(set(cam_names)) != len(cam_names):
        raise r.fail("cameras", f"duplicate camera names in {cam_names}")

    pose_raw = r.mapping("default_pose", raw["default_pose"], tuple(names))
    default_pose: dict[str, float] = {}
    for j in joints:
        q = r.number(f"default_pose.{j.name}", pose_raw[j.name])
        if not j.lower <= q <= j.upper:
            raise r.fail(f"default_pose.{j.name}", f"{q:g} is outside the position limits [{j.lower:g}, {j.upper:g}]")
        default_pose[j.name] = q

    craw = r.mapping("command", raw["command"], ("controller",), ("interface",))
    interface = r.string("command.interface", craw.get("interface", "position"))
    if interface not in COMMAND_INTERFACES:
        raise r.fail("command.interface", f"unknown interface {interface!r}; known: {', '.join(COMMAND_INTERFACES)}")
    command = CommandSpec(controller=r.string("command.controller", craw["controller"]), interface=interface)

    gripper = None
    if raw.get("gripper") is not None:
        graw = r.mapping(
            "gripper",
            raw["gripper"],
            ("joints", "position", "velocity", "effort"),
            ("actuator", "default", "controller"),
        )
        glo, ghi = r.limits("gripper.position", graw["position"])
        gjoints = tuple(r.string("gripper.joints", n) for n in r.sequence("gripper.joints", graw["joints"]))
        clash = sorted(set(gjoints) & set(names))
        if clash:
            raise r.fail("gripper.joints", f"{', '.join(clash)} also listed under joints")
        gdefault = r.number("gripper.default", graw.get("default", ghi))
        if not glo <= gdefault <= ghi:
            raise r.fail("gripper.default", f"{gdefault:g} is outside [{glo:g}, {ghi:g}]")
        ctrl = graw.get("controller")
        gripper = GripperSpec(
            actuator=None if graw.get("actuator") is None else r.string("gripper.actuator", graw["actuator"]),
            joints=gjoints,
            lower=glo,
            upper=ghi,
            velocity=r.number("gripper.velocity", graw["velocity"], positive=True),
            effort=r.number("gripper.effort", graw["effort"], positive=True),
            default=gdefault,
            controller=None if ctrl is None else r.string("gripper.controller", ctrl),
        )

    workspace = None
    if raw.get("workspace") is not None:
        wraw = r.mapping("workspace", raw["workspace"], ("min", "max"))
        corners = []
        for k in ("min", "max"):
            v = r.sequence(f"workspace.{k}", wraw[k])
            if len(v) != 3:
                raise r.fail(f"workspace.{k}", f"expected [x, y, z], got {v!r}")
            corners.append(_xyz(r.number(f"workspace.{k}[{i}]", x) for i, x in enumerate(v)))
        if not all(lo < hi for lo, hi in zip(*corners, strict=True)):
            raise r.fail("workspace", f"min {list(corners[0])} must be < max {list(corners[1])} on every axis")
        if ee_site is None:
            raise r.fail("workspace", "the box bounds the end effector: it needs an `ee_site` (and `mjcf`)")
        workspace = WorkspaceSpec(corners[0], corners[1])

    key = raw.get("home_keyframe")
    if key is not None and mjcf is None:
        raise r.fail("home_keyframe", "a keyframe is part of the MJCF: set `mjcf` too, or drop home_keyframe")
    return RobotSpec(
        name=name,
        mjcf=mjcf,
        joints=tuple(joints),
        control_modes=modes,
        control_rate_hz=rate,
        cameras=tuple(cameras),
        default_pose=default_pose,
        command=command,
        gripper=gripper,
        ee_site=ee_site,
        home_keyframe=None if key is None else r.string("home_keyframe", key),
        workspace=workspace,
        source=source,
    )


def load_robot_spec(path_or_name: str | Path) -> RobotSpec:
    """Load and validate a robot spec from a YAML path or a robot name (``"arm6"`` -> configs/robot/arm6.yaml).

    Checking the spec against its MJCF is the MuJoCo side's job: ``realloop.sim.mjcf.check_against_model``.
    """
    source = _resolve_spec_path(path_or_name)
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as e:
        raise RobotSpecError(f"{source}: not valid YAML: {e}") from e
    return _parse(raw, source)
