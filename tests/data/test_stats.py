"""Normalisation statistics: exact against numpy on raw samples, bounded subsampling, stored, reloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realloop.data import Dataset
from realloop.data.stats import (
    MissingStatsError,
    _allocate,
    _hist_quantile,
    compute_stats,
    ensure_stats,
    load_stats,
)

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3]},
    "observation.images.front": {"shape": [16, 16, 3]},
    "observation.images.wrist": {"shape": [16, 16], "image_format": "png"},
    "action": {"dtype": "float32", "shape": [2]},
    "next.reward": {"dtype": "float32", "shape": []},
}
SECONDS = (2.0, 2.5, 1.5)


def write_dataset(path: Path) -> dict[str, list[np.ndarray]]:
    """Three multi-rate episodes (state 100 Hz, cameras 30 Hz, action and reward 10 Hz); returns values."""
    rng = np.random.default_rng(0)
    ds = Dataset.create(path, features=FEATURES, durable=False)
    written: dict[str, list[np.ndarray]] = {name: [] for name in FEATURES}
    for e, seconds in enumerate(SECONDS):
        t0 = 50.0 * e
        n_img = int(seconds * 30)
        yy, xx = np.mgrid[0:16, 0:16]
        front = np.stack(
            [np.stack([(xx * 9 + yy * 5 + i * 7 + c * 40) % 256 for c in range(3)], -1) for i in range(n_img)]
        ).astype(np.uint8)
        streams = {
            "observation.state": (t0 + np.arange(int(seconds * 100)) / 100, None),
            "observation.images.front": (t0 + 0.004 + np.arange(n_img) / 30, front),
            "observation.images.wrist": (
                t0 + 0.007 + np.arange(n_img) / 30,
                rng.integers(0, 256, size=(n_img, 16, 16), dtype=np.uint8),
            ),
            "action": (t0 + np.arange(int(seconds * 10)) / 10, None),
            "next.reward": (t0 + np.arange(int(seconds * 10)) / 10, None),
        }
        with ds.begin_episode(task="t", source="sim") as ep:
            for name, (ts, values) in streams.items():
                if values is None:
                    values = (rng.normal(size=(len(ts), *ds.features[name].shape)) * (e + 1) + e).astype(np.float32)
                ep.extend(name, ts, values)
                written[name].append(values)
    ds.close()
    return written


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    path = tmp_path_factory.mktemp("stats") / "ds.zarr"
    return path, write_dataset(path)


@pytest.fixture(scope="module")
def stats(dataset: tuple[Path, dict]) -> dict:
    return compute_stats(dataset[0], image_frames_per_episode=1000)


@pytest.mark.parametrize("name", ["observation.state", "action", "next.reward"])
def test_numeric_stats_match_numpy(dataset: tuple[Path, dict], stats: dict, name: str) -> None:
    raw = np.concatenate(dataset[1][name]).astype(np.float64)
    s = {k: np.asarray(v) for k, v in stats[name].items()}
    assert s["count"] == len(raw)
    assert s["mean"].shape == raw.shape[1:]
    np.testing.assert_array_equal(s["min"], raw.min(axis=0))
    np.testing.assert_array_equal(s["max"], raw.max(axis=0))
    np.testing.assert_allclose(s["mean"], raw.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s["std"], raw.std(axis=0), rtol=1e-12)
    # fewer rows than max_rows: the quantiles are exact
    np.testing.assert_allclose(s["q01"], np.quantile(raw, 0.01, axis=0), rtol=1e-12)
    np.testing.assert_allclose(s["q99"], np.quantile(raw, 0.99, axis=0), rtol=1e-12)


def test_subsampled_quantiles_are_close_and_the_rest_exact(dataset: tuple[Path, dict]) -> None:
    path, written = dataset
    raw = np.concatenate(written["observation.state"]).astype(np.float64)
    assert len(raw) == 600
    s = compute_stats(path, features=["observation.state"], max_rows=200)["observation.state"]
    again = compute_stats(path, features=["observation.state"], max_rows=200)["observation.state"]
    other = compute_stats(path, features=["observation.state"], max_rows=200, seed=1)["observation.state"]
    assert s == again  # seeded
    assert s["q01"] != other["q01"]
    assert s["count"] == 600
    np.testing.assert_allclose(s["mean"], raw.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s["std"], raw.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(s["min"], raw.min(axis=0))
    # a uniform subsample of a third of the rows puts q01 and q99 among the extreme few percent
    assert np.all(np.asarray(s["q01"]) >= np.quantile(raw, 0.0, axis=0))
    assert np.all(np.asarray(s["q01"]) <= np.quantile(raw, 0.04, axis=0))
    assert np.all(np.asarray(s["q99"]) >= np.quantile(raw, 0.96, axis=0))
    assert np.all(np.asarray(s["q99"]) <= np.quantile(raw, 1.0, axis=0))
    assert not np.allclose(s["q01"], np.quantile(raw, 0.01, axis=0))  # it did subsample


def test_subsample_budget_is_split_in_proportion() -> None:
    assert _allocate([200, 250, 150], 1000) == [200, 250, 150]
    quotas = _allocate([200, 250, 150], 200)
    assert sum(quotas) == 200 and quotas == [67, 83, 50]
    assert sum(_allocate([1, 1, 1], 2)) == 2


def test_histogram_quantiles_interpolate_like_numpy() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 50, 1001):
        values = rng.integers(0, 256, size=n)
        hist = np.bincount(values, minlength=256)
        for q in (0.0, 0.01, 0.3, 0.5, 0.99, 1.0):
            assert _hist_quantile(hist, q) == pytest.approx(np.quantile(values, q), abs=1e-9), (n, q)


@pytest.mark.parametrize("name", ["observation.images.front", "observation.images.wrist"])
def test_image_stats_per_channel_match_numpy(dataset: tuple[Path, dict], stats: dict, name: str) -> None:
    path, _ = dataset
    ds = Dataset.open(path)
    frames = np.concatenate([ep.stream(name).read() for ep in ds.episodes()])
    if frames.ndim == 3:
        frames = frames[..., None]
    per_channel = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0
    s = {k: np.asarray(v) for k, v in stats[name].items()}
    channels = frames.shape[-1]
    assert s["mean"].shape == (channels, 1, 1)
    assert s["count"] == len(frames)
    for key, expected in {
        "min": per_channel.min(axis=0),
        "max": per_channel.max(axis=0),
        "mean": per_channel.mean(axis=0),
        "std": per_channel.std(axis=0),
        "q01": np.quantile(per_channel, 0.01, axis=0),
        "q99": np.quantile(per_channel, 0.99, axis=0),
    }.items():
        np.testing.assert_allclose(s[key].reshape(-1), expected, rtol=1e-12, atol=1e-12, err_msg=key)


def test_image_frames_are_sampled_per_episode(dataset: tuple[Path, dict]) -> None:
    s = compute_stats(dataset[0], features=["observation.images.front"], image_frames_per_episode=5)
    front = s["observation.images.front"]
    assert front["count"] == 5 * len(SECONDS)
    assert all(0.0 <= v <= 1.0 for k in ("min", "max", "mean", "q01", "q99") for v in np.ravel(front[k]))


def test_stats_are_json_and_survive_reopen(tmp_path: Path, dataset: tuple[Path, dict], stats: dict) -> None:
    assert json.loads(json.dumps(stats)) == stats
    path = tmp_path / "copy.zarr"
    write_dataset(path)
    with Dataset.open(path, mode="a") as ds:
        ds.set_stats(stats)
    assert Dataset.open(path).stats == stats
    loaded = load_stats(path)
    assert set(loaded) == set(FEATURES)
    assert loaded["observation.state"]["mean"].shape == (3,)
    assert loaded["next.reward"]["q99"].shape == ()
    assert loaded["observation.images.wrist"]["std"].shape == (1, 1, 1)
    np.testing.assert_array_equal(loaded["action"]["q01"], np.asarray(stats["action"]["q01"]))


def test_missing_stats_say_how_to_compute_them(dataset: tuple[Path, dict]) -> None:
    with pytest.raises(MissingStatsError, match="realloop-dataset stats"):
        load_stats(dataset[0])


def test_ensure_stats_computes_and_stores_once(tmp_path: Path) -> None:
    path = tmp_path / "ds.zarr"
    write_dataset(path)
    reader = Dataset.open(path)
    first = ensure_stats(reader, image_frames_per_episode=4)
    assert reader.stats == first  # the read-only handle sees what was stored
    assert Dataset.open(path).stats == first
    # stored statistics are returned as they are, never recomputed
    sentinel = {"action": {**first["action"], "mean": [123.0, 456.0]}}
    with Dataset.open(path, mode="a") as ds:
        ds.set_stats(sentinel)
    assert ensure_stats(path) == sentinel


def test_unknown_feature_is_refused(dataset: tuple[Path, dict]) -> None:
    with pytest.raises(KeyError, match=r"observation\.nope"):
        compute_stats(dataset[0], features=["observation.nope"])
