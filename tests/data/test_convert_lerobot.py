"""LeRobotDataset v3 directory -> realloop dataset, on a small real v3 layout written here with pyarrow + cv2."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realloop.data.cli import main
from realloop.data.dataset import Dataset

FPS = 10
H, W = 32, 48
CAM = "observation.images.front"
TASKS = ["pick the cube", "place the cube"]


def smooth_frame(i: int) -> np.ndarray:
    """A smooth RGB frame (mp4v keeps it close) that differs clearly from frame i +- 1."""
    yy, xx = np.mgrid[0:H, 0:W]
    ch = [np.sin(xx / 9 + i * 0.9 + c) + np.cos(yy / 7 - i * 0.6 + 2 * c) for c in range(3)]
    return (127.5 + 55 * np.stack(ch, axis=-1)).astype(np.uint8)


def make_lerobot_v3(root: Path, lengths: list[int], version: str = "v3.0") -> dict[str, np.ndarray]:
    """Write a LeRobot v3 dataset: one data file, one episodes file, one mp4 holding all episodes."""
    rng = np.random.default_rng(0)
    n = sum(lengths)
    ep_index = np.repeat(np.arange(len(lengths)), lengths)
    frame_index = np.concatenate([np.arange(k) for k in lengths])
    src = {
        "state": rng.normal(size=(n, 3)).astype(np.float32),
        "action": rng.normal(size=(n, 2)).astype(np.float32),
        "reward": rng.uniform(size=n).astype(np.float32),
        "frames": np.stack([smooth_frame(i) for i in range(n)]),
        "timestamp": (frame_index / FPS).astype(np.float32),
    }
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    info = {
        "codebase_version": version,
        "robot_type": "so100",
        "fps": FPS,
        "total_episodes": len(lengths),
        "total_frames": n,
        "chunks_size": 1000,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "observation.state": {"dtype": "float32", "shape": [3], "names": {"motors": ["j0", "j1", "j2"]}},
            "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            CAM: {
                "dtype": "video",
                "shape": [H, W, 3],
                "names": ["height", "width", "channels"],
                "info": {"video.fps": FPS, "video.codec": "mp4v"},
            },
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": scalar,
            "episode_index": scalar,
            "index": scalar,
            "task_index": scalar,
        },
    }
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "observation.state": pa.array(list(src["state"]), pa.list_(pa.float32())),
                "action": pa.array(list(src["action"]), pa.list_(pa.float32())),
                "next.reward": pa.array(src["reward"]),
                "timestamp": pa.array(src["timestamp"]),
                "frame_index": pa.array(frame_index, pa.int64()),
                "episode_index": pa.array(ep_index, pa.int64()),
                "index": pa.array(np.arange(n), pa.int64()),
                "task_index": pa.array(ep_index % 2, pa.int64()),
            }
        ),
        root / "data" / "chunk-000" / "file-000.parquet",
    )
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    key = f"videos/{CAM}"
    pq.write_table(
        pa.table(
            {
                "episode_index": list(range(len(lengths))),
                "tasks": [[TASKS[i % 2]] for i in range(len(lengths))],
                "length": lengths,
                "data/chunk_index": [0] * len(lengths),
                "data/file_index": [0] * len(lengths),
                "dataset_from_index": bounds[:-1].tolist(),
                "dataset_to_index": bounds[1:].tolist(),
                f"{key}/chunk_index": [0] * len(lengths),
                f"{key}/file_index": [0] * len(lengths),
                f"{key}/from_timestamp": (bounds[:-1] / FPS).tolist(),
                f"{key}/to_timestamp": (bounds[1:] / FPS).tolist(),
            }
        ),
        root / "meta" / "episodes" / "chunk-000" / "file-000.parquet",
    )
    pq.write_table(
        pa.table({"task_index": [0, 1], "__index_level_0__": TASKS}), root / "meta" / "tasks.parquet"
    )  # pandas-style: the task string is the index
    (root / key / "chunk-000").mkdir(parents=True)
    writer = cv2.VideoWriter(
        str(root / key / "chunk-000" / "file-000.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H)
    )
    assert writer.isOpened()
    for frame in src["frames"]:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return src


def test_v3_dataset_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lengths = [6, 4]
    src = make_lerobot_v3(tmp_path / "lerobot", lengths)
    argv = ["convert", "--from", "lerobot", str(tmp_path / "lerobot"), str(tmp_path / "out"), "--source", "policy"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("converted 2 episodes")

    summary = json.loads((tmp_path / "out.convert.json").read_text())
    assert summary["mapping"][CAM] == CAM and summary["samples"][CAM] == sum(lengths)

    ds = Dataset.open(tmp_path / "out")
    assert len(ds) == 2 and ds.robot == {"name": "so100"}
    assert set(ds.features) == {"observation.state", "action", "next.reward", CAM}
    assert ds.features["observation.state"].names == ("j0", "j1", "j2")
    assert ds.features["next.reward"].shape == (1,) and ds.features[CAM].shape == (H, W, 3)
    start = 0
    for i, n in enumerate(lengths):
        ep = ds.episode(i)
        sl = slice(start, start + n)
        np.testing.assert_array_equal(ep.stream("observation.state").read(), src["state"][sl])
        np.testing.assert_array_equal(ep.stream("action").read(), src["action"][sl])
        np.testing.assert_array_equal(ep.stream("next.reward").read()[:, 0], src["reward"][sl])
        for name in ds.features:
            np.testing.assert_allclose(ep.stream(name).timestamps, np.arange(n) / FPS, atol=1e-9)
        frames = ep.stream(CAM).read().astype(float)
        assert frames.shape == (n, H, W, 3)
        err = np.abs(frames - src["frames"][sl]).mean(axis=(1, 2, 3))
        shifted = np.abs(frames[1:] - src["frames"][sl][:-1]).mean()
        assert err.max() < 10 and shifted > 3 * err.mean()  # the right frames, not their neighbours
        assert ep.meta["task"] == TASKS[i % 2] and ep.meta["source"] == "policy" and ep.meta["robot"] == "so100"
        attrs = ep.meta["attributes"]
        assert attrs["lerobot_episode_index"] == i and attrs["converted_from"] == "lerobot"
        start += n


def test_bad_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain" / "meta").mkdir(parents=True)
    assert main(["convert", "--from", "lerobot", str(tmp_path / "plain"), str(tmp_path / "out")]) == 2
    assert "meta/info.json is missing" in capsys.readouterr().err

    make_lerobot_v3(tmp_path / "old", [3], version="v2.1")
    assert main(["convert", "--from", "lerobot", str(tmp_path / "old"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "LeRobot v2.1 dataset" in err and "v3.0" in err

    argv = ["convert", "--from", "lerobot", "--fps", "5", str(tmp_path / "old"), str(tmp_path / "out")]
    assert main(argv) == 2
    assert "--fps do(es) not apply to --from lerobot" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written when the input is bad
