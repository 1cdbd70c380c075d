"""A policy trained by realloop-train drives the sim arm through the shipped sim_arm_policy graph: the policy
runner loads the checkpoint and executes its action chunks through the safety filter."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import node_env

from realloop.policies.checkpoint import load_policy, save_checkpoint
from realloop.policies.rl.residual import BASE_ACTION, ResidualPolicy
from realloop.policies.train import compose_config, train
from realloop.robot.msgs import Float64MultiArray, JointState, String
from realloop.robot.node import Node
from realloop.sim.collect import collect
from realloop.sim.collect import compose_config as collect_config

GRIPPER = "/unsafe/gripper_controller/commands"  # the runner's gripper commands, before the safety filter


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BC policy (realloop-train) on 4 scripted lift episodes."""
    tmp = tmp_path_factory.mktemp("bc")
    data = tmp / "lift.zarr"
    collect(collect_config(["task=arm_lift", "episodes=4", f"out={data}"]), progress=False)
    run = tmp / "run"
    train(
        compose_config(
            [
                "policy=bc",
                "policy.hidden_dims=[64,64]",
                f"dataset.path={data}",
                "steps=300",
                "batch_size=16",
                "val_every=0",
                "log_every=100",
                "checkpoint_every=300",
                f"out={run}",
                "device=cpu",
            ]
        ),
        progress=False,
    )
    return run


def launch_state_graph(tmp_path: Path, domain_id: int, checkpoint: Path) -> subprocess.Popen:
    """The shipped sim_arm_policy graph (no cameras) with ``checkpoint`` in the policy runner."""
    overrides = [
        f"domain_id={domain_id}",
        f"nodes.recorder.params.dataset={tmp_path / 'rec.zarr'}",
        "nodes.sim_mirror.params.seed=5",
        "nodes.sim_mirror.params.cameras=[]",
        "nodes.recorder.params.streams.wrist=null",
        "nodes.recorder.params.streams.front=null",
        "nodes.policy_runner.params.policy.kind=checkpoint",
        f"nodes.policy_runner.params.policy.path={checkpoint}",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_arm_policy", *overrides],
        cwd=tmp_path,
        env=node_env(domain_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_trained_checkpoint_runs_in_the_policy_runner(
    domain_id: int, test_node: Node, tmp_path: Path, bc_run: Path
) -> None:
    launch = launch_state_graph(tmp_path, domain_id, bc_run)
    runner: list[dict] = []
    safety: list[dict] = []
    joints: list[np.ndarray] = []
    test_node.create_subscription(
        "/policy_runner/status", String, lambda m: runner.append(json.loads(m.data)), qos="latched"
    )
    test_node.create_subscription("/safety/status", String, lambda m: safety.append(json.loads(m.data)), qos="latched")
    test_node.create_subscription("/joint_states", JointState, lambda m: joints.append(np.array(m.position)))
    gripper: list[float] = []
    test_node.create_subscription(GRIPPER, Float64MultiArray, lambda m: gripper.append(float(m.data[0])))
    try:
        # 3 chunks of 8 actions: the runner predicted, executed chunks on time, and kept going
        # a status per chunk; under load, late actions are dropped, so wait on executed steps, not on chunks
        ok = test_node.spin_until(lambda: bool(runner) and runner[-1]["steps"] >= 16, 120)
    finally:
        launch.send_signal(signal.SIGINT)
        out, _ = launch.communicate(timeout=60)
    assert ok, out[-3000:]
    status = runner[-1]
    assert status["state"] in ("running", "success") and status["steps"] >= 16, status
    assert status["inference_ms_mean"] is not None and status["inference_ms_mean"] < 1000
    # its commands went through the safety filter (a policy this small may also earn rejections, counted there)
    assert safety and safety[-1]["counters"]["accepted"] > 0, safety[-1:]
    moved = np.abs(joints[-1][:6] - joints[0][:6]).max()
    assert moved > 0.01, f"the arm did not move under the learned policy ({moved:.4f} rad)"
    assert gripper and max(gripper) > 0.01, gripper  # it opens the gripper to reach the cube


def test_image_policy_sees_the_camera_topics(domain_id: int, test_node: Node, tmp_path: Path) -> None:
    """An image diffusion policy (wrist camera at 32x32 + state) in the runner: its frames come from the sim
    mirror's JPEG topic at 320x240, fitted to 32x32; without them it would wait, never acting."""
    data = tmp_path / "lift_img.zarr"
    collect(collect_config(["task=arm_lift", "episodes=2", f"out={data}", "images=true", "image_size=[32,32]"]),
            progress=False)  # fmt: skip
    run = tmp_path / "run"
    train(compose_config([
        "policy=diffusion_image", f"dataset.path={data}", f"out={run}", "steps=2", "batch_size=4", "log_every=1",
        "val_every=0", "checkpoint_every=2", "device=cpu", "policy.down_dims=[16,32]", "policy.crop=[28,28]",
        "policy.obs_keys=[observation.state,observation.environment_state,observation.images.wrist]",
    ]), progress=False)  # fmt: skip

    overrides = [
        f"domain_id={domain_id}",
        f"nodes.recorder.params.dataset={tmp_path / 'rec.zarr'}",
        "nodes.sim_mirror.params.seed=5",
        "nodes.sim_mirror.params.cameras=[wrist]",
        "nodes.sim_mirror.params.image_width=320",
        "nodes.sim_mirror.params.image_height=240",
        "nodes.recorder.params.streams.front=null",
        "nodes.policy_runner.params.policy.kind=checkpoint",
        f"nodes.policy_runner.params.policy.path={run}",
    ]
    launch = subprocess.Popen(
        [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_arm_policy", *overrides],
        cwd=tmp_path,
        env=node_env(domain_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runner: list[dict] = []
    test_node.create_subscription(
        "/policy_runner/status", String, lambda m: runner.append(json.loads(m.data)), qos="latched"
    )
    try:
        # a status per chunk; under load, late actions are dropped, so wait on executed steps, not on chunks
        ok = test_node.spin_until(lambda: bool(runner) and runner[-1]["steps"] >= 16, 120)
    finally:
        launch.send_signal(signal.SIGINT)
        out, _ = launch.communicate(timeout=60)
    assert ok, out[-3000:]
    assert runner[-1]["chunks"] >= 2, runner[-1]
    assert "Traceback" not in out, out[-3000:]


def test_a_residual_policy_corrects_every_action_the_runner_sends(
    domain_id: int, test_node: Node, tmp_path: Path, bc_run: Path
) -> None:
    """The BC policy with a residual actor whose correction closes the gripper fully, whatever the base commands:
    the runner's gripper commands only close, so it applied the correction to every action."""
    loaded = load_policy(bc_run)
    bc = loaded.policy
    keys = list(bc.obs_keys)
    space = gym.make("realloop/ArmLift-v0").action_space
    low, high = space.low.tolist(), space.high.tolist()
    actor = {"obs_keys": [*keys, BASE_ACTION], "hidden_dims": [16]}
    features = {k: f.to_dict() for k, f in bc.features.items()}
    policy = ResidualPolicy(features, keys, loaded.config["policy"], actor, 2.0, low, high)
    policy.base.load_state_dict(bc.state_dict())
    with torch.no_grad():  # the correction: -1 on the gripper (scale 2: the whole range), 0 elsewhere
        policy.actor.actor.mean.weight.zero_()
        policy.actor.actor.mean.bias.zero_()
        policy.actor.actor.mean.bias[6] = -20.0
    config = {**loaded.config, "policy": {"_target_": "realloop.policies.rl.residual.ResidualPolicy", "name": "res",
              "obs_keys": keys, "base": loaded.config["policy"], "actor": actor, "scale": 2.0, "action_low": low,
              "action_high": high}}  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "residual", policy, config, loaded.meta)

    launch = launch_state_graph(tmp_path, domain_id, ckpt)
    runner: list[dict] = []
    gripper: list[float] = []
    test_node.create_subscription(
        "/policy_runner/status", String, lambda m: runner.append(json.loads(m.data)), qos="latched"
    )
    test_node.create_subscription(GRIPPER, Float64MultiArray, lambda m: gripper.append(float(m.data[0])))
    try:
        ok = test_node.spin_until(lambda: bool(runner) and runner[-1]["steps"] >= 16 and len(gripper) >= 16, 120)
    finally:
        launch.send_signal(signal.SIGINT)
        out, _ = launch.communicate(timeout=60)
    assert ok, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    # from its measured opening the gripper target only closes, at the runner's rate limit, to the closed bound;
    # the base alone opens it (the test above)
    assert np.all(np.diff(gripper) <= 0) and gripper[-1] == low[6], gripper
