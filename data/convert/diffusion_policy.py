"""Import diffusion_policy's ReplayBuffer zarr into a realloop dataset.

A ReplayBuffer is a zarr v2 store: ``data/<key>`` arrays whose leading time axis concatenates all episodes,
and ``meta/episode_ends``, the cumulative end index of each episode (int64). Each source episode becomes one
realloop episode; every mapped key becomes a stream. Real-robot buffers carry a ``timestamp`` key (seconds),
which gives the timestamps; simulation buffers (PushT, robomimic conversions) have none, so timestamps are
synthesised at ``fps`` and the episode attributes say so.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs.errors import UnknownCodecError
from tqdm import tqdm

from realloop.data.convert import (
    ConvertError,
    ConvertSummary,
    as_uint8_rgb,
    conversion_errors,
    finish_episode,
    image_feature,
    open_destination,
)
from realloop.data.schema import IMAGE_PREFIX, Feature, SchemaError, make_feature

TIMESTAMP_KEY = "timestamp"
DEFAULT_FPS = 10.0
DEFAULT_MAP: dict[str, str] = {
    "state": "observation.state",
    "agent_pos": "observation.state",
    "action": "action",
    "img": IMAGE_PREFIX + "image",
    "image": IMAGE_PREFIX + "image",
}
CAMERA_KEY = re.compile(r"^camera_?(\d+)$")
BLOCK_BYTES = 32 << 20  # rows read at once per key: bounded memory whatever the episode length
RANGE_PROBE_FRAMES = 100

__all__ = [
    "DEFAULT_MAP",
    "ReplayBufferSource",
    "convert_diffusion_policy",
    "convert_from_args",
    "default_feature_name",
    "open_replay_buffer",
    "parse_key_map",
    "resolve_mapping",
]


@dataclass
class ReplayBufferSource:
    """An opened ReplayBuffer: its ``data`` arrays and episode boundaries."""

    path: Path
    arrays: dict[str, zarr.Array]
    episode_ends: np.ndarray
    store: Any = None

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def bounds(self) -> list[tuple[int, int]]:
        """``(start, end)`` of each episode in the concatenated arrays."""
        starts = np.concatenate([[0], self.episode_ends[:-1]])
        return [(int(s), int(e)) for s, e in zip(starts, self.episode_ends, strict=True)]

    def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()


def _register_imagecodecs() -> bool:
    try:
        from imagecodecs.numcodecs import register_codecs
    except ImportError:
        return False
    register_codecs()
    return True


def _read_arrays(group: zarr.Group, path: Path) -> dict[str, zarr.Array]:
    try:
        return {name: arr for name, arr in group.arrays()}
    except UnknownCodecError as e:
        if "imagecodecs" in str(e) and _register_imagecodecs():
            return {name: arr for name, arr in group.arrays()}
        raise ConvertError(
            f"{path}: a data array uses a compression codec that is not installed ({e}). diffusion_policy's "
            "real-robot buffers compress camera images with imagecodecs (JPEG 2000 / JPEG XL): "
            "`pip install imagecodecs` and convert again"
        ) from None


def open_replay_buffer(path: str | Path) -> ReplayBufferSource:
    """Open a ReplayBuffer (``.zarr`` directory or ``.zarr.zip``) read-only and check its structure."""
    p = Path(path)
    what = (
        f"{p} is not a diffusion_policy ReplayBuffer: expected a zarr v2 store (directory or .zip) with "
        "data/<key> arrays and meta/episode_ends"
    )
    if not p.exists():
        raise ConvertError(f"{p} does not exist; give the path of a diffusion_policy replay buffer (.zarr)")
    store: Any = None
    try:
        if p.is_file():
            if p.suffix != ".zip":
                raise ConvertError(f"{what}; got a file")
            store = zarr.storage.ZipStore(p, mode="r")
        root = zarr.open_group(store if store is not None else p, mode="r", zarr_format=2)
    except ConvertError:
        raise
    except (FileNotFoundError, ValueError, OSError) as e:
        hint = ""
        if (p / "zarr.json").is_file():
            hint = " (this is a zarr v3 store, e.g. a realloop dataset, which needs no conversion)"
        elif (p / "metadata.yaml").is_file():
            hint = " (this looks like a rosbag2 bag: use --from rosbag2)"
        raise ConvertError(f"{what}; no zarr v2 group found ({e}){hint}") from None
    source = ReplayBufferSource(p, {}, np.zeros(0, dtype=np.int64), store)
    try:
        data, meta = root.get("data"), root.get("meta")
        if not isinstance(data, zarr.Group) or not isinstance(meta, zarr.Group):
            raise ConvertError(f"{what}; it has no 'data' and 'meta' groups (found: {sorted(root.keys())})")
        if "episode_ends" not in meta:
            raise ConvertError(f"{what}; meta/episode_ends is missing")
        episode_ends = meta["episode_ends"]
        if not isinstance(episode_ends, zarr.Array):
            raise ConvertError(f"{what}; meta/episode_ends is a group, not an array")
        ends = np.asarray(episode_ends[:])
        if ends.ndim != 1 or ends.dtype.kind not in "iu" or np.any(np.diff(ends) < 0) or (len(ends) and ends[0] < 0):
            raise ConvertError(
                f"{p}: meta/episode_ends must be a 1-D non-decreasing integer array of cumulative "
                f"episode ends, got {ends.dtype} of shape {ends.shape}"
            )
        source.episode_ends = ends.astype(np.int64)
        source.arrays = _read_arrays(data, p)
        if not source.arrays:
            raise ConvertError(f"{what}; data/ holds no arrays")
        wrong = {
            k: a.shape[0] if a.ndim else None
            for k, a in source.arrays.items()
            if not a.ndim or a.shape[0] != source.n_steps
        }
        if wrong:
            raise ConvertError(
                f"{p}: meta/episode_ends ends at step {source.n_steps} but these data arrays have other "
                f"lengths: {wrong}; the buffer is damaged or was written while recording"
            )
    except BaseException:
        source.close()
        raise
    return source


def parse_key_map(items: Sequence[str]) -> dict[str, str | None]:
    """``["SRC_KEY=FEATURE", "SRC_KEY=", ...]`` to ``{key: feature or None}`` (None leaves the key out)."""
    out: dict[str, str | None] = {}
    for item in items:
        key, sep, feature = item.partition("=")
        key, feature = key.strip(), feature.strip()
        if not sep or not key:
            raise ConvertError(f"--map {item!r}: write SRC_KEY=FEATURE, e.g. --map agent_pos=observation.state")
        out[key] = feature or None
    return out


def default_feature_name(key: str) -> str | None:
    """The feature a ReplayBuffer key maps to by default, or None (left out unless mapped)."""
    if key in DEFAULT_MAP:
        return DEFAULT_MAP[key]
    m = CAMERA_KEY.match(key)
    return f"{IMAGE_PREFIX}camera_{m.group(1)}" if m else None


def resolve_mapping(
    keys: Sequence[str], key_map: Mapping[str, str | None] | None = None, use_default_map: bool = True
) -> tuple[dict[str, str], list[str]]:
    """Decide which key becomes which feature; returns ``({key: feature}, unmapped keys)``."""
    key_map = dict(key_map or {})
    unknown = sorted(set(key_map) - set(keys))
    if unknown:
        raise ConvertError(f"--map names keys that are not in the buffer: {unknown}; its keys are {sorted(keys)}")
    mapping: dict[str, str] = {}
    for key in keys:
        feature = key_map[key] if key in key_map else (default_feature_name(key) if use_default_map else None)
        if feature is not None:
            mapping[key] = feature
    by_feature: dict[str, list[str]] = {}
    for key, feature in mapping.items():
        by_feature.setdefault(feature, []).append(key)
    clash = {f: ks for f, ks in by_feature.items() if len(ks) > 1}
    if clash:
        f, ks = next(iter(clash.items()))
        raise ConvertError(
            f"keys {ks} all map to {f}; keep one, e.g. --map {ks[1]}= to leave {ks[1]} out "
            f"(or --map {ks[1]}=observation.<name> to keep it as another feature)"
        )
    unmapped = sorted(k for k in keys if k not in mapping and k != TIMESTAMP_KEY)
    return mapping, unmapped


@dataclass
class _KeyPlan:
    key: str
    feature: Feature
    layout: str = "numeric"  # numeric | hwc | chw | hw
    scale: float = 1.0


def _image_layout(key: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, int, int]]:
    if len(shape) == 3 and shape[2] in (1, 3):
        return "hwc", (shape[0], shape[1], 3)
    if len(shape) == 3 and shape[0] in (1, 3):
        return "chw", (shape[1], shape[2], 3)
    if len(shape) == 2:
        return "hw", (shape[0], shape[1], 3)
    raise ConvertError(
        f"data/{key} has samples of shape {shape}, which is not an image (H x W x 3, 3 x H x W or H x W); "
        f"map it to a non-image feature name, e.g. --map {key}=observation.{key}"
    )


def _plan(
    source: ReplayBufferSource,
    mapping: Mapping[str, str],
    image_format: str,
    image_quality: int | None,
    image_range: str,
) -> dict[str, _KeyPlan]:
    plans: dict[str, _KeyPlan] = {}
    for key, name in mapping.items():
        arr = source.arrays[key]
        shape, dtype = tuple(arr.shape[1:]), np.dtype(arr.dtype)
        try:
            if name.startswith(IMAGE_PREFIX):
                layout, hw3 = _image_layout(key, shape)
                scale = 1.0
                if dtype.kind == "f":
                    value_range = image_range
                    if value_range == "auto":
                        probe = np.asarray(arr[: min(source.n_steps, RANGE_PROBE_FRAMES)])
                        value_range = "unit" if probe.size and float(np.nanmax(probe)) <= 1.0 else "byte"
                    scale = 255.0 if value_range == "unit" else 1.0
                elif dtype != np.uint8:
                    raise ConvertError(
                        f"data/{key} holds {dtype} images; only uint8 (0..255) and float (0..1 or 0..255) "
                        "images convert"
                    )
                plans[key] = _KeyPlan(key, image_feature(name, hw3, image_format, image_quality), layout, scale)
            else:
                if dtype.kind not in "biuf":
                    raise ConvertError(
                        f"data/{key} has dtype {dtype}, which is not numeric; leave it out with --map {key}="
                    )
                plans[key] = _KeyPlan(key, make_feature(name, dtype=dtype.name, shape=shape))
        except SchemaError as e:
            raise ConvertError(f"{source.path}: data/{key} -> {name}: {e}") from None
    return plans


def _read_block(plan: _KeyPlan, arr: zarr.Array, b0: int, b1: int) -> np.ndarray:
    block = np.asarray(arr[b0:b1])
    if plan.layout == "numeric":
        return block
    if plan.layout == "chw":
        block = np.moveaxis(block, 1, -1)
    return as_uint8_rgb(block, plan.scale)


def convert_diffusion_policy(
    sources: Sequence[str | Path],
    dst: str | Path,
    *,
    key_map: Mapping[str, str | None] | None = None,
    use_default_map: bool = True,
    fps: float | None = None,
    task: str = "",
    source: str = "teleop",
    robot: Mapping[str, Any] | None = None,
    robot_name: str | None = None,
    image_format: str = "jpeg",
    image_quality: int | None = None,
    image_range: str = "auto",
    progress: bool | None = None,
) -> ConvertSummary:
    """Append every episode of the ReplayBuffers ``sources`` to the dataset ``dst`` (created if missing).

    ``key_map`` maps ``data/<key>`` names to features (None leaves a key out) on top of the defaults
    (:data:`DEFAULT_MAP`, ``camera_<i>``); ``fps`` synthesises timestamps for buffers without a ``timestamp``
    key (default 10 Hz). Float images are scaled to uint8 (``image_range``: auto, unit = 0..1, byte = 0..255).
    ``progress=None`` shows the bar on a terminal only.
    """
    t_start = time.perf_counter()
    if fps is not None and not fps > 0:
        raise ConvertError(f"--fps must be positive, got {fps}")
    if image_range not in ("auto", "unit", "byte"):
        raise ConvertError(f"image_range must be auto, unit or byte, not {image_range!r}")
    paths = [Path(s) for s in sources]
    if not paths:
        raise ConvertError("no source given: pass one or more replay buffer paths")
    summary = ConvertSummary("diffusion-policy", [str(p) for p in paths], str(dst))
    opened: list[ReplayBufferSource] = []
    try:
        # check every source and agree on the features before writing anything
        plans: list[dict[str, _KeyPlan]] = []
        for p in paths:
            src = open_replay_buffer(p)
            opened.append(src)
            mapping, unmapped = resolve_mapping(list(src.arrays), key_map, use_default_map)
            if not mapping:
                raise ConvertError(
                    f"{p}: no key maps to a feature (keys: {sorted(src.arrays)}); map some with "
                    "--map SRC_KEY=FEATURE, e.g. --map agent_pos=observation.state"
                )
            for k in unmapped:
                a = src.arrays[k]
                summary.unmapped.setdefault(k, f"{a.dtype} {tuple(a.shape[1:])}")
            for k, f in mapping.items():
                summary.mapping.setdefault(k, f)
            ts_arr = src.arrays.get(TIMESTAMP_KEY)
            if ts_arr is not None and (ts_arr.ndim != 1 or np.dtype(ts_arr.dtype).kind not in "iuf"):
                raise ConvertError(
                    f"{p}: data/{TIMESTAMP_KEY} is {ts_arr.dtype} of shape {ts_arr.shape}; expected seconds, "
                    f"shape (T,). If it is not a time stamp, rename it in the buffer"
                )
            plans.append(_plan(src, mapping, image_format, image_quality, image_range))
        features = {pl.feature.name: pl.feature for pl in plans[0].values()}
        for p, pl in zip(paths[1:], plans[1:], strict=True):
            other = {x.feature.name: x.feature for x in pl.values()}
            if {n: f.to_dict() for n, f in other.items()} != {n: f.to_dict() for n, f in features.items()}:
                raise ConvertError(
                    f"{p} gives features {_brief(other)} but {paths[0]} gives {_brief(features)}; "
                    "convert buffers with different keys or shapes into separate datasets"
                )
        summary.features = {n: f.to_dict() for n, f in features.items()}
        for src in opened:
            if TIMESTAMP_KEY in src.arrays and fps is not None:
                summary.warn(f"{src.path}: has a '{TIMESTAMP_KEY}' key, so --fps {fps:g} is not used")
            if TIMESTAMP_KEY not in src.arrays:
                rate_txt = f"{fps or DEFAULT_FPS:g} Hz"
                summary.warn(f"{src.path}: no '{TIMESTAMP_KEY}' key; timestamps synthesised at {rate_txt}")
        rate = fps or DEFAULT_FPS
        row_bytes = max(int(np.prod(f.shape, dtype=np.int64)) * np.dtype(f.dtype).itemsize for f in features.values())
        block = int(np.clip(BLOCK_BYTES // max(row_bytes, 1), 1, 1 << 16))
        bar = tqdm(
            total=sum(s.n_steps for s in opened),
            unit="step",
            desc="convert",
            disable=None if progress is None else not progress,
        )
        with open_destination(dst, features, robot) as ds, bar:
            for src, pl in zip(opened, plans, strict=True):
                ts_arr = src.arrays.get(TIMESTAMP_KEY)
                for ei, (s, e) in enumerate(src.bounds()):
                    where = f"{src.path} episode {ei}"
                    if e == s:
                        summary.skipped_sources[where] = "empty episode"
                        summary.warn(f"{where}: empty episode, skipped")
                        continue
                    attrs: dict[str, Any] = {
                        "converted_from": "diffusion_policy",
                        "source_path": str(src.path),
                        "source_episode": ei,
                        "keys": {k: x.feature.name for k, x in pl.items()},
                        "timestamps_synthesised": ts_arr is None,
                    }
                    if ts_arr is None:
                        attrs["synthesised_fps"] = rate
                    ep = ds.begin_episode(task=task, source=source, robot=robot_name, **attrs)
                    try:
                        with conversion_errors(summary, where):
                            t = (
                                np.asarray(ts_arr[s:e], dtype=np.float64)
                                if ts_arr is not None
                                else np.arange(e - s, dtype=np.float64) / rate
                            )
                            for b0 in range(s, e, block):
                                b1 = min(e, b0 + block)
                                for x in pl.values():
                                    ep.extend(
                                        x.feature.name,
                                        t[b0 - s : b1 - s],
                                        _read_block(x, src.arrays[x.key], b0, b1),
                                    )
                                bar.update(b1 - b0)
                            finish_episode(ep, summary, where)
                    finally:
                        ep.discard()
    finally:
        for src in opened:
            src.close()
    summary.seconds = time.perf_counter() - t_start
    return summary


def _brief(features: Mapping[str, Feature]) -> str:
    return "{" + ", ".join(f"{n}: {f.dtype}{list(f.shape)}" for n, f in features.items()) + "}"


def convert_from_args(args: argparse.Namespace, **common: Any) -> ConvertSummary:
    """``realloop-dataset convert --from diffusion-policy``: :func:`convert_diffusion_policy` with the command
    line's options (``common``: the options every converter takes)."""
    return convert_diffusion_policy(
        args.src,
        args.dst,
        key_map=parse_key_map(args.key_map),
        use_default_map=not args.no_default_map,
        fps=args.fps,
        image_range=args.image_range,
        **common,
    )
