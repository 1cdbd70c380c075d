"""Sim speed: environment steps/s per task (state-only and with one 96x96 camera) against raw ``mj_step`` on
the same compiled model, and camera render frames/s at 96x96 and 640x480.

The raw baseline advances the same model by the same number of physics substeps per control step
(``mujoco.mj_step(model, data, nstep=n_substeps)``), so ``overhead = raw_rate / env_rate - 1`` is what the
gymnasium wrapper adds: action mode (incl. differential IK for ee_delta), observation assembly, reward,
gymnasium's wrappers. Single process, single thread. Prints a table and writes JSON.

    python benchmarks/sim_envs.py            # ~1 min
    python benchmarks/sim_envs.py --quick    # a few seconds, to check that it works
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is imported: headless rendering

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

import realloop.sim  # noqa: F401  (registers the ids, selects EGL when headless)
from realloop.sim.envs import TASKS
from realloop.sim.render import CameraRenderer

CAMERA = {"realloop/QuadWalk-v0": "head"}  # one camera per task; arm tasks use "front"


def actions(env: gym.Env, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded action sequence: random for the arm, small noise around the default pose for the quadruped."""
    rng = np.random.default_rng(seed)
    space = env.action_space
    if env.unwrapped.action_mode.name == "joint_position" and not env.unwrapped.robot.has_gripper:
        base = env.unwrapped.robot.default_q
        return np.clip(base + rng.normal(0, 0.05, (n, base.size)), space.low, space.high).astype(np.float32)
    return rng.uniform(space.low, space.high, (n, *space.shape)).astype(np.float32)


def env_rate(task: str, steps: int, cameras: list[str], seed: int) -> tuple[float, int]:
    env = gym.make(task, cameras=cameras, max_episode_steps=10**9)
    env.reset(seed=seed)
    acts = actions(env, steps, seed)
    resets = 0
    for a in acts[: max(steps // 10, 1)]:  # warm-up (renderer creation, caches)
        env.step(a)
    start = time.perf_counter()
    for a in acts:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
            resets += 1
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate, resets


def raw_rate(task: str, steps: int) -> float:
    env = gym.make(task).unwrapped
    env.reset(seed=0)
    model, data, n = env.model, mujoco.MjData(env.model), env.robot.n_substeps
    data.qpos[:], data.ctrl[:] = env.data.qpos, env.data.ctrl
    mujoco.mj_step(model, data, nstep=n * max(steps // 10, 1))
    start = time.perf_counter()
    for _ in range(steps):
        mujoco.mj_step(model, data, nstep=n)
    return steps / (time.perf_counter() - start)


def render_rate(size: tuple[int, int], frames: int, shadows: bool) -> float:
    env = gym.make("realloop/ArmLift-v0").unwrapped
    env.reset(seed=0)
    r = CameraRenderer(env.model, *size, shadows=shadows)
    r.render(env.data, "front_cam")
    start = time.perf_counter()
    for _ in range(frames):
        r.render(env.data, "front_cam")
    rate = frames / (time.perf_counter() - start)
    r.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="timed control steps per case (default 2000, quick 100)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench/sim_envs.json"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    steps = args.steps or (100 if args.quick else 2000)

    results: list[dict[str, Any]] = []
    for task in TASKS:
        env = gym.make(task).unwrapped
        n_sub, mode = env.robot.n_substeps, env.action_mode.name
        env.close()
        raw = raw_rate(task, steps)
        state, resets = env_rate(task, steps, [], args.seed)
        cam, _ = env_rate(task, max(steps // 4, 20), [CAMERA.get(task, "front")], args.seed)
        r = {
            "task": task,
            "control_mode": mode,
            "substeps": n_sub,
            "raw_steps_per_s": round(raw, 1),
            "env_steps_per_s": round(state, 1),
            "env_cam96_steps_per_s": round(cam, 1),
            "overhead": round(raw / state - 1, 3),
            "resets": resets,
        }
        results.append(r)
        print(
            f"{task:24s} raw {raw:8.1f}/s  env {state:8.1f}/s (overhead {r['overhead']:+.1%})  "
            f"env+96x96 cam {cam:7.1f}/s",
            flush=True,
        )
    frames = 50 if args.quick else 500
    render = {}
    for shadows in (False, True):
        for h, w in ((96, 96), (480, 640)):
            fps = render_rate((h, w), frames if w < 600 else frames // 5, shadows)
            render[f"{w}x{h}{' shadows' if shadows else ''}"] = round(fps, 1)
    gl = os.environ.get("MUJOCO_GL")
    print(f"render (front camera, MUJOCO_GL={gl}): " + ", ".join(f"{k} {v} fps" for k, v in render.items()))

    report = {
        "benchmark": "sim_envs",
        "quick": args.quick,
        "steps": steps,
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "mujoco": mujoco.__version__,
            "gymnasium": gym.__version__,
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
        },
        "results": results,
        "render_fps": render,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    worst = max(r["overhead"] for r in results)
    print(f"sim_envs: worst state-only wrapper overhead {worst:+.1%} (goal <= +20%); results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
