"""The quadruped's scripted trot (sim/experts/gait.py) walks QuadWalkEnv at its command, and the env judges it."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import realloop.sim  # noqa: F401  (registers the gymnasium ids)
from realloop.sim.envs.quadruped import QuadWalkEnv
from realloop.sim.experts import make_expert
from realloop.sim.experts.gait import GaitExpert

STEPS = 500  # the registered episode: 10 s at 50 Hz
WARMUP_STEPS = 50


def _env(command: tuple[float, float, float] | None = None, **kwargs: Any) -> gym.Env:
    env = gym.make("realloop/QuadWalk-v0", **kwargs)
    if command is not None:  # a fixed command: the sampling range collapsed to one point on this instance
        env.unwrapped.command_low = env.unwrapped.command_high = np.array(command)
    return env


def _heading(env: QuadWalkEnv) -> float:
    m = env.data.xmat[env.model.body("trunk").id].reshape(3, 3)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def _rollout(env: gym.Env, seed: int, steps: int = STEPS) -> dict[str, Any]:
    """One expert episode; trunk position and unwrapped heading at the end of the warmup and at the end."""
    task: QuadWalkEnv = env.unwrapped
    expert = make_expert(env)
    obs, _ = env.reset(seed=seed)
    expert.reset(np.random.default_rng(seed))
    trunk = task.model.body("trunk").id
    actions, heading, prev = [], 0.0, _heading(task)
    terminated = truncated = False
    info: dict[str, Any] = {}
    for t in range(steps):
        action = expert.act(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        h = _heading(task)
        heading += (h - prev + np.pi) % (2 * np.pi) - np.pi
        prev = h
        if t + 1 == WARMUP_STEPS:
            start = (task.data.xpos[trunk].copy(), heading)
        if terminated or truncated:
            break
    return {
        "actions": np.array(actions),
        "terminated": terminated,
        "truncated": truncated,
        "info": info,
        "start": start,
        "end": (task.data.xpos[trunk].copy(), heading),
        "command": task.command.copy(),
        "state": obs["observation.state"],
    }


def _assert_walked(env: gym.Env, run: dict[str, Any]) -> None:
    task: QuadWalkEnv = env.unwrapped
    assert not run["terminated"] and run["truncated"], "the robot fell"
    assert run["info"]["is_success"], run["info"]
    assert run["info"]["mean_velocity_error"] < task.tolerance
    assert run["info"]["mean_yaw_rate_error"] < task.yaw_tolerance
    assert all(env.action_space.contains(a) for a in run["actions"])


def test_expert_is_the_gait() -> None:
    env = _env()
    assert isinstance(make_expert(env), GaitExpert)
    assert env.unwrapped.render_camera == "track" and env.unwrapped.model.camera("track").id >= 0


@pytest.mark.parametrize("command", [(0.5, 0.0, 0.0), (0.3, 0.2, 0.0), (0.8, -0.1, 0.0)])
def test_gait_moves_by_command_times_time(command: tuple[float, float, float]) -> None:
    env = _env(command)
    run = _rollout(env, seed=1)
    _assert_walked(env, run)
    (p0, _), (p1, _) = run["start"], run["end"]
    expected = np.array(command[:2]) * (STEPS - WARMUP_STEPS) * env.unwrapped.robot.control_dt
    # the heading drifts a few degrees at most, so world displacement ~ trunk-frame command x time
    assert np.linalg.norm(p1[:2] - p0[:2] - expected) < 0.1 * np.linalg.norm(expected) + 0.1, (p1 - p0, expected)


def test_gait_turns_at_the_commanded_yaw_rate() -> None:
    env = _env((0.4, 0.0, -0.5))
    run = _rollout(env, seed=2)
    _assert_walked(env, run)
    turned = run["end"][1] - run["start"][1]
    expected = -0.5 * (STEPS - WARMUP_STEPS) * env.unwrapped.robot.control_dt
    assert turned == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize(("control_mode", "seed"), [("joint_position", 0), ("joint_position", 3), ("joint_delta", 4)])
def test_gait_tracks_sampled_commands(control_mode: str, seed: int) -> None:
    env = _env(control_mode=control_mode)
    run = _rollout(env, seed)
    task: QuadWalkEnv = env.unwrapped
    assert np.all(run["command"] >= task.command_low) and np.all(run["command"] <= task.command_high)
    _assert_walked(env, run)


def test_joint_delta_mode_walks_like_joint_position() -> None:
    runs = [_rollout(_env(control_mode=mode), seed=5, steps=100) for mode in ("joint_position", "joint_delta")]
    assert not any(r["terminated"] for r in runs)
    np.testing.assert_allclose(runs[0]["state"], runs[1]["state"], atol=1e-3)


def test_gait_is_deterministic_per_seed() -> None:
    env = _env()
    a, b, c = (_rollout(env, seed, steps=60) for seed in (7, 7, 8))
    np.testing.assert_array_equal(a["actions"], b["actions"])
    np.testing.assert_array_equal(a["state"], b["state"])
    assert not np.array_equal(a["actions"], c["actions"])


def test_standing_still_is_not_success() -> None:
    env = _env((0.2, 0.0, 0.0))
    env.reset(seed=0)
    default = env.unwrapped.robot.default_q.astype(np.float32)
    for _ in range(100):
        _, _, terminated, _, info = env.step(default)
        assert not terminated
    assert not info["is_success"] and info["mean_velocity_error"] > 0.15


def test_collapsed_pose_terminates() -> None:
    env = _env()
    env.reset(seed=0)
    collapse = np.tile(np.array([0.0, 3.0, -0.6], dtype=np.float32), 4)  # legs swung up and back: a fault
    steps, terminated = 0, False
    while not terminated and steps < 100:
        _, reward, terminated, _, info = env.step(collapse)
        steps += 1
    assert terminated, "the env did not notice the robot fell"
    assert steps <= 50 and not info["is_success"] and reward < 1.0
