"""Robot spec: the one description of a robot that the real robot and its MuJoCo mirror both load.

A spec is a plain YAML file (configs/robot/<name>.yaml, loadable by omegaconf as well)::

    name: arm6
    mjcf: sim/models/arm6.xml        # relative to the repo root, else to the YAML's folder; or absolute
    home_keyframe: home              # optional MJCF keyframe whose joint positions equal default_pose
    ee_site: ee_site                 # MJCF site; required by the ee_delta control mode
    control_rate_hz: 10
    control_modes: [joint_position, joint_delta, ee_delta]
    joints:                          # command / state order
      - {name: shoulder_pan, position: [-2.9, 2.9], velocity: 2.0, effort: 80.0}   # optional: actuator: NAME
    gripper:                         # optional
      {actuator: gripper, joints: [finger_left, finger_right], position: [0, 0.04], velocity: 0.1,
       effort: 60, default: 0.04, controller: gripper_controller}
    default_pose: {shoulder_pan: 0.0, ...}
    cameras:
      - {name: front, width: 640, height: 480, fps: 30, mount: front_cam}   # mount: MJCF camera name
    command: {controller: arm_controller, interface: position}              # ros2_control controller

Your own robot (e.g. a MuJoCo Menagerie MJCF) plugs in by writing such a file next to (or pointing at) its
MJCF and loading it with ``load_robot_spec("path/to/my_robot.yaml", check_model=True)``:
``RobotSpec.check_against_model`` then reports every joint, limit, actuator, camera or site that the spec
and the model disagree on. Joint position limits must equal the MJCF ranges of limited joints; for unlimited
(continuous) joints the spec's limits are software limits. Velocity limits live only in the spec (MJCF has
none); effort limits must equal the actuator's forcerange when the actuator is force-limited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import mujoco

REPO_ROOT = Path(__file__).resolve().parents[1]
ROBOT_CONFIG_DIR = REPO_ROOT / "configs" / "robot"
CONTROL_MODES = ("joint_position", "joint_delta", "ee_delta")
COMMAND_INTERFACES = ("position",)
LIMIT_TOL = 1e-4



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
    """A gripper driven by one actuator; `lower`/`upper` bound its command (e.g. finger opening in m)."""

    actuator: str
    joints: tuple[str, ...]
    lower: float
    upper: float
    velocity: float
    effort: float
    default: float
    controller: str | None = None


@dataclass(frozen=True)
class CameraSpec:
    """A camera stream: resolution, rate and the MJCF camera it is mounted as in the mirror."""

    name: str
    width: int
    height: int
    fps: float
    mount: str


@dataclass(frozen=True)
class CommandSpec:
    """The ros2_control command interface: commands go to `<controller>/commands`."""

    controller: str
    interface: str = "position"


@dataclass(frozen=True)
class RobotSpec:
    """A robot: joints, control modes and rate, cameras, default pose, MJCF model and command interface."""

    name: str
    mjcf: Path
    joints: tuple[JointSpec, ...]
    control_modes: tuple[str, ...]
    control_rate_hz: float
    cameras: tuple[CameraSpec, ...]
    default_pose: dict[str, float]
    command: CommandSpec
    gripper: GripperSpec | None = None
    ee_site: str | None = None
    home_keyframe: str | None = None
    source: Path | None = field(default=None, compare=False)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def default_positions(self) -> list[float]:
        """Default pose in joint order."""
        return [self.default_pose[j.name] for j in self.joints]

    def load_model(self) -> mujoco.MjModel:
        """Compile the spec's MJCF."""
        import mujoco

        return mujoco.MjModel.from_xml_path(str(self.mjcf))

    def check_against_model(self, model: mujoco.MjModel) -> None:
        """Raise RobotSpecError listing every disagreement between this spec and a compiled MJCF model."""
        import mujoco

        errors: list[str] = []

        def find(obj: mujoco.mjtObj, name: str) -> int:
            return mujoco.mj_name2id(model, obj, name)

        for j in self.joints:
            jid = find(mujoco.mjtObj.mjOBJ_JOINT, j.name)
            if jid < 0:
                errors.append(f"joint {j.name!r} is not in the MJCF")
                continue
            if int(model.jnt_type[jid]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                errors.append(f"joint {j.name!r} is not a hinge or slide joint in the MJCF")
            if model.jnt_limited[jid]:
                lo, hi = (float(x) for x in model.jnt_range[jid])
                if abs(lo - j.lower) > LIMIT_TOL or abs(hi - j.upper) > LIMIT_TOL:
                    errors.append(
                        f"joint {j.name!r}: spec position limits [{j.lower}, {j.upper}] != MJCF range [{lo:g}, {hi:g}]"
                    )
            aid = self._joint_actuator(model, j, jid, errors)
            if aid is not None and model.actuator_forcelimited[aid]:
                frc = float(max(abs(x) for x in model.actuator_forcerange[aid]))
                if abs(frc - j.effort) > LIMIT_TOL * max(1.0, frc):
                    errors.append(f"joint {j.name!r}: spec effort limit {j.effort} != MJCF actuator forcerange {frc:g}")

        if self.gripper is not None:
            for name in self.gripper.joints:
                if find(mujoco.mjtObj.mjOBJ_JOINT, name) < 0:
                    errors.append(f"gripper joint {name!r} is not in the MJCF")
            gid = find(mujoco.mjtObj.mjOBJ_ACTUATOR, self.gripper.actuator)
            if gid < 0:
                errors.append(f"gripper actuator {self.gripper.actuator!r} is not in the MJCF")
            elif model.actuator_ctrllimited[gid]:
                lo, hi = (float(x) for x in model.actuator_ctrlrange[gid])
                if abs(lo - self.gripper.lower) > LIMIT_TOL or abs(hi - self.gripper.upper) > LIMIT_TOL:
                    errors.append(
                        f"gripper: spec position [{self.gripper.lower}, {self.gripper.upper}] != MJCF actuator "
                        f"ctrlrange [{lo:g}, {hi:g}]"
                    )

        for cam in self.cameras:
            if find(mujoco.mjtObj.mjOBJ_CAMERA, cam.mount) < 0:
                errors.append(f"camera {cam.name!r}: mount {cam.mount!r} is not a camera in the MJCF")
        if self.ee_site is not None and find(mujoco.mjtObj.mjOBJ_SITE, self.ee_site) < 0:
            errors.append(f"ee_site {self.ee_site!r} is not a site in the MJCF")

        substeps = 1.0 / (self.control_rate_hz * model.opt.timestep)
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            errors.append(
                f"control_rate_hz {self.control_rate_hz} is not an integer divisor of the physics rate "
                f"{1.0 / model.opt.timestep:g} Hz (timestep {model.opt.timestep:g})"
            )

        if self.home_keyframe is not None:
            kid = find(mujoco.mjtObj.mjOBJ_KEY, self.home_keyframe)
            if kid < 0:
                errors.append(f"home_keyframe {self.home_keyframe!r} is not a keyframe in the MJCF")
            else:
                for j in self.joints:
                    jid = find(mujoco.mjtObj.mjOBJ_JOINT, j.name)
                    if jid < 0:
                        continue
                    q = float(model.key_qpos[kid, model.jnt_qposadr[jid]])
                    if abs(q - self.default_pose[j.name]) > LIMIT_TOL:
                        errors.append(
                            f"home_keyframe {self.home_keyframe!r}: {j.name} = {q:g} but default_pose says "
                            f"{self.default_pose[j.name]}"
                        )

        if errors:
            where = f"{self.source}: " if self.source else ""
            raise RobotSpecError(
                f"{where}robot spec {self.name!r} disagrees with its MJCF {self.mjcf}:\n  - " + "\n  - ".join(errors)
            )

    @staticmethod
    def _joint_actuator(model: mujoco.MjModel, j: JointSpec, jid: int, errors: list[str]) -> int | None:
        aid = joint_actuator_id(model, j)
        if aid >= 0:
            return aid
        if j.actuator is not None:
            errors.append(f"joint {j.name!r}: actuator {j.actuator!r} is not in the MJCF")
        else:
            errors.append(f"joint {j.name!r}: no actuator drives it in the MJCF")
        return None


def joint_actuator_id(model: mujoco.MjModel, joint: JointSpec) -> int:
    """The actuator commanding `joint`: the one the spec names, else the one whose transmission is the joint; -1."""
    import mujoco

    if joint.actuator is not None:
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, joint.actuator)
    jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint.name)
    for aid in range(model.nu):
        joint_trn = int(model.actuator_trntype[aid]) == int(mujoco.mjtTrn.mjTRN_JOINT)
        if joint_trn and int(model.actuator_trnid[aid, 0]) == jid:
            return aid
    return -1


# ---------------------------------------------------------------------------------------------- loading

_TOP_KEYS = {
    "name", "mjcf", "joints", "control_modes", "control_rate_hz", "cameras", "default_pose", "command",
    "gripper", "ee_site", "home_keyframe",
}  # fmt: skip
_REQUIRED = ("name", "mjcf", "joints", "control_modes", "control_rate_hz", "default_pose", "command")


def _resolve_spec_path(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.is_file() or len(p.parts) > 1:
        if not p.is_file():
            raise RobotSpecError(f"robot spec file {p} does not exist")
        return p.resolve()
    candidate = ROBOT_CONFIG_DIR / f"{p}.yaml"
    if not candidate.is_file():
        known = sorted(f.stem for f in ROBOT_CONFIG_DIR.glob("*.yaml"))
        raise RobotSpecError(f"unknown robot {str(p)!r}: no {candidate}; known robots: {', '.join(known) or 'none'}")
    return candidate


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

    mjcf = Path(r.string("mjcf", raw["mjcf"]))
    if not mjcf.is_absolute():
        mjcf = REPO_ROOT / mjcf if (REPO_ROOT / mjcf).exists() else source.parent / mjcf
    if not mjcf.is_file():
        raise r.fail("mjcf", f"MJCF file {mjcf} does not exist")

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

    rate = r.number("control_rate_hz", raw["control_rate_hz"], positive=True)

    cameras: list[CameraSpec] = []
    for i, craw in enumerate(r.sequence("cameras", raw.get("cameras") or [])):
        where = f"cameras[{i}]"
        craw = r.mapping(where, craw, ("name", "width", "height", "fps", "mount"))
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
                mount=r.string(f"{where}.mount", craw["mount"]),
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
            ("actuator", "joints", "position", "velocity", "effort"),
            ("default", "controller"),
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
            actuator=r.string("gripper.actuator", graw["actuator"]),
            joints=gjoints,
            lower=glo,
            upper=ghi,
            velocity=r.number("gripper.velocity", graw["velocity"], positive=True),
            effort=r.number("gripper.effort", graw["effort"], positive=True),
            default=gdefault,
            controller=None if ctrl is None else r.string("gripper.controller", ctrl),
        )

    key = raw.get("home_keyframe")
    return RobotSpec(
        name=name,
        mjcf=mjcf.resolve(),
        joints=tuple(joints),
        control_modes=modes,
        control_rate_hz=rate,
        cameras=tuple(cameras),
        default_pose=default_pose,
        command=command,
        gripper=gripper,
        ee_site=ee_site,
        home_keyframe=None if key is None else r.string("home_keyframe", key),
        source=source,
    )


def load_robot_spec(path_or_name: str | Path, *, check_model: bool = False) -> RobotSpec:
    """Load and validate a robot spec from a YAML path or a robot name (``"arm6"`` -> configs/robot/arm6.yaml).

    With ``check_model=True`` the MJCF is compiled and the spec checked against it (RobotSpecError on mismatch).
    """
    source = _resolve_spec_path(path_or_name)
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as e:
        raise RobotSpecError(f"{source}: not valid YAML: {e}") from e
    spec = _parse(raw, source)
    if check_model:
        spec.check_against_model(spec.load_model())
    return spec
