"""How arm-lift policies fail: rolls a checkpoint out on held-out seeds (100000 + k, as realloop-eval) and reports,
for each episode, the closest the gripper came to the cube and its distance to the cube when it first closed (the
gripper action below half its opening), so failures split into "never reached the cube" and "closed too early";
and whether the arm stalled: the gripper-to-cube offset changed by under 1 cm over the episode's last 30 steps.

    python benchmarks/lift_failures.py outputs/rl/lift_rlpd_bcnf_s0/checkpoints/step_00020000 --episodes 50
    python benchmarks/lift_failures.py RUN_A RUN_B --out benchmarks/results/lift_failures.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import realloop.sim  # noqa: F401  (registers the tasks)
from realloop.policies.agent import PolicyAgent
from realloop.policies.checkpoint import CheckpointError, load_policy, resolve_checkpoint
from realloop.policies.evaluate import env_kwargs_from_checkpoint

NEAR = 0.03  # m: an episode whose gripper never came this close to the cube never reached it
STALL_STEPS, STALL_M = 30, 0.01  # an arm whose offset to the cube moved less than this over these last steps stalled


def episodes(checkpoint: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Per episode: success, the minimum gripper-cube distance, and that distance when the gripper first closed."""
    loaded = load_policy(checkpoint)
    env_id, kwargs = env_kwargs_from_checkpoint(loaded.meta)
    env = gym.make(env_id, **kwargs)
    opening = float(env.action_space.high[-1])
    rows = []
    for k in range(count):
        obs, _ = env.reset(seed=seed + k)
        agent = PolicyAgent(loaded.policy, num_envs=1)
        nearest, closed_at, success, done = np.inf, None, False, False
        offsets = []  # cube_from_ee, the last three values of the environment state
        while not done:
            action = agent.step({key: np.asarray(v)[None] for key, v in obs.items()})[0]
            obs, _, terminated, truncated, info = env.step(action)
            distance = float(info["ee_to_cube"])
            offsets.append(np.asarray(obs["observation.environment_state"])[-3:])
            nearest = min(nearest, distance)
            if closed_at is None and action[-1] < opening / 2:
                closed_at = distance
            success = success or bool(info.get("is_success"))
            done = terminated or truncated
        tail = np.asarray(offsets[-STALL_STEPS:])
        stalled = len(offsets) >= STALL_STEPS and float(np.linalg.norm(tail - tail[-1], axis=1).max()) < STALL_M
        rows.append({"seed": seed + k, "success": success, "min_ee_to_cube": round(nearest, 4),
                     "ee_to_cube_at_first_close": None if closed_at is None else round(closed_at, 4),
                     "stalled": stalled, "final_ee_to_cube": round(distance, 4)})  # fmt: skip
    env.close()
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    fail = [r for r in rows if not r["success"]]
    closes = [r["ee_to_cube_at_first_close"] for r in fail if r["ee_to_cube_at_first_close"] is not None]
    return {
        "episodes": len(rows), "successes": len(rows) - len(fail), "failures": len(fail),
        f"failures_never_within_{NEAR}m": sum(r["min_ee_to_cube"] >= NEAR for r in fail),
        "failures_never_closed": sum(r["ee_to_cube_at_first_close"] is None for r in fail),
        "failures_stalled": sum(bool(r.get("stalled")) for r in fail),
        "failures_final_distance_m_p10_p50_p90": [
            round(float(v), 4) for v in np.percentile([r["final_ee_to_cube"] for r in fail], [10, 50, 90])
        ] if fail else None,
        "failures_first_close_distance_m_p10_p50_p90": [round(float(v), 4) for v in np.percentile(closes, [10, 50, 90])]
        if closes else None,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:  # every checkpoint checked before the first long rollout
        for ck in args.checkpoints:
            resolve_checkpoint(ck)
    except CheckpointError as e:
        print(f"lift_failures: {e}", file=sys.stderr)
        return 2
    results = {}
    for ck in args.checkpoints:
        summary = summarise(episodes(ck, args.episodes, args.seed))
        results[ck] = summary
        print(ck, json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"what": __doc__.split("\n\n")[0], "near_m": NEAR, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
