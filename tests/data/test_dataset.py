"""Writer and reader: round trips, metadata, aligned views, bounded files and memory, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from realloop.data import Dataset, DatasetLockedError, NotADatasetError, SchemaError
from realloop.data.layout import STAGING_DIR

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"], "units": "m"},
    "observation.images.front": {"shape": [24, 32, 3]},
    "observation.images.wrist": {"shape": [24, 32, 3], "image_format": "png"},
    "action": {"dtype": "float32", "shape": [2]},
    "next.reward": {"dtype": "float32", "shape": []},
}


def smooth_images(n: int, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """Camera-like frames (smooth gradients that move), which JPEG keeps close to the original."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 6, size=3)
    frames = [np.stack([127 + 100 * np.sin(xx / 7 + yy / 11 + i * 0.2 + p) for p in phase], axis=-1) for i in range(n)]
    return np.clip(frames, 0, 255).astype(np.uint8)


def record(ds: Dataset, seed: int = 0, seconds: float = 4.0, **meta) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Record one multi-rate episode (state 100 Hz, cameras 30 Hz, action 10 Hz) and return what was written."""
    rng = np.random.default_rng(seed)
    t0 = 1000.0 + seed
    written: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n_img = int(seconds * 30)
    streams = {
        "observation.state": (t0 + np.arange(int(seconds * 100)) / 100, None),
        "observation.images.front": (t0 + 0.004 + np.arange(n_img) / 30, smooth_images(n_img, seed=seed)),
        "observation.images.wrist": (t0 + 0.007 + np.arange(n_img) / 30, smooth_images(n_img, seed=seed + 1)),
        "action": (t0 + np.arange(int(seconds * 10)) / 10, None),
        "next.reward": (t0 + np.arange(int(seconds * 10)) / 10, None),
    }
    with ds.begin_episode(task="lift the cube", source="teleop", operator="ada", **meta) as ep:
        for name, (ts, vals) in streams.items():
            if vals is None:
                shape = ds.features[name].shape
                vals = rng.normal(size=(len(ts), *shape)).astype(np.float32)
            written[name] = (ts, vals)
        # interleave samples in time order, as a recorder receives them
        events = sorted((t, name, i) for name, (ts, _) in written.items() for i, t in enumerate(ts))
        for t, name, i in events:
            ep.add(name, t, written[name][1][i])
        ep.commit(success=True)
    return written


@pytest.fixture
def ds(tmp_path: Path) -> Dataset:
    d = Dataset.create(tmp_path / "d.zarr", FEATURES, robot={"name": "arm6", "joints": ["j1", "j2"]})
    yield d
    d.close()


def test_round_trip_multi_rate(ds: Dataset) -> None:
    w0 = record(ds, seed=0)
    w1 = record(ds, seed=1, scene="b")
    ds.close()
    r = Dataset.open(ds.path)
    assert r.episode_indices == [0, 1]
    assert r.robot == {"name": "arm6", "joints": ["j1", "j2"]}
    assert r.features["observation.state"].names == ("x", "y", "z")
    for i, w in ((0, w0), (1, w1)):
        ep = r.episode(i)
        assert ep.meta["task"] == "lift the cube" and ep.success is True and ep.meta["source"] == "teleop"
        assert ep.meta["robot"] == "arm6"
        assert ep.meta["attributes"]["operator"] == "ada"
        for name, (ts, vals) in w.items():
            s = ep.stream(name)
            np.testing.assert_array_equal(s.timestamps, ts)
            data = s.read()
            assert data.shape == vals.shape and data.dtype == np.dtype(r.features[name].dtype)
            if name.endswith("front"):  # JPEG: lossy but close
                assert np.abs(data.astype(int) - vals).mean() < 3
            else:  # numeric and PNG: exact
                np.testing.assert_array_equal(data, vals)
    assert r.episode(1).meta["attributes"]["scene"] == "b"
    assert r.episode(-1).index == 1
    np.testing.assert_allclose(r.episode(0).stream("observation.state").rate_hz, 100, rtol=1e-6)


def test_random_frame_access_and_bounded_file_count(ds: Dataset) -> None:
    rng = np.random.default_rng(3)
    frames = smooth_images(250, seed=3)
    with ds.begin_episode() as ep:
        ep.extend("observation.images.wrist", np.arange(250) / 30, frames)
        ep.extend("observation.state", np.arange(5000) / 500, rng.normal(size=(5000, 3)))
    s = ds.episode(0).stream("observation.images.wrist")
    for i in (0, 99, 100, 101, 249):
        np.testing.assert_array_equal(s[i], frames[i])
    chunk_files = [f for _, _, fs in os.walk(s.path / "data" / "c") for f in fs]
    assert len(chunk_files) == 3  # 250 frames -> 3 shard files of <= 100 frames


def test_aligned_view_matches_brute_force(ds: Dataset) -> None:
    w = record(ds, seed=5)
    ep = ds.episode(0)
    offsets = {"observation.images.front": 0.05}
    view = ep.aligned(rate=10, offsets=offsets)
    stamps = {k: ts + offsets.get(k, 0.0) for k, (ts, _) in w.items()}
    t0 = max(s[0] for s in stamps.values())
    np.testing.assert_allclose(view.times[:3], t0 + np.arange(3) / 10)
    for k, s in stamps.items():
        for step, t in enumerate(view.times):
            expected = max(i for i, ts in enumerate(s) if ts <= t + 1e-9)
            assert view.indices[k][step] == expected, (k, step)
    # raw data is untouched: the view indexes into it
    np.testing.assert_array_equal(view.get("action", slice(0, 5)), w["action"][1][view.indices["action"][:5]])
    frames = view.get("observation.images.front", np.array([0, 3]))
    assert frames.shape == (2, 24, 32, 3)


def test_aligned_view_is_identity_on_a_shared_clock(ds: Dataset) -> None:
    ts = np.arange(20) * 0.1
    with ds.begin_episode(source="sim") as ep:
        ep.extend("observation.state", ts, np.zeros((20, 3)))
        ep.extend("action", ts, np.ones((20, 2)))
    view = ds.episode(0).aligned()
    np.testing.assert_array_equal(view.times, ts)
    for k in ("observation.state", "action"):
        np.testing.assert_array_equal(view.indices[k], np.arange(20))


def test_rate_view_ends_at_the_last_action(ds: Dataset) -> None:
    """A final observation stamped one step after the last action (as realloop-collect writes it) is no step of
    its own with a rate; without an action in the view the steps run to the last sample of any stream."""
    ts = np.arange(5) * 0.1
    with ds.begin_episode(source="sim") as ep:
        ep.extend("observation.state", np.append(ts, 0.5), np.arange(6)[:, None] * np.ones((6, 3)))
        ep.extend("action", ts, np.ones((5, 2)))
    ep = ds.episode(0)
    for view in (ep.aligned(rate=10), ep.aligned()):
        np.testing.assert_allclose(view.times, ts)
        np.testing.assert_array_equal(view.indices["observation.state"], np.arange(5))
    np.testing.assert_allclose(ep.aligned(rate=10, keys=["observation.state"]).times, np.arange(6) * 0.1)
    with pytest.raises(KeyError, match="reference stream 'action' is not in the view"):
        ep.aligned(rate=10, keys=["observation.state"], reference="action")


def test_discard_and_exceptions_leave_nothing(ds: Dataset) -> None:
    ep = ds.begin_episode()
    ep.add("action", 0.0, np.zeros(2))
    ep.discard()
    with pytest.raises(ZeroDivisionError), ds.begin_episode() as ep2:
        ep2.add("action", 0.0, np.zeros(2))
        raise ZeroDivisionError
    assert len(ds) == 0
    assert not any((ds.path / STAGING_DIR).iterdir())
    record(ds, seed=2)
    assert ds.episode_indices == [0]


def test_reopen_appends_and_cleans_killed_writer_leftovers(ds: Dataset) -> None:
    record(ds, seed=0)
    ghost = ds.path / STAGING_DIR / "deadbeef"
    ghost.mkdir(parents=True)
    (ghost / "zarr.json").write_text("{}")
    ds.close()
    assert Dataset.open(ds.path).episode_indices == [0]  # a reader ignores the staging area
    with Dataset.open(ds.path, mode="a") as d2:
        assert not ghost.exists()
        record(d2, seed=1)
        assert d2.episode_indices == [0, 1]


def test_one_writer_at_a_time(ds: Dataset) -> None:
    with pytest.raises(DatasetLockedError, match="another process is writing"):
        Dataset.open(ds.path, mode="a")
    assert len(Dataset.open(ds.path)) == 0  # readers are welcome


def test_wrong_shape_dtype_and_unknown_feature_are_rejected_without_losing_the_episode(ds: Dataset) -> None:
    with ds.begin_episode() as ep:
        ep.add("observation.state", 0.0, np.zeros(3))
        with pytest.raises(SchemaError, match=r"observation.state: sample of shape \(4,\), the schema says \(3,\)"):
            ep.add("observation.state", 0.1, np.zeros(4))
        with pytest.raises(SchemaError, match="resize the camera image"):
            ep.add("observation.images.front", 0.0, np.zeros((48, 64, 3), np.uint8))
        with pytest.raises(SchemaError, match="images must be uint8"):
            ep.add("observation.images.front", 0.0, np.zeros((24, 32, 3), np.float32))
        with pytest.raises(SchemaError, match="cannot be stored as float32"):
            ep.add("observation.state", 0.1, np.array(["a", "b", "c"]))
        with pytest.raises(SchemaError, match="not a feature of this dataset"):
            ep.add("observation.images.top", 0.0, np.zeros((24, 32, 3), np.uint8))
        ep.add("observation.state", 0.1, np.ones(3))
    np.testing.assert_array_equal(ds.episode(0).stream("observation.state").read(), [[0, 0, 0], [1, 1, 1]])


@pytest.mark.parametrize("stamps", [[0.0, 0.2, 0.1], [0.0, 0.1, 0.1], [0.0, float("nan")]])
def test_non_monotonic_timestamps_are_rejected(ds: Dataset, stamps: list[float]) -> None:
    with ds.begin_episode() as ep, pytest.raises(SchemaError, match="timestamps must"):
        for t in stamps:
            ep.add("action", t, np.zeros(2))
    ep = ds.begin_episode()
    with pytest.raises(SchemaError, match="timestamps must"):
        ep.extend("action", stamps, np.zeros((len(stamps), 2)))
    assert len(ep) == 0  # the whole batch was refused
    ep.discard()


def test_bad_episode_use(ds: Dataset) -> None:
    ep = ds.begin_episode()
    with pytest.raises(RuntimeError, match="already being recorded"):
        ds.begin_episode()
    with pytest.raises(SchemaError, match="no samples"):
        ep.commit()
    ep.add("action", 0.0, np.zeros(2))
    assert ep.commit() == 0
    with pytest.raises(RuntimeError, match="already committed"):
        ep.add("action", 1.0, np.zeros(2))
    with pytest.raises(SchemaError, match="source"):
        ds.begin_episode(source="dream")
    with pytest.raises(IndexError, match="no episode 7"):
        ds.episode(7)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(NotADatasetError, match="does not exist"):
        Dataset.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotADatasetError, match=r"no zarr\.json"):
        Dataset.open(tmp_path / "empty")
    foreign = zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    foreign.create_array("x", shape=(3,), dtype="f4")
    with pytest.raises(NotADatasetError, match="not a realloop dataset"):
        Dataset.open(tmp_path / "foreign.zarr")
    zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2)
    with pytest.raises(NotADatasetError, match="zarr v2"):
        Dataset.open(tmp_path / "v2.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_text("{not json")
    with pytest.raises(NotADatasetError, match="not JSON"):
        Dataset.open(tmp_path / "junk")


def test_bad_schema(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="give a dtype"):
        Dataset.create(tmp_path / "a", {"action": {"shape": [2]}})
    with pytest.raises(SchemaError, match="image features are uint8"):
        Dataset.create(tmp_path / "b", {"observation.images.cam": {"shape": [4, 4, 2]}})
    with pytest.raises(SchemaError, match="names given"):
        Dataset.create(tmp_path / "c", {"action": {"dtype": "f4", "shape": [2], "names": ["a"]}})
    Dataset.create(tmp_path / "ok", FEATURES).close()
    with pytest.raises(FileExistsError, match="already exists"):
        Dataset.create(tmp_path / "ok", FEATURES)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_bounded_while_recording_a_long_episode(tmp_path: Path) -> None:
    feats = {"observation.images.cam": {"shape": [240, 320, 3]}, "observation.state": {"dtype": "f8", "shape": [12]}}
    frame = smooth_images(1, 240, 320)[0]
    with Dataset.create(tmp_path / "long.zarr", feats, durable=False) as ds, ds.begin_episode() as ep:
        rss = []
        for i in range(1500):  # 1500 raw frames are 330 MiB
            ep.add("observation.images.cam", i / 30, np.roll(frame, i, axis=1))
            ep.extend("observation.state", i / 30 + np.arange(16) / 500, np.zeros((16, 12)))
            if i in (300, 1499):
                rss.append(_rss_mb())
    assert rss[1] - rss[0] < 60, f"memory grew from {rss[0]:.0f} to {rss[1]:.0f} MiB while recording"
    assert len(Dataset.open(tmp_path / "long.zarr").episode(0).stream("observation.images.cam")) == 1500
