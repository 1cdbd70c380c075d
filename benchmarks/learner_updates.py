"""Actor-critic learner throughput and acting latency: ``SACLearner.update`` calls per second at batch 256 for the
RLPD critic ensemble (E=10, min over M=2) against plain SAC's pair of critics (E=2) and a literal single critic
(E=1), on state observations (40-D state, 7-D action) and on two 96x96 RGB cameras + the state; and the latency of
one exploring action at batch 1 (what an actor process does per control step) against the 10 Hz and 50 Hz
control periods (100 ms, 20 ms).

Each case builds a learner with random weights (``torch.manual_seed``) and cycles through a few random batches
laid out as the replay buffer delivers them (numpy: float32 state, uint8 images (B, C, H, W), env-unit actions),
so a timed update includes moving the batch to the device, the image shifts, ``utd`` critic steps, one actor
and one temperature step, and reading the metrics back (which waits for CUDA). ``--warmup`` updates are dropped,
then ``--updates`` (``--image-updates`` with cameras) are timed as one block. Acting: ``--warmup`` calls dropped,
then ``--act-repeats`` calls of ``act(obs, explore=True)`` on one observation, each timed on its own; p50 / p99
in ms, and whether p99 fits each control period. Prints a table; writes JSON only with ``--out``.

    python benchmarks/learner_updates.py                                    # CPU, or CUDA when available
    python benchmarks/learner_updates.py --out benchmarks/results/learner_updates_cpu.json
    python benchmarks/learner_updates.py --updates 2 --image-updates 1 --warmup 1 --act-repeats 5 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realloop.policies.rl.learner import Batch
from realloop.policies.rl.sac import SACConfig, SACLearner
from realloop.policies.train import pick_device

STATE = "observation.state"
CAMERAS = ("observation.images.wrist", "observation.images.front")
CONTROL_HZ = (10.0, 50.0)
# (label, preset, overrides)
CRITICS: list[tuple[str, str, dict[str, Any]]] = [
    ("rlpd E=10 M=2", "rlpd", {}),
    ("sac E=2", "sac", {}),
    ("single critic E=1", "sac", {"num_critics": 1, "num_min_critics": 1}),
    ("calql E=2", "sac", {"cql_weight": 1.0, "backup_entropy": False}),  # configs/algo/calql.yaml's critics
]


def make_batches(args: argparse.Namespace, images: bool, count: int) -> list[Batch]:
    """``count`` random batches of ``utd * batch`` transitions, as numpy arrays."""
    rng = np.random.default_rng(args.seed)
    n = args.utd * args.batch

    def obs() -> dict[str, np.ndarray]:
        out = {STATE: rng.normal(size=(n, args.obs_dim)).astype(np.float32)}
        if images:
            for cam in CAMERAS:
                out[cam] = rng.integers(0, 256, size=(n, 3, args.image_size, args.image_size), dtype=np.uint8)
        return out

    return [
        {
            "observation": obs(),
            "action": rng.uniform(-1, 1, size=(n, args.action_dim)).astype(np.float32),
            "reward": rng.normal(size=n).astype(np.float32),
            "discount": np.full(n, 0.99, dtype=np.float32),
            "next_observation": obs(),
            "online": rng.random(n) < 0.5,
            "mc_return": rng.normal(size=n).astype(np.float32),  # Cal-QL's bound; the other learners ignore it
        }
        for _ in range(count)
    ]


def run_case(
    label: str, preset: str, overrides: dict[str, Any], images: bool, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    shapes: dict[str, tuple[int, ...]] = {STATE: (args.obs_dim,)}
    if images:
        shapes.update({cam: (3, args.image_size, args.image_size) for cam in CAMERAS})
    config = SACConfig.preset(preset, utd=args.utd, image_encoder=args.image_encoder, **overrides)
    low, high = -np.ones(args.action_dim), np.ones(args.action_dim)
    learner = SACLearner(shapes, low, high, config, device=device)
    params = {
        name: sum(p.numel() for p in learner.modules()[name].parameters()) for name in ("encoder", "actor", "critic")
    }
    batches = make_batches(args, images, args.distinct_batches)
    timed = args.image_updates if images else args.updates
    for i in range(args.warmup):
        learner.update(batches[i % len(batches)])
    start = time.perf_counter()
    for i in range(timed):
        metrics = learner.update(batches[i % len(batches)])
    seconds = time.perf_counter() - start
    if not all(np.isfinite(v) for v in metrics.values()):
        raise SystemExit(f"{label}: non-finite metrics {metrics}")

    one = {k: v[:1] for k, v in batches[0]["observation"].items()}
    for _ in range(args.warmup):
        learner.act(one, explore=True)
    latencies = []
    for _ in range(args.act_repeats):
        t0 = time.perf_counter()
        learner.act(one, explore=True)
        latencies.append((time.perf_counter() - t0) * 1e3)
    p50, p99 = float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))
    return {
        "case": label,
        "observation": f"{len(CAMERAS)} cameras {args.image_size}x{args.image_size} + state" if images else "state",
        "preset": preset,
        "num_critics": config.num_critics,
        "num_min_critics": config.num_min_critics,
        "utd": config.utd,
        "batch_size": args.batch,
        "params": params,
        "timed_updates": timed,
        "updates_per_s": round(timed / seconds, 3),
        "critic_steps_per_s": round(timed * config.utd / seconds, 3),
        "ms_per_update": round(seconds / timed * 1e3, 2),
        "act_p50_ms": round(p50, 3),
        "act_p99_ms": round(p99, 3),
        **{f"act_p99_fits_{hz:g}hz": p99 < 1e3 / hz for hz in CONTROL_HZ},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256, help="transitions per critic step (B)")
    p.add_argument("--utd", type=int, default=1, help="critic steps per update (G); an update takes G*B")
    p.add_argument("--updates", type=int, default=100, help="timed updates per state case")
    p.add_argument("--image-updates", type=int, default=10, help="timed updates per camera case")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates (and act calls) first")
    p.add_argument("--act-repeats", type=int, default=500, help="timed act calls at batch 1")
    p.add_argument("--obs-dim", type=int, default=40)
    p.add_argument("--action-dim", type=int, default=7)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--image-encoder", default="small", choices=("small", "resnet18"))
    p.add_argument("--observations", nargs="+", choices=("state", "images"), default=["state", "images"])
    p.add_argument("--distinct-batches", type=int, default=4, help="random batches cycled through")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here (default: print only)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.batch, args.utd, args.updates, args.image_updates, args.act_repeats, args.distinct_batches) < 1:
        p.error("--batch, --utd, --updates, --image-updates, --act-repeats and --distinct-batches must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    print(
        f"learner updates on {device} ({torch.get_num_threads()} threads): batch {args.batch}, utd {args.utd}, "
        f"{args.obs_dim}-D state, {args.action_dim}-D action; {args.warmup} warm-up updates",
        flush=True,
    )
    results = []
    for kind in args.observations:
        for label, preset, overrides in CRITICS:
            r = run_case(label, preset, overrides, kind == "images", args, device)
            results.append(r)
            print(
                f"  {kind:6s} {label:18s}: {r['updates_per_s']:8.2f} updates/s ({r['ms_per_update']:.1f} ms), "
                f"act p50 {r['act_p50_ms']:.2f} ms p99 {r['act_p99_ms']:.2f} ms",
                flush=True,
            )

    header = (
        f"{'observation':26s} {'critics':18s} {'critic params':>13s} {'updates/s':>10s} {'ms/update':>10s} "
        f"{'act p50 ms':>10s} {'act p99 ms':>10s} {'p99<100ms':>9s} {'p99<20ms':>8s}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r['observation']:26s} {r['case']:18s} {r['params']['critic'] / 1e3:12.1f}k {r['updates_per_s']:10.2f} "
            f"{r['ms_per_update']:10.1f} {r['act_p50_ms']:10.2f} {r['act_p99_ms']:10.2f} "
            f"{'yes' if r['act_p99_fits_10hz'] else 'no':>9s} {'yes' if r['act_p99_fits_50hz'] else 'no':>8s}"
        )
    if args.out is None:
        return 0
    report = {
        "benchmark": "learner_updates",
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "observations")
        }
        | {"device": str(device), "threads": torch.get_num_threads(), "control_hz": list(CONTROL_HZ)},
        "timing": "wall time of --updates consecutive update() calls after --warmup; act: each call at batch 1",
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"learner_updates: results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
