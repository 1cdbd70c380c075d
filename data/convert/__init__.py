"""Converters into the realloop dataset: diffusion_policy ReplayBuffer zarr, rosbag2 bags, LeRobot v3.

``realloop-dataset convert --from {diffusion-policy,rosbag2,lerobot} SRC [SRC ...] DST [options]`` appends one
episode per source episode (replay buffer, LeRobot dataset) or per bag (rosbag2) to the dataset DST, creating
it if missing. The library entry points are
:func:`realloop.data.convert.diffusion_policy.convert_diffusion_policy`,
:func:`realloop.data.convert.rosbag2.convert_rosbag2` and :func:`realloop.data.convert.lerobot.convert_lerobot`;
all return a :class:`ConvertSummary`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from realloop.data.codecs import FORMATS as IMAGE_FORMATS
from realloop.data.dataset import Dataset, DatasetLockedError, NotADatasetError
from realloop.data.schema import SOURCES, Feature, SchemaError, make_feature
from realloop.data.writer import DatasetWriteError, EpisodeWriter
from realloop.registry import Registry

# --from FORMAT -> convert_from_args(args, **common) of its module, imported when that format is converted
CONVERTERS = Registry("converter", {
    "diffusion-policy": "realloop.data.convert.diffusion_policy:convert_from_args",
    "rosbag2": "realloop.data.convert.rosbag2:convert_from_args",
    "lerobot": "realloop.data.convert.lerobot:convert_from_args",
})  # fmt: skip
SUMMARY_SUFFIX = ".convert.json"  # next to the dataset, like PATH.verify.json and PATH.stats.json

log = logging.getLogger("realloop.data.convert")

__all__ = [
    "CONVERTERS",
    "ConvertError",
    "ConvertSummary",
    "add_convert_arguments",
    "run_convert",
]


class ConvertError(ValueError):
    """The input cannot be converted; the message names the problem and the fix."""


@dataclass
class ConvertSummary:
    """What a conversion did; saved as JSON next to the output and printed as one line."""

    converter: str
    sources: list[str]
    dst: str
    episodes: list[int] = field(default_factory=list)
    samples: dict[str, int] = field(default_factory=dict)
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    mapping: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    skipped_sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    summary_path: str | None = None

    def warn(self, message: str) -> None:
        """Log a warning and keep it for the summary."""
        log.warning(message)
        self.warnings.append(message)

    def count(self, feature: str, n: int) -> None:
        self.samples[feature] = self.samples.get(feature, 0) + int(n)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """The one-line summary printed at the end of a conversion."""
        n = len(self.episodes)
        eps = f"{n} episode{'s' * (n != 1)}"
        if n:
            eps += f" (#{self.episodes[0]}-{self.episodes[-1]})" if n > 1 else f" (#{self.episodes[0]})"
        parts = [
            f"converted {eps}, {sum(self.samples.values())} samples, from {len(self.sources)} "
            f"{self.converter} source{'s' * (len(self.sources) != 1)} into {self.dst} in {self.seconds:.1f} s"
        ]
        if self.skipped:
            parts.append(f"skipped: {', '.join(self.skipped)}")
        if self.skipped_sources:
            parts.append(f"skipped sources: {len(self.skipped_sources)}")
        if self.unmapped:
            parts.append(f"unmapped: {', '.join(sorted(self.unmapped))}")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}")
        if self.summary_path:
            parts.append(f"summary: {self.summary_path}")
        return "; ".join(parts)

    def save(self, path: str | Path) -> Path:
        """Write the summary as JSON (atomically) and remember where."""
        p = Path(path)
        self.summary_path = str(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        tmp.replace(p)
        return p


def summary_path(dst: str | Path) -> Path:
    """Where ``convert`` saves its summary by default: ``DST.convert.json`` beside the dataset."""
    p = Path(dst).absolute()
    return p.parent / (p.name + SUMMARY_SUFFIX)


# -- shared helpers for the converters -----------------------------------------------------------------------
def image_feature(name: str, shape: tuple[int, ...], image_format: str = "jpeg", quality: int | None = None) -> Feature:
    """An RGB uint8 image feature stored with ``image_format`` (``jpeg`` default, ``png`` lossless)."""
    return make_feature(name, dtype="uint8", shape=shape, image_format=image_format, image_quality=quality)


def _describe_difference(new: Feature, old: Feature) -> str:
    a, b = new.to_dict(), old.to_dict()
    diffs = [
        f"{k}: {a.get(k)!r} here, {b.get(k)!r} in the dataset" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]
    return "; ".join(diffs)


def open_destination(
    dst: str | Path, features: Mapping[str, Feature], robot: Mapping[str, Any] | None = None
) -> Dataset:
    """Create the dataset ``dst``, or open it to append when it exists with exactly these features."""
    p = Path(dst)
    if not (p.exists() and p.is_dir() and any(p.iterdir())):
        if p.exists() and not p.is_dir():
            raise ConvertError(f"the destination {p} is a file; give a directory path for the dataset")
        return Dataset.create(p, features=dict(features), robot=robot)
    try:
        ds = Dataset.open(p, mode="a")
    except NotADatasetError as e:
        raise ConvertError(
            f"the destination {p} exists and is not a realloop dataset ({e}); DST, the last argument, must "
            "be a new path or an existing realloop dataset"
        ) from None
    problems = []
    for name, f in features.items():
        if name not in ds.features:
            problems.append(f"{name} is not a feature of the dataset")
        elif ds.features[name].to_dict() != f.to_dict():
            problems.append(f"{name} differs ({_describe_difference(f, ds.features[name])})")
    problems += [
        f"{name} is in the dataset but not produced by this conversion" for name in ds.features if name not in features
    ]
    if problems:
        ds.close()
        raise ConvertError(
            f"{p} exists with other features, so the converted episodes cannot be appended to it: "
            + "; ".join(problems)
            + ". Convert into a new dataset, or change the mapping/shapes/dtypes to match the existing one"
        )
    return ds


def robot_spec(robot: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """``--robot``: a robot spec YAML file (configs/robot/*.yaml) or just a robot name."""
    if not robot:
        return None, None
    p = Path(robot)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConvertError(f"--robot {robot}: no such robot spec file; give a YAML path or a robot name")
        spec = yaml.safe_load(p.read_text())
        if not isinstance(spec, dict):
            raise ConvertError(f"--robot {robot}: the file is not a YAML mapping (a robot spec)")
        return spec, str(spec.get("name") or p.stem)
    return {"name": robot}, robot


def finish_episode(ep: EpisodeWriter, summary: ConvertSummary, source: str) -> int | None:
    """Commit an episode (or discard it when it is empty) and record it in the summary."""
    if not ep.streams:
        ep.discard()
        summary.skipped_sources[source] = "no samples in the mapped keys/topics"
        summary.warn(f"{source}: no samples in the mapped keys/topics; no episode written")
        return None
    index = ep.commit()
    summary.episodes.append(index)
    for name, stream in ep.streams.items():
        summary.count(name, len(stream.timestamps))
    return index


@contextlib.contextmanager
def conversion_errors(summary: ConvertSummary, where: str) -> Iterator[None]:
    """Re-raise data errors met while writing as ConvertError naming the source and what was committed."""
    try:
        yield
    except (SchemaError, ConvertError) as e:  # a DatasetWriteError says itself what is intact
        done = (
            f"{len(summary.episodes)} episodes were committed before it (#{summary.episodes[0]}-{summary.episodes[-1]})"
            if summary.episodes
            else "no episode was committed"
        )
        raise ConvertError(f"{where}: {e} [the episode in progress was discarded; {done}]") from e


def as_uint8_rgb(frames: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Frames ``(N, H, W[, 1|3])`` of a numeric dtype to ``(N, H, W, 3)`` uint8 (multiplied by ``scale``)."""
    if frames.dtype != np.uint8:
        frames = np.clip(np.rint(frames.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames


# -- CLI -----------------------------------------------------------------------------------------------------
def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``realloop-dataset convert`` to ``parser``."""
    parser.add_argument(
        "--from", dest="from_format", required=True, choices=CONVERTERS.names(), help="format of the sources"
    )
    parser.add_argument(
        "src",
        metavar="SRC",
        nargs="+",
        type=Path,
        help="diffusion_policy replay buffers (.zarr directory or .zarr.zip), rosbag2 bags (bag "
        "directory, .db3 or .mcap file, or a directory of bag directories), or LeRobot v3 dataset directories",
    )
    parser.add_argument("dst", metavar="DST", type=Path, help="realloop dataset to append to (created if missing)")
    g = parser.add_argument_group("episode metadata and storage")
    g.add_argument(
        "--task", default="", help="task description stored with every episode (lerobot: overrides its tasks)"
    )
    g.add_argument("--source", default="teleop", choices=SOURCES, help="episode source (default: teleop)")
    g.add_argument("--robot", default=None, help="robot name, or a robot spec YAML (configs/robot/*.yaml)")
    g.add_argument(
        "--image-format", default="jpeg", choices=sorted(IMAGE_FORMATS), help="image codec (png is lossless)"
    )
    g.add_argument("--image-quality", type=int, default=None, help="JPEG/WebP quality 1-100 or PNG level 0-9")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    g.add_argument("--summary", type=Path, default=None, help="summary JSON path (default: DST.convert.json)")
    dp = parser.add_argument_group("diffusion-policy options")
    dp.add_argument(
        "--map",
        dest="key_map",
        action="append",
        default=[],
        metavar="SRC_KEY=FEATURE",
        help="map data/SRC_KEY to FEATURE (repeatable); SRC_KEY= (empty feature) leaves a key out. Defaults: "
        "state, agent_pos -> observation.state; action -> action; img, image -> observation.images.image; "
        "camera_<i> -> observation.images.camera_<i>",
    )
    dp.add_argument("--no-default-map", action="store_true", help="convert only the keys given with --map")
    dp.add_argument(
        "--fps",
        type=float,
        default=None,
        help="rate used to synthesise timestamps when the buffer has no 'timestamp' key (default: 10)",
    )
    dp.add_argument(
        "--image-range",
        default="auto",
        choices=("auto", "unit", "byte"),
        help="value range of float images: unit = 0..1, byte = 0..255, auto = from the first 100 frames",
    )
    rb = parser.add_argument_group("rosbag2 options")
    rb.add_argument(
        "--config",
        type=Path,
        default=None,
        help="topic mapping YAML (see configs/dataset/rosbag2_example.yaml)",
    )
    rb.add_argument(
        "--topic",
        dest="topics",
        action="append",
        default=[],
        metavar="TOPIC=FEATURE[:FIELD]",
        help="map a topic to a feature (repeatable), e.g. /joint_states=observation.state:position",
    )
    rb.add_argument(
        "--typestore",
        default=None,
        help="message definitions for bags that carry none (default: ros2_humble; e.g. ros2_jazzy)",
    )
    rb.add_argument(
        "--allow-missing-topics",
        action="store_true",
        help="write an episode even if its bag lacks some mapped topics (default: skip such bags)",
    )


def _check_options(args: argparse.Namespace) -> None:
    own = {  # converter -> its options, and whether each was given; those of other converters are refused
        "diffusion-policy": [
            ("--map", bool(args.key_map)),
            ("--no-default-map", args.no_default_map),
            ("--fps", args.fps is not None),
            ("--image-range", args.image_range != "auto"),
        ],
        "rosbag2": [
            ("--config", args.config is not None),
            ("--topic", bool(args.topics)),
            ("--typestore", args.typestore is not None),
            ("--allow-missing-topics", args.allow_missing_topics),
        ],
    }
    bad = [name for fmt, options in own.items() if fmt != args.from_format for name, given in options if given]
    if bad:
        raise ConvertError(f"{', '.join(bad)} do(es) not apply to --from {args.from_format}; remove it")


def _convert(args: argparse.Namespace) -> ConvertSummary:
    _check_options(args)
    robot, robot_name = robot_spec(args.robot)
    common: dict[str, Any] = {
        "progress": getattr(args, "progress", None),
        "task": args.task,
        "source": args.source,
        "robot": robot,
        "robot_name": robot_name,
        "image_format": args.image_format,
        "image_quality": args.image_quality,
    }
    return CONVERTERS.get(args.from_format)(args, **common)


EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_convert(args: argparse.Namespace) -> int:
    """Run ``realloop-dataset convert`` with parsed ``args``; returns the exit status.

    0: episodes were written; 1: nothing was written, or writing failed; 2: bad input or options (the message
    names the problem and the fix).
    """
    handler = None
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        log.addHandler(handler)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(loggers=[log]):
            summary = _convert(args)
    except (ConvertError, SchemaError, NotADatasetError, DatasetLockedError) as e:
        print(f"realloop-dataset convert: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except DatasetWriteError as e:
        print(f"realloop-dataset convert: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if handler is not None:
            log.removeHandler(handler)
    summary.save(args.summary or summary_path(args.dst))
    print(summary.line())
    return EXIT_OK if summary.episodes else EXIT_FAILED
