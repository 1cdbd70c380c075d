"""Training windows: contents against the aligned samples, edge padding, per-key horizons, splits, workers."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from realloop.data import Dataset
from realloop.data.shards import FrameReader
from realloop.data.training import WindowDataset, split_episodes

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3]},
    "observation.images.front": {"shape": [16, 16, 3]},
    "observation.images.wrist": {"shape": [16, 16], "image_format": "png"},
    "action": {"dtype": "float32", "shape": [2]},
}
SECONDS = (2.0, 2.5, 1.5)
T0 = (10.0, 60.0, 110.0)
FRONT, WRIST = "observation.images.front", "observation.images.wrist"


def write_dataset(path: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Three multi-rate episodes (state 100 Hz, cameras 30 Hz, action 10 Hz); returns (timestamps, values)."""
    rng = np.random.default_rng(0)
    ds = Dataset.create(path, features=FEATURES, durable=False)
    written: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in FEATURES}
    for t0, seconds in zip(T0, SECONDS, strict=True):
        n_img = int(seconds * 30)
        streams = {
            "observation.state": t0 + np.arange(int(seconds * 100)) / 100,
            FRONT: t0 + 0.004 + np.arange(n_img) / 30,
            WRIST: t0 + 0.007 + np.arange(n_img) / 30,
            "action": t0 + 0.002 + np.arange(int(seconds * 10)) / 10,
        }
        with ds.begin_episode(task="t", source="sim") as ep:
            for name, ts in streams.items():
                shape = ds.features[name].shape
                if ds.features[name].is_image:
                    values = rng.integers(0, 256, size=(len(ts), *shape), dtype=np.uint8)
                else:
                    values = rng.normal(size=(len(ts), *shape)).astype(np.float32)
                ep.extend(name, ts, values)
                written[name].append((ts, values))
    ds.close()
    return written


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("windows") / "ds.zarr"
    return path, write_dataset(path)


DELTAS = {"observation.state": [-1, 0], FRONT: [-2, 0], WRIST: [0], "action": range(-1, 5)}


def test_windows_hold_the_aligned_samples(dataset: tuple[Path, dict]) -> None:
    path, written = dataset
    w = WindowDataset(path, DELTAS, rate=10)
    reader = Dataset.open(path)
    i = 0
    for e, t0_ep in enumerate(T0):
        front_frames = reader.episode(e).stream(FRONT).read()  # decoded once through zarr
        # step times, computed here from the written timestamps: every stream has a sample from t0 on, and the
        # steps end at the last action (the state and cameras run on for a few samples after it)
        t0 = max(written[k][e][0][0] for k in FEATURES)
        t_end = written["action"][e][0][-1]
        assert t_end < max(written[k][e][0][-1] for k in FEATURES)
        times = t0 + np.arange(int(np.floor((t_end - t0) * 10 + 1e-9)) + 1) / 10
        assert w.episode_length(e) == len(times)
        for step in range(len(times)):
            sample = w[i]
            assert int(sample["episode_index"]) == e and int(sample["step"]) == step
            for key, deltas in DELTAS.items():
                steps = step + np.asarray(list(deltas))
                clamped = np.clip(steps, 0, len(times) - 1)
                ts, values = written[key][e]
                # the last sample at or before each step time
                idx = np.searchsorted(ts, times[clamped] + 1e-9, side="right") - 1
                if key == FRONT:  # JPEG: compare with the decoded frames
                    expected = front_frames[idx].transpose(0, 3, 1, 2) / 255.0
                elif key == WRIST:  # PNG is lossless: compare with what was written
                    expected = values[idx][:, None] / 255.0
                else:
                    expected = values[idx]
                got = sample[key]
                assert got.dtype == torch.float32
                np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-7, err_msg=f"{key} {i}")
                assert sample[f"{key}_is_pad"].tolist() == (steps != clamped).tolist()
            i += 1
        assert t0_ep < t0 < t0_ep + 0.01
    assert i == len(w)


def test_edges_repeat_the_edge_frame(dataset: tuple[Path, dict]) -> None:
    path, _ = dataset
    w = WindowDataset.for_policy(path, ["observation.state", FRONT], n_obs_steps=2, horizon=16, rate=10)
    first = w[0]
    assert first["observation.state_is_pad"].tolist() == [True, False]
    assert torch.equal(first["observation.state"][0], first["observation.state"][1])
    assert torch.equal(first[f"{FRONT}_is_pad"], torch.tensor([True, False]))
    assert torch.equal(first[FRONT][0], first[FRONT][1])
    assert first["action_is_pad"].tolist() == [True] + [False] * 15
    assert torch.equal(first["action"][0], first["action"][1])
    n = w.episode_length(0)
    last = w[n - 1]  # last step of episode 0
    assert int(last["episode_index"]) == 0 and int(last["step"]) == n - 1
    assert last["action_is_pad"].tolist() == [False, False] + [True] * 14
    assert torch.equal(last["action"][2:], last["action"][1].expand(14, 2))
    assert not last["observation.state_is_pad"].any()
    assert int(w[n]["episode_index"]) == 1 and int(w[n]["step"]) == 0  # windows never cross episodes


def test_per_key_horizons_and_shapes(dataset: tuple[Path, dict]) -> None:
    w = WindowDataset(dataset[0], DELTAS, rate=10)
    s = w[7]
    assert s["observation.state"].shape == (2, 3)
    assert s[FRONT].shape == (2, 3, 16, 16)
    assert s[WRIST].shape == (1, 1, 16, 16)
    assert s["action"].shape == (6, 2)
    assert s["action_is_pad"].dtype == torch.bool and s["action_is_pad"].shape == (6,)
    assert float(s[FRONT].min()) >= 0.0 and float(s[FRONT].max()) <= 1.0


def test_for_policy_follows_diffusion_policy(dataset: tuple[Path, dict]) -> None:
    w = WindowDataset.for_policy(dataset[0], ["observation.state"], n_obs_steps=3, horizon=8, rate=10)
    assert w.deltas["observation.state"].tolist() == [-2, -1, 0]
    assert w.deltas["action"].tolist() == list(range(-2, 6))


def test_without_rate_steps_are_the_action_samples(dataset: tuple[Path, dict]) -> None:
    path, written = dataset
    w = WindowDataset(path, {"observation.state": [0], "action": [0]})
    assert len(w) == sum(len(ts) for ts, _ in written["action"])  # state starts before every action
    np.testing.assert_array_equal(w[3]["action"][0].numpy(), written["action"][0][1][3])
    # a 50 ms latency on the state: the sample used is the one 5 state periods earlier
    late = WindowDataset(path, {"observation.state": [0], "action": [0]}, offsets={"observation.state": 0.05})
    ts, values = written["observation.state"][0]
    action_ts = written["action"][0][0]
    times = action_ts[action_ts >= ts[0] + 0.05]  # steps start once the delayed state has a sample
    assert len(late) == len(w) - (len(action_ts) - len(times)) * len(T0)
    j = int(np.searchsorted(ts, times[3] - 0.05 + 1e-9, side="right") - 1)
    np.testing.assert_array_equal(late[3]["observation.state"][0].numpy(), values[j])


def test_split_by_episode(dataset: tuple[Path, dict]) -> None:
    train, val = split_episodes(range(20), val_fraction=0.2, seed=3)
    assert len(val) == 4 and not set(train) & set(val) and sorted(train + val) == list(range(20))
    assert (train, val) == split_episodes(list(reversed(range(20))), val_fraction=0.2, seed=3)
    assert split_episodes(range(20), 0.2, seed=4) != (train, val)
    assert len(split_episodes([0, 1, 2], val_fraction=0.01)[1]) == 1  # at least one val episode
    assert [len(part) for part in split_episodes([0, 1], val_fraction=0.9)] == [1, 1]  # train keeps one
    assert split_episodes([5], val_fraction=0.5) == ([5], [])
    assert split_episodes(range(4), val_fraction=0.0) == ([0, 1, 2, 3], [])
    with pytest.raises(ValueError):
        split_episodes(range(4), val_fraction=1.0)
    # a dataset restricted to the train episodes holds only their steps
    path, _ = dataset
    tr, _ = split_episodes(Dataset.open(path).episode_indices, val_fraction=0.34)
    w = WindowDataset(path, {"action": [0]}, rate=10, episodes=tr)
    assert {int(w[i]["episode_index"]) for i in range(len(w))} == set(tr)
    assert len(w) == sum(w.episode_length(e) for e in tr)


def test_dataloader_workers_yield_the_same_batches(dataset: tuple[Path, dict]) -> None:
    w = WindowDataset.for_policy(dataset[0], ["observation.state", FRONT, WRIST], n_obs_steps=2, rate=10)
    w[0]  # opens zarr in the parent: workers must not depend on (or break because of) it
    serial = list(DataLoader(w, batch_size=8, shuffle=False, num_workers=0))
    parallel = list(DataLoader(w, batch_size=8, shuffle=False, num_workers=2))
    assert len(serial) == len(parallel) == -(-len(w) // 8)
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert serial[0][FRONT].shape == (8, 2, 3, 16, 16)
    # what a spawned worker receives: plain data, no zarr handles
    copy = pickle.loads(pickle.dumps(w))
    assert copy._dataset is None
    assert all(torch.equal(v, copy[5][k]) for k, v in w[5].items())


def test_frames_read_from_shards_match_zarr_and_are_checked(tmp_path: Path, dataset: tuple[Path, dict]) -> None:
    path = tmp_path / "ds.zarr"
    shutil.copytree(dataset[0], path)
    data = Dataset.open(path).episode(1).stream(FRONT).data
    reader = FrameReader(data)
    assert reader.directory is not None
    frames = np.array([0, 1, 2, 40, 74])
    np.testing.assert_array_equal(reader.read(frames), data[:][frames])
    via_zarr = FrameReader(data)
    via_zarr.directory = None  # the generic path, one zarr read per frame
    np.testing.assert_array_equal(via_zarr.read(frames), data[:][frames])
    # a flipped byte inside a frame is caught by its checksum
    shard = path / "episodes" / "episode_000001" / FRONT / "data" / "c" / "0" / "0" / "0" / "0"
    offset, length = reader._indices[0][1]
    raw = bytearray(shard.read_bytes())
    raw[int(offset) + int(length) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    fresh = FrameReader(data)
    np.testing.assert_array_equal(fresh.read(np.array([0])), data[0:1])
    with pytest.raises(ValueError, match="crc32c"):
        fresh.read(np.array([1]))


def test_bad_arguments_are_refused(dataset: tuple[Path, dict]) -> None:
    path, _ = dataset
    with pytest.raises(KeyError, match=r"observation\.nope"):
        WindowDataset(path, {"observation.nope": [0]})
    with pytest.raises(ValueError, match="integer"):
        WindowDataset(path, {"action": [0.5]})
    with pytest.raises(ValueError, match="non-empty"):
        WindowDataset(path, {"action": []})
    with pytest.raises(IndexError, match="99"):
        WindowDataset(path, {"action": [0]}, episodes=[0, 99])
    w = WindowDataset(path, {"action": [0]}, rate=10)
    with pytest.raises(IndexError):
        w[len(w)]


def test_a_corrupted_chunk_is_one_line_naming_episode_stream_and_verify(
    tmp_path: Path, dataset: tuple[Path, dict]
) -> None:
    from realloop.data.episode import DamagedDataError

    path = tmp_path / "ds.zarr"
    shutil.copytree(dataset[0], path)
    chunk = path / "episodes" / "episode_000001" / "observation.state" / "data" / "c" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # after the dataset was written: the stored crc32c no longer matches
    chunk.write_bytes(bytes(raw))
    with pytest.raises(DamagedDataError) as exc:
        WindowDataset(path, {"observation.state": [0], "action": [0]}, rate=10)
    message = str(exc.value)
    assert "\n" not in message and "Stored" not in message and "b'" not in message  # no raw checksum bytes
    assert "stream 'observation.state' in episode_000001" in message and str(path) in message
    assert message.endswith(f"run `realloop-dataset verify {path}` to locate the file")
    WindowDataset(path, {"observation.state": [0]}, rate=10, episodes=[0, 2])  # the other episodes still read

    # an image frame read per sample: the same one line from the sample that needs it
    w = WindowDataset(path, {FRONT: [0]}, rate=10, episodes=[2])
    shard = path / "episodes" / "episode_000002" / FRONT / "data" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    for k in range(0, len(raw) // 2, 256):  # bytes inside every frame (the shard's index is at its end)
        raw[k] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DamagedDataError, match=r"frames of stream 'observation\.images\.front' in episode_000002"):
        for i in range(len(w)):
            w[i]


def test_image_size_fits_frames_and_the_cache_gives_the_same_samples(dataset: tuple[Path, dict]) -> None:
    """image_size fits frames with the runner's rule (data.images.fit_image); cached windows equal decoded ones."""
    from realloop.data.images import fit_image

    path, _ = dataset
    deltas = {FRONT: [-1, 0], WRIST: [0], "action": [0, 1]}
    plain = WindowDataset(path, deltas, rate=10, image_size=(8, 12))
    cached = WindowDataset(path, deltas, rate=10, image_size=(8, 12), cache_images=True)
    assert plain.features[FRONT].shape == (8, 12, 3) and plain.features[WRIST].shape == (8, 12)
    assert len(plain) == len(cached)
    for i in (0, 7, len(plain) - 1):
        a, b = plain[i], cached[i]
        assert a[FRONT].shape == (2, 3, 8, 12) and a[WRIST].shape == (1, 1, 8, 12)
        for key in deltas:
            assert torch.equal(a[key], b[key]), (i, key)
    # each frame is the recorded frame, fitted by hand
    full = WindowDataset(path, deltas, rate=10)[5][FRONT][1].numpy()
    recorded = np.round(full.transpose(1, 2, 0) * 255.0).astype(np.uint8)
    expected = fit_image(recorded, (8, 12)).transpose(2, 0, 1).astype(np.float32) / 255.0
    assert np.allclose(plain[5][FRONT][1].numpy(), expected)
    with pytest.raises(ValueError, match="image_size"):
        WindowDataset(path, deltas, image_size=(8,))
