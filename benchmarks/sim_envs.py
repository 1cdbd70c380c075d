"""Sim speed: environment steps/s per task (state-only and with one 96x96 camera) against raw ``mj_step`` on
the same compiled model, and camera render frames/s at 96x96 and 640x480.

The raw baseline replays the actuator commands of the env run on the same model from the same initial state,
``mujoco.mj_step(model, data, nstep=n_substeps)`` per control step, so both do the same physics and
``overhead = raw_rate / env_rate - 1`` is what the gymnasium layer adds: the action mode (incl. differential
IK for ee_delta), observation, reward, gymnasium's wrappers. Each figure is the best of 3 runs; single
process, single thread. Prints a table and writes JSON.

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
    """A fixed, seeded action sequence: uniform over the space for delta modes, noise around the default pose for
    joint positions (uniform joint targets would fling the arm and topple the quadruped)."""
    rng = np.random.default_rng(seed)
    space = env.action_space
    acts = rng.uniform(space.low, space.high, (n, *space.shape))
    if env.unwrapped.action_mode.name == "joint_position":
        q = env.unwrapped.robot.default_q
        acts[:, : q.size] = q + rng.normal(0, 0.05, (n, q.size))
    return np.clip(acts, space.low, space.high).astype(np.float32)


def make(task: str, cameras: list[str], mode: str | None) -> gym.Env:
    return gym.make(task, cameras=cameras, max_episode_steps=10**9, **({"control_mode": mode} if mode else {}))


def env_rate(task: str, steps: int, cameras: list[str], seed: int, mode: str | None = None) -> tuple[float, list]:
    """Best of 3 timed runs of `steps` env steps; also returns the actuator commands of the run (for raw replay)."""
    env = make(task, cameras, mode)
    u = env.unwrapped
    acts = actions(env, steps, seed)
    best, ctrls = 0.0, []
    for _ in range(3):
        env.reset(seed=seed)
        start = time.perf_counter()
        for a in acts:
            env.step(a)  # the episode never ends: no success under these actions, no time limit
        best = max(best, steps / (time.perf_counter() - start))
    env.reset(seed=seed)
    for a in acts:
        env.step(a)
        ctrls.append(u.data.ctrl.copy())
    env.close()
    return best, ctrls


def raw_rate(task: str, seed: int, ctrls: list) -> float:
    """Best of 3: the same model from the same initial state under the same actuator commands, bare mj_step."""
    env = gym.make(task).unwrapped
    env.reset(seed=seed)
    model, n, best = env.model, env.robot.n_substeps, 0.0
    for _ in range(3):
        data = mujoco.MjData(model)
        data.qpos[:], data.qvel[:], data.mocap_pos[:] = env.data.qpos, env.data.qvel, env.data.mocap_pos
        start = time.perf_counter()
        for c in ctrls:
            data.ctrl[:] = c
            mujoco.mj_step(model, data, nstep=n)
        best = max(best, len(ctrls) / (time.perf_counter() - start))
    return best


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
        state, ctrls = env_rate(task, steps, [], args.seed)
        raw = raw_rate(task, args.seed, ctrls)
        cam, _ = env_rate(task, max(steps // 4, 20), [CAMERA.get(task, "front")], args.seed)
        if mode != "joint_position":
            joint, joint_ctrls = env_rate(task, steps, [], args.seed, "joint_position")
            raw_joint = raw_rate(task, args.seed, joint_ctrls)
        else:
            joint, raw_joint = state, raw
        r = {
            "task": task,
            "control_mode": mode,
            "substeps": n_sub,
            "raw_steps_per_s": round(raw, 1),
            "env_steps_per_s": round(state, 1),
            "env_cam96_steps_per_s": round(cam, 1),
            "overhead": round(raw / state - 1, 3),
            "env_joint_position_steps_per_s": round(joint, 1),
            "raw_joint_position_steps_per_s": round(raw_joint, 1),
            "overhead_joint_position": round(raw_joint / joint - 1, 3),
        }
        results.append(r)
        print(
            f"{task:22s} raw {raw:7.0f}/s  env {mode} {state:7.0f}/s ({r['overhead']:+.0%})  "
            f"joint_position {joint:7.0f}/s ({r['overhead_joint_position']:+.0%})  +96x96 cam {cam:5.0f}/s",
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
    worst_joint = max(r["overhead_joint_position"] for r in results)
    print(
        f"sim_envs: worst state-only overhead vs raw mj_step {worst:+.0%} in the default control modes (ee_delta IK "
        f"included), {worst_joint:+.0%} in joint_position (goal <= +20%); results in {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
