"""``make demo`` (dataset stage): record a small multi-rate dataset, inspect it, export a plot and a video.

Until the MuJoCo mirror lands, the recording comes from a planar two-link arm drawn with OpenCV: joint states
at 500 Hz, a 30 Hz front camera, 10 Hz actions, each stream on its own clock, as a real recorder gets them.
Everything then goes through ``realloop-dataset`` (info, verify, stats, plot, export-video), and a batch of
training windows is loaded through the torch dataset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from realloop.data import Dataset
from realloop.data.cli import main as dataset_cli

LINKS = (0.45, 0.35)
IMG = 96


def joint_trajectory(t: np.ndarray, seed: int) -> np.ndarray:
    """Smooth reaching motions of a two-link arm plus a gripper opening (radians, radians, 0..1)."""
    rng = np.random.default_rng(seed)
    a, f, p = rng.uniform(0.3, 1.0, 3), rng.uniform(0.2, 0.6, 3), rng.uniform(0, 6, 3)
    q = np.stack([a[i] * np.sin(2 * np.pi * f[i] * t + p[i]) for i in range(3)], axis=-1)
    q[:, 2] = 0.5 + 0.5 * np.tanh(3 * q[:, 2])
    return q


def draw(q: np.ndarray) -> np.ndarray:
    """A front-camera view of the arm: table, links, gripper."""
    img = np.full((IMG, IMG, 3), (235, 230, 220), np.uint8)
    cv2.rectangle(img, (0, 70), (IMG, IMG), (150, 120, 90), -1)
    base = np.array([IMG / 2, 70.0])
    elbow = base + 60 * LINKS[0] * np.array([np.sin(q[0]), -np.cos(q[0])])
    hand = elbow + 60 * LINKS[1] * np.array([np.sin(q[0] + q[1]), -np.cos(q[0] + q[1])])
    for a, b, c in ((base, elbow, (40, 90, 200)), (elbow, hand, (40, 160, 90))):
        cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), c, 4, cv2.LINE_AA)
    cv2.circle(img, tuple(int(v) for v in hand), int(2 + 4 * q[2]), (200, 60, 40), -1, cv2.LINE_AA)
    return img


def record(path: Path, episodes: int, seconds: float) -> Dataset:
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["shoulder", "elbow", "gripper"],
                              "units": "rad, rad, 1", "rate_hz": 500},
        "observation.images.front": {"shape": [IMG, IMG, 3], "rate_hz": 30},
        "action": {"dtype": "float32", "shape": [3], "names": ["shoulder", "elbow", "gripper"], "rate_hz": 10},
    }
    robot = {"name": "planar2", "joints": ["shoulder", "elbow", "gripper"], "control_rate_hz": 10}
    ds = Dataset.create(path, features, robot=robot)
    for e in tqdm(range(episodes), desc="recording", unit="episode"):
        t0 = 1_700_000_000.0 + 100 * e  # wall-clock-like stamps; each stream has its own phase
        t_state = np.arange(0, seconds, 1 / 500)
        t_cam = np.arange(0.013, seconds, 1 / 30)
        t_act = np.arange(0.002, seconds, 1 / 10)
        with ds.begin_episode(task="reach", source="scripted", seed=e) as ep:
            ep.extend("observation.state", t0 + t_state, joint_trajectory(t_state, e))
            ep.extend("action", t0 + t_act, joint_trajectory(t_act + 0.1, e))  # commands lead the state
            for t in t_cam:
                ep.add("observation.images.front", t0 + t, draw(joint_trajectory(np.array([t]), e)[0]))
            ep.commit(success=bool(e % 4 != 3))
    return ds


def training_batch(path: Path) -> dict[str, list[int]]:
    """Build the torch training dataset (2-step history, 16-step action chunks at 10 Hz) and load a batch."""
    import torch

    from realloop.data.training import WindowDataset, split_episodes

    train, val = split_episodes(Dataset.open(path).episode_indices, val_fraction=0.25)
    windows = WindowDataset.for_policy(
        path, ["observation.state", "observation.images.front"], n_obs_steps=2, horizon=16, rate=10, episodes=train
    )
    loader = torch.utils.data.DataLoader(windows, batch_size=32, shuffle=True, num_workers=2)
    batch = next(iter(loader))
    shapes = {k: list(v.shape) for k, v in batch.items() if not k.endswith("_is_pad")}
    print(f"\ntraining windows: {len(windows)} samples from episodes {train} (validation: {val})")
    for k, v in shapes.items():
        print(f"  {k:<28} {v}")
    return shapes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="outputs/demo", help="output folder (replaced)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    path = out / "demo.zarr"
    record(path, args.episodes, args.seconds).close()
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
        "training_batch": batch,
        "episodes": args.episodes,
        "plot": str(out / "episode0.png"),
        "video": str(out / "episode0_front.mp4"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\ndemo: {args.episodes} episodes in {path}, plot {summary['plot']}, video {summary['video']} "
          f"({summary['seconds']} s) -> {out / 'demo_summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
