"""Training read throughput of ``realloop.data.training.WindowDataset`` through a torch DataLoader.

Builds a dataset in a temporary directory (default: 20 episodes of 30 s; state 14-D at 500 Hz, action 7-D at
10 Hz, two 96x96 JPEG cameras at 30 Hz), then measures samples/s at batch 64 with 0 and 2 DataLoader
workers for (a) state-only windows and (b) windows with two camera histories (2 observation steps), all at
the 10 Hz action rate, diffusion_policy's convention (horizon 16). Prints a table and writes JSON.

    python benchmarks/dataset_read.py                 # full size (~1 min to build, uses every core)
    python benchmarks/dataset_read.py --quick         # a small run to check that it works
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader

from realloop.data import Dataset
from realloop.data.training import WindowDataset

CAMERAS = ("observation.images.front", "observation.images.wrist")


def build(path: Path, episodes: int, seconds: float, image_size: int, seed: int = 0) -> dict[str, Any]:
    """Record the synthetic multi-rate dataset; returns its size figures."""
    features = {
        "observation.state": {"dtype": "float32", "shape": [14], "rate_hz": 500},
        "action": {"dtype": "float32", "shape": [7], "rate_hz": 10},
        **{cam: {"shape": [image_size, image_size, 3], "rate_hz": 30} for cam in CAMERAS},
    }
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    start = time.perf_counter()
    with Dataset.create(path, features=features, durable=False) as ds:
        for e in range(episodes):
            t0 = 1000.0 + 100.0 * e
            with ds.begin_episode(task="benchmark", source="sim") as ep:
                n_state, n_action, n_img = int(seconds * 500), int(seconds * 10), int(seconds * 30)
                ts = t0 + np.arange(n_state) / 500
                state = np.cumsum(rng.normal(scale=0.01, size=(n_state, 14)), axis=0).astype(np.float32)
                ep.extend("observation.state", ts, state)
                ep.extend("action", t0 + 0.001 + np.arange(n_action) / 10, state[::50][:n_action, :7])
                for c, cam in enumerate(CAMERAS):
                    stamps = t0 + 0.003 * (c + 1) + np.arange(n_img) / 30
                    for lo in range(0, n_img, 100):  # bounded memory: 100 frames at a time
                        k = np.arange(lo, min(lo + 100, n_img), dtype=np.float32)[:, None, None, None]
                        phase = np.array([0.0, 2.0, 4.0], dtype=np.float32) + c
                        img = 127 + 90 * np.sin(xx[..., None] / 9 + yy[..., None] / 13 + k * 0.1 + phase)
                        img += rng.normal(scale=6, size=img.shape)
                        ep.extend(cam, stamps[lo : lo + len(k)], np.clip(img, 0, 255).astype(np.uint8))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    files = sum(1 for f in path.rglob("*") if f.is_file())
    return {"build_s": round(time.perf_counter() - start, 2), "bytes": size, "files": files}


def measure(dataset: WindowDataset, batch_size: int, workers: int, batches: int, seed: int) -> dict[str, Any]:
    """Samples/s over ``batches`` batches after the first one (which pays worker start-up)."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    available = len(loader) - 1
    if available < 1:
        raise SystemExit(f"the dataset gives {len(loader)} batches of {batch_size}: make it larger")
    n = min(batches, available)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    elapsed = time.perf_counter() - t
    del it
    return {
        "workers": workers,
        "batch_size": batch_size,
        "batches": n,
        "samples_per_s": round(n * batch_size / elapsed, 1),
        "first_batch_s": round(first, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small dataset and few batches, to check it works")
    p.add_argument("--episodes", type=int, default=None, help="episodes to record (default 20, quick 2)")
    p.add_argument("--seconds", type=float, default=None, help="episode length (default 30, quick 8)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=None, help="default 64, quick 16")
    p.add_argument("--batches", type=int, default=None, help="timed batches per case (default 40, quick 3)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--out", type=Path, default=Path("outputs/bench/dataset_read.json"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    quick = args.quick
    episodes = args.episodes or (2 if quick else 20)
    seconds = args.seconds or (8.0 if quick else 30.0)
    batch_size = args.batch_size or (16 if quick else 64)
    batches = args.batches or (3 if quick else 40)

    with tempfile.TemporaryDirectory(prefix="realloop-bench-") as tmp:
        path = Path(tmp) / "bench.zarr"
        print(f"building {episodes} episodes of {seconds:g} s in {path} ...", flush=True)
        size = build(path, episodes, seconds, args.image_size, args.seed)
        print(f"  {size['build_s']} s, {size['bytes'] / 1e6:.1f} MB in {size['files']} files", flush=True)
        cases = {
            "state": ["observation.state"],
            "state+2cams": ["observation.state", *CAMERAS],
        }
        results = []
        for name, obs_keys in cases.items():
            start = time.perf_counter()
            ds = WindowDataset.for_policy(path, obs_keys, n_obs_steps=2, horizon=16, rate=10)
            index_s = time.perf_counter() - start
            for workers in args.workers:
                r = measure(ds, batch_size, workers, batches, args.seed)
                r.update(case=name, samples=len(ds), index_s=round(index_s, 3))
                results.append(r)
                print(f"  {name:12s} workers={workers}: {r['samples_per_s']:9.1f} samples/s", flush=True)

    header = f"{'case':12s} {'workers':>7s} {'batch':>5s} {'samples/s':>10s} {'first batch s':>13s}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r['case']:12s} {r['workers']:7d} {r['batch_size']:5d} {r['samples_per_s']:10.1f} "
            f"{r['first_batch_s']:13.3f}"
        )
    report = {
        "benchmark": "dataset_read",
        "quick": quick,
        "config": {
            "episodes": episodes,
            "seconds": seconds,
            "image_size": args.image_size,
            "state_hz": 500,
            "camera_hz": 30,
            "action_hz": 10,
            "rate": 10,
            "n_obs_steps": 2,
            "horizon": 16,
            "batch_size": batch_size,
            "timed_batches": batches,
        },
        "dataset": size,
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "zarr": zarr.__version__,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = ", ".join(f"{r['case']} w{r['workers']} {r['samples_per_s']:.0f}/s" for r in results)
    print(f"dataset_read (samples/s, batch {batch_size}): {summary}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
