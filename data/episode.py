"""Reading a committed episode: its metadata, its streams with timestamps, and an aligned view."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr

from realloop.data.align import last_at_or_before
from realloop.data.schema import Feature
from realloop.data.shards import FrameReader


class DamagedDataError(RuntimeError):
    """Stored data could not be read back (a truncated or corrupted chunk); the message (one line) names the
    dataset, the episode, the stream and the fix."""


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if "checksum" in text.lower():
        return "checksum mismatch: a chunk file is truncated or corrupted"
    return text if len(text) < 200 else text[:200] + "..."


T = TypeVar("T")


class Stream:
    """One recorded stream: ``timestamps`` (float64 seconds) and lazily read ``data``.

    Reading stored samples that do not decode (a corrupted or truncated chunk file) raises
    :class:`DamagedDataError`, one line naming the dataset, episode and stream and pointing to
    ``realloop-dataset verify``; out-of-range indices still raise ``IndexError``.
    """

    def __init__(self, group_path: Path, feature: Feature) -> None:
        self.path = group_path
        self.feature = feature
        self.name = feature.name

    def _guard(self, what: str, read: Callable[[], T]) -> T:
        """``read()``, with a failure to decode the stored bytes turned into :class:`DamagedDataError`."""
        try:
            return read()
        except DamagedDataError:
            raise
        except (ValueError, RuntimeError, OSError) as e:  # zarr/numcodecs decode errors, ShardError, I/O
            episode_dir = self.path.parent
            dataset = episode_dir.parent.parent
            raise DamagedDataError(
                f"cannot read the {what} of stream {self.name!r} in {episode_dir.name} of dataset {dataset} "
                f"({_reason(e)}; under {self.path}); the dataset is damaged: run `realloop-dataset verify {dataset}` "
                "to locate the file"
            ) from e

    @cached_property
    def data(self) -> zarr.Array:
        return self._guard("data", lambda: zarr.open_array(self.path / "data", mode="r"))

    @cached_property
    def timestamps(self) -> np.ndarray:
        return self._guard("timestamps", lambda: np.asarray(zarr.open_array(self.path / "timestamp", mode="r")[:]))

    def __len__(self) -> int:
        return len(self.timestamps)

    @cached_property
    def frame_reader(self) -> FrameReader:
        return FrameReader(self.data)

    def __getitem__(self, index: Any) -> np.ndarray:
        if self.feature.is_image and isinstance(index, (int, np.integer)):
            return self._guard("frames", lambda: self.frame_reader.read([int(index)])[0])
        return self._guard("data", lambda: np.asarray(self.data[index]))

    def take(self, indices: Any) -> np.ndarray:
        """Samples at an integer array of indices (image frames are read one by one from their shards)."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.feature.is_image:
            return self._guard(
                "frames", lambda: self.frame_reader.read(idx.reshape(-1)).reshape(*idx.shape, *self.feature.shape)
            )
        return self._guard(
            "data",
            lambda: np.asarray(self.data.get_orthogonal_selection((idx.reshape(-1),))).reshape(
                *idx.shape, *self.feature.shape
            ),
        )

    def read(self) -> np.ndarray:
        """All samples as one array (avoid for long image streams)."""
        return self._guard("data", lambda: np.asarray(self.data[:]))

    @property
    def rate_hz(self) -> float:
        """Measured mean rate of the stream."""
        t = self.timestamps
        return float((len(t) - 1) / (t[-1] - t[0])) if len(t) > 1 and t[-1] > t[0] else 0.0

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, n={len(self)}, shape={self.feature.shape}, dtype={self.feature.dtype})"


@dataclass
class AlignedEpisode:
    """Training steps at a fixed rate: ``indices[key][k]`` is the sample of ``key`` used at ``times[k]``."""

    episode: Episode
    times: np.ndarray
    indices: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.times)

    def get(self, key: str, steps: Any = slice(None)) -> np.ndarray:
        """Data of ``key`` at the given step(s) (an int, slice or integer array of step numbers)."""
        idx = self.indices[key][steps]
        stream = self.episode.stream(key)
        return stream[int(idx)] if np.ndim(idx) == 0 else stream.take(idx)

    def to_arrays(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return {k: self.get(k) for k in (keys or self.indices)}


class Episode:
    """A committed episode. ``meta`` has task, success, source, robot, sim_params, attributes and timing."""

    def __init__(self, path: Path, features: Mapping[str, Feature], index: int) -> None:
        self.path = path
        self.index = index
        self.features = features
        self._streams: dict[str, Stream] = {}

    @cached_property
    def meta(self) -> dict[str, Any]:
        return dict(zarr.open_group(self.path, mode="r").attrs)

    @property
    def stream_names(self) -> list[str]:
        return list(self.meta.get("streams", {}))

    def stream(self, name: str) -> Stream:
        if name not in self._streams:
            if name not in self.meta.get("streams", {}):
                raise KeyError(f"episode {self.index} has no stream {name!r}; it has {self.stream_names}")
            self._streams[name] = Stream(self.path / name, self.features[name])
        return self._streams[name]

    @property
    def duration(self) -> float:
        return float(self.meta["end_time"] - self.meta["start_time"])

    @property
    def success(self) -> bool | None:
        return self.meta.get("success")

    def aligned(
        self,
        rate: float | None = None,
        keys: Sequence[str] | None = None,
        offsets: Mapping[str, float] | None = None,
        reference: str | None = None,
        times: Sequence[float] | np.ndarray | None = None,
    ) -> AlignedEpisode:
        """An aligned view: for each step time, the last sample at or before it in each stream.

        ``rate`` (Hz) makes step times ``t0, t0 + 1/rate, ...`` from the first instant at which every stream
        has a sample up to the last sample of ``reference`` (default ``action`` when it is in the view; without
        one, the last sample of any stream): observations recorded after the last action (an episode's final
        observation) are no step of their own. Without a rate, the step times are the timestamps of
        ``reference`` (default ``action`` if recorded, else the first key): with streams that share one clock
        (sim, RL) the view is the identity. ``times`` gives the step times outright (e.g. the ticks a
        controller logged). ``offsets[key]`` (seconds) is a per-stream latency: the sample used at step time ``t``
        is the last one at or before ``t - offsets[key]``.
        """
        keys = list(keys or self.stream_names)
        offsets = dict(offsets or {})
        unknown = set(offsets) - set(keys)
        if unknown:
            raise KeyError(f"offsets given for streams not in the view: {sorted(unknown)}")
        if reference is not None and reference not in keys:
            raise KeyError(f"reference stream {reference!r} is not in the view {keys}")
        # a stream delayed by d is seen at time t + d
        stamps = {k: self.stream(k).timestamps + offsets.get(k, 0.0) for k in keys}
        step_times: np.ndarray
        if times is not None:
            step_times = np.asarray(times, dtype=float)
        elif rate is not None:
            if rate <= 0:
                raise ValueError(f"rate must be positive, got {rate}")
            t0 = max(s[0] for s in stamps.values())
            end = reference or ("action" if "action" in keys else None)
            t1 = stamps[end][-1] if end is not None else max(s[-1] for s in stamps.values())
            n = int(np.floor((t1 - t0) * rate + 1e-9)) + 1 if t1 >= t0 else 0
            step_times = t0 + np.arange(n) / rate
        else:
            ref = reference or ("action" if "action" in keys else keys[0])
            t0 = max(s[0] for s in stamps.values())
            step_times = stamps[ref][stamps[ref] >= t0 - 1e-12]
        indices = {k: last_at_or_before(s, step_times) for k, s in stamps.items()}
        for k in keys:
            indices[k] = np.clip(indices[k], 0, len(stamps[k]) - 1)
        return AlignedEpisode(self, step_times, indices)

    def __repr__(self) -> str:
        return f"Episode({self.index}, task={self.meta.get('task')!r}, streams={self.stream_names})"
