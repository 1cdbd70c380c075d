"""Training samples: windows of observation history and action chunks over each episode's aligned view.

The index table (diffusion_policy's ``SequenceSampler``) holds one row per (episode, step) of the aligned
view at the chosen rate. Sample ``i`` gathers, for each key, the values at steps ``step + d`` for ``d`` in
that key's deltas (per-key horizons: ``[-1, 0]`` for a two-step observation history, ``range(-1, 15)`` for
an action chunk). Steps outside the episode are clamped to it, so edges repeat the edge frame, and
``<key>_is_pad`` marks them.

>>> ds = WindowDataset.for_policy("demo.zarr", ["observation.state", "observation.images.front"], rate=10)
>>> loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)

The dataset object holds only the path and small numpy tables: each process opens the zarr store lazily,
so it pickles (spawn) and forks (DataLoader workers) safely. Numeric streams of the aligned view are read
once per episode and kept in memory; image frames are read per sample, one ``pread`` and one image decode
per distinct frame (:class:`realloop.data.shards.FrameReader`, about 20 times faster than zarr's per-call
path for small frames).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from realloop.data.dataset import Dataset
from realloop.data.episode import Stream
from realloop.data.images import fit_image
from realloop.data.schema import Feature


@dataclass
class _EpisodeTable:
    """What one episode contributes, in plain numpy (safe to fork or pickle)."""

    index: int
    n_steps: int
    values: dict[str, np.ndarray]  # numeric key -> (n_steps, *shape) float32, the aligned samples
    frames: dict[str, np.ndarray]  # image key -> (n_steps,) int64 frame index of each step (a cache row if cached)
    cache: dict[str, np.ndarray]  # image key -> (n_frames, H, W, C) uint8 decoded frames (cache_images)


class WindowDataset(torch.utils.data.Dataset):
    """Windows over aligned episodes for training (see the module doc).

    ``deltas[key]`` lists the step offsets to read for ``key``; ``rate``, ``offsets`` and ``reference`` are
    those of :meth:`Episode.aligned` (no rate: the steps are the samples of ``reference``, default
    ``action``). ``episodes`` restricts the dataset to some episode indices (e.g. from
    :func:`split_episodes`).

    A sample is a dict: ``key`` -> float32 tensor ``(len(deltas[key]), *shape)`` for numeric features or
    ``(len(deltas[key]), C, H, W)`` in [0, 1] for images; ``key + "_is_pad"`` -> bool ``(len(deltas[key]),)``;
    ``episode_index`` and ``step`` -> int64 scalars.

    ``image_size`` (H, W) fits every frame to that size (:func:`realloop.data.images.fit_image`, the policy
    runner's rule). ``cache_images`` decodes each frame the windows use once, at construction, and keeps it in
    memory as uint8 (at ``image_size``: 100 episodes of two 96x96 cameras at 10 Hz are a few hundred MB), so
    training never waits for JPEG decoding; DataLoader workers share the cache (fork).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        deltas: Mapping[str, Sequence[int]],
        rate: float | None = None,
        offsets: Mapping[str, float] | None = None,
        episodes: Sequence[int] | None = None,
        reference: str | None = None,
        progress: bool = False,
        image_size: Sequence[int] | None = None,
        cache_images: bool = False,
    ) -> None:
        self.path = Path(path)
        if image_size is not None and (len(image_size) != 2 or min(int(v) for v in image_size) < 1):
            raise ValueError(f"image_size must be [height, width] in pixels, got {list(image_size)}")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.cache_images = bool(cache_images)
        if not deltas:
            raise ValueError("deltas is empty: give the step offsets to read for at least one key")
        self.deltas: dict[str, np.ndarray] = {}
        for key, d in deltas.items():
            arr = np.asarray(list(d))
            if arr.ndim != 1 or len(arr) == 0 or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"deltas[{key!r}] must be a non-empty sequence of integer steps, got {d!r}")
            self.deltas[key] = arr.astype(np.int64)
        self.rate = rate
        self.offsets = dict(offsets or {})
        self.reference = reference

        ds = Dataset.open(self.path, mode="r")
        unknown = [k for k in self.deltas if k not in ds.features]
        if unknown:
            raise KeyError(f"no features {unknown} in {self.path}; it has {sorted(ds.features)}")
        self.features: dict[str, Feature] = {k: ds.features[k] for k in self.deltas}
        if self.image_size is not None:
            self.features = {k: resized_feature(f, self.image_size) for k, f in self.features.items()}
        available = ds.episode_indices
        self.episodes = list(available if episodes is None else episodes)
        missing = sorted(set(self.episodes) - set(available))
        if missing:
            raise IndexError(f"episodes {missing[:5]} are not in {self.path} ({len(available)} episodes)")

        self._tables: dict[int, _EpisodeTable] = {}
        lengths = []
        desc = "decode frames" if self.cache_images and any(f.is_image for f in self.features.values()) else "index"
        for e in tqdm(self.episodes, desc=desc, unit="episode", disable=not progress):
            table = self._build_table(ds, e)
            self._tables[e] = table
            lengths.append(table.n_steps)
        lengths_arr = np.asarray(lengths, dtype=np.int64)
        # the index table: row i is (episode, step)
        self._episode_of = np.repeat(np.asarray(self.episodes, dtype=np.int64), lengths_arr)
        starts = np.repeat(np.cumsum(lengths_arr) - lengths_arr, lengths_arr)
        self._step_of = np.arange(int(lengths_arr.sum()), dtype=np.int64) - starts
        self._reset_handles()

    @classmethod
    def for_policy(
        cls,
        path: str | os.PathLike[str],
        obs_keys: Sequence[str],
        action_key: str = "action",
        n_obs_steps: int = 2,
        horizon: int = 16,
        rate: float | None = None,
        **kwargs: Any,
    ) -> WindowDataset:
        """diffusion_policy's convention: ``n_obs_steps`` of observations up to the current step and an
        action chunk of ``horizon`` steps starting with the oldest observation."""
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError("n_obs_steps and horizon must be at least 1")
        first = -n_obs_steps + 1
        deltas: dict[str, Sequence[int]] = {k: range(first, 1) for k in obs_keys}
        deltas[action_key] = range(first, first + horizon)
        return cls(path, deltas, rate=rate, **kwargs)

    # -- per-episode tables ---------------------------------------------------------------------------------
    def _build_table(self, ds: Dataset, index: int) -> _EpisodeTable:
        ep = ds.episode(index)
        view = ep.aligned(self.rate, list(self.deltas), self.offsets, self.reference)
        values, frames, cache = {}, {}, {}
        for key, feature in self.features.items():
            idx = view.indices[key]
            if feature.is_image:
                frames[key] = idx.astype(np.int64)
                if self.cache_images:
                    used, rows = np.unique(frames[key], return_inverse=True)
                    cache[key] = self._fit(ep.stream(key).take(used))
                    frames[key] = rows.reshape(-1).astype(np.int64)
            else:
                values[key] = np.asarray(ep.stream(key).read()[idx], dtype=np.float32)
        return _EpisodeTable(index, len(view), values, frames, cache)

    def _fit(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W[, C]) frames -> (N, H', W', C) at ``image_size``."""
        if frames.ndim == 3:
            frames = frames[..., None]
        if self.image_size is None:
            return frames
        return np.stack([fit_image(f, self.image_size) for f in frames]) if len(frames) else frames

    # -- per-process zarr handles ---------------------------------------------------------------------------
    def _reset_handles(self) -> None:
        self._pid: int | None = os.getpid()
        self._dataset: Dataset | None = None

    def _stream(self, episode: int, key: str) -> Stream:
        if self._pid != os.getpid():  # a forked worker: never share zarr objects across processes
            self._reset_handles()
        if self._dataset is None:
            self._dataset = Dataset.open(self.path, mode="r")
        return self._dataset.episode(episode).stream(key)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pid=None, _dataset=None)
        return state

    # -- samples --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._step_of)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        i %= n
        episode, step = int(self._episode_of[i]), int(self._step_of[i])
        table = self._tables[episode]
        out: dict[str, torch.Tensor] = {}
        for key, deltas in self.deltas.items():
            steps = step + deltas
            clamped = np.clip(steps, 0, table.n_steps - 1)
            if key in table.values:
                out[key] = torch.from_numpy(table.values[key][clamped])
            elif key in table.cache:
                out[key] = _to_float_chw(table.cache[key][table.frames[key][clamped]])
            else:
                out[key] = self._read_frames(episode, key, table.frames[key][clamped])
            out[f"{key}_is_pad"] = torch.from_numpy(steps != clamped)
        out["episode_index"] = torch.tensor(episode, dtype=torch.int64)
        out["step"] = torch.tensor(step, dtype=torch.int64)
        return out

    def _read_frames(self, episode: int, key: str, frame_idx: np.ndarray) -> torch.Tensor:
        """Frames as float32 ``(T, C, H, W)`` in [0, 1]; each distinct frame is read and decoded once."""
        uniq, inverse = np.unique(frame_idx, return_inverse=True)
        frames = self._fit(self._stream(episode, key).take(uniq))  # its FrameReader; damage: one line
        return _to_float_chw(frames[inverse.reshape(-1)])

    def episode_length(self, episode: int) -> int:
        """Number of steps of an episode's aligned view."""
        return self._tables[episode].n_steps

    def __repr__(self) -> str:
        horizons = {k: [int(d[0]), int(d[-1])] for k, d in self.deltas.items()}
        return (
            f"WindowDataset({str(self.path)!r}, samples={len(self)}, episodes={len(self.episodes)}, "
            f"rate={self.rate}, deltas(first, last)={horizons})"
        )


def _to_float_chw(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) uint8 -> float32 (T, C, H, W) in [0, 1]."""
    chw = frames.transpose(0, 3, 1, 2)
    # numpy, not torch: torch's intra-op thread pool makes this small conversion slow in the main process
    out = np.empty(chw.shape, dtype=np.float32)
    np.divide(chw, np.float32(255.0), out=out)
    return torch.from_numpy(out)


def resized_feature(feature: Feature, image_size: Sequence[int]) -> Feature:
    """An image feature as ``image_size`` (H, W) fitting gives it; other features unchanged."""
    if not feature.is_image:
        return feature
    d = feature.to_dict()
    d["shape"] = [int(image_size[0]), int(image_size[1]), *list(d["shape"])[2:]]
    return Feature.from_dict(feature.name, d)


def split_episodes(
    episode_indices: Sequence[int], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split episodes into (train, val), both sorted; deterministic for a seed and the same set of indices.

    With ``val_fraction > 0`` and more than one episode, val has at least one episode and train keeps at
    least one.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    episodes = sorted({int(e) for e in episode_indices})
    n = len(episodes)
    n_val = round(val_fraction * n)
    if n <= 1:
        n_val = 0
    elif val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_pos = set(perm[:n_val].tolist())
    train = [e for j, e in enumerate(episodes) if j not in val_pos]
    val = [e for j, e in enumerate(episodes) if j in val_pos]
    return train, val
