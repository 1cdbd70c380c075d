"""The gymnasium tasks: API conformance, determinism, action modes, vector envs, rendering, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import realloop.sim  # noqa: F401  (registers the ids)
from realloop.sim.control import EEDelta, ee_delta_as
from realloop.sim.envs import ENV_STATE, IMAGES, STATE, TASKS, ArmLiftEnv

ARM_TASKS = [t for t in TASKS if "/Arm" in t]


def _rollout(env: gym.Env, seed: int, steps: int) -> list[dict]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
        out.append(obs)
    return out


@pytest.mark.parametrize("task", list(TASKS))
def test_env_checker_passes(task: str) -> None:
    env = gym.make(task)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert STATE in obs and ENV_STATE in obs and "is_success" in info
    assert len(env.unwrapped.state_names) == obs[STATE].shape[0]
    assert len(env.unwrapped.env_state_names) == obs[ENV_STATE].shape[0]
    env.close()


@pytest.mark.parametrize("task", list(TASKS))
def test_same_seed_same_rollout(task: str) -> None:
    a, b = gym.make(task), gym.make(task)
    ra, rb = _rollout(a, 3, 10), _rollout(b, 3, 10)
    for oa, ob in zip(ra, rb, strict=True):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])
    rc = _rollout(a, 4, 10)
    assert not all(np.array_equal(x[ENV_STATE], y[ENV_STATE]) for x, y in zip(ra, rc, strict=True))


def test_control_rate_and_truncation() -> None:
    env = gym.make("realloop/ArmReach-v0", max_episode_steps=3)
    u = env.unwrapped
    assert u.robot.n_substeps == 50 and u.robot.control_dt == pytest.approx(0.1)
    env.reset(seed=0)
    hold = np.zeros(7, np.float32)
    hold[-1] = 0.04
    for i in range(3):
        _, _, terminated, truncated, _ = env.step(hold)
        assert u.data.time == pytest.approx(0.1 * (i + 1))
        assert not terminated and truncated == (i == 2)
    quad = gym.make("realloop/QuadWalk-v0").unwrapped
    assert quad.robot.n_substeps == 10 and quad.metadata["render_fps"] == 50


def test_joint_position_and_delta_modes_track_targets() -> None:
    env = gym.make("realloop/ArmReach-v0", control_mode="joint_position").unwrapped
    env.reset(seed=0)
    target = env.robot.default_q + np.array([0.3, -0.2, 0.2, 0.4, -0.3, 0.5])
    for _ in range(15):
        env.step(np.append(target, 0.0).astype(np.float32))
    np.testing.assert_allclose(env.robot.joint_positions(), target, atol=0.02)
    assert env.robot.gripper_opening() < 0.005  # closed on command
    assert env.action_mode.names[-1] == "gripper"

    env = gym.make("realloop/ArmReach-v0", control_mode="joint_delta").unwrapped
    env.reset(seed=0)
    step = env.action_space.high[:6]
    for _ in range(3):
        env.step(np.append(0.5 * step, 0.04).astype(np.float32))
    # set-point integration: targets moved by exactly 3 half steps
    np.testing.assert_allclose(env.robot.joint_targets(), env.robot.default_q + 1.5 * step, atol=1e-6)
    # an action beyond the velocity limit (velocity x period) is clipped, never faster
    before = env.robot.joint_targets()
    env.step(np.append(-10 * step, 0.04).astype(np.float32))
    np.testing.assert_allclose(env.robot.joint_targets() - before, -step, atol=1e-6)


def test_ee_delta_moves_the_end_effector_by_the_delta() -> None:
    env = gym.make("realloop/ArmReach-v0", control_mode="ee_delta").unwrapped
    env.reset(seed=0)
    p0, _ = env.robot.ee_pose()
    up = np.array([0.0, 0.0, 0.03, 0.0, 0.0, 0.0, 0.04], np.float32)
    for _ in range(3):
        env.step(up)
    for _ in range(5):  # let the servos settle
        env.step(np.array([0, 0, 0, 0, 0, 0, 0.04], np.float32))
    p1, _ = env.robot.ee_pose()
    np.testing.assert_allclose(p1 - p0, [0, 0, 0.09], atol=0.006)
    # the IK target itself is exact (set-point based): forward kinematics of the targets
    ee = EEDelta(env.robot)
    pos_t, _ = ee.forward(env.robot.joint_targets())
    np.testing.assert_allclose(pos_t - p0, [0, 0, 0.09], atol=1e-3)
    # a yaw delta rotates the gripper about the world z axis
    yaw = np.array([0, 0, 0, 0, 0, 0.2, 0.04], np.float32)
    m0 = env.data.site_xmat[env.robot.ee_site_id].reshape(3, 3).copy()
    for _ in range(2):
        env.step(yaw)
    for _ in range(5):
        env.step(np.array([0, 0, 0, 0, 0, 0, 0.04], np.float32))
    m1 = env.data.site_xmat[env.robot.ee_site_id].reshape(3, 3)
    rel = m1 @ m0.T
    assert np.arctan2(rel[1, 0], rel[0, 0]) == pytest.approx(0.4, abs=0.03)


def test_ee_delta_workspace_clips_the_target_and_keeps_the_in_box_part() -> None:
    """A step down and sideways from 1 cm above a floor: the target stops at the floor, the sideways part goes."""
    env = gym.make("realloop/ArmReach-v0", control_mode="ee_delta").unwrapped
    env.reset(seed=0)
    ee = env.action_mode
    p0, _ = ee.forward(env.robot.joint_targets())
    floor = p0[2] - 0.01
    ee.set_workspace([0.0, -1.0, floor], [1.0, 1.0, 1.0])
    q, _ = ee.targets(np.array([0.0, 0.02, -0.04, 0, 0, 0, 0.04], np.float32))
    p1, _ = ee.forward(q)
    assert p1[2] == pytest.approx(floor, abs=1e-3) and p1[1] - p0[1] == pytest.approx(0.02, abs=1e-3)
    ee.set_workspace(None, None)  # no box: the whole step
    q, _ = ee.targets(np.array([0.0, 0.02, -0.04, 0, 0, 0, 0.04], np.float32))
    assert ee.forward(q)[0][2] == pytest.approx(p0[2] - 0.04, abs=1e-3)
    with pytest.raises(ValueError, match="must be < max"):
        ee.set_workspace([0.0, 0.0, 0.5], [1.0, 1.0, 0.2])


def test_ee_delta_as_joint_actions_gives_the_same_targets() -> None:
    a = gym.make("realloop/ArmReach-v0", control_mode="ee_delta").unwrapped
    b = gym.make("realloop/ArmReach-v0", control_mode="joint_position").unwrapped
    c = gym.make("realloop/ArmReach-v0", control_mode="joint_delta").unwrapped
    for env in (a, b, c):
        env.reset(seed=1)
    ee_b, ee_c = EEDelta(b.robot), EEDelta(c.robot)
    action = np.array([0.02, -0.03, 0.01, 0.0, 0.1, -0.1, 0.02], np.float32)
    for _ in range(4):
        a.step(action)
        b.step(ee_delta_as(b.action_mode, ee_b, action))
        c.step(ee_delta_as(c.action_mode, ee_c, action))
    np.testing.assert_allclose(b.robot.joint_targets(), a.robot.joint_targets(), atol=1e-5)
    np.testing.assert_allclose(c.robot.joint_targets(), a.robot.joint_targets(), atol=1e-5)


def test_bad_actions_and_options_get_clear_errors() -> None:
    env = gym.make("realloop/ArmLift-v0").unwrapped
    env.reset(seed=0)
    before = env.robot.joint_targets()
    bad = np.zeros(7, np.float32)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)
    np.testing.assert_array_equal(env.robot.joint_targets(), before)  # nothing reached the robot
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        env.step(np.zeros(6, np.float32))
    with pytest.raises(ValueError, match=r"not supported by robot 'quad12'.*joint_position"):
        gym.make("realloop/QuadWalk-v0", control_mode="ee_delta")
    with pytest.raises(ValueError, match="its cameras: front, wrist"):
        gym.make("realloop/ArmLift-v0", cameras=["top"])
    with pytest.raises(ValueError, match="render_mode 'depth_array' is not supported"):
        ArmLiftEnv(render_mode="depth_array")


def test_images_and_render() -> None:
    env = gym.make(
        "realloop/ArmLift-v0", cameras=True, image_size=(64, 80), render_mode="rgb_array", render_size=(120, 160)
    )
    obs, _ = env.reset(seed=0)
    for cam in ("front", "wrist"):
        img = obs[IMAGES + cam]
        assert img.shape == (64, 80, 3) and img.dtype == np.uint8 and img.std() > 5
        assert env.observation_space[IMAGES + cam].contains(img)
    assert not np.array_equal(obs[IMAGES + "front"], obs[IMAGES + "wrist"])
    frame = env.render()
    assert frame.shape == (120, 160, 3) and frame.std() > 5
    # the wrist camera moves with the arm
    action = np.array([0.05, 0, 0, 0, 0, 0, 0.04], np.float32)
    for _ in range(3):
        obs2, *_ = env.step(action)
    assert np.abs(obs2[IMAGES + "wrist"].astype(int) - obs[IMAGES + "wrist"]).mean() > 2
    env.close()


def test_no_gl_gives_a_clear_error() -> None:
    code = (
        "import gymnasium as gym, realloop.sim\n"
        "env = gym.make('realloop/ArmReach-v0'); env.reset(seed=0)\n"  # state-only works without GL
        "env = gym.make('realloop/ArmReach-v0', cameras=['front']); env.reset(seed=0)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "MUJOCO_GL": "disable"}, capture_output=True, text=True
    )
    assert res.returncode != 0
    assert "RenderError" in res.stderr and "MUJOCO_GL=egl" in res.stderr and "images=false" in res.stderr


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs_match_single_envs(mode: str) -> None:
    vec = gym.make_vec("realloop/ArmReach-v0", num_envs=2, vectorization_mode=mode)
    obs, info = vec.reset(seed=[5, 6])
    assert obs[STATE].shape == (2, 22) and info["is_success"].shape == (2,)
    actions = np.stack([vec.single_action_space.sample() for _ in range(2)])
    obs, reward, *_ = vec.step(actions)
    assert reward.shape == (2,)
    for i, seed in enumerate([5, 6]):
        single = gym.make("realloop/ArmReach-v0")
        single.reset(seed=seed)
        o, r, *_ = single.step(actions[i])
        np.testing.assert_array_equal(o[STATE], obs[STATE][i])
        assert r == pytest.approx(reward[i])
    vec.close()


def test_dataset_features_fit_the_observations(tmp_path) -> None:
    from realloop.data import Dataset

    env = gym.make("realloop/ArmPushT-v0", cameras=["front"])
    u = env.unwrapped
    features = u.dataset_features()
    obs, _ = env.reset(seed=0)
    with Dataset.create(tmp_path / "ds.zarr", features) as ds, ds.begin_episode(task=u.task_description) as ep:
        for t in range(3):
            action = env.action_space.sample()
            nxt, reward, *_, info = env.step(action)
            sample = {**obs, "action": action, "next.reward": reward, "next.success": info["is_success"]}
            for name, value in sample.items():
                ep.add(name, t * 0.1, value)
            obs = nxt
    with Dataset.open(tmp_path / "ds.zarr") as ds:
        ep = ds.episode(0)
        assert ep.stream(STATE).data.shape == (3, len(u.state_names))
        assert ds.features[STATE].names == tuple(u.state_names)


def test_sim_params_reach_the_model() -> None:
    nominal = gym.make("realloop/ArmLift-v0").unwrapped
    env = gym.make("realloop/ArmLift-v0", randomize={"mass": [0.5, 0.6], "latency": [1, 1]}).unwrapped
    env.reset(seed=0)
    params = env.sim_params
    assert params and params["latency_steps"] == 1
    link = env.model.body("link2").id
    ratio = env.model.body_mass[link] / nominal.model.body_mass[link]
    assert 0.5 <= ratio <= 0.6
    assert nominal.sim_params == {}


def test_action_latency_applies_hold_first_then_the_delayed_action() -> None:
    env = gym.make("realloop/ArmReach-v0", control_mode="joint_delta", randomize={"latency": [2, 2]}).unwrapped
    env.reset(seed=0)
    q0 = env.robot.joint_targets()
    step = np.append(np.full(6, 0.05), 0.04).astype(np.float32)
    env.step(step)
    env.step(np.zeros(7, np.float32))
    np.testing.assert_allclose(env.robot.joint_targets(), q0)  # two control periods of latency: still holding
    env.step(np.zeros(7, np.float32))
    np.testing.assert_allclose(env.robot.joint_targets(), q0 + 0.05, atol=1e-6)  # the first action, once
    env.step(np.zeros(7, np.float32))
    np.testing.assert_allclose(env.robot.joint_targets(), q0 + 0.05, atol=1e-6)


def test_a_users_own_robot_spec_plugs_into_a_task(tmp_path) -> None:
    import yaml

    from realloop.robot.spec import load_robot_spec

    raw = yaml.safe_load(load_robot_spec("arm6").source.read_text())
    raw["name"] = "my_arm"
    raw["mjcf"] = str(load_robot_spec("arm6").mjcf)  # absolute path to the user's MJCF
    raw["cameras"] = [c for c in raw["cameras"] if c["name"] == "wrist"]
    path = tmp_path / "my_arm.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = gym.make("realloop/ArmLift-v0", robot=str(path))
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.robot.spec.name == "my_arm" and obs[ENV_STATE].shape == (12,)
    with pytest.raises(ValueError, match="its cameras: wrist"):
        gym.make("realloop/ArmLift-v0", robot=str(path), cameras=["front"])


def test_lift_state_holds_the_cube_offset_from_the_gripper_and_sets_from_the_pose_alone() -> None:
    """The last three environment-state values are cube minus end effector; a model of the task set from the
    cube's pose alone (what a perception node publishes) derives the same offset from its own robot state."""
    env = ArmLiftEnv()
    obs, _ = env.reset(seed=3)
    state = obs[ENV_STATE]
    assert env.env_state_names[-3:] == ("cube_from_ee.x", "cube_from_ee.y", "cube_from_ee.z")
    np.testing.assert_allclose(state[9:], state[:3] - env.data.site_xpos[env.robot.ee_site_id], atol=1e-6)

    model = ArmLiftEnv()
    model.reset(seed=4)  # a different cube
    model.sync_robot(env.robot.joint_positions(), gripper=env.robot.gripper_opening())
    model.set_task_state(state[:9])
    np.testing.assert_allclose(model.observation()[ENV_STATE], state, atol=1e-5)
    with pytest.raises(ValueError, match=r"cube's pose.*got 3 values"):
        model.set_task_state(state[:3])


def test_headless_backend_is_chosen_whichever_module_imports_mujoco_first() -> None:
    # a node module that imports MuJoCo before realloop.sim still renders on a machine without a display
    code = (
        "import os, realloop.robot.nodes.sim_mirror as m\n"
        "print(os.environ.get('MUJOCO_GL'))\n"
        "from realloop.sim.render import CameraRenderer\n"
        "env = m.task_model_env('arm_lift', 'joint_position', 0, None, False)\n"
        "env.reset(seed=0)\n"
        "u = env.unwrapped\n"
        "print(CameraRenderer(u.model, 48, 64).render(u.data, 'front_cam').shape)\n"
    )
    unset = ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.split("\n")
    assert lines[0] == "egl" and lines[1] == "(48, 64, 3)", res.stdout
