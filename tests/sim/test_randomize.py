"""Domain randomisation: config parsing, determinism, ranges, no compounding, latency, noise and pushes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
import pytest
from omegaconf import OmegaConf

from realloop.sim.randomize import DomainRandomizer, PushConfig, RandomizationConfig, parse_randomization

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "sim" / "models"

ARM_CFG = {
    "friction": [0.8, 1.2],
    "mass": [0.9, 1.1],
    "com": 0.005,
    "damping": [0.8, 1.2],
    "armature": [0.8, 1.2],
    "gains": [0.9, 1.1],
    "latency": [0, 1],
    "obs_noise": 0.001,
    "camera_pos": 0.01,
    "camera_rot": 0.03,
    "light": 0.3,
    "colors": 0.1,
}
QUAD_PUSH = {"body": "trunk", "force": [20, 60], "duration": 0.2, "interval": [2, 4]}
TOUCHED = (
    "geom_friction", "body_mass", "body_inertia", "body_ipos", "dof_damping", "dof_armature", "actuator_gainprm",
    "actuator_biasprm", "cam_pos", "cam_quat", "light_diffuse", "light_pos", "geom_rgba", "mat_rgba",
    "body_subtreemass", "dof_invweight0", "body_invweight0", "dof_M0", "cam_pos0", "cam_mat0",
)  # fmt: skip


def _load(name: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(MODELS / f"{name}.xml"))


def _arm_scene() -> mujoco.MjModel:
    """arm6 plus two free objects as the tasks add them: a simple cube with a material, a non-simple plain block."""
    spec = mujoco.MjSpec.from_file(str(MODELS / "arm6.xml"))
    spec.add_material(name="cube_mat", rgba=[0.85, 0.2, 0.2, 1])
    cube = spec.worldbody.add_body(name="cube", pos=[0.4, 0, 0.025])
    cube.add_freejoint(name="cube_joint")
    cube.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.025] * 3, mass=0.1, material="cube_mat")
    block = spec.worldbody.add_body(name="block", pos=[0.3, 0.2, 0.025])
    block.simple = False  # lets its centre of mass move
    block.add_freejoint(name="block_joint")
    block.add_geom(name="block", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.02] * 3, mass=0.2, rgba=[0.1, 0.9, 0.1, 1])
    return spec.compile()


def _all_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    out = {}
    for name in dir(model):
        if name.startswith("_"):
            continue
        value = getattr(model, name, None)
        if isinstance(value, np.ndarray):
            out[name] = value.copy()
    return out


def _assert_plain(x: Any) -> None:
    """JSON-serialisable with plain Python types only (no numpy scalars / arrays)."""
    if isinstance(x, dict):
        for k, v in x.items():
            assert type(k) is str
            _assert_plain(v)
    elif isinstance(x, list):
        for v in x:
            _assert_plain(v)
    else:
        assert type(x) in (float, int, str, bool), type(x)


# ---------------------------------------------------------------------------------------------- parsing


def test_parse_none_empty_and_valid() -> None:
    assert parse_randomization(None) is None
    assert parse_randomization({}) is None
    assert parse_randomization(OmegaConf.create({})) is None
    cfg = parse_randomization({**ARM_CFG, "push": QUAD_PUSH})
    assert cfg is not None and cfg.enabled
    assert cfg.friction == (0.8, 1.2) and cfg.latency == (0, 1) and cfg.colors == 0.1
    assert cfg.push == PushConfig(body="trunk", force=(20.0, 60.0), duration=0.2, interval=(2.0, 4.0))
    assert parse_randomization(cfg) is cfg
    assert parse_randomization(OmegaConf.create({**ARM_CFG, "push": QUAD_PUSH})) == cfg
    off = parse_randomization({"friction": None, "com": None, "push": None})
    assert off == RandomizationConfig() and not off.enabled


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"frictoin": [0.8, 1.2]}, "unknown key(s) frictoin"),
        ({"friction": [1.2, 0.8]}, "randomize.friction: expected [lo, hi] with 0 < lo <= hi, got [1.2, 0.8]"),
        ({"friction": [0.0, 1.2]}, "randomize.friction: expected [lo, hi] with 0 < lo <= hi"),
        ({"mass": 1.1}, "randomize.mass: expected [lo, hi]"),
        ({"gains": ["a", 1]}, "randomize.gains: expected [lo, hi]"),
        ({"damping": [0.8, 1.0, 1.2]}, "randomize.damping: expected [lo, hi]"),
        ({"armature": [0.8, float("nan")]}, "randomize.armature: expected [lo, hi]"),
        ({"latency": [0.5, 1]}, "randomize.latency: expected [lo, hi] integers with 0 <= lo <= hi"),
        ({"latency": [2, 1]}, "randomize.latency: expected [lo, hi] integers"),
        ({"latency": [-1, 1]}, "randomize.latency: expected [lo, hi] integers"),
        ({"obs_noise": -0.1}, "randomize.obs_noise: expected a number >= 0, got -0.1"),
        ({"com": True}, "randomize.com: expected a number >= 0, got True"),
        ({"colors": 1.5}, "randomize.colors: expected a number in [0, 1]"),
        ({"light": 2}, "randomize.light: expected a number in [0, 1]"),
        ({"camera_rot": 4.0}, "randomize.camera_rot: expected a number in [0, 3.14159]"),
        ({"camera_pos": "1cm"}, "randomize.camera_pos: expected a number >= 0"),
        ({"push": [1, 2]}, "randomize.push: expected a mapping with keys body, force, duration, interval"),
        ({"push": {"body": "trunk", "force": [20, 60], "duration": 0.2}}, "randomize.push: missing key(s) interval"),
        ({"push": {**QUAD_PUSH, "strength": 1}}, "randomize.push: unknown key(s) strength"),
        ({"push": {**QUAD_PUSH, "body": ""}}, "randomize.push.body: expected a non-empty MJCF body name"),
        ({"push": {**QUAD_PUSH, "force": [60, 20]}}, "randomize.push.force: expected [lo, hi] numbers"),
        ({"push": {**QUAD_PUSH, "duration": 0}}, "randomize.push.duration: expected a number > 0"),
        ({"push": {**QUAD_PUSH, "interval": 3}}, "randomize.push.interval: expected [lo, hi]"),
    ],
)
def test_parse_errors_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_randomization(raw)
    assert message in str(e.value)
    with pytest.raises(ValueError):  # an omegaconf DictConfig gets the same checks
        parse_randomization(OmegaConf.create(raw))


def test_parse_rejects_non_mapping_and_validates_dataclass() -> None:
    with pytest.raises(ValueError, match="randomize: expected a mapping"):
        parse_randomization([0.8, 1.2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"randomize\.friction"):
        RandomizationConfig(friction=(1.2, 0.8))


def test_construction_errors_name_what_is_missing() -> None:
    quad = _load("quad12")
    with pytest.raises(ValueError) as e:
        DomainRandomizer(quad, RandomizationConfig(push=PushConfig("torso", (20, 60), 0.2, (2, 4))), 0.02)
    assert "'torso'" in str(e.value) and "trunk" in str(e.value) and "FL_hip" in str(e.value)
    with pytest.raises(ValueError, match="world"):
        DomainRandomizer(quad, RandomizationConfig(push=PushConfig("world", (20, 60), 0.2, (2, 4))), 0.02)

    bare = mujoco.MjModel.from_xml_string(
        """<mujoco><worldbody><body name="b"><joint name="j" type="hinge"/>
        <geom type="sphere" size="0.1" mass="1"/></body></worldbody>
        <actuator><motor name="m" joint="j"/></actuator></mujoco>"""
    )
    for cfg, message in [
        (RandomizationConfig(light=0.3), "randomize.light: the model has no lights"),
        (RandomizationConfig(camera_pos=0.01), "no cameras"),
        (RandomizationConfig(camera_rot=0.01), "no cameras"),
        (RandomizationConfig(gains=(0.9, 1.1)), "no position actuators .*actuators: m"),
        (RandomizationConfig(damping=(0.9, 1.1)), "randomize.damping: no joint"),
        (RandomizationConfig(armature=(0.9, 1.1)), "randomize.armature: no joint"),
    ]:
        with pytest.raises(ValueError, match=message):
            DomainRandomizer(bare, cfg, 0.02)
    with pytest.raises(ValueError, match="control_dt"):
        DomainRandomizer(bare, RandomizationConfig(), 0.0)


# ---------------------------------------------------------------------------------------------- model fields


def test_same_seed_same_model_different_seed_different() -> None:
    cfg = parse_randomization(ARM_CFG)
    assert cfg is not None
    models = [_arm_scene() for _ in range(3)]
    rands = [DomainRandomizer(m, cfg, 0.1) for m in models]
    params = [r.reset(np.random.default_rng(s)) for r, s in zip(rands, (7, 7, 8), strict=True)]
    assert params[0] == params[1] != params[2]
    for field in TOUCHED:
        a, b, c = (getattr(m, field) for m in models)
        assert np.array_equal(a, b), field
        if field not in ("dof_M0", "cam_mat0"):  # not every derived field necessarily moves
            assert not np.array_equal(a, c), field
    json.dumps(params[0])
    _assert_plain(params[0])
    assert params[0] == rands[0].sim_params
    assert set(params[0]) == {
        "friction_scale", "mass_scale", "com_offset", "damping_scale", "armature_scale", "gain_scale",
        "latency_steps", "obs_noise_std", "camera", "light", "colors",
    }  # fmt: skip

    quad_cfg = RandomizationConfig(mass=(0.9, 1.1), gains=(0.9, 1.1), push=PushConfig(**QUAD_PUSH))
    quads = [_load("quad12") for _ in range(2)]
    p = [DomainRandomizer(q, quad_cfg, 0.02).reset(np.random.default_rng(3)) for q in quads]
    assert p[0] == p[1] and p[0]["push"] == {"body": "trunk", "force": [20.0, 60.0], "duration": 0.2,
                                             "interval": [2.0, 4.0]}  # fmt: skip
    assert np.array_equal(quads[0].body_mass, quads[1].body_mass)


def test_disabled_config_and_restore_give_exact_nominal() -> None:
    nominal = _all_arrays(_arm_scene())
    model = _arm_scene()
    off = DomainRandomizer(model, RandomizationConfig(), 0.1)
    assert off.reset(np.random.default_rng(0)) == {} and off.latency_steps == 0
    full = DomainRandomizer(model, parse_randomization(ARM_CFG), 0.1)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    for _ in range(5):
        full.reset(rng)
    assert not np.array_equal(model.body_mass, nominal["body_mass"])
    full.restore()
    after = _all_arrays(model)
    changed = [k for k, v in nominal.items() if not np.array_equal(v, after[k], equal_nan=True)]
    assert changed == []


def test_ranges_respected_and_resets_do_not_compound() -> None:
    model = _arm_scene()
    nom = _all_arrays(model)
    cfg = parse_randomization(ARM_CFG)
    assert cfg is not None
    dr = DomainRandomizer(model, cfg, 0.1)
    rng = np.random.default_rng(0)
    massive = np.flatnonzero(nom["body_mass"] > 0)
    plain = np.flatnonzero(model.geom_matid < 0)
    with_mat = np.flatnonzero(model.geom_matid >= 0)
    friction_scales, mass_scales, latencies = [], [], set()
    for _ in range(150):
        p = dr.reset(rng)
        f = model.geom_friction[:, 0] / nom["geom_friction"][:, 0]
        assert np.allclose(f, f[0]) and 0.8 <= f[0] <= 1.2 and math.isclose(p["friction_scale"], f[0])
        assert np.array_equal(model.geom_friction[:, 1:], nom["geom_friction"][:, 1:])
        friction_scales.append(f[0])

        s = model.body_mass[massive] / nom["body_mass"][massive]
        assert np.all((s >= 0.9) & (s <= 1.1)) and model.body_mass[0] == 0
        assert np.allclose(model.body_inertia[massive], nom["body_inertia"][massive] * s[:, None])
        assert set(p["mass_scale"]) >= {"link1", "finger_left", "cube", "block"}
        assert math.isclose(p["mass_scale"]["cube"], model.body("cube").mass[0] / 0.1)
        assert math.isclose(model.body_subtreemass[0], model.body_mass.sum())  # mj_setConst was run
        mass_scales.extend(s)

        assert np.abs(model.body_ipos - nom["body_ipos"]).max() <= 0.005
        assert set(p["com_offset"]) >= {"link1", "block"} and "cube" not in p["com_offset"]
        assert np.array_equal(model.body("cube").ipos, nom["body_ipos"][model.body("cube").id])  # simple body
        assert np.allclose(model.body("block").ipos, p["com_offset"]["block"])
        for field in ("dof_damping", "dof_armature"):
            nz = nom[field] > 0
            r = getattr(model, field)[nz] / nom[field][nz]
            assert np.all((r >= 0.8) & (r <= 1.2)) and np.all(getattr(model, field)[~nz] == 0), field
        assert set(p["damping_scale"]) == {"shoulder_pan", "shoulder_lift", "elbow", "forearm_roll", "wrist_pitch",
                                           "wrist_roll", "finger_left", "finger_right"}  # fmt: skip

        kp = model.actuator_gainprm[:, 0]
        assert np.all((kp / nom["actuator_gainprm"][:, 0] >= 0.9) & (kp / nom["actuator_gainprm"][:, 0] <= 1.1))
        assert np.array_equal(model.actuator_biasprm[:, 1], -kp)
        assert np.array_equal(model.actuator_biasprm[:, 2], nom["actuator_biasprm"][:, 2])  # kv unchanged
        assert p["latency_steps"] in (0, 1) and dr.latency_steps == p["latency_steps"]
        latencies.add(dr.latency_steps)

        assert np.abs(model.cam_pos - nom["cam_pos"]).max() <= 0.01
        assert np.allclose(np.linalg.norm(model.cam_quat, axis=1), 1.0)
        dots = np.clip(np.abs(np.sum(model.cam_quat * nom["cam_quat"], axis=1)), 0, 1)
        assert np.all(2 * np.arccos(dots) <= 0.03 + 1e-9)

        ratio = model.light_diffuse / nom["light_diffuse"]
        assert np.all((ratio >= 0.7 - 1e-6) & (ratio <= 1.3 + 1e-6))
        assert np.abs(model.light_pos - nom["light_pos"]).max() <= 0.15 + 1e-9

        rgb = model.geom_rgba[plain, :3]
        assert np.abs(rgb - nom["geom_rgba"][plain, :3]).max() <= 0.1 + 1e-6 and rgb.min() >= 0 and rgb.max() <= 1
        assert np.array_equal(model.geom_rgba[:, 3], nom["geom_rgba"][:, 3])
        assert np.array_equal(model.geom_rgba[with_mat], nom["geom_rgba"][with_mat])  # material colours them
        assert np.abs(model.mat_rgba[:, :3] - nom["mat_rgba"][:, :3]).max() <= 0.1 + 1e-6
        assert set(p["colors"]["material_rgb_offset"]) == {"floor", "table", "cube_mat"}
        assert "block" in p["colors"]["geom_rgb_offset"] and "cube" not in p["colors"]["geom_rgb_offset"]

    # no compounding: the sample means stay at the centre of the ranges, and both ends are reached
    assert abs(np.mean(friction_scales) - 1.0) < 0.03 and min(friction_scales) < 0.82 < 1.18 < max(friction_scales)
    assert abs(np.mean(mass_scales) - 1.0) < 0.01
    assert latencies == {0, 1}


def test_camera_pose_changes_with_unit_quaternion() -> None:
    model = _load("arm6")
    pos0, quat0 = model.cam_pos.copy(), model.cam_quat.copy()
    dr = DomainRandomizer(model, RandomizationConfig(camera_pos=0.01, camera_rot=0.05), 0.1)
    p = dr.reset(np.random.default_rng(0))
    assert set(p) == {"camera"} and set(p["camera"]) == {"front_cam", "wrist_cam"}
    for i, name in enumerate(("front_cam", "wrist_cam")):
        cid = model.camera(name).id
        assert not np.array_equal(model.cam_pos[cid], pos0[cid])
        assert not np.allclose(model.cam_quat[cid], quat0[cid])
        assert math.isclose(np.linalg.norm(model.cam_quat[cid]), 1.0, rel_tol=1e-12)
        assert np.allclose(model.cam_pos[i] - pos0[i], p["camera"][name]["pos_offset"])
        angle = float(np.linalg.norm(p["camera"][name]["rot"]))
        dot = min(1.0, abs(float(np.dot(model.cam_quat[cid], quat0[cid]))))
        assert math.isclose(2 * math.acos(dot), angle, abs_tol=1e-6) and angle <= 0.05


# ---------------------------------------------------------------------------------------------- per step


def test_latency_queue_semantics() -> None:
    model = _load("arm6")
    dr = DomainRandomizer(model, RandomizationConfig(latency=(2, 2)), 0.1)
    assert dr.reset(np.random.default_rng(0)) == {"latency_steps": 2}
    actions = [np.full(3, float(i)) for i in range(6)]
    out = [dr.delay(a)[0] for a in actions]
    assert out == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]
    actions[4][:] = -1  # the queue holds copies
    assert dr.delay(np.zeros(3))[0] == 4.0
    dr.reset(np.random.default_rng(0))  # clears the queue
    assert dr.delay(np.full(3, 9.0))[0] == 9.0 and dr.delay(np.full(3, 10.0))[0] == 9.0

    off = DomainRandomizer(model, RandomizationConfig(), 0.1)
    off.reset(np.random.default_rng(0))
    assert off.latency_steps == 0 and [off.delay(a)[0] for a in actions[:3]] == [0.0, 1.0, 2.0]

    ranged = DomainRandomizer(model, RandomizationConfig(latency=(0, 3)), 0.1)
    rng = np.random.default_rng(0)
    assert {ranged.reset(rng)["latency_steps"] for _ in range(100)} == {0, 1, 2, 3}


def test_obs_noise_statistics() -> None:
    model = _load("arm6")
    dr = DomainRandomizer(model, RandomizationConfig(obs_noise=0.01), 0.1)
    assert dr.reset(np.random.default_rng(0)) == {"obs_noise_std": 0.01}
    state = np.linspace(-1, 1, 200_000, dtype=np.float32)
    noisy = dr.noisy(state, np.random.default_rng(1))
    assert noisy.dtype == np.float32 and noisy.shape == state.shape
    err = noisy.astype(np.float64) - state
    assert abs(err.mean()) < 1e-4 and abs(err.std() - 0.01) < 3e-4
    assert np.array_equal(noisy, dr.noisy(state, np.random.default_rng(1)))

    off = DomainRandomizer(model, RandomizationConfig(), 0.1)
    rng = np.random.default_rng(2)
    before = rng.bit_generator.state
    assert off.noisy(state, rng) is state and rng.bit_generator.state == before


def _quad_trunk_excursion(push: PushConfig | None, seed: int) -> tuple[float, list[int], list[float]]:
    """Max trunk xy excursion [m] over 2 s with the servos holding the home pose; push lengths [steps] and forces."""
    model = _load("quad12")
    data = mujoco.MjData(model)
    control_dt, substeps = 0.02, 10
    dr = DomainRandomizer(model, RandomizationConfig(push=push), control_dt)
    rng = np.random.default_rng(seed)
    dr.reset(rng)
    key = model.key("home")
    mujoco.mj_resetDataKeyframe(model, data, key.id)
    data.ctrl[:] = key.ctrl
    trunk = model.body("trunk").id
    for _ in range(25 * substeps):  # settle onto the floor first
        mujoco.mj_step(model, data)
    x0, t0 = data.xpos[trunk, :2].copy(), data.time
    excursion, lengths, forces, active = 0.0, [], [], 0
    for _ in range(100):
        dr.apply_push(data, data.time - t0, rng)
        f = data.xfrc_applied[trunk]
        assert np.array_equal(f[:3], dr.push_force) and f[2] == 0 and np.all(f[3:] == 0)
        if f.any():
            if active == 0:
                forces.append(float(np.linalg.norm(f[:3])))
            active += 1
        elif active:
            lengths.append(active)
            active = 0
        for _ in range(substeps):
            mujoco.mj_step(model, data)
        excursion = max(excursion, float(np.linalg.norm(data.xpos[trunk, :2] - x0)))
    assert data.xpos[trunk, 2] > 0.2  # still standing
    return excursion, lengths, forces


def test_pushes_move_the_quad12_trunk() -> None:
    still, lengths, _ = _quad_trunk_excursion(None, 0)
    assert lengths == [] and still < 0.005
    push = PushConfig(body="trunk", force=(20, 60), duration=0.2, interval=(0.2, 0.4))
    for seed in (0, 1):
        pushed, lengths, forces = _quad_trunk_excursion(push, seed)
        assert pushed > 0.015 and pushed > 5 * still, (pushed, still)
        assert len(lengths) >= 2 and all(n == 10 for n in lengths)  # 0.2 s at 50 Hz
        assert all(20 - 1e-9 <= f <= 60 + 1e-9 for f in forces)


def test_mass_and_com_changes_act_in_the_dynamics() -> None:
    """mj_setConst inside reset: a simple free body's mass matrix follows its new mass; a moved CoM is used."""
    model = _arm_scene()
    data = mujoco.MjData(model)
    dr = DomainRandomizer(model, RandomizationConfig(mass=(1.5, 2.0), com=0.01), 0.1)
    p = dr.reset(np.random.default_rng(0))
    mujoco.mj_resetData(model, data)
    mujoco.mj_forward(model, data)
    for name, nominal in (("cube", 0.1), ("block", 0.2)):
        body = model.body(name)
        unit, row = np.zeros(model.nv), np.zeros(model.nv)
        unit[model.jnt_dofadr[body.jntadr[0]]] = 1.0  # x translation of the free joint
        mujoco.mj_mulM(model, data, row, unit)
        assert math.isclose(row @ unit, body.mass[0]) and math.isclose(body.mass[0], nominal * p["mass_scale"][name])
    block = model.body("block").id
    assert np.allclose(data.xipos[block] - data.xpos[block], p["com_offset"]["block"])
