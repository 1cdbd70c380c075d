"""Training and deployment see the same observations: an episode on the sim graph (sim mirror -> policy runner
-> safety filter, recorder, real processes on DDS), then the dataset's aligned view at the runner's tick times
holds exactly the ``observation.state`` arrays the runner built live at those ticks."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import gymnasium as gym
import numpy as np

import realloop.sim  # noqa: F401 - registers the realloop/ task ids
from realloop.data import Dataset
from realloop.robot.msgs import String
from realloop.robot.node import Node
from realloop.robot.observation import JointStateObserver, robot_state_names
from realloop.robot.spec import load_robot_spec


def test_recorded_state_and_the_runners_live_state_are_the_same_arrays(
    start_node, test_node: Node, tmp_path: Path
) -> None:
    data, trace = tmp_path / "lift.zarr", tmp_path / "trace.npz"
    status: list[dict] = []
    test_node.create_subscription(
        "/recorder/status", String, lambda m: status.append(json.loads(m.data)), qos="latched"
    )
    procs = [
        start_node("sim_mirror", "task=arm_lift", "cameras=[]", "seed=3"),
        start_node("safety_filter"),
        start_node(
            "recorder",
            f"dataset={data}",
            "auto_start=true",
            "use_sim_time=true",
            "source=policy",
            "streams.front=null",
            "streams.wrist=null",
        ),
        start_node(
            "policy_runner",
            "task=arm_lift",
            "policy.kind=expert",
            "use_sim_time=true",
            "report_success=true",
            "max_episode_s=20",
            f"trace={trace}",
        ),
    ]
    assert test_node.spin_until(lambda: bool(status) and status[-1].get("last") is not None, 150), status[-1:]
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        assert p.wait(30) == 0, p.log_text()[-2000:]
    # the recorder's closing status counts the episode it committed
    assert test_node.spin_until(lambda: status[-1]["state"] == "stopped", 10), status[-1]
    assert status[-1]["episodes"] == 1 and status[-1]["last"]["outcome"] == "committed", status[-1]

    live = np.load(trace)  # no pickle: allow_pickle stays False
    t, state = live["t"], live["observation.state"]
    assert len(t) >= 10, len(t)
    spec = load_robot_spec("arm6")
    assert state.shape[1] == len(robot_state_names(spec)) == 22  # joints, velocities, gripper, ee pose
    with Dataset.open(data) as ds:
        ep = ds.episode(0)
        stream = ep.stream("observation.state")
        assert stream.feature.names == tuple(robot_state_names(spec))
        inside = t >= stream.timestamps[0]
        view = ep.aligned(keys=["observation.state"], times=t[inside])
        recorded = view.get("observation.state")
    assert inside.sum() >= 10
    np.testing.assert_array_equal(recorded, state[inside])  # the same arrays, bit for bit
    # ... and the same numbers the sim task observes, synced to the last of those joint states
    env = gym.make("realloop/ArmLift-v0").unwrapped
    last = state[inside][-1].astype(float)
    env.sync_robot(last[:6], last[6:12], last[12])
    assert env.state_names == JointStateObserver(spec).names
    np.testing.assert_allclose(env.observation()["observation.state"], state[inside][-1], atol=1e-6)
    env.close()
