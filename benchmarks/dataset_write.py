"""Writer throughput: three 640x480 RGB cameras at 30 Hz plus 500 Hz joint states into one episode.

Prints the real-time factor (recorded seconds / wall seconds to ingest and commit them), CPU use (cores busy
while writing) and the size on disk per minute of recording; writes the figures as JSON.

    python benchmarks/dataset_write.py                      # JPEG, 20 s of recording
    python benchmarks/dataset_write.py --format png         # lossless
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from realloop.data import Dataset


def camera_scene(h: int, w: int, seed: int) -> np.ndarray:
    """A textured frame (multi-scale noise, like a cluttered scene) that costs JPEG what real images do."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w * 2, 3), np.float32)
    for scale in (4, 16, 64, 256):
        small = rng.normal(size=(max(2, h // scale), max(2, 2 * w // scale), 3)).astype(np.float32)
        img += cv2.resize(small, (2 * w, h), interpolation=cv2.INTER_CUBIC) * (scale**0.5) * 6
    return np.clip(img + 128, 0, 255).astype(np.uint8)


def run(args: argparse.Namespace) -> dict:
    cams = [f"cam{i}" for i in range(args.cameras)]
    features = {
        f"observation.images.{c}": {"shape": [args.height, args.width, 3], "image_format": args.format} for c in cams
    }
    features["observation.state"] = {"dtype": "float32", "shape": [args.joints * 3]}
    scenes = [camera_scene(args.height, args.width, i) for i in range(args.cameras)]
    rng = np.random.default_rng(0)
    n_frames = int(args.seconds * args.fps)
    n_joint = int(args.seconds * args.joint_rate)
    joint_block = rng.normal(size=(n_joint, args.joints * 3)).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="realloop-bench-", dir=args.dir))
    try:
        ds = Dataset.create(tmp / "bench.zarr", features)
        # events in time order, as a recorder receives them
        events = [(i / args.fps + 1e-4 * k, "img", k, i) for i in range(n_frames) for k in range(args.cameras)]
        events += [(j / args.joint_rate, "joint", 0, j) for j in range(n_joint)]
        events.sort()
        shift = max(1, int(args.width // (args.fps * 4)))
        cpu0, t0 = os.times(), time.perf_counter()
        with ds.begin_episode(task="benchmark") as ep:
            for t, kind, k, i in events:
                if kind == "img":
                    frame = scenes[k][:, (i * shift) % args.width : (i * shift) % args.width + args.width]
                    ep.add(f"observation.images.{cams[k]}", t, frame)
                else:
                    ep.add("observation.state", t, joint_block[i])
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        size = sum(f.stat().st_size for f in (tmp / "bench.zarr").rglob("*") if f.is_file())
        files = sum(1 for f in (tmp / "bench.zarr").rglob("*") if f.is_file())
        ds.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "benchmark": "dataset_write",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cameras": args.cameras,
        "resolution": f"{args.width}x{args.height}",
        "camera_fps": args.fps,
        "joint_rate_hz": args.joint_rate,
        "image_format": args.format,
        "recorded_s": args.seconds,
        "wall_s": round(wall, 3),
        "realtime_factor": round(args.seconds / wall, 2),
        "frames_per_s": round(n_frames * args.cameras / wall, 1),
        "cpu_cores_busy": round(cpu / wall, 2),
        "cpu_percent_of_realtime": round(100 * cpu / args.seconds, 1),
        "size_mb_per_minute": round(size / 1e6 * 60 / args.seconds, 1),
        "files_per_minute": round(files * 60 / args.seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="length of the recording")
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--joint-rate", type=float, default=500.0)
    p.add_argument("--joints", type=int, default=7, help="joints (state = position, velocity, effort)")
    p.add_argument("--format", default="jpeg", choices=["jpeg", "png", "webp"])
    p.add_argument("--dir", default=None, help="where to write the temporary dataset (default: system temp)")
    p.add_argument("--out", default="outputs/bench/dataset_write.json")
    args = p.parse_args()
    r = run(args)
    for k, v in r.items():
        print(f"{k:>26}: {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(r, indent=2))
    print(
        f"write: {r['realtime_factor']}x real time, {r['cpu_cores_busy']} cores busy, "
        f"{r['size_mb_per_minute']} MB/min ({args.format}) -> {args.out}"
    )


if __name__ == "__main__":
    main()
