"""Where things live inside a dataset directory, and the zarr arrays each stream is made of.

::

    my_dataset.zarr/
      zarr.json                      root group; attributes["realloop"] = format, version, features, robot, stats
      episodes/
        episode_000000/              one committed episode (a zarr group, attributes = episode metadata)
          observation.state/
            timestamp                float64 seconds, one per sample
            data                     (T, *shape), zstd + crc32c, chunks along time
          observation.images.front/
            timestamp
            data                     (T, H, W, 3) uint8; one JPEG/PNG per frame, ~100 frames per shard file
      .staging/<id>/                 the episode being recorded; renamed into episodes/ on commit
      .trash/episode_000003/         a deleted episode (``realloop-dataset delete``): invisible to readers,
                                     brought back by ``realloop-dataset restore``
      .writer.lock                   held (flock) by the one process writing

An episode becomes visible by one atomic directory rename, so a crash at any instant leaves either the whole
episode or nothing of it under ``episodes/``; moving it to the trash and back are renames too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from zarr.codecs import Crc32cCodec, ZstdCodec

from realloop.data.codecs import ImageCodec
from realloop.data.schema import Feature

EPISODES_DIR = "episodes"
STAGING_DIR = ".staging"
TRASH_DIR = ".trash"
LOCK_FILE = ".writer.lock"
EPISODE_RE = re.compile(r"^episode_(\d{6,})$")
FRAMES_PER_SHARD = 100
NUMERIC_CHUNK_BYTES = 1 << 20
TIMESTAMP_CHUNK = 1 << 16


def episode_dirname(index: int) -> str:
    return f"episode_{index:06d}"


def list_episode_indices(root: Path) -> list[int]:
    """Indices of the committed episodes, in order (anything else in episodes/ is ignored)."""
    return _indices_in(root / EPISODES_DIR)


def list_trashed_indices(root: Path) -> list[int]:
    """Indices of the episodes in the trash (deleted, restorable), in order."""
    return _indices_in(root / TRASH_DIR)


def _indices_in(d: Path) -> list[int]:
    if not d.is_dir():
        return []
    out = []
    for name in os.listdir(d):
        m = EPISODE_RE.match(name)
        if m and (d / name / "zarr.json").is_file():
            out.append(int(m.group(1)))
    return sorted(out)


def rows_per_chunk(feature: Feature) -> int:
    """Samples per chunk (numeric streams) or per shard file (image streams)."""
    if feature.is_image:
        return FRAMES_PER_SHARD
    row_bytes = max(1, int(np.prod(feature.shape)) * np.dtype(feature.dtype).itemsize)
    return int(np.clip(NUMERIC_CHUNK_BYTES // row_bytes, 256, 1 << 16))


def image_codec(feature: Feature) -> ImageCodec:
    return ImageCodec(format=feature.image_format or "jpeg", quality=feature.image_quality)


def array_kwargs(feature: Feature) -> dict[str, Any]:
    """zarr ``create_array`` arguments for a stream's ``data`` array."""
    n = rows_per_chunk(feature)
    if feature.is_image:
        return {
            "chunks": (1, *feature.shape),
            "shards": (n, *feature.shape),
            "serializer": image_codec(feature),
            "compressors": [Crc32cCodec()],
            "fill_value": 0,
        }
    return {
        "chunks": (n, *feature.shape),
        "compressors": [ZstdCodec(level=3), Crc32cCodec()],
        "fill_value": 0,
    }


TIMESTAMP_KWARGS: dict[str, Any] = {
    "chunks": (TIMESTAMP_CHUNK,),
    "compressors": [ZstdCodec(level=3), Crc32cCodec()],
    "fill_value": 0.0,
}
