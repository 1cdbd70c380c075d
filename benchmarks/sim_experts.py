"""Scripted-expert success rates: N seeded episodes per task (seeds 0..N-1), nominal physics and with the task's
domain randomisation (configs/task/*.yaml), in each task's default control mode. Prints a table and writes JSON.

    python benchmarks/sim_experts.py                 # 100 episodes per task and setting (~2 min)
    python benchmarks/sim_experts.py --episodes 10   # quicker
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from realloop.configs import config_dir, config_names
from realloop.sim.collect import compose_config, make_task_env
from realloop.sim.experts import make_expert

TASKS = ("arm_reach", "arm_lift", "arm_pusht", "quad_walk")


def evaluate(task: str, episodes: int, randomize: bool) -> dict[str, Any]:
    cfg = compose_config([f"task={task}"])
    env = make_task_env(cfg.task, images=False, image_size=(96, 96), randomize=randomize)
    expert = make_expert(env)
    successes, steps = 0, []
    start = time.perf_counter()
    for seed in tqdm(range(episodes), desc=f"{task}{' randomised' if randomize else ''}", unit="ep", leave=False):
        obs, _ = env.reset(seed=seed)
        expert.reset(np.random.default_rng(seed))
        done, n = False, 0
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            done, n = terminated or truncated, n + 1
        successes += bool(info["is_success"])
        steps.append(n)
    seconds = time.perf_counter() - start
    return {
        "task": task,
        "randomize": randomize,
        "control_mode": env.unwrapped.action_mode.name,
        "episodes": episodes,
        "success_rate": successes / episodes,
        "mean_steps": round(float(np.mean(steps)), 1),
        "seconds_per_episode": round(seconds / episodes, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASKS),
        help=f"tasks of {config_dir('task')}: {', '.join(config_names('task'))}",
    )
    p.add_argument("--out", type=Path, default=Path("outputs/bench/sim_experts.json"))
    args = p.parse_args(argv)
    results = []
    for task in args.tasks:
        for randomize in (False, True):
            r = evaluate(task, args.episodes, randomize)
            results.append(r)
            print(
                f"{task:10s} {'randomised' if randomize else 'nominal':10s} {r['control_mode']:14s} "
                f"success {r['success_rate']:6.1%}  mean steps {r['mean_steps']:6.1f}  "
                f"{r['seconds_per_episode'] * 1000:7.1f} ms/episode",
                flush=True,
            )
    report = {
        "benchmark": "sim_experts",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = ", ".join(f"{r['task']}{'+dr' if r['randomize'] else ''} {r['success_rate']:.0%}" for r in results)
    print(f"sim_experts ({args.episodes} episodes each): {summary}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
