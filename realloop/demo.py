"""``make demo``: the main job on embedded defaults, with the MuJoCo sim standing in for the robot.

1. ``realloop-collect``: scripted demonstrations of the arm lift task, with the wrist and front cameras and
   domain randomisation, into a local zarr dataset;
2. ``realloop-dataset``: info, verify, stats, a plot and a video of the first episode;
3. a batch of training windows (observation history, action chunks) through the torch dataset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from realloop.data import Dataset
from realloop.data.cli import main as dataset_cli
from realloop.sim.collect import collect, compose_config


def training_batch(path: Path) -> dict[str, list[int]]:
    """Build the torch training dataset (2-step history, 16-step action chunks at 10 Hz) and load a batch."""
    import torch

    from realloop.data.training import WindowDataset, split_episodes

    with Dataset.open(path) as ds:
        train, val = split_episodes(ds.episode_indices, val_fraction=0.25)
    keys = ["observation.state", "observation.environment_state", "observation.images.wrist"]
    windows = WindowDataset.for_policy(path, keys, n_obs_steps=2, horizon=16, rate=10, episodes=train)
    loader = torch.utils.data.DataLoader(windows, batch_size=32, shuffle=True, num_workers=2)
    batch = next(iter(loader))
    shapes = {k: list(v.shape) for k, v in batch.items() if not k.endswith("_is_pad")}
    print(f"\ntraining windows: {len(windows)} samples from episodes {train} (validation: {val})")
    for k, v in shapes.items():
        print(f"  {k:<32} {v}")
    return shapes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="output folder (replaced)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--task", default="arm_lift", help="a task of configs/task")
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
    batch = training_batch(path)
    summary = {
        "dataset": str(path),
        "episodes": collected.episodes,
        "success_rate": collected.success_rate,
        "training_batch": batch,
        "plot": str(out / "episode0.png"),
        "video": str(out / "episode0_front.mp4"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\ndemo: {collected.episodes} {args.task} episodes ({collected.success_rate:.0%} successful) in {path}, "
        f"plot {summary['plot']}, video {summary['video']} ({summary['seconds']} s) -> {out / 'demo_summary.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
