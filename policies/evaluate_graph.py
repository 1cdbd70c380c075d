"""realloop-eval-graph: run a trained arm policy on the ``sim_arm_policy`` graph, one episode per seed.

    realloop-eval-graph outputs/train/diffusion --episodes 10 --out outputs/eval_graph

Each episode launches the whole graph as processes over DDS (sim mirror seeded with the episode's seed, the
policy runner with the checkpoint, the safety filter, the recorder) and waits until the recorder ends the
episode. The runner runs as on a robot: no task model (``task: null``), its observation from the topics the
checkpoint's features name (joint states, the cameras it sees, ``/sim/environment_state`` only for a policy
trained on it); the sim mirror is the referee, its ``/sim/status`` the task's success. The runner reports the
task's success, or a failure ``--episode-s`` sim seconds after its first action
(failed episodes are recorded too), or the wall-clock ``--timeout`` passes. It prints a summary line and writes
``<out>/eval_graph.json`` with each episode's result and its recording ``<out>/seed_<seed>.zarr``.

Outcomes come as data, never from log text: the episode's success is what the recorder committed to the
dataset, and each result holds the last JSON status the nodes published (``/policy_runner/status``: steps,
chunks, rebased, dropped, waits, inference time; ``/safety/status``: accepted, clamped and rejected counts;
``/recorder/status``), heard by an observer node on the graph's DDS domain. The launch's output goes to
``<out>/seed_<seed>.launch.log``, for humans only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from realloop.data import Dataset
from realloop.robot.msgs import String
from realloop.robot.node import Node

GRAPH = "sim_arm_policy"
log = logging.getLogger("eval_graph")


def _status_topics(overrides: list[str]) -> tuple[int | None, dict[str, str]]:
    """The DDS domain the graph runs on and the status topic of its runner, filter and recorder, by node name."""
    from realloop.robot.launch.graph import load_graph

    graph = load_graph(GRAPH, overrides)  # what the launch will run, overrides included
    names = {n.kind: n.name for n in graph.nodes}
    topics = {
        "policy_runner": f"/{names.get('policy_runner', 'policy_runner')}/status",  # its private ~/status
        "safety_filter": "/safety/status",
        "recorder": "/recorder/status",
    }
    return graph.domain_id, topics


def _keep_last(store: dict[str, dict[str, Any] | None], key: str) -> Callable[[Any], None]:
    def on_status(msg: Any) -> None:
        try:
            store[key] = json.loads(msg.data)
        except ValueError:  # a node's statuses are JSON; anything else is not a status
            log.warning("ignoring a %s status that is not JSON: %.80r", key, msg.data)

    return on_status


def checkpoint_cameras(checkpoint: Path) -> list[str]:
    """The cameras a checkpoint's policy sees (``observation.images.<cam>`` features), from its policy.json."""
    from realloop.policies.checkpoint import resolve_checkpoint

    meta = json.loads((resolve_checkpoint(checkpoint) / "policy.json").read_text())
    prefix = "observation.images."
    return sorted(k[len(prefix) :] for k in meta.get("features", {}) if k.startswith(prefix))


def run_on_graph(
    checkpoint: Path,
    recording: Path,
    seed: int = 0,
    timeout: float = 90.0,
    domain_id: int | None = None,
    episode_s: float | None = 30.0,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run ``checkpoint`` on the ``sim_arm_policy`` graph (sim mirror, policy runner, safety filter, recorder as
    processes over DDS) until the recorder ends the episode or ``timeout`` wall seconds pass. The runner ends the
    episode: a success when the task succeeds, a failure when ``episode_s`` seconds of sim time pass after its
    first action without one (None: only the wall-clock timeout ends it, and the recording of a failed episode is
    discarded). ``overrides`` are more of the graph's hydra overrides
    (``nodes.safety_filter.params.velocity_scale=0.5``).

    Returns seed, recording, log (the launch's output), seconds, committed, success (and the committed episode's
    source, duration_s and actions) from the dataset, and ``status``: the last JSON status each node published,
    keyed ``policy_runner``, ``safety_filter`` and ``recorder`` (None for a node never heard)."""
    cameras = checkpoint_cameras(checkpoint)
    # the sim renders the cameras the policy sees; the recorder records them (the front one at least, to watch)
    recorded = cameras or ["front"]
    overrides = [
        f"nodes.recorder.params.dataset={recording}",
        f"nodes.sim_mirror.params.seed={seed}",
        f"nodes.sim_mirror.params.cameras=[{','.join(recorded)}]",
        *[f"nodes.recorder.params.streams.{c}=null" for c in ("front", "wrist") if c not in recorded],
        # the runner as on a robot: no task model, its inputs from the topics, the sim's status as the referee
        "nodes.policy_runner.params.task=null",
        "nodes.policy_runner.params.robot=arm6",
        "nodes.policy_runner.params.policy.kind=checkpoint",
        f"nodes.policy_runner.params.policy.path={checkpoint}",
        *overrides,
    ]
    if domain_id is not None:
        overrides.append(f"domain_id={domain_id}")
    if episode_s is not None:
        overrides.append(f"nodes.policy_runner.params.max_episode_s={episode_s}")
    graph_domain, topics = _status_topics(overrides)
    cmd = [sys.executable, "-m", "realloop.robot.launch.cli", f"graph={GRAPH}", *overrides]
    env = {**os.environ, "ROS_LOCALHOST_ONLY": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    log_path = recording.with_name(f"{recording.stem}.launch.log")

    # the nodes' latched statuses, heard on the graph's domain (localhost only, as the launch's env says)
    statuses: dict[str, dict[str, Any] | None] = dict.fromkeys(topics)
    observer = Node("eval_graph", transport="dds", domain_id=graph_domain, localhost_only=True)
    start = time.perf_counter()
    try:
        for key, topic in topics.items():
            observer.create_subscription(topic, String, _keep_last(statuses, key), qos="latched")
        with open(log_path, "w") as log_file:
            launch = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            try:
                # the recorder's status names the episode's end (committed, discarded, failed write) once it comes
                observer.spin_until(
                    lambda: launch.poll() is not None or bool((statuses["recorder"] or {}).get("last")), timeout
                )
            finally:
                if launch.poll() is None:
                    launch.send_signal(signal.SIGINT)
                # keep listening while the nodes stop: a node's closing status is its last word
                observer.spin_until(lambda: launch.poll() is not None, 60)
                if launch.poll() is None:
                    launch.kill()
                launch.wait()
    finally:
        observer.close()
    seconds = time.perf_counter() - start
    # the dataset is the record of what happened: committed and success are read from it
    episode = None
    if (recording / "zarr.json").exists():
        with Dataset.open(recording) as ds:
            if len(ds):
                ep = ds.episode(ds.episode_indices[-1])
                episode = {
                    "success": ep.success,
                    "source": ep.meta["source"],
                    "duration_s": round(ep.meta["end_time"] - ep.meta["start_time"], 2),
                    "actions": len(ep.stream("action").read()),
                }
    result: dict[str, Any] = {
        "seed": seed,
        "recording": str(recording),
        "log": str(log_path),
        "seconds": round(seconds, 1),
        "committed": episode is not None,
    }
    result.update(episode or {"success": False})
    result["launch_returncode"] = launch.returncode
    result["status"] = statuses  # each node's last status: runner steps and rebases, the filter's counts, ...
    return result


def evaluate_on_graph(
    checkpoint: Path,
    out: Path,
    seeds: range,
    timeout: float = 90.0,
    domain_id: int | None = None,
    episode_s: float | None = 30.0,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """One :func:`run_on_graph` episode per seed, recorded into ``<out>/seed_<seed>.zarr`` (replaced); the summary
    (successes, each episode's result) is also written to ``<out>/eval_graph.json``."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    start = time.perf_counter()
    for seed in tqdm(seeds, desc="graph episodes", unit="ep", disable=not progress):
        recording = out / f"seed_{seed}.zarr"
        shutil.rmtree(recording, ignore_errors=True)
        results.append(run_on_graph(checkpoint, recording, seed, timeout, domain_id, episode_s, overrides))
    summary = {
        "checkpoint": str(checkpoint),
        "episodes": len(results),
        "successes": sum(1 for r in results if r["success"]),
        "seconds": round(time.perf_counter() - start, 1),
        "episode_s": episode_s,
        "timeout_s": timeout,
        "overrides": list(overrides),
        "results": results,
    }
    (out / "eval_graph.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a training run folder or a checkpoint folder")
    p.add_argument("--episodes", type=int, default=10, help="episodes, seeded seed, seed + 1, ...")
    p.add_argument(
        "--seed",
        type=int,
        default=100000,
        help="the first episode's sim seed (default: realloop-eval's, away from realloop-collect's)",
    )
    p.add_argument(
        "--episode-s",
        type=float,
        default=30.0,
        help="sim seconds from the policy's first action to success, else the episode is recorded as a "
        "failure (gym's arm_lift limit is 10 s; the graph gets more for its timing)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="wall seconds an episode may take in all (start-up included) before the graph is stopped",
    )
    p.add_argument("--out", default="outputs/eval_graph", help="output folder (its recordings are replaced)")
    p.add_argument("--domain-id", type=int, default=None, help="DDS domain of the graph (default: the graph's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hydra override of the graph (repeatable): nodes.safety_filter.params.velocity_scale=0.5",
    )
    args = p.parse_args(argv)
    if not Path(args.checkpoint).exists():
        print(
            f"realloop-eval-graph: no checkpoint at {args.checkpoint}; give a realloop-train run folder",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    summary = evaluate_on_graph(
        Path(args.checkpoint),
        out,
        range(args.seed, args.seed + args.episodes),
        args.timeout,
        args.domain_id,
        args.episode_s,
        args.set,
    )
    print(
        f"eval-graph: {summary['successes']}/{summary['episodes']} episodes succeeded on the sim_arm_policy graph "
        f"({summary['seconds']} s) -> {out / 'eval_graph.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
