"""Recording one episode: samples stream to disk as they arrive, and the episode commits atomically.

Memory stays bounded whatever the episode's length: a numeric stream buffers at most one chunk (~1 MiB), an
image stream at most one shard of encoded frames (~100 JPEGs). Frames are encoded on a small thread pool as
they arrive (OpenCV releases the GIL), so encoding overlaps with recording.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import zarr

from realloop.data.codecs import ImageCodec
from realloop.data.layout import (
    EPISODES_DIR,
    TIMESTAMP_KWARGS,
    array_kwargs,
    episode_dirname,
    image_codec,
    rows_per_chunk,
)
from realloop.data.schema import SOURCES, Feature, SchemaError, check_sample
from realloop.data.shards import encode_shard, with_crc

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

    from realloop.data.dataset import Dataset

T = TypeVar("T")


class DatasetWriteError(OSError):
    """Writing failed (disk full, I/O error); the episode in progress is discarded, committed ones are intact."""


class _RowAppender:
    """Buffers rows of a resizable zarr array and writes them a whole chunk at a time."""

    def __init__(self, array: zarr.Array, chunk_len: int) -> None:
        self.array = array
        self.chunk_len = chunk_len
        self.rows: list[np.ndarray] = []
        self.written = 0

    def __len__(self) -> int:
        return self.written + len(self.rows)

    def extend(self, values: np.ndarray) -> None:
        self.rows.extend(values)
        if len(self.rows) >= self.chunk_len:
            n_full = (len(self.rows) // self.chunk_len) * self.chunk_len
            self._write(self.rows[:n_full])
            self.rows = self.rows[n_full:]

    def flush(self) -> None:
        if self.rows:
            self._write(self.rows)
            self.rows = []

    def _write(self, rows: list[np.ndarray]) -> None:
        block = np.stack(rows)
        n = self.written
        self.array.resize((n + len(block), *self.array.shape[1:]))
        self.array[n : n + len(block)] = block
        self.written += len(block)


class _ShardAppender:
    """Encodes frames as they arrive and writes one zarr shard file per ``shard_len`` frames.

    The shard is laid out exactly as zarr's ``sharding_indexed`` codec reads it (see ``shards.py``); writing
    it directly avoids holding ``shard_len`` raw frames in memory and re-reading partial shards.
    """

    def __init__(self, array: zarr.Array, codec: ImageCodec, pool: ThreadPoolExecutor, array_dir: Path) -> None:
        self.array = array
        self.codec = codec
        self.pool = pool
        self.dir = array_dir
        self.shard_len = array.shards[0] if array.shards else 1
        self.pending: list[Future[bytes]] = []
        self.written = 0

    def __len__(self) -> int:
        return self.written + len(self.pending)

    def _encode(self, frame: np.ndarray) -> bytes:
        return with_crc(self.codec.encode_frame(frame))

    def extend(self, frames: np.ndarray) -> None:
        for frame in frames:
            self.pending.append(self.pool.submit(self._encode, np.array(frame, copy=True)))
            if len(self.pending) == self.shard_len:
                self._write_shard()

    def extend_encoded(self, frames: list[bytes]) -> None:
        """Append frames already encoded in the codec's format (stored as they are)."""
        for data in frames:
            done: Future[bytes] = Future()
            done.set_result(with_crc(bytes(data)))
            self.pending.append(done)
            if len(self.pending) == self.shard_len:
                self._write_shard()

    def flush(self) -> None:
        if self.pending:
            self._write_shard()
        if self.array.shape[0] != self.written:
            self.array.resize((self.written, *self.array.shape[1:]))

    def _write_shard(self) -> None:
        chunks = [f.result() for f in self.pending]
        shard_idx = self.written // self.shard_len
        key = self.array.metadata.encode_chunk_key((shard_idx,) + (0,) * (self.array.ndim - 1))
        path = self.dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(encode_shard(chunks, self.shard_len))
        self.written += len(chunks)
        self.pending = []


class _StreamWriter:
    def __init__(self, group: zarr.Group, feature: Feature, pool: ThreadPoolExecutor, path: Path) -> None:
        self.feature = feature
        g = group.create_group(feature.name)
        # every chunk is written, even one equal to the fill value, so that a missing file means damage
        # (zarr types the keys NotRequired, from typing on 3.11+: checked as 3.10, mypy takes them as required)
        cfg: ArrayConfigParams = {"write_empty_chunks": True}  # type: ignore[typeddict-item]
        ts = g.create_array("timestamp", shape=(0,), dtype="float64", config=cfg, **TIMESTAMP_KWARGS)
        data = g.create_array(
            "data", shape=(0, *feature.shape), dtype=feature.dtype, config=cfg, **array_kwargs(feature)
        )
        data.attrs["feature"] = feature.to_dict()
        self.timestamps = _RowAppender(ts, int(TIMESTAMP_KWARGS["chunks"][0]))
        if feature.is_image:
            self.data: _RowAppender | _ShardAppender = _ShardAppender(
                data, image_codec(feature), pool, path / feature.name / "data"
            )
        else:
            self.data = _RowAppender(data, rows_per_chunk(feature))
        self.last_t = -np.inf
        self.first_t: float | None = None

    def extend(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        self.data.extend(values)
        self._stamps(timestamps)

    def extend_encoded(self, timestamps: np.ndarray, frames: list[bytes]) -> None:
        """Append image frames already encoded in the codec's format."""
        assert isinstance(self.data, _ShardAppender), "encoded frames are for image streams"
        self.data.extend_encoded(frames)
        self._stamps(timestamps)

    def _stamps(self, timestamps: np.ndarray) -> None:
        self.timestamps.extend(timestamps)
        if self.first_t is None:
            self.first_t = float(timestamps[0])
        self.last_t = float(timestamps[-1])

    def flush(self) -> None:
        self.data.flush()
        self.timestamps.flush()

    def summary(self) -> dict[str, Any]:
        return {"count": len(self.timestamps), "first": self.first_t, "last": self.last_t}


class EpisodeWriter:
    """An episode being recorded. Add samples, then ``commit()`` or ``discard()``.

    Used as a context manager it commits on a clean exit and discards when an exception escapes (or when
    nothing was recorded).
    """

    def __init__(self, dataset: Dataset, staging: Path, meta: dict[str, Any], workers: int = 2) -> None:
        self.dataset = dataset
        self.path = staging
        self.meta = meta
        self.streams: dict[str, _StreamWriter] = {}
        self.closed = False
        self.index: int | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="realloop-encode")
        self._group: zarr.Group = self._guard(lambda: zarr.open_group(staging, mode="w"))

    # -- samples -------------------------------------------------------------------------------------------
    def add(self, name: str, timestamp: float, value: Any) -> None:
        """Append one sample with its timestamp (seconds, from the message header, not receive time)."""
        feature = self._feature(name)
        self.extend(name, [timestamp], check_sample(feature, value)[None])

    def extend(self, name: str, timestamps: Any, values: Any) -> None:
        """Append many samples at once (``values`` has a leading time axis)."""
        feature = self._feature(name)
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        vals = np.asarray(values)
        if vals.shape[:1] != ts.shape or vals.shape[1:] != feature.shape:
            raise SchemaError(
                f"{name}: got {len(ts)} timestamps and values of shape {vals.shape}; "
                f"expected values of shape ({len(ts)}, {', '.join(map(str, feature.shape))})"
            )
        vals = np.stack([check_sample(feature, v) for v in vals]) if len(vals) else vals
        if len(ts) == 0:
            return
        stream = self._check_times(name, feature, ts)
        self._guard(lambda: stream.extend(ts, vals))

    def add_encoded(self, name: str, timestamp: float, data: bytes) -> None:
        """Append one image frame already encoded in the feature's ``image_format`` (a camera's JPEG for a jpeg
        feature), stored as it is: no decoding, no re-encoding. The caller vouches that it decodes to the
        feature's shape; readers and ``realloop-dataset verify`` decode it like any other frame."""
        feature = self._feature(name)
        if not feature.is_image:
            raise SchemaError(f"{name}: add_encoded takes image features only; use add() for numeric ones")
        ts = np.asarray([timestamp], dtype=np.float64)
        stream = self._check_times(name, feature, ts)
        self._guard(lambda: stream.extend_encoded(ts, [bytes(data)]))

    def _check_times(self, name: str, feature: Feature, ts: np.ndarray) -> _StreamWriter:
        """Check that ``ts`` continues the stream strictly increasing; returns the stream (created if new)."""
        if not np.all(np.isfinite(ts)):
            raise SchemaError(f"{name}: timestamps must be finite seconds, got {ts[~np.isfinite(ts)][:3]}")
        stream = self.streams.get(name)
        last = stream.last_t if stream else -np.inf
        bad = np.flatnonzero(np.diff(np.concatenate([[last], ts])) <= 0)
        if len(bad):
            i = int(bad[0])
            prev = last if i == 0 else ts[i - 1]
            raise SchemaError(
                f"{name}: timestamps must increase strictly; {ts[i]!r} follows {prev!r}. Stamp samples with "
                "their acquisition time (header.stamp) and drop duplicates."
            )
        if stream is None:
            stream = self._guard(lambda: _StreamWriter(self._group, feature, self._pool, self.path))
            self.streams[name] = stream
        return stream

    def _feature(self, name: str) -> Feature:
        if self.closed:
            raise RuntimeError("this episode is already committed or discarded; begin a new one")
        try:
            return self.dataset.features[name]
        except KeyError:
            raise SchemaError(
                f"{name!r} is not a feature of this dataset; known features: {sorted(self.dataset.features)}"
            ) from None

    def __len__(self) -> int:
        return max((len(s.timestamps) for s in self.streams.values()), default=0)

    # -- end of episode ------------------------------------------------------------------------------------
    def commit(self, success: bool | None = None, **meta: Any) -> int:
        """Flush, make the episode visible atomically, and return its index."""
        if self.closed:
            raise RuntimeError("this episode is already committed or discarded")
        if not self.streams:
            raise SchemaError("the episode has no samples: discard() it instead of committing")
        if success is not None:
            self.meta["success"] = bool(success)
        self.meta.update(meta)
        validate_episode_meta(self.meta)

        def finish() -> int:
            for s in self.streams.values():
                s.flush()
            index = self.dataset._next_index()
            firsts = [s.first_t for s in self.streams.values() if s.first_t is not None]
            self._group.attrs.update(
                {
                    **self.meta,
                    "index": index,
                    "start_time": min(firsts),
                    "end_time": max(s.last_t for s in self.streams.values()),
                    "streams": {n: s.summary() for n, s in self.streams.items()},
                    "committed_at": time.time(),
                }
            )
            if self.dataset.durable:
                _fsync_tree(self.path)
            final = self.dataset.path / EPISODES_DIR / episode_dirname(index)
            os.rename(self.path, final)  # the commit point
            if self.dataset.durable:
                _fsync_dir(final.parent)
            return index

        self.index = self._guard(finish)
        self._close()
        return self.index

    def discard(self) -> None:
        """Drop the episode in progress; nothing of it stays on disk."""
        if not self.closed:
            self._close()
            shutil.rmtree(self.path, ignore_errors=True)

    def _close(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.dataset._active = None

    def _guard(self, fn: Callable[[], T]) -> T:
        """Run an I/O step; on an OS error, discard the episode and raise a DatasetWriteError saying why."""
        try:
            return fn()
        except OSError as e:
            self.discard()
            hint = (
                "the disk is full: free space (or record to another disk) and record the episode again"
                if e.errno in (errno.ENOSPC, errno.EDQUOT)
                else "check the disk and permissions, then record the episode again"
            )
            raise DatasetWriteError(
                e.errno,
                f"writing the episode in progress to {self.dataset.path} failed ({e.strerror or e}); it was "
                f"discarded, committed episodes are intact; {hint}",
            ) from e

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.closed:
            return
        if exc_type is None and self.streams:
            self.commit()
        else:
            if exc_type is None:
                warnings.warn("the episode had no samples and was discarded", stacklevel=2)
            self.discard()


def validate_episode_meta(meta: dict[str, Any]) -> None:
    src = meta.get("source")
    if src is not None and src not in SOURCES:
        raise SchemaError(f"episode source {src!r} is not one of {SOURCES}")
    if meta.get("success") is not None and not isinstance(meta["success"], bool):
        raise SchemaError(f"episode success must be true, false or null, got {meta['success']!r}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))
