"""Seeded domain randomisation of a compiled MuJoCo model, applied by the gymnasium envs at every reset.

A task config carries an optional ``randomize:`` section; every key is optional and an absent / null / 0 key is
off. Ranges ``[lo, hi]`` are sampled uniformly. Sensible defaults for the arm::

    randomize:
      friction: [0.8, 1.2]      # one global scale of every geom's sliding friction
      mass: [0.9, 1.1]          # per-body scale of mass and inertia (robot and object bodies)
      com: 0.005                # per-body, per-axis centre-of-mass offset, max abs [m] (not "simple" bodies)
      damping: [0.8, 1.2]       # per-joint scale of dof_damping
      armature: [0.8, 1.2]      # per-joint scale of dof_armature
      gains: [0.9, 1.1]         # per-actuator scale of position-servo kp (kv unchanged)
      latency: [0, 1]           # action latency in control steps (integers, inclusive)
      obs_noise: 0.001          # std of Gaussian noise added to the state vector
      camera_pos: 0.01          # per-camera, per-axis position offset, max abs [m]
      camera_rot: 0.03          # per-camera rotation about a random axis, max [rad]
      light: 0.3                # light diffuse scale in [0.7, 1.3], position jitter up to 0.15 m per axis
      colors: 0.1               # per-geom / per-material rgb offset, max abs (clipped to [0, 1])

and for the quadruped (same dynamics keys, plus pushes on the trunk)::

    randomize:
      friction: [0.6, 1.4]
      mass: [0.9, 1.1]
      com: 0.01
      gains: [0.9, 1.1]
      latency: [0, 1]
      obs_noise: 0.01
      push: {body: trunk, force: [20, 60], duration: 0.2, interval: [2, 4]}   # N, s, s (gap between pushes)

Usage in an env::

    cfg = parse_randomization(task_cfg.get("randomize"))        # None when the section is absent or empty
    dr = DomainRandomizer(model, cfg, control_dt) if cfg else None
    # reset:
    mujoco.mj_resetDataKeyframe(model, data, key)                # also clears data.xfrc_applied
    sim_params = dr.reset(rng)                                   # model randomised; mj_setConst already done
    mujoco.mj_forward(model, data)
    # step:
    action = dr.delay(action)
    ...write action to data.ctrl...
    dr.apply_push(data, data.time, rng)
    ...n_substeps x mj_step...
    state = dr.noisy(state, rng)

`DomainRandomizer.reset` restores the nominal model before every sample, so draws never compound, and it calls
``mujoco.mj_setConst`` itself whenever it changed a field that the model's derived constants depend on (masses,
inertias, centres of mass, armature, camera / light poses); callers only need ``mj_forward`` (or a step). This
matters: the mass matrix of a "simple" body (e.g. a free object whose inertial frame is its body frame) is read
from ``dof_M0``, so without ``mj_setConst`` its mass change would not act at all.

Centres of mass are offset only on bodies that MuJoCo did not compile as "simple" (their mass-matrix sparsity is
fixed in MjData); give a task object ``<body ... simple="false">`` (MjSpec: ``body.simple = False``) to
randomise its centre of mass too.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import mujoco
import numpy as np

_PREFIX = "randomize"


def _fail(key: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{_PREFIX}.{key}: expected {expected}, got {value!r}")


def _is_number(x: Any) -> bool:
    return (
        isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, (bool, np.bool_))
        and (math.isfinite(float(x)))
    )


def _scale_range(key: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    expected = "[lo, hi] with 0 < lo <= hi"
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_number(v) for v in value):
        raise _fail(key, expected, value)
    lo, hi = float(value[0]), float(value[1])
    if not 0.0 < lo <= hi:
        raise _fail(key, expected, value)
    return lo, hi


def _nonneg_range(key: str, value: Any, *, integer: bool = False) -> tuple[Any, Any]:
    kind = "integers" if integer else "numbers"
    expected = f"[lo, hi] {kind} with 0 <= lo <= hi"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(key, expected, value)
    if integer:
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value)
    else:
        ok = all(_is_number(v) for v in value)
    if not ok:
        raise _fail(key, expected, value)
    cast = int if integer else float
    lo, hi = cast(value[0]), cast(value[1])
    if not 0 <= lo <= hi:
        raise _fail(key, expected, value)
    return lo, hi


def _amount(key: str, value: Any, upper: float | None = None) -> float:
    if value is None:
        return 0.0
    expected = "a number >= 0" if upper is None else f"a number in [0, {upper:g}]"
    if not _is_number(value) or float(value) < 0 or (upper is not None and float(value) > upper):
        raise _fail(key, expected, value)
    return float(value)


@dataclass(frozen=True)
class PushConfig:
    """External pushes on one body: horizontal force of random direction, lasting `duration` seconds.

    `interval` is the gap [s] between the end of one push and the start of the next (the first push comes
    `interval` after reset); pushes are quantised to control steps.
    """

    body: str  # MJCF body name
    force: tuple[float, float]  # magnitude range [N]
    duration: float  # seconds a push lasts
    interval: tuple[float, float]  # seconds between pushes (uniform)

    def __post_init__(self) -> None:
        if not isinstance(self.body, str) or not self.body:
            raise _fail("push.body", "a non-empty MJCF body name", self.body)
        object.__setattr__(self, "force", _nonneg_range("push.force", self.force))
        if not _is_number(self.duration) or float(self.duration) <= 0:
            raise _fail("push.duration", "a number > 0 [s]", self.duration)
        object.__setattr__(self, "duration", float(self.duration))
        object.__setattr__(self, "interval", _nonneg_range("push.interval", self.interval))


@dataclass(frozen=True)
class RandomizationConfig:
    """Every field optional (None/0 = off). Ranges are [lo, hi] uniform. Values are validated on construction."""

    friction: tuple[float, float] | None = None  # scale of geom sliding friction (one global draw)
    mass: tuple[float, float] | None = None  # per-body scale of mass and inertia (all bodies with mass)
    com: float = 0.0  # max abs offset [m] of each body's centre of mass (body_ipos), per axis
    damping: tuple[float, float] | None = None  # per-joint scale of dof_damping
    armature: tuple[float, float] | None = None  # per-joint scale of dof_armature
    gains: tuple[float, float] | None = None  # per-actuator scale of position-servo kp
    latency: tuple[int, int] | None = None  # action latency in control steps, integer uniform inclusive
    obs_noise: float = 0.0  # std of Gaussian noise added to the state vector
    push: PushConfig | None = None  # external pushes on one body (quadruped trunk)
    camera_pos: float = 0.0  # max abs offset [m] per axis of each camera position (cam_pos)
    camera_rot: float = 0.0  # max rotation [rad] of each camera about a random axis (cam_quat)
    light: float = 0.0  # diffuse scale in [1-x, 1+x] and position jitter up to x * 0.5 m per axis
    colors: float = 0.0  # max abs change of geom / material rgb, clipped to [0, 1]

    def __post_init__(self) -> None:
        for key in ("friction", "mass", "damping", "armature", "gains"):
            object.__setattr__(self, key, _scale_range(key, getattr(self, key)))
        if self.latency is not None:
            object.__setattr__(self, "latency", _nonneg_range("latency", self.latency, integer=True))
        for key in ("com", "obs_noise", "camera_pos"):
            object.__setattr__(self, key, _amount(key, getattr(self, key)))
        object.__setattr__(self, "camera_rot", _amount("camera_rot", self.camera_rot, math.pi))
        object.__setattr__(self, "light", _amount("light", self.light, 1.0))
        object.__setattr__(self, "colors", _amount("colors", self.colors, 1.0))
        if self.push is not None and not isinstance(self.push, PushConfig):
            object.__setattr__(self, "push", _parse_push(self.push))

    @property
    def enabled(self) -> bool:
        """Whether any randomisation is on."""
        return any(getattr(self, f.name) not in (None, 0.0) for f in fields(self))


def _plain(cfg: Any) -> Any:
    """An omegaconf container as plain dicts / lists; anything else unchanged."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _parse_push(raw: Any) -> PushConfig:
    raw = _plain(raw)
    keys = [f.name for f in fields(PushConfig)]
    if not isinstance(raw, Mapping):
        raise _fail("push", f"a mapping with keys {', '.join(keys)}", raw)
    unknown = sorted(map(str, set(raw) - set(keys)))
    if unknown:
        raise ValueError(f"{_PREFIX}.push: unknown key(s) {', '.join(unknown)}; expected {', '.join(keys)}")
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ValueError(f"{_PREFIX}.push: missing key(s) {', '.join(missing)}")
    return PushConfig(**{k: _plain(raw[k]) for k in keys})


def parse_randomization(cfg: Mapping[str, Any] | RandomizationConfig | None) -> RandomizationConfig | None:
    """Validate a ``randomize:`` section (dict or omegaconf DictConfig). None or an empty mapping -> None.

    Unknown keys or bad values raise ValueError naming the key and what is expected.
    """
    if cfg is None or isinstance(cfg, RandomizationConfig):
        return cfg
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{_PREFIX}: expected a mapping, got {type(cfg).__name__}")
    if not cfg:
        return None
    keys = [f.name for f in fields(RandomizationConfig)]
    unknown = sorted(map(str, set(cfg) - set(keys)))
    if unknown:
        raise ValueError(f"{_PREFIX}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(keys)}")
    kwargs = {k: _plain(v) for k, v in cfg.items()}
    for key in ("com", "obs_noise", "camera_pos", "camera_rot", "light", "colors"):
        if key in kwargs and kwargs[key] is None:
            kwargs[key] = 0.0
    if kwargs.get("push") is not None:
        kwargs["push"] = _parse_push(kwargs["push"])
    return RandomizationConfig(**kwargs)


# ---------------------------------------------------------------------------------------------- randomizer


def _names(model: mujoco.MjModel, obj: mujoco.mjtObj, n: int, prefix: str) -> list[str]:
    """Names of objects 0..n-1; unnamed ones become ``<prefix><id>``."""
    return [mujoco.mj_id2name(model, obj, i) or f"{prefix}{i}" for i in range(n)]


def _vec(x: np.ndarray) -> list[float]:
    return [float(v) for v in x]


class DomainRandomizer:
    """Samples model parameters at reset (restoring the nominal model first), plus per-step latency, noise, pushes.

    Every sample is drawn only from the generator passed in, so equal seeds give equal models and `sim_params`.
    Raises ValueError on construction when the config asks for something the model lacks (lights, cameras,
    position actuators, damped joints, the push body).
    """

    def __init__(self, model: mujoco.MjModel, config: RandomizationConfig, control_dt: float) -> None:
        if not _is_number(control_dt) or control_dt <= 0:
            raise ValueError(f"control_dt: expected a number > 0 [s], got {control_dt!r}")
        self.model, self.config, self.control_dt = model, config, float(control_dt)
        c, m = config, model
        self._scratch = mujoco.MjData(model)  # mj_setConst overwrites the data it is given: use our own

        self.body_names = _names(m, mujoco.mjtObj.mjOBJ_BODY, m.nbody, "body")
        self._mass_ids = np.flatnonzero(m.body_mass > 0)
        self._mass_ids = self._mass_ids[self._mass_ids != 0]  # never the world
        if c.mass is not None and self._mass_ids.size == 0:
            raise ValueError("randomize.mass: the model has no bodies with mass")
        # MuJoCo compiles a body as "simple" (diagonal mass-matrix block, fixed sparsity in MjData) when its inertial
        # frame is its body frame; moving its centre of mass would break that at runtime, so such bodies keep
        # their centre of mass. Compile an object with <body simple="false"> to randomise its centre of mass.
        simple = getattr(m, "body_simple", np.zeros(m.nbody, dtype=int))
        self._com_ids = self._mass_ids[simple[self._mass_ids] == 0]
        if c.com > 0 and self._com_ids.size == 0:
            raise ValueError(
                'randomize.com: the model has no non-simple bodies with mass (compile bodies with simple="false")'
            )

        jnt_names = _names(m, mujoco.mjtObj.mjOBJ_JOINT, m.njnt, "joint")
        self._dof_joint = np.asarray(m.dof_jntid)
        self._joints: dict[str, np.ndarray] = {}
        for key, arr in (("damping", m.dof_damping), ("armature", m.dof_armature)):
            jids = np.unique(self._dof_joint[arr > 0])
            self._joints[key] = jids
            if getattr(c, key) is not None and jids.size == 0:
                raise ValueError(f"randomize.{key}: no joint in the model has nonzero {key}")
        self.joint_names = jnt_names

        act_names = _names(m, mujoco.mjtObj.mjOBJ_ACTUATOR, m.nu, "actuator")
        servo = (
            (m.actuator_gaintype == mujoco.mjtGain.mjGAIN_FIXED)
            & (m.actuator_biastype == mujoco.mjtBias.mjBIAS_AFFINE)
            & (m.actuator_gainprm[:, 0] > 0)
            & np.isclose(m.actuator_biasprm[:, 1], -m.actuator_gainprm[:, 0])
        )
        self._servo_ids = np.flatnonzero(servo)
        self.actuator_names = act_names
        if c.gains is not None and self._servo_ids.size == 0:
            raise ValueError(
                f"randomize.gains: the model has no position actuators (kp > 0, bias -kp); actuators: "
                f"{', '.join(act_names) or 'none'}"
            )

        self.camera_names = _names(m, mujoco.mjtObj.mjOBJ_CAMERA, m.ncam, "camera")
        if (c.camera_pos > 0 or c.camera_rot > 0) and m.ncam == 0:
            raise ValueError("randomize.camera_pos/camera_rot: the model has no cameras")
        self.light_names = _names(m, mujoco.mjtObj.mjOBJ_LIGHT, m.nlight, "light")
        if c.light > 0 and m.nlight == 0:
            raise ValueError("randomize.light: the model has no lights")
        self.geom_names = _names(m, mujoco.mjtObj.mjOBJ_GEOM, m.ngeom, "geom")
        self.material_names = _names(m, mujoco.mjtObj.mjOBJ_MATERIAL, m.nmat, "material")
        self._plain_geoms = np.flatnonzero(m.geom_matid < 0)

        self._push_body = -1
        if c.push is not None:
            self._push_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, c.push.body)
            if self._push_body <= 0:
                movable = [n for i, n in enumerate(self.body_names) if i > 0]
                raise ValueError(
                    f"randomize.push.body: {c.push.body!r} is not a body of the model (the world cannot be "
                    f"pushed); bodies: {', '.join(movable) or 'none'}"
                )

        # nominal values of every field this config touches
        touched: list[str] = []
        if c.friction is not None:
            touched.append("geom_friction")
        if c.mass is not None:
            touched += ["body_mass", "body_inertia"]
        if c.com > 0:
            touched += ["body_ipos", "body_sameframe"]
        if c.damping is not None:
            touched.append("dof_damping")
        if c.armature is not None:
            touched.append("dof_armature")
        if c.gains is not None:
            touched += ["actuator_gainprm", "actuator_biasprm"]
        if c.camera_pos > 0:
            touched.append("cam_pos")
        if c.camera_rot > 0:
            touched.append("cam_quat")
        if c.light > 0:
            touched += ["light_diffuse", "light_pos"]
        if c.colors > 0:
            touched += ["geom_rgba", "mat_rgba"]
        self._nominal: dict[str, np.ndarray] = {f: getattr(m, f).copy() for f in touched}
        self._needs_setconst = bool(
            c.mass is not None
            or c.com > 0
            or c.armature is not None
            or c.camera_pos > 0
            or c.camera_rot > 0
            or c.light > 0
        )

        self.latency_steps = 0
        self._queue: deque[np.ndarray] = deque(maxlen=1)
        self._sim_params: dict[str, Any] = {}
        self._push_next: float | None = None
        self._push_end: float | None = None
        self._push_force = np.zeros(3)

    # ------------------------------------------------------------------------------------------ reset

    def restore(self) -> None:
        """Put every touched model field back to its nominal (construction-time) value."""
        for f, v in self._nominal.items():
            getattr(self.model, f)[...] = v
        if self._needs_setconst:
            mujoco.mj_setConst(self.model, self._scratch)

    def reset(self, rng: np.random.Generator) -> dict[str, Any]:
        """Restore the nominal model, apply a fresh sample drawn only from `rng`; return `sim_params`.

        Calls ``mj_setConst`` when needed, so the caller only has to ``mj_forward``. Clears the latency queue
        and the push schedule (the env's ``mj_resetData*`` clears ``data.xfrc_applied``).
        """
        c, m, nom = self.config, self.model, self._nominal
        for f, v in nom.items():
            getattr(m, f)[...] = v
        p: dict[str, Any] = {}

        if c.friction is not None:
            scale = float(rng.uniform(*c.friction))
            m.geom_friction[:, 0] = nom["geom_friction"][:, 0] * scale
            p["friction_scale"] = scale
        if c.mass is not None:
            ids = self._mass_ids
            s = rng.uniform(*c.mass, size=ids.size)
            m.body_mass[ids] = nom["body_mass"][ids] * s
            m.body_inertia[ids] = nom["body_inertia"][ids] * s[:, None]
            p["mass_scale"] = {self.body_names[i]: float(v) for i, v in zip(ids, s, strict=True)}
        if c.com > 0:
            ids = self._com_ids
            d = rng.uniform(-c.com, c.com, size=(ids.size, 3))
            m.body_ipos[ids] = nom["body_ipos"][ids] + d
            m.body_sameframe[ids] = 0  # general kinematics path; mj_setConst (MuJoCo >= 3.3) re-derives it
            p["com_offset"] = {self.body_names[i]: _vec(v) for i, v in zip(ids, d, strict=True)}
        for key, field, out in (
            ("damping", "dof_damping", "damping_scale"),
            ("armature", "dof_armature", "armature_scale"),
        ):
            bounds = getattr(c, key)
            if bounds is None:
                continue
            jids = self._joints[key]
            lo, hi = bounds
            s = rng.uniform(lo, hi, size=jids.size)
            per_dof = np.ones(m.nv)
            for j, v in zip(jids, s, strict=True):
                per_dof[self._dof_joint == j] = v
            getattr(m, field)[:] = nom[field] * per_dof
            p[out] = {self.joint_names[j]: float(v) for j, v in zip(jids, s, strict=True)}
        if c.gains is not None:
            ids = self._servo_ids
            s = rng.uniform(*c.gains, size=ids.size)
            kp = nom["actuator_gainprm"][ids, 0] * s
            m.actuator_gainprm[ids, 0] = kp
            m.actuator_biasprm[ids, 1] = -kp
            p["gain_scale"] = {self.actuator_names[i]: float(v) for i, v in zip(ids, s, strict=True)}
        if c.latency is not None:
            self.latency_steps = int(rng.integers(c.latency[0], c.latency[1], endpoint=True))
            p["latency_steps"] = self.latency_steps
        else:
            self.latency_steps = 0
        if c.obs_noise > 0:
            p["obs_noise_std"] = c.obs_noise
        if c.camera_pos > 0 or c.camera_rot > 0:
            p["camera"] = self._sample_cameras(rng)
        if c.light > 0:
            scale = rng.uniform(1.0 - c.light, 1.0 + c.light, size=m.nlight)
            d = rng.uniform(-0.5 * c.light, 0.5 * c.light, size=(m.nlight, 3))
            m.light_diffuse[:] = nom["light_diffuse"] * scale[:, None]
            m.light_pos[:] = nom["light_pos"] + d
            p["light"] = {
                n: {"diffuse_scale": float(s), "pos_offset": _vec(o)}
                for n, s, o in zip(self.light_names, scale, d, strict=True)
            }
        if c.colors > 0:
            p["colors"] = self._sample_colors(rng)
        if c.push is not None:
            p["push"] = {
                "body": c.push.body,
                "force": list(c.push.force),
                "duration": c.push.duration,
                "interval": list(c.push.interval),
            }

        if self._needs_setconst:
            mujoco.mj_setConst(m, self._scratch)
        self._queue = deque(maxlen=self.latency_steps + 1)
        self._push_next = self._push_end = None
        self._push_force = np.zeros(3)
        self._sim_params = p
        return copy.deepcopy(p)

    def _sample_cameras(self, rng: np.random.Generator) -> dict[str, Any]:
        c, m, nom = self.config, self.model, self._nominal
        out: dict[str, Any] = {n: {} for n in self.camera_names}
        if c.camera_pos > 0:
            d = rng.uniform(-c.camera_pos, c.camera_pos, size=(m.ncam, 3))
            m.cam_pos[:] = nom["cam_pos"] + d
            for n, v in zip(self.camera_names, d, strict=True):
                out[n]["pos_offset"] = _vec(v)
        if c.camera_rot > 0:
            axes = rng.normal(size=(m.ncam, 3))
            angles = rng.uniform(0.0, c.camera_rot, size=m.ncam)
            for i, n in enumerate(self.camera_names):
                axis = axes[i] / max(np.linalg.norm(axes[i]), 1e-12)
                rotvec = axis * angles[i]
                dq = np.empty(4)
                mujoco.mju_axisAngle2Quat(dq, axis, angles[i])
                q = np.empty(4)
                mujoco.mju_mulQuat(q, nom["cam_quat"][i], dq)  # rotation about an axis of the camera frame
                mujoco.mju_normalize4(q)
                m.cam_quat[i] = q
                out[n]["rot"] = _vec(rotvec)
        return out

    def _sample_colors(self, rng: np.random.Generator) -> dict[str, Any]:
        x, m, nom = self.config.colors, self.model, self._nominal
        ids = self._plain_geoms
        d = rng.uniform(-x, x, size=(ids.size, 3))
        m.geom_rgba[ids, :3] = np.clip(nom["geom_rgba"][ids, :3] + d, 0.0, 1.0)
        applied = m.geom_rgba[ids, :3] - nom["geom_rgba"][ids, :3]
        dm = rng.uniform(-x, x, size=(m.nmat, 3))
        m.mat_rgba[:, :3] = np.clip(nom["mat_rgba"][:, :3] + dm, 0.0, 1.0)
        applied_m = m.mat_rgba[:, :3] - nom["mat_rgba"][:, :3]
        return {
            "geom_rgb_offset": {self.geom_names[i]: _vec(v) for i, v in zip(ids, applied, strict=True)},
            "material_rgb_offset": {n: _vec(v) for n, v in zip(self.material_names, applied_m, strict=True)},
        }

    @property
    def sim_params(self) -> dict[str, Any]:
        """The last sample (a copy): JSON-serialisable, one key per enabled randomisation; {} before reset."""
        return copy.deepcopy(self._sim_params)

    # ------------------------------------------------------------------------------------------ per step

    def delay(self, action: np.ndarray) -> np.ndarray:
        """Push `action`; return the one from `latency_steps` control steps ago (the oldest until the queue fills)."""
        self._queue.append(np.array(action, copy=True))
        return self._queue[0].copy()

    def noisy(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`state` + N(0, obs_noise^2), in the state's float dtype; `state` itself (rng untouched) when off."""
        if self.config.obs_noise <= 0:
            return state
        state = np.asarray(state)
        dtype = state.dtype if np.issubdtype(state.dtype, np.floating) else np.float32
        noise = rng.normal(0.0, self.config.obs_noise, size=state.shape)
        return (state + noise).astype(dtype, copy=False)

    @property
    def push_force(self) -> np.ndarray:
        """The force [N] (world frame) this randomizer is applying now; zeros between pushes."""
        return self._push_force.copy()

    def apply_push(self, data: mujoco.MjData, time: float, rng: np.random.Generator) -> None:
        """Start / stop pushes on the push body via ``data.xfrc_applied``; call once per control step.

        Times are compared with half a control step of tolerance, so a push lasts `duration` rounded to whole
        control steps. The first call after reset schedules the first push `interval` ahead. No-op without push.
        """
        push = self.config.push
        if push is None:
            return
        row = data.xfrc_applied[self._push_body]
        tol = 0.5 * self.control_dt
        if self._push_next is None and self._push_end is None:  # first call after reset
            row[:3] = 0.0
            self._push_next = time + float(rng.uniform(*push.interval))
        if self._push_end is not None:
            if time < self._push_end - tol:
                return
            row[:3] = 0.0
            self._push_force = np.zeros(3)
            self._push_end = None
            self._push_next = time + float(rng.uniform(*push.interval))
        if self._push_next is not None and time >= self._push_next - tol:
            magnitude = float(rng.uniform(*push.force))
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            self._push_force = np.array([magnitude * math.cos(angle), magnitude * math.sin(angle), 0.0])
            row[:3] = self._push_force
            self._push_end = time + push.duration
            self._push_next = None
