"""Look at an episode: a camera stream as an mp4 video, the numeric streams as a plot against time.

>>> export_video("demo.zarr", episode=0, camera="front", out_path="ep0_front.mp4")
>>> plot_episode("demo.zarr", episode=0, out_path="ep0.png")

Both read the dataset a shard / stream at a time, so memory stays bounded for long episodes. Plots use
matplotlib's Agg canvas directly (no pyplot, no global backend switch), so they work headless and do not
disturb an interactive session that imports this module.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from realloop.data.dataset import Dataset
from realloop.data.episode import DamagedDataError, Episode, Stream
from realloop.data.layout import FRAMES_PER_SHARD
from realloop.data.schema import IMAGE_PREFIX

PLOT_WIDTH_IN = 10.0
PLOT_ROW_HEIGHT_IN = 2.5
PLOT_DPI = 100
_MAX_LEGEND_LINES = 24


class ExportError(ValueError):
    """The episode, camera or stream asked for does not exist, or the output cannot be written."""


@dataclass
class VideoInfo:
    """What :func:`export_video` wrote."""

    path: str
    frames: int
    width: int
    height: int
    fps: float

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


@dataclass
class PlotInfo:
    """What :func:`plot_episode` wrote."""

    path: str
    streams: list[str]
    width: int
    height: int
    duration: float


def open_episode(dataset_path: str | os.PathLike[str], episode: int) -> tuple[Dataset, Episode]:
    """Open the dataset read-only; return it and its episode ``episode`` (ExportError if there is none)."""
    ds = Dataset.open(dataset_path)
    try:
        return ds, ds.episode(int(episode))
    except IndexError as e:
        raise ExportError(f"{e}; list them with `realloop-dataset info {dataset_path}`") from None


def camera_feature(ds: Dataset, ep: Episode, camera: str) -> str:
    """The image feature for ``camera`` (``front`` or ``observation.images.front``) recorded in ``ep``."""
    name = camera if camera.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + camera
    recorded = [s[len(IMAGE_PREFIX) :] for s in ep.stream_names if s.startswith(IMAGE_PREFIX)]
    if name not in ep.stream_names:
        where = "this dataset has no such camera" if name not in ds.features else f"episode {ep.index} has no frames"
        raise ExportError(
            f"no camera {camera!r} in episode {ep.index} ({where}); cameras recorded: {', '.join(recorded) or 'none'}"
        )
    return name


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "checksum" in text.lower():
        return "checksum mismatch: a chunk file is truncated or corrupted"
    return text


def _read(stream: Stream, sel: slice, ep: Episode) -> np.ndarray:
    try:
        return np.asarray(stream.data[sel])
    except DamagedDataError:
        raise  # already one line naming the episode, the stream and the fix
    except Exception as e:
        raise DamagedDataError(
            f"reading {stream.name} samples {sel.start}..{sel.stop} of episode {ep.index} failed "
            f"({_reason(e)}); the dataset is damaged: run "
            f"`realloop-dataset verify {ep.path.parent.parent}` to locate the file"
        ) from e


def _timestamps(stream: Stream, ep: Episode) -> np.ndarray:
    try:
        return stream.timestamps
    except DamagedDataError:
        raise
    except Exception as e:
        raise DamagedDataError(
            f"reading the timestamps of {stream.name} in episode {ep.index} failed ({_reason(e)}); the "
            f"dataset is damaged: run `realloop-dataset verify {ep.path.parent.parent}` to locate the file"
        ) from e


def export_video(
    dataset_path: str | os.PathLike[str],
    episode: int,
    camera: str,
    out_path: str | os.PathLike[str],
    fps: float | None = None,
    progress: bool = False,
) -> VideoInfo:
    """Write the frames of one camera stream of an episode to an mp4 (OpenCV, fourcc ``mp4v``).

    ``fps`` defaults to the stream's measured rate (frames are written one per sample, so the video plays at
    the recorded speed when the rate is steady). The file is written under a temporary name and renamed when
    complete, so a failed export never leaves a truncated video at ``out_path``.
    """
    ds, ep = open_episode(dataset_path, episode)
    try:
        name = camera_feature(ds, ep, camera)
        stream = ep.stream(name)
        n = len(_timestamps(stream, ep))
        if fps is None:
            fps = stream.rate_hz or stream.feature.rate_hz or 30.0
        if not fps > 0:
            raise ExportError(f"fps must be positive, got {fps}")
        shape = stream.feature.shape
        height, width = int(shape[0]), int(shape[1])
        out = Path(out_path)
        if not out.parent.is_dir():
            raise ExportError(f"cannot write {out}: the folder {out.parent} does not exist")
        tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}{out.suffix or '.mp4'}")
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise ExportError(f"OpenCV cannot write an mp4v video to {out} (check the extension, e.g. .mp4)")
        try:
            step = stream.data.shards[0] if stream.data.shards else FRAMES_PER_SHARD
            with tqdm(total=n, unit="frame", desc="export-video", disable=not progress, leave=False) as bar:
                for start in range(0, n, step):
                    for frame in _read(stream, slice(start, min(start + step, n)), ep):
                        if frame.ndim == 2 or frame.shape[-1] == 1:
                            bgr = cv2.cvtColor(np.ascontiguousarray(frame.reshape(height, width)), cv2.COLOR_GRAY2BGR)
                        else:
                            bgr = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
                        writer.write(bgr)
                    bar.update(min(step, n - start))
            writer.release()
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise ExportError(f"OpenCV wrote no video to {out}; is this OpenCV build missing its ffmpeg backend?")
            os.replace(tmp, out)
        finally:
            writer.release()
            with contextlib.suppress(OSError):
                tmp.unlink()
        return VideoInfo(path=str(out), frames=n, width=width, height=height, fps=float(fps))
    finally:
        ds.close()


def _labels(key: str, shape: tuple[int, ...], names: Sequence[str] | None) -> list[str]:
    if not shape:
        return [key]
    idx = list(np.ndindex(*shape))
    if names is not None:
        return [".".join([*(str(i) for i in ix[:-1]), names[ix[-1]]]) for ix in idx]
    return [f"{key}[{','.join(map(str, ix))}]" for ix in idx]


def plot_episode(
    dataset_path: str | os.PathLike[str],
    episode: int,
    out_path: str | os.PathLike[str],
    keys: Sequence[str] | None = None,
    dpi: int = PLOT_DPI,
) -> PlotInfo:
    """Plot the numeric streams of an episode against time (seconds since its start), one subplot each.

    ``keys`` selects streams (default: every numeric stream recorded in the episode). Lines are labelled with
    the feature's ``names`` where the schema gives them. The figure is ``10 x 2.5*len(keys)`` inches at
    ``dpi``; the format follows the extension of ``out_path`` (png, pdf, svg).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ds, ep = open_episode(dataset_path, episode)
    try:
        numeric = [k for k in ep.stream_names if not ds.features[k].is_image]
        if keys is None:
            keys = numeric
        else:
            keys = list(keys)
            for k in keys:
                if k not in ep.stream_names:
                    raise ExportError(
                        f"episode {ep.index} has no stream {k!r}; numeric streams: {', '.join(numeric) or 'none'}"
                    )
                if ds.features[k].is_image:
                    raise ExportError(f"{k} is an image stream: export it with `realloop-dataset export-video`")
        if not keys:
            raise ExportError(f"episode {ep.index} has no numeric streams to plot")
        out = Path(out_path)
        if not out.parent.is_dir():
            raise ExportError(f"cannot write {out}: the folder {out.parent} does not exist")

        t0 = float(ep.meta.get("start_time", 0.0))
        fig = Figure(figsize=(PLOT_WIDTH_IN, PLOT_ROW_HEIGHT_IN * len(keys)), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
        for ax, key in zip(axes, keys, strict=True):
            stream = ep.stream(key)
            feature = stream.feature
            t = _timestamps(stream, ep) - t0
            values = _read(stream, slice(0, len(t)), ep).astype(np.float64).reshape(len(t), -1)
            labels = _labels(key, feature.shape, feature.names)
            marker = "." if len(t) <= 200 else None
            for j in range(values.shape[1]):
                ax.plot(t, values[:, j], marker=marker, markersize=3, linewidth=1, label=labels[j])
            ax.set_ylabel(f"{key}\n[{feature.units}]" if feature.units else key, fontsize="small")
            ax.grid(True, alpha=0.3)
            if values.shape[1] <= _MAX_LEGEND_LINES:
                ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="x-small", frameon=False)
        axes[-1].set_xlabel("time since episode start [s]")
        success = {True: "success", False: "failure", None: "success unknown"}[ep.meta.get("success")]
        task = ep.meta.get("task") or "(no task)"
        fig.suptitle(f"episode {ep.index}: {task} · {success} · {ep.meta.get('source', '?')} · {ep.duration:.2f} s")
        fig.savefig(out, dpi=dpi)
        w, h = fig.get_size_inches() * dpi
        return PlotInfo(path=str(out), streams=list(keys), width=round(w), height=round(h), duration=ep.duration)
    finally:
        ds.close()
