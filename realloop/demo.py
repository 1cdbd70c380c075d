"""``make demo``: the main job on embedded defaults, with the MuJoCo sim standing in for the robot.

1. ``realloop-collect``: scripted demonstrations of the arm lift task, with the wrist and front cameras and
   domain randomisation, into a local zarr dataset;
2. ``realloop-dataset``: info, verify, stats, a plot and a video of the first episode;
3. ``realloop-train``: a state-based diffusion policy on those demonstrations;
4. ``realloop-eval``: its success rate over seeded episodes the training never saw, with a video;
5. ``realloop-eval-graph``: the trained policy in the policy runner node, through the safety filter, against the
   sim mirror over DDS (``realloop-launch graph=sim_arm_policy``), recorded by the recorder node, on 3 held-out
   seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from realloop.configs import config_names
from realloop.data.cli import main as dataset_cli
from realloop.policies.evaluate_graph import evaluate_on_graph
from realloop.sim.collect import collect, compose_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="output folder (replaced)")
    p.add_argument("--episodes", type=int, default=100, help="demonstrations to collect")
    p.add_argument("--task", default="arm_lift", help=f"a task of configs/task: {', '.join(config_names('task'))}")
    p.add_argument("--steps", type=int, default=2000, help="training steps of the diffusion policy")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument(
        "--graph",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the trained policy on the sim_arm_policy graph (arm tasks)",
    )
    p.add_argument("--graph-episodes", type=int, default=3, help="episodes on the graph, seeded --graph-seed on")
    p.add_argument("--graph-seed", type=int, default=100000, help="the sim mirror's first seed (held out)")
    p.add_argument(
        "--graph-episode-s",
        type=float,
        default=30.0,
        help="sim seconds after the first action before a graph episode is recorded as a failure",
    )
    p.add_argument("--graph-timeout", type=float, default=90.0, help="wall seconds a graph episode may take in all")
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
    train_overrides = [
        "policy=diffusion",
        f"dataset.path={path}",
        f"steps={args.steps}",
        f"out={run}",
        "checkpoint_every=1000000",
        f"val_every={max(1, args.steps // 4)}",
    ]
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
        graph = evaluate_on_graph(
            Path(trained.checkpoint),
            out / "graph",
            range(args.graph_seed, args.graph_seed + args.graph_episodes),
            timeout=args.graph_timeout,
            episode_s=args.graph_episode_s,
        )
        for r in graph["results"]:
            print(
                f"graph seed {r['seed']}: {'success' if r['success'] else 'no success'} in {r['seconds']} s, "
                f"recorded: {r['committed']} -> {r['recording']}"
            )

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
    graph_note = "" if graph is None else f", on the sim graph {graph['successes']}/{graph['episodes']}"
    print(
        f"\ndemo: {collected.episodes} {args.task} demonstrations, diffusion policy trained {trained.steps} steps, "
        f"eval {evaluated.successes}/{evaluated.episodes} successful over {evaluated.episodes} episodes{graph_note} "
        f"({summary['seconds']} s) -> {out / 'demo_summary.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
