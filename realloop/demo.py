"""``make demo``: the main job on embedded defaults, with the MuJoCo sim standing in for the robot.

1. ``realloop-collect``: scripted demonstrations of the arm lift task, with the wrist and front cameras and
   domain randomisation, into a local zarr dataset;
2. ``realloop-dataset``: info, verify, stats, a plot and a video of the first episode;
3. ``realloop-train``: a state-based diffusion policy on those demonstrations;
4. ``realloop-eval``: its success rate over seeded episodes the training never saw, with a video;
5. ``realloop-launch graph=sim_arm_policy``: the trained policy in the policy runner node, through the safety
   filter, against the sim mirror over DDS, recorded by the recorder node.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from realloop.data import Dataset
from realloop.data.cli import main as dataset_cli
from realloop.sim.collect import collect, compose_config


def run_on_graph(checkpoint: Path, recording: Path, seed: int = 0, timeout: float = 90.0,
                 domain_id: int | None = None) -> dict[str, Any]:
    """Run ``checkpoint`` on the ``sim_arm_policy`` graph (sim mirror, policy runner, safety filter, recorder as
    processes over DDS) until the recorder commits the episode (the runner reports the task's success) or
    ``timeout`` seconds pass; return what happened."""
    overrides = [
        f"nodes.recorder.params.dataset={recording}", f"nodes.sim_mirror.params.seed={seed}",
        "nodes.sim_mirror.params.cameras=[front]", "nodes.recorder.params.streams.wrist=null",
        "nodes.policy_runner.params.policy.kind=checkpoint", f"nodes.policy_runner.params.policy.path={checkpoint}",
    ]
    if domain_id is not None:
        overrides.append(f"domain_id={domain_id}")
    cmd = [sys.executable, "-m", "realloop.robot.launch.cli", "graph=sim_arm_policy", *overrides]
    print(f"$ realloop-launch {' '.join(cmd[3:])}", flush=True)
    env = {**os.environ, "ROS_LOCALHOST_ONLY": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    start = time.perf_counter()
    launch = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    committed = False
    try:
        while time.perf_counter() - start < timeout and launch.poll() is None:
            time.sleep(0.5)
            if (recording / "zarr.json").exists():
                with Dataset.open(recording) as ds:
                    if len(ds):
                        committed = True
                        break
    finally:
        if launch.poll() is None:
            launch.send_signal(signal.SIGINT)
        out, _ = launch.communicate(timeout=60)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"recording": str(recording), "seconds": round(seconds, 1), "committed": committed}
    if committed:
        with Dataset.open(recording) as ds:
            ep = ds.episode(ds.episode_indices[-1])
            result.update(success=ep.success, source=ep.meta["source"],
                          duration_s=round(ep.meta["end_time"] - ep.meta["start_time"], 2),
                          actions=len(ep.stream("action").read()))
    else:
        result["success"] = False
        result["log_tail"] = out[-2000:]
    safety = [ln for ln in out.splitlines() if "rejected command" in ln]
    result["safety_rejection_lines"] = len(safety)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="output folder (replaced)")
    p.add_argument("--episodes", type=int, default=60, help="demonstrations to collect")
    p.add_argument("--task", default="arm_lift", help="a task of configs/task")
    p.add_argument("--steps", type=int, default=1000, help="training steps of the diffusion policy")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True,
                   help="run the trained policy on the sim_arm_policy graph (arm tasks)")
    p.add_argument("--graph-timeout", type=float, default=90.0, help="seconds the graph gets to finish the task")
    args = p.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    path = out / f"{args.task}.zarr"
    overrides = [f"task={args.task}", f"episodes={args.episodes}", f"out={path}", "images=true", "randomize=true"]
    print(f"$ realloop-collect {' '.join(overrides)}", flush=True)
    collected = collect(compose_config(overrides))
    print(collected.line())
    steps = [
        ["info", str(path)],
        ["verify", str(path)],
        ["stats", str(path)],
        ["plot", str(path), "--episode", "0", str(out / "episode0.png")],
        ["export-video", str(path), "--episode", "0", "--camera", "front", str(out / "episode0_front.mp4")],
    ]
    for cmd in steps:
        print(f"\n$ realloop-dataset {' '.join(cmd)}", flush=True)
        rc = dataset_cli(cmd)
        if rc != 0:
            return rc

    from realloop.policies import evaluate as ev
    from realloop.policies.train import compose_config as train_config
    from realloop.policies.train import train

    run = out / "train_diffusion"
    train_overrides = ["policy=diffusion", f"dataset.path={path}", f"steps={args.steps}", f"out={run}",
                       "checkpoint_every=1000000", f"val_every={max(1, args.steps // 4)}"]
    print(f"\n$ realloop-train {' '.join(train_overrides)}", flush=True)
    trained = train(train_config(train_overrides))
    print(trained.line())

    eval_overrides = [f"checkpoint={run}", f"episodes={args.eval_episodes}", "num_envs=4", "videos=1"]
    print(f"\n$ realloop-eval {' '.join(eval_overrides)}", flush=True)
    evaluated, eval_json = ev.run(ev.compose_config(eval_overrides))
    print(evaluated.line())

    graph = None
    if args.graph and args.task.startswith("arm_"):
        print("\n# the trained policy on the sim graph: sim mirror -> policy runner -> safety filter, recorded")
        graph = run_on_graph(Path(trained.checkpoint), out / "graph_recording.zarr", timeout=args.graph_timeout)
        print(f"graph: {'success' if graph['success'] else 'no success'} in {graph['seconds']} s, "
              f"recorded: {graph['committed']} -> {graph['recording']}")

    summary = {
        "dataset": str(path),
        "episodes": collected.episodes,
        "success_rate": collected.success_rate,
        "plot": str(out / "episode0.png"),
        "video": str(out / "episode0_front.mp4"),
        "train": {k: v for k, v in trained.__dict__.items() if k != "history"},
        "eval": {**evaluated.to_dict(), "json": str(eval_json)},
        "graph": graph,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    graph_note = "" if graph is None else f", on the sim graph: {'success' if graph['success'] else 'failed'}"
    print(
        f"\ndemo: {collected.episodes} {args.task} demonstrations, diffusion policy trained {trained.steps} steps, "
        f"eval {evaluated.successes}/{evaluated.episodes} successful over {evaluated.episodes} episodes{graph_note} "
        f"({summary['seconds']} s) -> {out / 'demo_summary.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
