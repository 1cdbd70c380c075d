"""Import a LeRobotDataset v3 directory into a realloop dataset.

A LeRobot v3 dataset (``meta/info.json`` with ``codebase_version`` ``v3.0``) stores frames in
``data/chunk-XXX/file-XXX.parquet`` (several episodes per file), episode metadata in
``meta/episodes/chunk-XXX/file-XXX.parquet``, task strings in ``meta/tasks.parquet``, and camera streams as
MP4 files under ``videos/<key>/chunk-XXX/file-XXX.mp4`` that concatenate several episodes: an episode's
frames lie between its ``videos/<key>/from_timestamp`` and ``to_timestamp``. Each LeRobot episode becomes one
realloop episode; features keep their LeRobot names (video/image keys become ``observation.images.<cam>``)
and every stream is stamped with the frame's ``timestamp`` (seconds from the episode start).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from realloop.data.convert import (
    ConvertError,
    ConvertSummary,
    conversion_errors,
    finish_episode,
    image_feature,
    open_destination,
)
from realloop.data.schema import IMAGE_PREFIX, Feature, SchemaError, make_feature

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - pyarrow is a dependency; a clear error if it is missing anyway
    pa = pc = pq = None

BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
BLOCK_FRAMES = 256  # frames written at once: bounded memory whatever the episode length
REENCODE_HINT = (
    "OpenCV decodes H.264/MPEG-4 but usually not AV1 (LeRobot's default codec). Re-encode the videos in place, "
    'e.g. `for f in SRC/videos/*/*/*.mp4; do ffmpeg -y -i "$f" -c:v libx264 -pix_fmt yuv420p -crf 18 '
    '"${f%.mp4}.tmp.mp4" && mv "${f%.mp4}.tmp.mp4" "$f"; done`, then convert again'
)

__all__ = ["LeRobotSource", "convert_from_args", "convert_lerobot", "image_feature_name", "open_lerobot"]


def _need_pyarrow() -> None:
    if pq is None:
        raise ConvertError("--from lerobot reads parquet files with pyarrow: `pip install pyarrow` and retry")


def image_feature_name(key: str) -> str:
    """The realloop image feature for a LeRobot video/image key (``observation.image`` -> ``...images.image``)."""
    if key.startswith(IMAGE_PREFIX):
        return key
    return IMAGE_PREFIX + key.removeprefix("observation.").replace(".", "_")


@dataclass
class _KeyPlan:
    key: str  # LeRobot feature key
    feature: Feature
    kind: str  # numeric | video | image (PNG bytes in the parquet)


@dataclass
class LeRobotSource:
    """An opened LeRobot v3 dataset: its info, episode table and task strings."""

    path: Path
    info: dict[str, Any]
    episodes: list[dict[str, Any]]
    tasks: dict[int, str] = field(default_factory=dict)
    plans: dict[str, _KeyPlan] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return float(self.info.get("fps") or 0)

    def data_file(self, ep: Mapping[str, Any]) -> Path:
        template = self.info.get("data_path") or DEFAULT_DATA_PATH
        return self.path / template.format(
            chunk_index=int(ep.get("data/chunk_index") or 0),
            file_index=int(ep.get("data/file_index") or 0),
            episode_chunk=int(ep.get("data/chunk_index") or 0),
            episode_index=int(ep["episode_index"]),
        )

    def video_file(self, key: str, ep: Mapping[str, Any]) -> Path:
        template = self.info.get("video_path") or DEFAULT_VIDEO_PATH
        chunk, file = ep.get(f"videos/{key}/chunk_index"), ep.get(f"videos/{key}/file_index")
        if chunk is None or file is None:
            raise ConvertError(
                f"{self.path}: meta/episodes has no videos/{key}/chunk_index or file_index for episode "
                f"{ep['episode_index']}; the metadata is incomplete (is this a v3.0 dataset?)"
            )
        return self.path / template.format(
            video_key=key, chunk_index=int(chunk), file_index=int(file), episode_index=int(ep["episode_index"])
        )

    def video_codec(self, key: str) -> str | None:
        codec = (self.info["features"][key].get("info") or {}).get("video.codec")
        return str(codec) if codec else None

    def video_fps(self, key: str) -> float:
        vinfo = self.info["features"][key].get("info") or {}
        return float(vinfo.get("video.fps") or self.fps)


def _read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    try:
        if columns is not None:
            have = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in have]
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as e:
        raise ConvertError(
            f"{path}: cannot read this parquet file ({e}); the dataset is incomplete or damaged"
        ) from None


def _read_tasks(root: Path) -> dict[int, str]:
    """``meta/tasks.parquet`` as ``{task_index: task}`` (the task string is a column or the pandas index)."""
    path = root / "meta" / "tasks.parquet"
    if not path.is_file():
        return {}
    table = _read_parquet(path)
    if "task_index" not in table.column_names:
        return {}
    strings = [c for c in table.column_names if pa.types.is_string(table.schema.field(c).type)
               or pa.types.is_large_string(table.schema.field(c).type)]  # fmt: skip
    text = "task" if "task" in strings else (strings[0] if strings else None)
    if text is None:
        return {}
    return {int(i): str(t) for i, t in zip(table["task_index"].to_pylist(), table[text].to_pylist(), strict=True)}


def open_lerobot(path: str | Path) -> LeRobotSource:
    """Open a LeRobot v3 dataset directory and check its version and metadata (nothing is decoded yet)."""
    _need_pyarrow()
    p = Path(path)
    if not p.exists():
        raise ConvertError(f"{p} does not exist; give the root directory of a LeRobot dataset")
    info_path = p / "meta" / "info.json"
    if not info_path.is_file():
        raise ConvertError(
            f"{p} is not a LeRobot dataset: meta/info.json is missing; give the dataset root (the directory "
            "holding meta/, data/ and videos/)"
        )
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as e:
        raise ConvertError(f"{info_path}: not valid JSON ({e})") from None
    version = str(info.get("codebase_version", "unknown"))
    if not version.startswith("v3"):
        raise ConvertError(
            f"{p} is a LeRobot {version} dataset; only codebase_version v3.0 is supported. Upgrade it with "
            "lerobot's converter (`python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=...`) "
            "and convert the result"
        )
    if not isinstance(info.get("features"), dict) or not info["features"]:
        raise ConvertError(f"{info_path}: has no 'features'; the metadata is damaged")
    ep_files = sorted((p / "meta" / "episodes").glob("**/*.parquet"))
    if not ep_files:
        raise ConvertError(f"{p}: meta/episodes/chunk-*/file-*.parquet is missing; the dataset is incomplete")
    video_keys = [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]
    columns = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
               "dataset_from_index", "dataset_to_index"]  # fmt: skip
    for key in video_keys:
        columns += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    episodes = [row for f in ep_files for row in _read_parquet(f, columns).to_pylist()]
    if not episodes or "episode_index" not in episodes[0]:
        raise ConvertError(f"{p}: meta/episodes lists no episodes (or has no episode_index column)")
    episodes.sort(key=lambda e: int(e["episode_index"]))
    return LeRobotSource(p, info, episodes, _read_tasks(p))


def _names(spec: Mapping[str, Any], shape: tuple[int, ...]) -> tuple[str, ...] | None:
    """LeRobot ``names`` (a list, or ``{"motors": [...]}``) when they name the last axis, else None."""
    names = spec.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and shape and len(names) == shape[-1] and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def _image_hw(spec: Mapping[str, Any]) -> tuple[int, int] | None:
    shape, names = list(spec.get("shape") or []), spec.get("names")
    if len(shape) != 3:
        return None
    if isinstance(names, list) and "height" in names and "width" in names:
        return int(shape[names.index("height")]), int(shape[names.index("width")])
    return (int(shape[1]), int(shape[2])) if shape[0] == 3 and shape[2] != 3 else (int(shape[0]), int(shape[1]))


def _plan(src: LeRobotSource, image_format: str, image_quality: int | None, summary: ConvertSummary) -> None:
    for key, spec in src.info["features"].items():
        if key in BOOKKEEPING or not isinstance(spec, dict):
            continue
        dtype = str(spec.get("dtype"))
        try:
            if dtype in ("video", "image"):
                hw = _image_hw(spec)
                if hw is None:
                    raise ConvertError(f"{key}: shape {spec.get('shape')} is not an image shape")
                name = image_feature_name(key)
                feature = image_feature(name, (*hw, 3), image_format, image_quality)
                src.plans[key] = _KeyPlan(key, feature, dtype)
            elif dtype in ("string", "str") or not _numeric(dtype):
                summary.unmapped.setdefault(key, f"{dtype} {tuple(spec.get('shape') or ())}")
                continue
            else:
                shape = tuple(int(s) for s in spec.get("shape") or ())
                feature = make_feature(key, dtype=dtype, shape=shape, names=_names(spec, shape))
                src.plans[key] = _KeyPlan(key, feature, "numeric")
        except SchemaError as e:
            raise ConvertError(f"{src.path}: feature {key}: {e}") from None
        summary.mapping.setdefault(key, src.plans[key].feature.name)


def _numeric(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind in "biuf"
    except TypeError:
        return False


class _VideoReader:
    """Sequential frames of one MP4 file, read by frame index (episodes are read in file order)."""

    def __init__(self, path: Path, codec_hint: str | None = None) -> None:
        self.path = path
        self.codec_hint = codec_hint  # meta/info.json's video.codec, named when OpenCV cannot say
        self.cap: cv2.VideoCapture | None = None
        self.pos = 0
        self.last: np.ndarray | None = None
        self._open()

    def _open(self) -> None:
        if self.cap is not None:
            self.cap.release()
        if not self.path.is_file():
            raise ConvertError(f"{self.path}: video file missing; the dataset is incomplete")
        self.cap = cv2.VideoCapture(str(self.path))
        self.pos, self.last = 0, None
        if not self.cap.isOpened():
            raise ConvertError(
                f"{self.path}: OpenCV cannot open this video (codec {self.codec_hint or 'unknown'}). {REENCODE_HINT}"
            )

    def codec(self) -> str:
        code = int(self.cap.get(cv2.CAP_PROP_FOURCC)) if self.cap is not None else 0
        text = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")
        return text or self.codec_hint or "unknown"

    def frame(self, index: int) -> np.ndarray:
        """The RGB frame ``index`` (0-based) of the file."""
        if index < self.pos - 1 or (index == self.pos - 1 and self.last is None):
            self._open()
        if index == self.pos - 1 and self.last is not None:
            return self.last
        assert self.cap is not None
        while self.pos < index:
            if not self.cap.grab():
                raise self._failed(index)
            self.pos += 1
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            raise self._failed(index)
        self.pos += 1
        self.last = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self.last

    def _failed(self, index: int) -> ConvertError:
        if self.pos == 0:
            return ConvertError(f"{self.path}: OpenCV cannot decode this video (codec {self.codec()}). {REENCODE_HINT}")
        return ConvertError(
            f"{self.path}: frame {index} is past the end of the video ({self.pos} frames decoded); the episode "
            "metadata (from_timestamp) and the video disagree"
        )

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def _column(table: pa.Table, key: str, feature: Feature) -> np.ndarray:
    """A numeric parquet column (scalars or nested lists) as ``(N, *feature.shape)``."""
    col: Any = table[key].combine_chunks() if isinstance(table[key], pa.ChunkedArray) else table[key]
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        col = col.flatten()
    values = col.to_numpy(zero_copy_only=False)
    n = table.num_rows
    if values.size != n * int(np.prod(feature.shape, dtype=np.int64)):
        raise ConvertError(f"column {key} holds {values.size} values for {n} frames; expected shape {feature.shape}")
    return values.reshape(n, *feature.shape).astype(feature.dtype, copy=False)


def _decode_images(table: pa.Table, key: str, root: Path) -> np.ndarray:
    frames = []
    for item in table[key].to_pylist():
        raw = item.get("bytes") if isinstance(item, dict) else item
        if raw is None and isinstance(item, dict) and item.get("path"):
            raw = (root / item["path"]).read_bytes()
        bgr = cv2.imdecode(np.frombuffer(raw or b"", np.uint8), cv2.IMREAD_COLOR) if raw else None
        if bgr is None:
            raise ConvertError(f"column {key}: an image could not be decoded (no PNG/JPEG bytes)")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def _episode_frames(src: LeRobotSource, ep: Mapping[str, Any], cache: dict[Path, pa.Table]) -> pa.Table:
    path = src.data_file(ep)
    if path not in cache:
        if not path.is_file():
            raise ConvertError(f"{path}: data file missing; the dataset is incomplete")
        cache.clear()  # keep one data file in memory
        cache[path] = _read_parquet(path)
    table = cache[path]
    if "episode_index" not in table.column_names:
        raise ConvertError(f"{path}: has no episode_index column")
    rows = table.filter(pc.equal(table["episode_index"], int(ep["episode_index"])))
    if "frame_index" in rows.column_names:
        rows = rows.sort_by("frame_index")
    return rows


def _timestamps(src: LeRobotSource, rows: pa.Table, summary: ConvertSummary, where: str) -> np.ndarray:
    if "timestamp" in rows.column_names:
        col = rows["timestamp"]
        ts = col.to_numpy().astype(np.float64)
        if pa.types.is_float32(col.type):  # float32 seconds: drop the float32 noise (0.1 -> 0.10000000149)
            ts = np.round(ts, 6)
        return ts
    if not src.fps:
        raise ConvertError(f"{where}: no timestamp column and no fps in meta/info.json")
    summary.warn(f"{where}: no timestamp column; timestamps are frame_index / {src.fps:g} fps")
    return rows["frame_index"].to_numpy().astype(np.float64) / src.fps


def _blocks(n: int) -> Iterator[tuple[int, int]]:
    for b0 in range(0, n, BLOCK_FRAMES):
        yield b0, min(n, b0 + BLOCK_FRAMES)


def _probe_videos(src: LeRobotSource) -> None:
    """Decode the first frame of each camera before anything is written (codec and shape check)."""
    for key, plan in src.plans.items():
        if plan.kind != "video":
            continue
        ep = src.episodes[0]
        reader = _VideoReader(src.video_file(key, ep), src.video_codec(key))
        try:
            frame = reader.frame(round(float(ep.get(f"videos/{key}/from_timestamp") or 0.0) * src.video_fps(key)))
        finally:
            reader.close()
        if frame.shape != plan.feature.shape:
            raise ConvertError(
                f"{reader.path}: frames are {frame.shape[1]}x{frame.shape[0]} but meta/info.json says {key} has "
                f"shape {tuple(src.info['features'][key].get('shape'))}; the metadata and videos disagree"
            )


def convert_lerobot(
    sources: Sequence[str | Path],
    dst: str | Path,
    *,
    task: str = "",
    source: str = "teleop",
    robot: Mapping[str, Any] | None = None,
    robot_name: str | None = None,
    image_format: str = "jpeg",
    image_quality: int | None = None,
    progress: bool | None = None,
) -> ConvertSummary:
    """Append every episode of the LeRobot v3 datasets ``sources`` to the dataset ``dst`` (created if missing).

    The episode task is LeRobot's task text unless ``task`` overrides it; ``robot`` defaults to the dataset's
    ``robot_type``. ``progress=None`` shows the bar on a terminal only.
    """
    t_start = time.perf_counter()
    paths = [Path(s) for s in sources]
    if not paths:
        raise ConvertError("no source given: pass one or more LeRobot dataset directories")
    summary = ConvertSummary("lerobot", [str(p) for p in paths], str(dst))
    opened: list[LeRobotSource] = []
    for p in paths:  # check every source and agree on the features before writing anything
        src = open_lerobot(p)
        _plan(src, image_format, image_quality, summary)
        if not src.plans:
            raise ConvertError(f"{p}: meta/info.json declares no numeric, image or video features to convert")
        _probe_videos(src)
        opened.append(src)
    features = {x.feature.name: x.feature for x in opened[0].plans.values()}
    for src in opened[1:]:
        other = {x.feature.name: x.feature for x in src.plans.values()}
        if {n: f.to_dict() for n, f in other.items()} != {n: f.to_dict() for n, f in features.items()}:
            raise ConvertError(
                f"{src.path} has other features than {opened[0].path}; convert datasets with different "
                "features or shapes into separate realloop datasets"
            )
    summary.features = {n: f.to_dict() for n, f in features.items()}
    robot_type = opened[0].info.get("robot_type")
    if robot is None and robot_type:
        robot = {"name": str(robot_type)}
    bar = tqdm(
        total=sum(int(e.get("length") or 0) for s in opened for e in s.episodes),
        unit="frame",
        desc="convert",
        disable=None if progress is None else not progress,
    )
    cache: dict[Path, pa.Table] = {}
    with open_destination(dst, features, robot) as ds, bar:
        for src in opened:
            readers: dict[str, _VideoReader] = {}
            try:
                for ep_meta in src.episodes:
                    _convert_episode(ds, src, ep_meta, cache, readers, summary, bar, task, source, robot_name)
            finally:
                for r in readers.values():
                    r.close()
    summary.seconds = time.perf_counter() - t_start
    return summary


def _convert_episode(
    ds: Any,
    src: LeRobotSource,
    ep_meta: Mapping[str, Any],
    cache: dict[Path, pa.Table],
    readers: dict[str, _VideoReader],
    summary: ConvertSummary,
    bar: tqdm,
    task: str,
    source: str,
    robot_name: str | None,
) -> None:
    index = int(ep_meta["episode_index"])
    where = f"{src.path} episode {index}"
    with conversion_errors(summary, where):
        rows = _episode_frames(src, ep_meta, cache)
    n = rows.num_rows
    if n == 0:
        summary.skipped_sources[where] = "no frames in the data files"
        summary.warn(f"{where}: no frames in the data files, skipped")
        return
    if ep_meta.get("length") is not None and int(ep_meta["length"]) != n:
        summary.warn(f"{where}: meta/episodes says {ep_meta['length']} frames but the data holds {n}")
    tasks = [str(t) for t in (ep_meta.get("tasks") or [])]
    if not tasks and "task_index" in rows.column_names:
        tasks = [src.tasks.get(int(i), "") for i in dict.fromkeys(rows["task_index"].to_pylist())]
    attrs: dict[str, Any] = {
        "converted_from": "lerobot",
        "source_path": str(src.path),
        "lerobot_episode_index": index,
        "lerobot_tasks": tasks,
        "keys": {k: x.feature.name for k, x in src.plans.items()},
    }
    ep = ds.begin_episode(task=task or "; ".join(t for t in tasks if t), source=source, robot=robot_name, **attrs)
    try:
        with conversion_errors(summary, where):
            t = _timestamps(src, rows, summary, where)
            for b0, b1 in _blocks(n):
                block = rows.slice(b0, b1 - b0)
                for key, plan in src.plans.items():
                    name = plan.feature.name
                    if plan.kind == "video":
                        path = src.video_file(key, ep_meta)
                        reader = readers.get(key)
                        if reader is None or reader.path != path:  # one open file per camera
                            if reader is not None:
                                reader.close()
                            reader = readers[key] = _VideoReader(path, src.video_codec(key))
                        start = float(ep_meta.get(f"videos/{key}/from_timestamp") or 0.0)
                        fps = src.video_fps(key)
                        frames = np.stack([reader.frame(round((start + x) * fps)) for x in t[b0:b1]])
                        ep.extend(name, t[b0:b1], frames)
                    elif key not in block.column_names:
                        raise ConvertError(f"{src.data_file(ep_meta)}: column {key} (in meta/info.json) is missing")
                    elif plan.kind == "image":
                        ep.extend(name, t[b0:b1], _decode_images(block, key, src.path))
                    else:
                        ep.extend(name, t[b0:b1], _column(block, key, plan.feature))
                bar.update(b1 - b0)
            finish_episode(ep, summary, where)
    finally:
        ep.discard()


def convert_from_args(args: argparse.Namespace, **common: Any) -> ConvertSummary:
    """``realloop-dataset convert --from lerobot``: :func:`convert_lerobot` with the command line's options
    (``common``: the options every converter takes)."""
    return convert_lerobot(args.src, args.dst, **common)
