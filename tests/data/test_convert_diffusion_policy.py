"""diffusion_policy ReplayBuffer zarr (v2, Blosc) -> realloop dataset, on real stores written here."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from realloop.data.convert import ConvertError, add_convert_arguments, run_convert
from realloop.data.convert.diffusion_policy import convert_diffusion_policy, resolve_mapping
from realloop.data.dataset import Dataset

BLOSC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)  # ReplayBuffer's default


def smooth_frames(n: int, rng: np.random.Generator) -> np.ndarray:
    """Camera-like frames (smooth, so that JPEG keeps them close)."""
    yy, xx = np.mgrid[0:12, 0:16]
    phase = rng.uniform(0, 6, size=(n, 1, 1, 3))
    return (127.5 + 100 * np.sin(xx[None, ..., None] / 5 + yy[None, ..., None] / 7 + phase)).astype(np.uint8)


def make_replay_buffer(path: Path, lengths: list[int], seed: int = 0, **kinds: str) -> dict[str, np.ndarray]:
    """Write a ReplayBuffer as diffusion_policy does: zarr v2, data/<key> concatenated, meta/episode_ends.

    ``kinds`` picks keys beyond state/action/keypoint: ``img="uint8"|"unit"|"byte"``, ``camera_0="uint8"``,
    ``timestamp="yes"``, ``robot_eef_pose="yes"``.
    """
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    data: dict[str, np.ndarray] = {
        "state": rng.normal(size=(n, 5)).astype(np.float32),
        "action": rng.normal(size=(n, 2)).astype(np.float32),
        "keypoint": rng.normal(size=(n, 9, 2)).astype(np.float32),
    }
    for key, kind in kinds.items():
        if key == "timestamp":
            data[key] = 1_700_000_000.0 + np.cumsum(rng.uniform(0.05, 0.15, size=n))
        elif key == "robot_eef_pose":
            data[key] = rng.normal(size=(n, 6)).astype(np.float64)
        elif kind == "uint8":
            data[key] = smooth_frames(n, rng)
        elif kind == "unit":
            data[key] = rng.uniform(0, 1, size=(n, 12, 16, 3)).astype(np.float32)
        elif kind == "byte":
            data[key] = rng.uniform(0, 255, size=(n, 12, 16, 3)).astype(np.float32)
    root = zarr.open_group(path, mode="w", zarr_format=2)
    group = root.require_group("data")
    for key, value in data.items():
        chunks = (1, *value.shape[1:]) if value.ndim == 4 else (max(1, n // 2), *value.shape[1:])
        group.create_array(key, shape=value.shape, chunks=chunks, dtype=value.dtype, compressors=BLOSC)[:] = value
    meta = root.require_group("meta")
    meta.create_array("episode_ends", shape=(len(lengths),), dtype=np.int64, compressors=None)[:] = np.cumsum(lengths)
    return data


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="realloop-dataset convert")
    add_convert_arguments(parser)
    return parser.parse_args(argv)


def test_pusht_style_buffer_with_synthesised_timestamps(tmp_path: Path) -> None:
    lengths = [5, 7, 4]
    src = make_replay_buffer(tmp_path / "pusht.zarr", lengths, img="uint8")
    summary = convert_diffusion_policy(
        [tmp_path / "pusht.zarr"], tmp_path / "out", task="push the T", image_format="png", progress=False
    )
    assert summary.episodes == [0, 1, 2]
    assert summary.mapping == {
        "state": "observation.state",
        "action": "action",
        "img": "observation.images.image",
    }
    assert summary.unmapped == {"keypoint": "float32 (9, 2)"}
    assert any("synthesised at 10 Hz" in w for w in summary.warnings)

    ds = Dataset.open(tmp_path / "out")
    assert set(ds.features) == {"observation.state", "action", "observation.images.image"}
    assert ds.features["observation.images.image"].shape == (12, 16, 3)
    start = 0
    for i, n in enumerate(lengths):
        ep = ds.episode(i)
        sl = slice(start, start + n)
        np.testing.assert_array_equal(ep.stream("observation.state").read(), src["state"][sl])
        np.testing.assert_array_equal(ep.stream("action").read(), src["action"][sl])
        np.testing.assert_array_equal(ep.stream("observation.images.image").read(), src["img"][sl])  # png: exact
        for name in ds.features:
            np.testing.assert_allclose(ep.stream(name).timestamps, np.arange(n) / 10.0)
        assert ep.meta["task"] == "push the T" and ep.meta["source"] == "teleop"
        attrs = ep.meta["attributes"]
        assert attrs["timestamps_synthesised"] is True and attrs["synthesised_fps"] == 10.0
        assert attrs["source_episode"] == i and attrs["converted_from"] == "diffusion_policy"
        start += n


def test_real_robot_buffer_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = make_replay_buffer(tmp_path / "real.zarr", [6, 3], camera_0="uint8", timestamp="yes", robot_eef_pose="yes")
    args = parse(
        [
            "--from", "diffusion-policy", str(tmp_path / "real.zarr"), str(tmp_path / "out"),
            "--map", "robot_eef_pose=observation.state", "--map", "state=",
            "--source", "policy", "--task", "pick", "--robot", "ur5",
        ]
    )  # fmt: skip
    assert run_convert(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("converted 2 episodes") and "unmapped: keypoint, state" in line

    summary = json.loads((tmp_path / "out.convert.json").read_text())
    assert summary["episodes"] == [0, 1] and summary["samples"]["observation.images.camera_0"] == 9
    assert summary["mapping"]["camera_0"] == "observation.images.camera_0"

    ds = Dataset.open(tmp_path / "out")
    assert ds.robot == {"name": "ur5"}
    assert ds.features["observation.state"].dtype == "float64"  # the source dtype is kept
    ep = ds.episode(1)
    np.testing.assert_array_equal(ep.stream("observation.state").read(), src["robot_eef_pose"][6:])
    np.testing.assert_array_equal(ep.stream("action").timestamps, src["timestamp"][6:])
    jpeg = ep.stream("observation.images.camera_0").read().astype(int)
    assert jpeg.shape == (3, 12, 16, 3) and np.abs(jpeg - src["camera_0"][6:]).mean() < 8  # JPEG: close
    assert ep.meta["source"] == "policy" and ep.meta["robot"] == "ur5"
    assert ep.meta["attributes"]["timestamps_synthesised"] is False


@pytest.mark.parametrize("kind", ["unit", "byte"])
def test_float_images_become_uint8(tmp_path: Path, kind: str) -> None:
    src = make_replay_buffer(tmp_path / "f.zarr", [4], image=kind)
    convert_diffusion_policy([tmp_path / "f.zarr"], tmp_path / "out", fps=20, image_format="png", progress=False)
    got = Dataset.open(tmp_path / "out").episode(0).stream("observation.images.image").read()
    expected = np.rint(src["image"] * (255.0 if kind == "unit" else 1.0)).clip(0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got, expected)


def test_zip_store_and_append(tmp_path: Path) -> None:
    make_replay_buffer(tmp_path / "a.zarr", [3, 2])
    store = zarr.storage.ZipStore(tmp_path / "b.zarr.zip", mode="w")
    root = zarr.open_group(store, mode="w", zarr_format=2)
    root.require_group("data").create_array("state", shape=(4, 5), dtype="float32", compressors=BLOSC)[:] = 1.0
    root["data"].create_array("action", shape=(4, 2), dtype="float32", compressors=BLOSC)[:] = 2.0
    root.require_group("meta").create_array("episode_ends", shape=(1,), dtype="int64")[:] = [4]
    store.close()
    convert_diffusion_policy([tmp_path / "a.zarr"], tmp_path / "out", progress=False)
    summary = convert_diffusion_policy([tmp_path / "b.zarr.zip"], tmp_path / "out", progress=False)
    assert summary.episodes == [2]
    ds = Dataset.open(tmp_path / "out")
    assert len(ds) == 3
    np.testing.assert_array_equal(ds.episode(2).stream("action").read(), np.full((4, 2), 2.0, np.float32))

    make_replay_buffer(tmp_path / "c.zarr", [2], img="uint8")  # an extra image feature
    with pytest.raises(ConvertError, match=r"observation.images.image is not a feature of the dataset"):
        convert_diffusion_policy([tmp_path / "c.zarr"], tmp_path / "out", progress=False)


def test_mapping_rules() -> None:
    keys = ["state", "agent_pos", "action", "camera_1", "robot_joint", "timestamp"]
    with pytest.raises(ConvertError, match=r"map to observation.state.*--map agent_pos="):
        resolve_mapping(keys)
    mapping, unmapped = resolve_mapping(keys, {"agent_pos": None})
    assert mapping == {
        "state": "observation.state",
        "action": "action",
        "camera_1": "observation.images.camera_1",
    }
    assert unmapped == ["agent_pos", "robot_joint"]
    mapping, _ = resolve_mapping(keys, {"robot_joint": "observation.state"}, use_default_map=False)
    assert mapping == {"robot_joint": "observation.state"}
    with pytest.raises(ConvertError, match=r"not in the buffer: \['nope'\]"):
        resolve_mapping(keys, {"nope": "action"})


def test_bad_sources_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvertError, match=r"not a diffusion_policy ReplayBuffer.*no zarr v2 group"):
        convert_diffusion_policy([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ConvertError, match=r"does not exist"):
        convert_diffusion_policy([tmp_path / "missing.zarr"], tmp_path / "out")

    root = zarr.open_group(tmp_path / "no_meta.zarr", mode="w", zarr_format=2)
    root.require_group("data").create_array("action", shape=(3, 2), dtype="float32")
    root.require_group("meta")
    with pytest.raises(ConvertError, match=r"meta/episode_ends is missing"):
        convert_diffusion_policy([tmp_path / "no_meta.zarr"], tmp_path / "out")

    root["meta"].create_array("episode_ends", shape=(1,), dtype="int64")[:] = [5]
    with pytest.raises(ConvertError, match=r"ends at step 5 but these data arrays have other lengths: \{'action': 3\}"):
        convert_diffusion_policy([tmp_path / "no_meta.zarr"], tmp_path / "out")

    assert run_convert(parse(["--from", "diffusion-policy", str(tmp_path / "empty"), str(tmp_path / "out")])) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written when the input is bad

    args = parse(["--from", "diffusion-policy", "--topic", "/a=action", str(tmp_path / "empty"), str(tmp_path / "o")])
    assert run_convert(args) == 2
    assert "--topic do(es) not apply to --from diffusion-policy" in capsys.readouterr().err
