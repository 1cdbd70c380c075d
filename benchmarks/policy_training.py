"""Policy training throughput: samples/s and seconds/step of realloop-train's Trainer for the state diffusion,
image diffusion (ResNet-18 per camera, and the CPU preset's small conv net with frames cached in memory) and MLP
BC policies on a recorded arm lift dataset.

The dataset (default ``outputs/bench/train_bench_lift.zarr``) is recorded with realloop-collect when missing
(``task=arm_lift images=true``, ``--episodes`` scripted episodes; topped up if it has fewer). Each policy then
trains with the real ``Trainer`` (configs/train.yaml + configs/policy/<name>.yaml, as ``realloop-train``
would), batch 64 (state policies) or 32 (image), for ``--warmup + --steps`` steps into
``outputs/bench/train_bench/<policy>`` (deleted first; deleted after unless ``--keep-runs``).

How the warm-up is excluded: the run logs every ``--warmup`` steps (``log_every``), and each log row carries
the Trainer's own ``samples_per_s`` over the steps since the previous row: wall time of data loading,
forward, backward, optimiser and EMA, with a device sync at each row (the loss is read back), so the first
row holds the warm-up (DataLoader start, cuDNN autotuning, ``torch.compile``) and the rows after it are the
timed steps. Validation is off (``val_every=0``) and the only checkpoint is written after the last row, so
neither is timed. One run per case, no subtraction of two runs.

On CUDA each policy runs twice: fp32 without compile, and bf16 autocast with ``torch.compile`` (the Trainer's
CUDA default); on CPU only fp32. Prints a table and writes JSON.

    python benchmarks/policy_training.py                             # 60 timed steps after 10 warm-up steps
    python benchmarks/policy_training.py --steps 5 --warmup 2 --policies bc
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is imported: headless rendering for the cameras

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from realloop.data import Dataset
from realloop.policies.train import Trainer, compose_config, pick_device

POLICIES = ("diffusion", "diffusion_image", "diffusion_image_cpu", "bc")
CAMERAS = ("observation.images.wrist", "observation.images.front")
# (name, precision, compile)
VARIANTS = {"cpu": [("fp32", "fp32", False)], "cuda": [("fp32", "fp32", False), ("bf16_compile", "bf16", True)]}


def ensure_dataset(path: Path, episodes: int) -> dict[str, Any]:
    """Record (or top up to) ``episodes`` scripted arm lift episodes with both cameras; returns what it has."""
    have = 0
    if path.exists():
        with Dataset.open(path) as ds:
            missing = [c for c in CAMERAS if c not in ds.features]
            if missing:
                raise SystemExit(f"{path} has no {missing}: it was not recorded with images=true; delete it")
            have = len(ds)
    if have < episodes:
        from realloop.sim.collect import collect
        from realloop.sim.collect import compose_config as collect_config

        print(f"recording {episodes - have} arm_lift episodes with cameras into {path} ...", flush=True)
        overrides = ["task=arm_lift", f"episodes={episodes - have}", f"out={path}", "images=true"]
        print("  " + collect(collect_config(overrides), progress=False).line(), flush=True)
    with Dataset.open(path) as ds:
        return {"path": str(path), "episodes": len(ds), "features": sorted(ds.features)}


def timed_windows(history: list[dict[str, Any]], batch_size: int, warmup: int) -> tuple[float, int, float]:
    """(warm-up seconds, timed steps, timed seconds) from the log rows' per-window samples/s."""
    warm_s, steps, seconds, prev = 0.0, 0, 0.0, 0
    for row in sorted((r for r in history if r.get("samples_per_s")), key=lambda r: r["step"]):
        n = row["step"] - prev
        duration = n * batch_size / row["samples_per_s"]
        if prev >= warmup:
            steps, seconds = steps + n, seconds + duration
        else:
            warm_s += duration
        prev = row["step"]
    return warm_s, steps, seconds


def run_case(
    policy: str, variant: tuple[str, str, bool], args: argparse.Namespace, device: str, batch_size: int
) -> dict[str, Any]:
    name, precision, compile_on = variant
    out = args.runs / (policy if name == "fp32" else f"{policy}_{name}")
    shutil.rmtree(out, ignore_errors=True)
    log_every = args.warmup if args.warmup > 0 else args.warmup + args.steps
    overrides = [
        f"policy={policy}",
        f"dataset.path={args.dataset}",
        f"out={out}",
        f"device={device}",
        f"steps={args.warmup + args.steps}",
        f"batch_size={batch_size}",
        f"dataset.num_workers={args.workers}",
        f"precision={precision}",
        f"compile={str(compile_on).lower()}",
        f"log_every={log_every}",
        "val_every=0",
        f"checkpoint_every={10**9}",
        f"seed={args.seed}",
    ]
    cfg = OmegaConf.to_container(compose_config(overrides), resolve=True)
    start = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    setup_s = time.perf_counter() - start
    summary = trainer.run()
    warm_s, steps, seconds = timed_windows(summary.history, batch_size, args.warmup)
    if not args.keep_runs:
        shutil.rmtree(out, ignore_errors=True)
    if not math.isfinite(summary.train_loss):
        raise SystemExit(f"{policy}: the training loss is {summary.train_loss}")
    return {
        "policy": policy,
        "variant": name,
        "device": str(trainer.device),
        "precision": precision,
        "compile": compile_on,
        "batch_size": batch_size,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "params": summary.parameters,
        "train_windows": len(trainer.train_data),
        "warmup_steps": args.warmup,
        "timed_steps": steps,
        "samples_per_s": round(steps * batch_size / seconds, 2),
        "steps_per_s": round(steps / seconds, 3),
        "s_per_step": round(seconds / steps, 4),
        "warmup_s": round(warm_s, 2),
        "setup_s": round(setup_s, 2),
        "train_loss": round(summary.train_loss, 5),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=Path("outputs/bench/train_bench_lift.zarr"))
    p.add_argument("--episodes", type=int, default=20, help="episodes to record when the dataset is missing")
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--steps", type=int, default=60, help="timed training steps per case")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile, DataLoader start)")
    p.add_argument("--state-batch", type=int, default=64, help="batch size of the state policies")
    p.add_argument("--image-batch", type=int, default=32, help="batch size of the image policy")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (dataset.num_workers)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--runs", type=Path, default=Path("outputs/bench/train_bench"), help="training run folders")
    p.add_argument("--keep-runs", action="store_true", help="keep the run folders (checkpoints, metrics)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench/policy_training.json"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dataset = ensure_dataset(args.dataset, args.episodes)
    print(
        f"{dataset['episodes']} episodes in {args.dataset}; device {device}, {torch.get_num_threads()} threads, "
        f"{args.workers} DataLoader workers; {args.warmup} warm-up + {args.steps} timed steps per case",
        flush=True,
    )

    results = []
    for policy in args.policies:
        batch_size = args.image_batch if policy.startswith("diffusion_image") else args.state_batch
        for variant in VARIANTS[device.type]:
            r = run_case(policy, variant, args, str(device), batch_size)
            results.append(r)
            print(
                f"  {policy:20s} {r['variant']:13s} batch {batch_size:3d}: {r['samples_per_s']:9.1f} samples/s, "
                f"{r['s_per_step']:.4f} s/step (warm-up {r['warmup_s']:.1f} s)",
                flush=True,
            )

    header = (
        f"{'policy':20s} {'variant':13s} {'device':6s} {'params':>8s} {'batch':>5s} {'samples/s':>10s} "
        f"{'steps/s':>8s} {'s/step':>8s} {'warm-up s':>9s}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r['policy']:20s} {r['variant']:13s} {r['device']:6s} {r['params'] / 1e6:7.2f}M {r['batch_size']:5d} "
            f"{r['samples_per_s']:10.1f} {r['steps_per_s']:8.3f} {r['s_per_step']:8.4f} {r['warmup_s']:9.1f}"
        )
    report = {
        "benchmark": "policy_training",
        "config": {
            "steps": args.steps,
            "warmup": args.warmup,
            "state_batch": args.state_batch,
            "image_batch": args.image_batch,
            "workers": args.workers,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "timing": "the Trainer's per-window samples/s of the log rows after the warm-up window",
        },
        "dataset": dataset,
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
    summary = ", ".join(f"{r['policy']} {r['variant']} {r['samples_per_s']:.0f}/s" for r in results)
    print(f"policy_training (samples/s on {device}): {summary}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
