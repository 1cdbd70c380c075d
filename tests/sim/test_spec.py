"""Robot specs load, agree with their MJCF models, and the models hold their default poses under real physics."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from realloop.sim import CONTROL_MODES, RobotSpec, RobotSpecError, load_robot_spec
from realloop.sim.mjcf import check_against_model
from realloop.sim.render import off_axis_deg

ROOT = Path(__file__).resolve().parents[2]


def _model(spec: RobotSpec) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(spec.mjcf))


def _home(spec: RobotSpec, model: mujoco.MjModel) -> mujoco.MjData:
    """Data at the home keyframe with every position actuator commanding the spec's default pose."""
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key(spec.home_keyframe).id)
    for j in spec.joints:
        data.ctrl[model.actuator(j.name).id] = spec.default_pose[j.name]
    if spec.gripper is not None:
        data.ctrl[model.actuator(spec.gripper.actuator).id] = spec.gripper.default
    mujoco.mj_forward(model, data)
    return data


@pytest.mark.parametrize("name", ["arm6", "quad12"])
def test_spec_loads_and_agrees_with_mjcf(name: str) -> None:
    spec = load_robot_spec(name)
    assert spec.mjcf == (ROOT / "sim" / "models" / f"{name}.xml").resolve()
    assert spec.source == ROOT / "configs" / "robot" / f"{name}.yaml"
    assert set(spec.control_modes) <= set(CONTROL_MODES)
    model = _model(spec)
    check_against_model(spec, model)  # raises on any mismatch
    assert model.opt.timestep == pytest.approx(0.002)
    for j in spec.joints:
        jid = model.joint(j.name).id
        assert model.jnt_limited[jid]
        np.testing.assert_allclose(model.jnt_range[jid], [j.lower, j.upper])
        assert model.dof_damping[model.jnt_dofadr[jid]] > 0
        assert model.dof_armature[model.jnt_dofadr[jid]] > 0
    # loading by path gives the same spec; the YAML is plain (omegaconf-compatible) data
    assert load_robot_spec(spec.source) == spec
    assert isinstance(yaml.safe_load(spec.source.read_text()), dict)


def test_arm6_spec_details() -> None:
    spec = load_robot_spec("arm6")
    assert len(spec.joints) == 6 and spec.control_rate_hz == 10
    assert spec.control_modes == ("joint_position", "joint_delta", "ee_delta")
    assert spec.gripper is not None and spec.gripper.joints == ("finger_left", "finger_right")
    assert {c.mount for c in spec.cameras} == {"front_cam", "wrist_cam"}
    assert spec.command.controller == "arm_controller"
    model = _model(spec)
    # the wrist camera rides on the last link
    assert model.cam_bodyid[model.camera("wrist_cam").id] == model.body("link6").id
    # and sees the point between the fingertips (the grasp point) inside its field of view
    data = _home(spec, model)
    off_axis = off_axis_deg(model, data, "wrist_cam", data.site("ee_site").xpos)
    assert off_axis < model.cam_fovy[model.camera("wrist_cam").id] / 2 - 5  # margin for the randomised camera pose
    arm_mass = sum(model.body(f"link{i}").mass[0] for i in range(1, 7))
    assert all(0.3 <= model.body(f"link{i}").mass[0] <= 2.0 for i in range(1, 7))
    assert 4.0 <= arm_mass <= 10.0
    assert np.all(model.body_inertia[1:] > 0)


def test_quad12_spec_details() -> None:
    spec = load_robot_spec("quad12")
    assert len(spec.joints) == 12 and spec.control_rate_hz == 50
    assert spec.control_modes == ("joint_position", "joint_delta")
    model = _model(spec)
    total = model.body_subtreemass[model.body("trunk").id]
    assert 8.0 <= total <= 20.0
    assert 10.0 <= model.body("trunk").mass[0] <= 15.0
    for sensor in ("imu_acc", "imu_gyro", "imu_quat", "FL_touch", "FR_touch", "RL_touch", "RR_touch"):
        assert model.sensor(sensor).id >= 0
    assert model.camera("head_cam").id >= 0


def test_quad12_stands_under_pd() -> None:
    spec = load_robot_spec("quad12")
    model = _model(spec)
    data = _home(spec, model)
    trunk = model.body("trunk").id
    h0 = data.xpos[trunk][2]
    heights = []
    for _ in range(int(2.0 / model.opt.timestep)):
        mujoco.mj_step(model, data)
        heights.append(data.xpos[trunk][2])
    heights = np.asarray(heights)
    assert np.all(np.abs(heights - h0) <= 0.2 * h0), (h0, heights.min(), heights.max())
    assert data.xmat[trunk][8] > 0.95  # trunk z axis still points up
    touch = np.array([data.sensor(f"{leg}_touch").data[0] for leg in ("FL", "FR", "RL", "RR")])
    assert np.all(touch > 0)  # all four feet on the ground
    assert touch.sum() == pytest.approx(model.body_subtreemass[trunk] * 9.81, rel=0.1)


def test_arm6_holds_default_pose_under_gravity() -> None:
    spec = load_robot_spec("arm6")
    model = _model(spec)
    data = _home(spec, model)
    ee = model.site(spec.ee_site).id
    p0 = data.site_xpos[ee].copy()
    assert p0[2] > 0.05  # above the table
    drift = 0.0
    for _ in range(int(2.0 / model.opt.timestep)):
        mujoco.mj_step(model, data)
        drift = max(drift, float(np.linalg.norm(data.site_xpos[ee] - p0)))
    assert drift < 0.02
    fingers = [data.joint(n).qpos[0] for n in spec.gripper.joints]
    assert fingers == pytest.approx([spec.gripper.default] * 2, abs=2e-3)


def test_arm6_gripper_fingers_are_coupled() -> None:
    spec = load_robot_spec("arm6")
    model = _model(spec)
    data = _home(spec, model)
    data.ctrl[model.actuator(spec.gripper.actuator).id] = 0.01
    for _ in range(300):
        mujoco.mj_step(model, data)
    left, right = (data.joint(n).qpos[0] for n in spec.gripper.joints)
    assert left == pytest.approx(0.01, abs=2e-3) and right == pytest.approx(left, abs=1e-3)


# ------------------------------------------------------------------------------------------- bad specs


def _load_checked(path: Path) -> RobotSpec:
    spec = load_robot_spec(path)
    check_against_model(spec, _model(spec))
    return spec


def _write(tmp_path: Path, raw: dict, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def arm_raw() -> dict:
    raw = yaml.safe_load((ROOT / "configs" / "robot" / "arm6.yaml").read_text())
    raw["mjcf"] = str(ROOT / "sim" / "models" / "arm6.xml")
    return raw


def test_bad_limits(tmp_path: Path, arm_raw: dict) -> None:
    arm_raw["joints"][1]["position"] = [1.0, 1.0]
    with pytest.raises(
        RobotSpecError, match=r"joints\[1\] \(shoulder_lift\)\.position: position limits lo \(1\) >= hi"
    ):
        load_robot_spec(_write(tmp_path, arm_raw))


def test_unknown_control_mode(tmp_path: Path, arm_raw: dict) -> None:
    arm_raw["control_modes"] = ["joint_position", "torque_magic"]
    with pytest.raises(RobotSpecError, match="unknown control mode 'torque_magic'"):
        load_robot_spec(_write(tmp_path, arm_raw))


def test_missing_key(tmp_path: Path, arm_raw: dict) -> None:
    del arm_raw["control_rate_hz"]
    with pytest.raises(RobotSpecError, match=r"bad\.yaml: top level: missing key\(s\) control_rate_hz"):
        load_robot_spec(_write(tmp_path, arm_raw))
    del arm_raw["joints"][0]["effort"]
    arm_raw["control_rate_hz"] = 10
    with pytest.raises(RobotSpecError, match=r"joints\[0\]: missing key\(s\) effort"):
        load_robot_spec(_write(tmp_path, arm_raw))


def test_default_pose_outside_limits(tmp_path: Path, arm_raw: dict) -> None:
    arm_raw["default_pose"]["elbow"] = 3.0
    with pytest.raises(RobotSpecError, match=r"default_pose\.elbow: 3 is outside"):
        load_robot_spec(_write(tmp_path, arm_raw))


def test_joint_missing_in_mjcf(tmp_path: Path, arm_raw: dict) -> None:
    arm_raw["joints"][2]["name"] = "elbow_typo"
    arm_raw["default_pose"]["elbow_typo"] = arm_raw["default_pose"].pop("elbow")
    spec = load_robot_spec(_write(tmp_path, arm_raw))  # valid on its own
    with pytest.raises(RobotSpecError, match="joint 'elbow_typo' is not in the MJCF"):
        check_against_model(spec, _model(spec))


def test_mismatches_with_mjcf_are_all_reported(tmp_path: Path, arm_raw: dict) -> None:
    arm_raw["joints"][0]["position"] = [-3.0, 3.0]
    arm_raw["joints"][3]["effort"] = 99.0
    arm_raw["cameras"][0]["mount"] = "no_such_cam"
    arm_raw["control_rate_hz"] = 7
    with pytest.raises(RobotSpecError) as err:
        _load_checked(_write(tmp_path, arm_raw))
    msg = str(err.value)
    assert "shoulder_pan': spec position limits [-3.0, 3.0] != MJCF range [-2.9, 2.9]" in msg
    assert "forearm_roll': spec effort limit 99.0 != MJCF actuator forcerange 12" in msg
    assert "mount 'no_such_cam' is not a camera in the MJCF" in msg
    assert "control_rate_hz 7.0 is not an integer divisor" in msg


def test_unknown_robot_name() -> None:
    with pytest.raises(RobotSpecError, match=r"unknown robot 'nope'.*known robots: arm6, quad12"):
        load_robot_spec("nope")


def test_user_mjcf_relative_to_spec_file(tmp_path: Path) -> None:
    """A user's own MJCF plugs in through a spec next to it (mjcf relative to the YAML's folder)."""
    (tmp_path / "pendulum.xml").write_text(
        """<mujoco><compiler angle="radian"/><worldbody><body><joint name="hinge" axis="0 1 0" range="-1 1"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.3" size="0.02" mass="0.5"/></body></worldbody>
        <actuator><position joint="hinge" kp="10" forcerange="-2 2"/></actuator></mujoco>"""
    )
    raw = {
        "name": "pendulum",
        "mjcf": "pendulum.xml",
        "joints": [{"name": "hinge", "position": [-1, 1], "velocity": 5, "effort": 2}],
        "control_modes": ["joint_position"],
        "control_rate_hz": 50,
        "default_pose": {"hinge": 0.0},
        "command": {"controller": "pendulum_controller"},
    }
    spec = _load_checked(_write(tmp_path, raw, "pendulum.yaml"))
    assert spec.mjcf == (tmp_path / "pendulum.xml").resolve() and spec.cameras == ()
