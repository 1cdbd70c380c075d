"""``realloop-dataset`` end to end on a small real dataset: info, verify, stats, export, plot, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run

from realloop.data.cli import main
from realloop.data.dataset import Dataset
from realloop.data.export import PlotInfo, plot_episode

FEATURES = {
    "observation.state": {
        "dtype": "float32",
        "shape": [3],
        "names": ["shoulder", "elbow", "wrist"],
        "units": "rad",
        "rate_hz": 500,
    },
    "action": {"dtype": "float32", "shape": [2], "names": ["vx", "wz"], "rate_hz": 10},
    "next.reward": {"dtype": "float32", "shape": []},
    "next.done": {"dtype": "bool", "shape": []},
    "observation.images.front": {"shape": [32, 32, 3], "rate_hz": 30},
}
STATE_N, ACTION_N, FRAMES = 1500, 30, 130  # 500 Hz and 10 Hz for 3 s; 130 frames at 30 Hz = two shards
EPISODES = 2
DURATION = (FRAMES - 1) / 30  # the camera outlasts the other streams


def frame(k: int) -> np.ndarray:
    """A smooth, mostly red RGB frame (survives JPEG and mp4v, shows a swapped channel order)."""
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[..., 0] = 200
    img[..., 1] = np.linspace(0, 120, 32, dtype=np.uint8)[None, :] + k % 8
    img[..., 2] = 30
    return img


def write_dataset(path: Path) -> Path:
    rng = np.random.default_rng(1)
    ds = Dataset.create(path, FEATURES, robot={"name": "arm6"}, durable=False)
    for e in range(EPISODES):
        t0 = 50.0 + 20 * e
        with ds.begin_episode(task="pick cube", source="teleop") as ep:
            jitter = rng.uniform(-2e-4, 2e-4, STATE_N)
            jitter[[0, -1]] = 0  # 500 Hz on average, exactly
            ts = t0 + np.arange(STATE_N) / 500 + jitter
            ep.extend("observation.state", ts, np.sin(ts[:, None] * [1.0, 2.0, 3.0]))
            ta = t0 + np.arange(ACTION_N) / 10
            ep.extend("action", ta, rng.normal(size=(ACTION_N, 2)))
            ep.extend("next.reward", ta, np.linspace(0, 1, ACTION_N))
            ep.extend("next.done", ta, np.arange(ACTION_N) == ACTION_N - 1)
            ep.extend(
                "observation.images.front",
                t0 + np.arange(FRAMES) / 30,
                np.stack([frame(k) for k in range(FRAMES)]),
            )
            ep.commit(success=e == 0)
    ds.close()
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cli") / "demo.zarr")


@pytest.fixture
def ds_path(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "demo.zarr"))


# -- info ----------------------------------------------------------------------------------------------------
def test_info_text(pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(pristine))
    assert code == 0
    assert "episodes  2 (indices 0..1); success 1, failure 1, unknown 0" in out
    assert "robot     arm6" in out
    assert f"steps     {EPISODES * ACTION_N} (action samples)" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("observation", "next"))}
    assert rows["observation.state"][1:] == ["float32", "(3,)", "500.0", str(EPISODES * STATE_N), "2"]
    assert rows["observation.images.front"][1:] == [
        "uint8",
        "(32,",
        "32,",
        "3)",
        "30.0",
        str(EPISODES * FRAMES),
        "2",
    ]
    assert rows["next.done"][1:3] == ["bool", "()"]
    assert out.strip().splitlines()[-1].startswith("2 episodes, 60 steps")


def test_info_json(pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(pristine), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["episodes"] == 2 and info["steps"] == EPISODES * ACTION_N
    assert info["duration_s"] == pytest.approx(EPISODES * DURATION)
    assert info["success"] == {"true": 1, "false": 1, "unknown": 0}
    assert info["tasks"] == {"pick cube": 2}
    state = info["streams"]["observation.state"]
    assert state["rate_hz"] == pytest.approx(500.0)
    assert (state["samples"], state["shape"], state["dtype"]) == (EPISODES * STATE_N, [3], "float32")
    assert state["names"] == ["shoulder", "elbow", "wrist"]
    cam = info["streams"]["observation.images.front"]
    assert cam["rate_hz"] == pytest.approx(30.0) and cam["shape"] == [32, 32, 3] and cam["kind"] == "image"
    assert info["streams"]["action"]["rate_hz"] == pytest.approx(10.0)
    on_disk = sum(f.stat().st_size for f in pristine.rglob("*") if f.is_file())
    assert info["size_bytes"] == on_disk
    assert info["stats"] is None


def test_console_script_subprocess(pristine: Path) -> None:
    script = Path(sys.executable).parent / "realloop-dataset"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "realloop.data.cli"]
    proc = subprocess.run([*cmd, "info", str(pristine), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["episodes"] == 2
    proc = subprocess.run([*cmd, "info", str(pristine.parent / "nope")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "does not exist")


# -- verify / stats ------------------------------------------------------------------------------------------
def test_verify_writes_json_next_to_dataset(ds_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", str(ds_path))
    assert code == 0 and out.startswith(f"OK {ds_path}: 2 episodes, 10 streams")
    report = json.loads((ds_path.parent / "demo.zarr.verify.json").read_text())
    assert report["ok"] and report["frames"] == EPISODES * FRAMES


def test_stats_computes_and_stores(ds_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", str(ds_path), "--no-progress")
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("statistics of 5 features over 2 episodes")
    stored = Dataset.open(ds_path).stats
    assert stored is not None and set(stored) == set(FEATURES)
    assert stored["observation.state"]["count"] == EPISODES * STATE_N
    assert stored["next.reward"]["max"] == pytest.approx(1.0)
    saved = json.loads((ds_path.parent / "demo.zarr.stats.json").read_text())
    assert saved["stats"]["action"] == stored["action"]
    code, out, _ = run(capsys, "info", str(ds_path))
    assert "stats     action, next.done" in out
    # recomputing a subset keeps the statistics of the other features
    with Dataset.open(ds_path, mode="a") as ds, ds.begin_episode() as ep:
        ep.extend("action", [100.0, 100.1], np.full((2, *ds.features["action"].shape), 50.0))
    code, _, _ = run(capsys, "stats", str(ds_path), "--no-progress", "--features", "action")
    assert code == 0
    again = Dataset.open(ds_path).stats
    assert set(again) == set(FEATURES) and again["observation.state"] == stored["observation.state"]
    assert np.max(again["action"]["max"]) == 50.0


def test_stats_no_store_and_unknown_feature(ds_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = ds_path.parent / "s.json"
    code, _, _ = run(capsys, "stats", str(ds_path), "--no-store", "--features", "action", "--json-out", str(out_json))
    assert code == 0
    assert Dataset.open(ds_path).stats is None
    assert set(json.loads(out_json.read_text())["stats"]) == {"action"}
    code, _, err = run(capsys, "stats", str(ds_path), "--features", "observation.gripper")
    assert code == 2
    assert_one_line_error(err, "observation.gripper")


# -- export-video / plot -------------------------------------------------------------------------------------
def test_export_video(pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "front.mp4"
    code, stdout, _ = run(capsys, "export-video", str(pristine), "--episode", "1", "--camera", "front", str(out))
    assert code == 0 and f"{FRAMES} frames, 32x32, 30.00 fps" in stdout
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0, abs=0.01)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) == FRAMES
    assert frames[0].shape == (32, 32, 3)
    b, g, r = (float(frames[10][..., c].mean()) for c in range(3))  # OpenCV reads BGR
    assert r > 150 and b < 80, (b, g, r)
    assert [p.name for p in tmp_path.iterdir()] == ["front.mp4"]  # no temporary file left


def test_plot(pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ep0.png"
    code, stdout, _ = run(capsys, "plot", str(pristine), "--episode", "0", str(out))
    assert code == 0 and "4 streams (observation.state, action, next.reward, next.done)" in stdout
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (4 * 250, 1000, 3)
    assert (img < 200).any(axis=2).mean() > 0.02  # lines and text were drawn on the white figure
    code, stdout, _ = run(capsys, "plot", str(pristine), "--episode", "1", "--keys", "action,next.reward", str(out))
    assert code == 0 and "2 streams (action, next.reward)" in stdout
    assert cv2.imread(str(out)).shape == (2 * 250, 1000, 3)

    info = plot_episode(pristine, 1, tmp_path / "two.png", keys=["action", "observation.state"], dpi=50)
    assert info == PlotInfo(
        path=str(tmp_path / "two.png"),
        streams=["action", "observation.state"],
        width=500,
        height=250,
        duration=pytest.approx(DURATION),
    )
    assert cv2.imread(info.path).shape == (250, 500, 3)


# -- errors --------------------------------------------------------------------------------------------------
def test_not_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk").mkdir()
    for argv in (
        ["info", str(tmp_path / "junk")],
        ["stats", str(tmp_path / "junk")],
        ["plot", str(tmp_path / "junk"), "--episode", "0", str(tmp_path / "x.png")],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert_one_line_error(err, "not a realloop dataset")
    code, _, err = run(capsys, "info", str(tmp_path / "missing"))
    assert code == 2
    assert_one_line_error(err, "does not exist", "check the path")


def test_missing_camera_episode_and_key(pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.mp4")
    code, _, err = run(capsys, "export-video", str(pristine), "--episode", "0", "--camera", "wrist", out)
    assert code == 2
    assert_one_line_error(err, "no camera 'wrist'", "cameras recorded: front")
    code, _, err = run(capsys, "export-video", str(pristine), "--episode", "9", "--camera", "front", out)
    assert code == 2
    assert_one_line_error(err, "no episode 9", "0..1")
    code, _, err = run(capsys, "plot", str(pristine), "--episode", "0", "--keys", "observation.images.front", out)
    assert code == 2
    assert_one_line_error(err, "image stream", "export-video")
    assert not os.listdir(tmp_path)


def test_damaged_data_exits_1(ds_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shard = ds_path / "episodes/episode_000000/observation.images.front/data/c/1/0/0/0"
    os.truncate(shard, shard.stat().st_size // 2)
    out = tmp_path / "v.mp4"
    code, _, err = run(capsys, "export-video", str(ds_path), "--episode", "0", "--camera", "front", str(out))
    assert code == 1
    assert_one_line_error(err, "damaged", "realloop-dataset verify")
    assert not out.exists()
    code, _, err = run(capsys, "stats", str(ds_path))
    assert code == 1
    assert_one_line_error(err, "checksum", "verify")


def test_stats_while_another_process_writes(ds_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Dataset.open(ds_path, mode="a"):  # holds the writer lock, as a recorder would
        code, _, err = run(capsys, "stats", str(ds_path))
    assert code == 2
    assert_one_line_error(err, "another process is writing")
    code, _, _ = run(capsys, "stats", str(ds_path), "--no-store")  # reading needs no lock
    assert code == 0


def test_convert_is_wired(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--help"])
    assert exc.value.code == 0
    assert "usage: realloop-dataset convert" in capsys.readouterr().out
