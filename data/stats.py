"""Normalisation statistics (min, max, mean, std, q01, q99, count) per feature, stored with the dataset.

Numeric features get one value per element of the sample shape, over every raw sample of every episode
(the recorded samples, not an aligned view): min, max, mean and std are exact and computed streaming, a
block of rows at a time; q01 and q99 come from a seeded uniform subsample of at most ``max_rows`` rows
(exact when the feature has fewer rows). Image features get one value per channel, shaped ``(C, 1, 1)`` so
that they broadcast against ``(C, H, W)`` frames scaled to [0, 1], from a seeded sample of frames per
episode; their statistics are exact over the sampled frames (a 256-bin histogram per channel).

The result is plain JSON (nested lists shaped like the sample, ``count`` an int), stored in the root
attributes by ``Dataset.set_stats`` and read back as arrays by :func:`load_stats`.

Stored statistics record which episodes they were computed over (``Dataset.episodes_fingerprint``). Once the
episodes change (recorded, deleted, restored) they are stale: :func:`load_stats` refuses them with
:class:`StaleStatsError` and :func:`ensure_stats` recomputes them.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from realloop.data.dataset import Dataset
from realloop.data.layout import rows_per_chunk
from realloop.data.schema import Feature

STAT_NAMES = ("min", "max", "mean", "std", "q01", "q99")
QUANTILES = (0.01, 0.99)
_BLOCK_BYTES = 8 << 20  # numeric rows read per zarr call
_QUANTILE_BYTES = 64 << 20  # float64 working memory for one group of quantile columns


class MissingStatsError(LookupError):
    """The dataset has no normalisation statistics (or none for a requested feature)."""


class StaleStatsError(MissingStatsError):
    """The stored statistics were computed over other episodes than the dataset has now."""


def stale_stats_message(ds: Dataset, stale: Sequence[str]) -> str:
    """One line: which stored statistics are stale, why, and the command that recomputes them."""
    record = ds.info.get("stats_episodes") or {}
    counts = sorted({int(record[n]["episodes"]) for n in stale if isinstance(record.get(n), dict)})
    was = f"computed over {' or '.join(map(str, counts))} episodes" if counts else "stored without a record of"
    why = (
        f"{was} the episodes they cover (an older realloop)"
        if not counts
        else f"{was}, the dataset now has {len(ds.episode_indices)} (episodes were recorded, deleted or restored since)"
    )
    which = "all features" if set(stale) >= set(ds.stats or {}) else ", ".join(stale)
    return (
        f"the normalisation statistics of {ds.path} are stale for {which}: {why}; recompute them with "
        f"`realloop-dataset stats {ds.path}`"
    )


def compute_stats(
    dataset: Dataset | str | os.PathLike[str],
    features: Sequence[str] | None = None,
    max_rows: int = 1_000_000,
    image_frames_per_episode: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Statistics of ``features`` (default: all) as JSON-serialisable nested lists; see the module doc.

    Features without any recorded sample are left out. The sampling is seeded per (feature, episode), so
    a feature's statistics do not depend on which other features are computed with it.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset, mode="r")
    names = list(features) if features is not None else list(ds.features)
    unknown = [n for n in names if n not in ds.features]
    if unknown:
        raise KeyError(f"no features {unknown} in {ds.path}; it has {sorted(ds.features)}")
    if max_rows < 1 or image_frames_per_episode < 1:
        raise ValueError("max_rows and image_frames_per_episode must be at least 1")
    episodes = [ds.episode(i) for i in ds.episode_indices]
    if not episodes:
        raise ValueError(f"{ds.path} has no committed episodes: record some before computing statistics")

    out: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(names) * len(episodes), desc="stats", unit="stream", disable=not progress)
    try:
        for name in names:
            feature = ds.features[name]
            streams = [(ep.index, ep.stream(name)) for ep in episodes if name in ep.stream_names]
            bar.update(len(episodes) - len(streams))
            if feature.is_image:
                result = _image_stats(feature, streams, image_frames_per_episode, seed, bar)
            else:
                result = _numeric_stats(feature, streams, max_rows, seed, bar)
            if result is not None:
                out[name] = result
    finally:
        bar.close()  # also on an error: its message starts on a line of its own
    return out


def _rng(seed: int, name: str, episode: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), episode])


def _numeric_stats(
    feature: Feature, streams: list[tuple[int, Any]], max_rows: int, seed: int, bar: tqdm
) -> dict[str, Any] | None:
    counts = [int(s.data.shape[0]) for _, s in streams]
    total = sum(counts)
    if total == 0:
        bar.update(len(streams))
        return None
    quotas = _allocate(counts, min(max_rows, total))
    # float32 holds float32, float16 and small integer samples exactly, at half the memory of float64
    dt = np.dtype(feature.dtype)
    exact32 = dt == np.float32 or (dt.itemsize <= 2 and dt.kind in "biuf")
    sample = np.empty((sum(quotas), *feature.shape), dtype=np.float32 if exact32 else np.float64)
    filled = 0
    n, mean, m2 = 0, np.zeros(feature.shape), np.zeros(feature.shape)
    lo = np.full(feature.shape, np.inf)
    hi = np.full(feature.shape, -np.inf)
    block = max(rows_per_chunk(feature), _BLOCK_BYTES // max(1, 8 * int(np.prod(feature.shape))))
    for (ep_index, stream), count, quota in zip(streams, counts, quotas, strict=True):
        picks = (
            np.arange(count)
            if quota == count
            else np.sort(_rng(seed, feature.name, ep_index).choice(count, size=quota, replace=False))
        )
        for start in range(0, count, block):
            x = np.asarray(stream[start : start + block], dtype=np.float64)  # Stream: damage is one line
            # Chan et al.'s pairwise update keeps mean and variance exact to rounding, one block at a time
            nb, mean_b = len(x), x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            delta = mean_b - mean
            n_new = n + nb
            mean = mean + delta * (nb / n_new)
            m2 = m2 + m2_b + delta**2 * (n * nb / n_new)
            n = n_new
            lo = np.minimum(lo, x.min(axis=0))
            hi = np.maximum(hi, x.max(axis=0))
            sel = picks[(picks >= start) & (picks < start + nb)] - start
            sample[filled : filled + len(sel)] = x[sel]
            filled += len(sel)
        bar.update(1)
    q01, q99 = _quantiles(sample, feature.shape)
    return _as_json(lo, hi, mean, np.sqrt(m2 / n), q01, q99, count=n)


def _allocate(counts: list[int], budget: int) -> list[int]:
    """Split ``budget`` rows between episodes in proportion to their lengths (largest remainders)."""
    total = sum(counts)
    if budget >= total:
        return list(counts)
    exact = np.asarray(counts, dtype=np.float64) * budget / total
    quotas = np.floor(exact).astype(np.int64)
    short = budget - int(quotas.sum())
    if short:
        order = np.argsort(-(exact - quotas), kind="stable")
        quotas[order[:short]] += 1
    return [int(q) for q in np.minimum(quotas, counts)]


def _quantiles(sample: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    flat = sample.reshape(len(sample), -1)
    out = np.empty((len(QUANTILES), flat.shape[1]))
    step = max(1, _QUANTILE_BYTES // max(1, 8 * len(flat)))
    for j in range(0, flat.shape[1], step):
        cols = flat[:, j : j + step].astype(np.float64)
        out[:, j : j + step] = np.quantile(cols, QUANTILES, axis=0)
    return out[0].reshape(shape), out[1].reshape(shape)


def _image_stats(
    feature: Feature, streams: list[tuple[int, Any]], frames_per_episode: int, seed: int, bar: tqdm
) -> dict[str, Any] | None:
    channels = feature.shape[2] if len(feature.shape) == 3 else 1
    hist = np.zeros((channels, 256), dtype=np.int64)
    frames = 0
    for ep_index, stream in streams:
        count = int(stream.data.shape[0])
        k = min(count, frames_per_episode)
        if k:
            idx = np.sort(_rng(seed, feature.name, ep_index).choice(count, size=k, replace=False))
            x = stream.take(idx).reshape(k, -1, channels)
            for c in range(channels):
                hist[c] += np.bincount(x[:, :, c].ravel(), minlength=256)
            frames += k
        bar.update(1)
    if frames == 0:
        return None
    values = np.arange(256, dtype=np.float64)
    n = hist.sum(axis=1)
    mean = hist @ values / n
    var = (hist * (values[None] - mean[:, None]) ** 2).sum(axis=1) / n
    nonzero = hist > 0
    lo = np.array([values[nz][0] for nz in nonzero])
    hi = np.array([values[nz][-1] for nz in nonzero])
    q01, q99 = (np.array([_hist_quantile(h, q) for h in hist]) for q in QUANTILES)
    per_channel = (np.reshape(v / 255.0, (channels, 1, 1)) for v in (lo, hi, mean, np.sqrt(var), q01, q99))
    return _as_json(*per_channel, count=frames)


def _hist_quantile(hist: np.ndarray, q: float) -> float:
    """The quantile of the values a histogram counts, interpolated as ``np.quantile`` does (linear)."""
    cum = np.cumsum(hist)
    h = (int(cum[-1]) - 1) * q
    k = int(np.floor(h))
    below = int(np.searchsorted(cum, k, side="right"))
    above = int(np.searchsorted(cum, min(k + 1, int(cum[-1]) - 1), side="right"))
    return below + (h - k) * (above - below)


def _as_json(*values: np.ndarray, count: int) -> dict[str, Any]:
    """``values`` in the order of STAT_NAMES, as nested lists (a float for scalar features)."""
    stats: dict[str, Any] = {
        k: np.asarray(v, dtype=np.float64).tolist() for k, v in zip(STAT_NAMES, values, strict=True)
    }
    stats["count"] = int(count)
    return stats


def load_stats(dataset: Dataset | str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """The stored statistics as arrays (float64, shaped like one sample; ``(C, 1, 1)`` for images)."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset, mode="r")
    stats = ds.stats
    if not stats:
        raise MissingStatsError(
            f"{ds.path} has no normalisation statistics; compute them with `realloop-dataset stats {ds.path}`"
            " (or realloop.data.stats.ensure_stats)"
        )
    stale = ds.stale_stats()
    if stale:  # normalising with statistics of other episodes would be silently wrong
        raise StaleStatsError(stale_stats_message(ds, stale))
    return {
        name: {k: np.asarray(v, dtype=np.int64 if k == "count" else np.float64) for k, v in s.items()}
        for name, s in stats.items()
    }


def ensure_stats(path_or_dataset: Dataset | str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """The stored statistics (JSON form), computed and stored first if the dataset has none, and those of
    stale features (:meth:`Dataset.stale_stats`) recomputed.

    ``kwargs`` go to :func:`compute_stats`. Storing opens the dataset for appending (it takes the writer
    lock, and holds it while computing, so that no episode is committed meanwhile) unless a writable
    :class:`Dataset` is given.
    """
    ds = path_or_dataset if isinstance(path_or_dataset, Dataset) else Dataset.open(path_or_dataset, mode="r")
    if ds.stats and not ds.stale_stats():
        return ds.stats
    if ds.writable:
        return _refresh_stats(ds, kwargs)
    with Dataset.open(ds.path, mode="a") as writable:
        # another process may have stored them meanwhile
        current = writable.stats and not writable.stale_stats()
        stats = writable.stats if current else _refresh_stats(writable, kwargs)
        assert stats is not None
        for key in ("stats", "stats_episodes"):  # keep the caller's read-only handle current
            ds.info[key] = writable.info.get(key)
    return stats


def _refresh_stats(ds: Dataset, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Compute and store the statistics of a writable dataset: all of them, or only the stale ones."""
    stale = ds.stale_stats()
    if not ds.stats or not stale:
        stats = compute_stats(ds, **kwargs)
        ds.set_stats(stats)
        return stats
    wanted = kwargs.get("features")
    redo = [n for n in stale if n in ds.features and (wanted is None or n in wanted)]
    new = compute_stats(ds, **{**kwargs, "features": redo})
    # a stale feature without samples now is dropped rather than kept stale
    merged = {n: s for n, s in ds.stats.items() if n not in redo}
    merged.update(new)
    ds.set_stats(merged, fresh=new)
    return merged
