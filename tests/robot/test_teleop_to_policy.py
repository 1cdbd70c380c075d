"""The real-robot workflow end to end in the mirror, as processes: the scripted operator records demonstrations
through teleop and the safety filter, realloop-dataset keeps the successful ones, realloop-train trains an image
policy on the two cameras and the joint states, and realloop-eval-graph runs it on the policy graph with the
runner as on a robot (task: null: no task model, nothing a real robot lacks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import node_env

from realloop.data import Dataset
from realloop.data.cli import main as dataset_cli
from realloop.policies import evaluate_graph
from realloop.policies.checkpoint import load_policy
from realloop.policies.train import compose_config, train


@pytest.mark.slow
def test_teleop_recording_trains_an_image_policy_that_runs_on_the_graph(domain_id: int, tmp_path: Path) -> None:
    demos, kept = tmp_path / "demos.zarr", tmp_path / "kept.zarr"
    launch = subprocess.run(
        [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_arm_demos", f"domain_id={domain_id}",
         f"nodes.recorder.params.dataset={demos}", "nodes.scripted_operator.params.episodes=2",
         "nodes.scripted_operator.params.seed=20"],
        cwd=tmp_path, env=node_env(domain_id), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stdout[-3000:]
    assert dataset_cli(["filter", str(demos), str(kept), "--success"]) == 0
    with Dataset.open(kept) as ds:
        assert len(ds) >= 1 and all(ds.episode(i).success for i in ds.episode_indices)

    run = tmp_path / "run"
    cfg = compose_config([
        "policy=diffusion_image_cpu", f"dataset.path={kept}", "dataset.image_size=[32,32]", "policy.crop=[28,28]",
        "dataset.val_fraction=0", "steps=4", "batch_size=8", "log_every=2", "val_every=0", "checkpoint_every=4",
        f"out={run}", "policy.down_dims=[16,32]", "policy.num_inference_steps=2",
    ])  # fmt: skip
    train(cfg, progress=False)
    policy = load_policy(run).policy
    assert policy.obs_keys == ["observation.state", "observation.images.wrist", "observation.images.front"]
    assert policy.features["observation.images.front"].shape == (32, 32, 3)  # fitted from the recorded 320x240
    assert policy.action_dim == 7  # joint targets and the gripper, as the recorder wrote them

    out = tmp_path / "graph"
    argv = [str(run), "--episodes", "1", "--seed", "100003", "--episode-s", "2", "--timeout", "90", "--out", str(out),
            "--domain-id", str(domain_id)]  # fmt: skip
    assert evaluate_graph.main(argv) == 0
    (episode,) = json.loads((out / "eval_graph.json").read_text())["results"]
    runner = episode["status"]["policy_runner"]
    # an untrained policy need not succeed: the point is that it ran from the topics alone, through the filter
    assert episode["committed"], Path(episode["log"]).read_text()[-3000:]
    assert runner["steps"] > 0 and runner["chunks"] > 0, runner
    assert episode["status"]["safety_filter"]["counters"]["accepted"] > 0
    log = Path(episode["log"]).read_text()
    with Dataset.open(out / "seed_100003.zarr") as rec:
        assert {"observation.images.front", "observation.images.wrist"} <= set(rec.features)
    assert os.path.getsize(out / "seed_100003.launch.log") > 0 and "[policy_runner]" in log
