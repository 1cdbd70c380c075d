"""How inference latency costs a chunked policy, replayed in gym rollouts (no graph, no timing noise).

    python benchmarks/chunk_latency.py outputs/train/lift_diffusion --episodes 30 --steps 1 2

For each d in --steps it runs the checkpoint three ways on the held-out seeds (100000 on):
- ``sync-drop d``: a chunk is predicted when the queue is empty and its first d actions are dropped (their time
  passed during inference): what the policy runner did before it predicted ahead;
- ``ahead d``: the next chunk is predicted from the observation d steps before the queue runs out and starts d
  steps after it (what ChunkSchedule does with lead d);
and once with no latency. Prints the success rates and writes them to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import realloop.sim  # noqa: F401 - registers the realloop/ ids
from realloop.policies.agent import PolicyAgent
from realloop.policies.checkpoint import load_policy
from realloop.policies.evaluate import env_kwargs_from_checkpoint


def rollout_successes(ckpt: str, episodes: int, mode: str, d: int) -> int:
    loaded = load_policy(ckpt, "cpu")
    env_id, kw = env_kwargs_from_checkpoint(loaded.meta, str(loaded.path / "policy.json"))  # checked: from a file
    env = gym.make(env_id, **kw)
    agent = PolicyAgent(loaded.policy, 1, seed=0)
    wins = 0
    for k in tqdm(range(episodes), desc=f"{mode} {d}", leave=False):
        obs, info = env.reset(seed=100000 + k)
        agent.reset()
        queue: list[np.ndarray] = []
        pending: tuple[int, list[np.ndarray]] | None = None
        for step in range(10_000):
            agent.observe(obs)
            if mode == "sync-drop":
                if not queue:
                    queue = list(agent.action_chunk(obs))[d:]
            elif mode == "ahead":
                if pending is not None and pending[0] == step:
                    queue, pending = pending[1], None
                if pending is None and len(queue) <= d:
                    chunk = list(agent.action_chunk(obs))
                    if queue:
                        pending = (step + d, chunk[d:])
                    else:
                        queue = chunk  # nothing to execute meanwhile: the start of an episode
            elif not queue:
                queue = list(agent.action_chunk(obs))
            obs, _, term, trunc, info = env.step(queue.pop(0))
            if info.get("is_success") or term or trunc:
                break
        wins += bool(info.get("is_success"))
    env.close()
    return wins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="outputs/benchmarks/chunk_latency.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {"no latency": rollout_successes(args.checkpoint, args.episodes, "none", 0)}
    for d in args.steps:
        for mode in ("sync-drop", "ahead"):
            results[f"{mode} {d}"] = rollout_successes(args.checkpoint, args.episodes, mode, d)
    for name, wins in results.items():
        print(f"{name:>12}: {wins}/{args.episodes}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"checkpoint": args.checkpoint, "episodes": args.episodes, "successes": results}, indent=1)
    )
    print(f"chunk latency: {results} of {args.episodes} episodes -> {args.out}")


if __name__ == "__main__":
    main()
