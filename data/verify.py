"""Check a dataset end to end: metadata, timestamps, and that every stored chunk decodes.

>>> report = verify("demo.zarr", progress=True)
>>> report.ok, report.summary()
>>> for p in report.errors: print(p)

A problem names the episode, the stream and, when a chunk is damaged, the file on disk, so that the file can
be restored from a backup or the episode deleted. What a killed writer leaves behind (``.staging/``,
``*.partial``) is noted as information, not damage: reopening the dataset for writing removes it.

The writer stores every chunk, even one that holds only zarr's fill value (``write_empty_chunks``), so a
missing chunk file, shard or frame is always damage.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.core.chunk_grids import RegularChunkGrid

from realloop.data.dataset import NotADatasetError, check_is_dataset
from realloop.data.layout import (
    EPISODE_RE,
    EPISODES_DIR,
    STAGING_DIR,
    TRASH_DIR,
    episode_dirname,
    list_episode_indices,
    list_trashed_indices,
)
from realloop.data.schema import Feature, SchemaError, parse_features
from realloop.data.shards import EMPTY, ShardError, direct_shard_dir, index_nbytes, parse_index, strip_crc

ERROR = "error"
WARNING = "warning"
INFO = "info"


@dataclass
class Problem:
    """One finding: ``severity`` is ``error`` (damage), ``warning`` or ``info``; ``path`` a file on disk."""

    severity: str
    message: str
    episode: int | None = None
    stream: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = " ".join(
            x for x in (f"episode {self.episode}" if self.episode is not None else "", self.stream or "") if x
        )
        return f"{self.severity.upper():7s} {where + ': ' if where else ''}{self.message}" + (
            f"  [{self.path}]" if self.path else ""
        )


@dataclass
class VerifyReport:
    """What :func:`verify` found, with counts of what it checked."""

    path: str
    is_dataset: bool = True
    problems: list[Problem] = field(default_factory=list)
    episodes: int = 0
    streams: int = 0
    arrays: int = 0
    chunks: int = 0
    frames: int = 0
    samples: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def infos(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == INFO]

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (warnings and info do not count)."""
        return not self.errors

    @property
    def damaged_episodes(self) -> list[int]:
        return sorted({p.episode for p in self.errors if p.episode is not None})

    def summary(self) -> str:
        """One line: ``OK ...``, ``DAMAGED ...`` or ``NOT A DATASET ...``."""
        if not self.is_dataset:
            return f"NOT A DATASET {self.path}: {self.errors[0].message if self.errors else ''}"
        checked = (
            f"{_plural(self.episodes, 'episode')}, {_plural(self.streams, 'stream')}, "
            f"{_plural(self.chunks, 'chunk')} "
            f"({self.samples} samples, {self.frames} frames, {_human_bytes(self.bytes)}) "
            f"in {self.seconds:.1f} s"
        )
        notes = f"; {_plural(len(self.warnings), 'warning')}" if self.warnings else ""
        notes += f"; {_plural(len(self.infos), 'note')}" if self.infos else ""
        if self.ok:
            return f"OK {self.path}: {checked}{notes}"
        eps = self.damaged_episodes
        in_eps = f" in episode{'s' if len(eps) > 1 else ''} {', '.join(map(str, eps))}" if eps else ""
        return f"DAMAGED {self.path}: {_plural(len(self.errors), 'problem')}{in_eps}; checked {checked}{notes}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, damaged_episodes=self.damaged_episodes, summary=self.summary())
        return d

    def add(
        self,
        severity: str,
        message: str,
        episode: int | None = None,
        stream: str | None = None,
        path: Path | str | None = None,
    ) -> None:
        self.problems.append(Problem(severity, message, episode, stream, str(path) if path is not None else None))


@dataclass
class _ArrayJob:
    episode: int
    stream: str
    role: str  # "timestamp" or "data"
    array: zarr.Array
    dir: Path
    feature: Feature
    count: int
    first: float | None = None
    last: float | None = None

    @property
    def outer_chunk(self) -> tuple[int, ...]:
        grid = self.array.metadata.chunk_grid
        assert isinstance(grid, RegularChunkGrid), "zarr 3.1 has regular chunk grids only"
        return tuple(int(c) for c in grid.chunk_shape)

    def report(self, report: VerifyReport, severity: str, message: str, path: Path | str) -> None:
        report.add(severity, message, episode=self.episode, stream=self.stream, path=path)

    def chunk_coords(self) -> Iterator[tuple[int, ...]]:
        grid = [math.ceil(s / c) if s else 0 for s, c in zip(self.array.shape, self.outer_chunk, strict=True)]
        return itertools.product(*(range(g) for g in grid))


def verify(path: str | os.PathLike[str], progress: bool = False, episodes: list[int] | None = None) -> VerifyReport:
    """Check the dataset at ``path`` (all committed episodes, or only ``episodes``) and report what is wrong.

    Never raises for damage: every problem, including "not a realloop dataset", is in the report.
    """
    t_start = time.perf_counter()
    root = Path(path)
    report = VerifyReport(path=str(root))
    try:
        check_is_dataset(root)
        info = json.loads((root / "zarr.json").read_text())["attributes"]["realloop"]
        features = parse_features(info["features"])
    except NotADatasetError as e:
        report.is_dataset = False
        report.add(ERROR, str(e), path=root / "zarr.json" if root.exists() else root)
        return report
    except (SchemaError, KeyError, TypeError) as e:
        report.add(ERROR, f"the feature schema in the root attributes is invalid ({e})", path=root / "zarr.json")
        return report

    _check_leftovers(root, report)
    indices = list_episode_indices(root)
    if episodes is not None:
        missing = sorted(set(episodes) - set(indices))
        for i in missing:
            report.add(ERROR, "no such committed episode", episode=i)
        indices = [i for i in indices if i in set(episodes)]

    jobs: list[_ArrayJob] = []
    for index in indices:
        jobs.extend(_check_episode_meta(root, index, features, report))
        report.episodes += 1

    total = sum(1 for job in jobs for _ in job.chunk_coords())
    with tqdm(total=total, unit="chunk", desc="verify", disable=not progress, leave=False) as bar:
        for job in jobs:
            report.arrays += 1
            if job.role == "timestamp":
                _check_timestamps(job, report, bar)
            elif job.feature.is_image and job.array.shards is not None:
                _check_image_data(job, report, bar)
            else:
                _check_numeric_data(job, report, bar)
    report.seconds = time.perf_counter() - t_start
    return report


# -- metadata ------------------------------------------------------------------------------------------------
def _check_leftovers(root: Path, report: VerifyReport) -> None:
    staging = root / STAGING_DIR
    if staging.is_dir() and any(staging.iterdir()):
        n = len(list(staging.iterdir()))
        report.add(
            INFO,
            f"{n} uncommitted episode(s) in {STAGING_DIR}/ (an interrupted or running writer); never "
            "visible to readers, removed the next time the dataset is opened for appending",
            path=staging,
        )
    trashed = list_trashed_indices(root)
    if trashed:  # deleted on purpose: not checked, not damage
        report.add(
            INFO,
            f"{len(trashed)} deleted episode(s) in {TRASH_DIR}/ ({', '.join(map(str, trashed[:10]))}"
            f"{', ...' if len(trashed) > 10 else ''}), not checked and invisible to readers; "
            "`realloop-dataset restore` brings them back, `realloop-dataset delete --purge` removes them",
            path=root / TRASH_DIR,
        )
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".partial"):
                report.add(INFO, "leftover of an interrupted metadata write (harmless)", path=Path(dirpath, name))
    eps = root / EPISODES_DIR
    if eps.is_dir():
        for name in sorted(os.listdir(eps)):
            p = eps / name
            if EPISODE_RE.match(name) and p.is_dir() and not (p / "zarr.json").is_file():
                m = EPISODE_RE.match(name)
                report.add(
                    ERROR,
                    "episode directory without zarr.json: its metadata is lost and readers skip it; "
                    "restore the file from a backup or delete the directory",
                    episode=int(m.group(1)) if m else None,
                    path=p / "zarr.json",
                )
            elif not EPISODE_RE.match(name) and name != "zarr.json" and not name.endswith(".partial"):
                report.add(INFO, "not an episode (ignored by readers)", path=p)


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _check_episode_meta(root: Path, index: int, features: dict[str, Feature], report: VerifyReport) -> list[_ArrayJob]:
    ep_dir = root / EPISODES_DIR / episode_dirname(index)
    meta_path = ep_dir / "zarr.json"
    try:
        attrs = _load_json(meta_path).get("attributes")
    except (OSError, ValueError) as e:
        report.add(ERROR, f"episode metadata is unreadable ({e})", episode=index, path=meta_path)
        return []
    if not isinstance(attrs, dict):
        attrs = {}  # no streams: reported below
    streams = attrs.get("streams")
    if not isinstance(streams, dict) or not streams:
        report.add(ERROR, "episode metadata lists no streams", episode=index, path=meta_path)
        return []
    if attrs.get("index") not in (None, index):
        report.add(
            WARNING,
            f"metadata says index {attrs.get('index')}, the directory says {index}",
            episode=index,
            path=meta_path,
        )

    jobs: list[_ArrayJob] = []
    firsts, lasts = [], []
    for name, summary in streams.items():
        report.streams += 1
        s_dir = ep_dir / name
        feature = features.get(name)
        if feature is None:
            report.add(
                ERROR,
                f"stream is not in the dataset's schema (features: {sorted(features)})",
                episode=index,
                stream=name,
                path=meta_path,
            )
            continue
        count = summary.get("count") if isinstance(summary, dict) else None
        if not isinstance(count, int) or count < 0:
            report.add(
                ERROR,
                f"recorded sample count is missing or invalid ({count!r})",
                episode=index,
                stream=name,
                path=meta_path,
            )
            continue
        first, last = summary.get("first"), summary.get("last")
        if count and isinstance(first, (int, float)) and isinstance(last, (int, float)):
            firsts.append(first)
            lasts.append(last)
        arrays: dict[str, zarr.Array] = {}
        for role in ("timestamp", "data"):
            a_dir = s_dir / role
            if not (a_dir / "zarr.json").is_file():
                report.add(
                    ERROR,
                    f"the {role} array is missing",
                    episode=index,
                    stream=name,
                    path=a_dir / "zarr.json",
                )
                continue
            try:
                arrays[role] = zarr.open_array(a_dir, mode="r")
            except Exception as e:
                report.add(
                    ERROR,
                    f"the {role} array's metadata is unreadable ({_reason(e)})",
                    episode=index,
                    stream=name,
                    path=a_dir / "zarr.json",
                )
        ts, data = arrays.get("timestamp"), arrays.get("data")
        if ts is not None and (ts.ndim != 1 or np.dtype(ts.dtype) != np.float64):
            report.add(
                ERROR,
                f"timestamps are {ts.dtype} {ts.shape}, expected float64 (n,)",
                episode=index,
                stream=name,
                path=s_dir / "timestamp" / "zarr.json",
            )
            ts = None
        if data is not None:
            d_path = s_dir / "data" / "zarr.json"
            if tuple(data.shape[1:]) != feature.shape:
                report.add(
                    ERROR,
                    f"data sample shape {tuple(data.shape[1:])}, the schema says {feature.shape}",
                    episode=index,
                    stream=name,
                    path=d_path,
                )
                data = None
            elif np.dtype(data.dtype) != np.dtype(feature.dtype):
                report.add(
                    ERROR,
                    f"data dtype {data.dtype}, the schema says {feature.dtype}",
                    episode=index,
                    stream=name,
                    path=d_path,
                )
                data = None
        lengths = {role: a.shape[0] for role, a in (("timestamps", ts), ("data samples", data)) if a is not None}
        if len(set(lengths.values())) > 1:
            report.add(
                ERROR,
                f"{lengths['data samples']} data samples but {lengths['timestamps']} timestamps "
                f"(the metadata records {count})",
                episode=index,
                stream=name,
                path=s_dir,
            )
        elif lengths and next(iter(lengths.values())) != count:
            n = next(iter(lengths.values()))
            report.add(
                ERROR,
                f"{n} samples stored, the episode metadata records {count}",
                episode=index,
                stream=name,
                path=meta_path,
            )
        if ts is not None:
            jobs.append(_ArrayJob(index, name, "timestamp", ts, s_dir / "timestamp", feature, count, first, last))
        if data is not None:
            jobs.append(_ArrayJob(index, name, "data", data, s_dir / "data", feature, count))

    if firsts:
        for key, want in (("start_time", min(firsts)), ("end_time", max(lasts))):
            got = attrs.get(key)
            if not isinstance(got, (int, float)) or not math.isclose(got, want, rel_tol=0, abs_tol=1e-9):
                report.add(ERROR, f"{key} is {got!r}, the streams say {want!r}", episode=index, path=meta_path)
    listed = set(streams)
    for child in sorted(ep_dir.iterdir()) if ep_dir.is_dir() else []:
        if child.is_dir() and child.name not in listed:
            report.add(
                INFO,
                "stream directory not listed in the episode's metadata (ignored by readers)",
                episode=index,
                stream=child.name,
                path=child,
            )
    return jobs


# -- chunk scans ---------------------------------------------------------------------------------------------
def _chunk_file(job: _ArrayJob, coords: tuple[int, ...]) -> Path:
    return job.dir / job.array.metadata.encode_chunk_key(coords)


def _region(job: _ArrayJob, coords: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(c * n, min((c + 1) * n, s)) for c, n, s in zip(coords, job.outer_chunk, job.array.shape, strict=True)
    )


def _read_chunks(
    job: _ArrayJob, report: VerifyReport, bar: tqdm
) -> Iterator[tuple[tuple[int, ...], Path, np.ndarray | None]]:
    """Yield ``(coords, file, values)`` for each chunk; ``values`` is None when it could not be read."""
    for coords in job.chunk_coords():
        bar.update(1)
        report.chunks += 1
        f = _chunk_file(job, coords)
        region = _region(job, coords)
        if not f.is_file():
            yield coords, f, None
            continue
        report.bytes += f.stat().st_size
        try:
            values = np.asarray(job.array[region])
        except Exception as e:
            job.report(report, ERROR, f"{job.role} chunk {_key(coords)} does not decode ({_reason(e)})", f)
            yield coords, f, None
            continue
        yield coords, f, values


def _check_timestamps(job: _ArrayJob, report: VerifyReport, bar: tqdm) -> None:
    prev = -np.inf
    first = last = None
    ok = True
    for coords, f, t in _read_chunks(job, report, bar):
        region = _region(job, coords)[0]
        if t is None:
            ok = False
            if not f.exists():
                job.report(
                    report,
                    ERROR,
                    f"timestamp chunk {_key(coords)} (samples {region.start}..{region.stop - 1}) is missing",
                    f,
                )
            prev = -np.inf
            continue
        if not np.all(np.isfinite(t)):
            bad = int(np.flatnonzero(~np.isfinite(t))[0]) + region.start
            job.report(report, ERROR, f"timestamp {bad} is not finite ({t[bad - region.start]})", f)
            ok = False
            prev = -np.inf
            continue
        nonincr = np.flatnonzero(np.diff(np.concatenate([[prev], t])) <= 0)
        if len(nonincr):
            i = int(nonincr[0]) + region.start
            job.report(
                report,
                ERROR,
                f"timestamps do not increase strictly at sample {i} ({len(nonincr)} places in this chunk)",
                f,
            )
            ok = False
        if len(t):
            prev = float(t[-1])
            first = float(t[0]) if first is None else first
            last = float(t[-1])
    if ok and job.count:
        for what, got, want in (("first", first, job.first), ("last", last, job.last)):
            if want is not None and got is not None and got != want:
                job.report(
                    report,
                    ERROR,
                    f"{what} timestamp is {got!r}, the episode metadata records {want!r}",
                    job.dir.parent.parent / "zarr.json",
                )


def _check_numeric_data(job: _ArrayJob, report: VerifyReport, bar: tqdm) -> None:
    nonfinite = 0
    for coords, f, values in _read_chunks(job, report, bar):
        region = _region(job, coords)[0]
        if values is None:
            if not f.exists():
                job.report(
                    report,
                    ERROR,
                    f"data chunk {_key(coords)} (samples {region.start}..{region.stop - 1}) is missing",
                    f,
                )
            continue
        report.samples += len(values)
        if values.dtype.kind == "f":
            nonfinite += int(np.count_nonzero(~np.isfinite(values)))
    if nonfinite:
        job.report(report, WARNING, f"{nonfinite} NaN/inf values in the data", job.dir)


def _check_image_data(job: _ArrayJob, report: VerifyReport, bar: tqdm) -> None:
    """Check each shard file's index and inner chunk checksums, then decode its frames through zarr."""
    # the shard shape when the frames are plain shard files (direct_shard_dir: a sharded array), else None
    shards = job.array.shards if direct_shard_dir(job.array) is not None else None
    for coords in job.chunk_coords():
        bar.update(1)
        report.chunks += 1
        f = _chunk_file(job, coords)
        region = _region(job, coords)
        first, stop = region[0].start, region[0].stop
        where = f"shard {_key(coords)} (frames {first}..{stop - 1})"
        if not f.is_file():
            job.report(report, ERROR, f"{where} is missing", f)
            continue
        raw = f.read_bytes()
        report.bytes += len(raw)
        if shards is not None:
            issues = _check_shard_bytes(raw, shards[0], stop - first)
            if issues:
                for msg in issues[:3]:
                    job.report(report, ERROR, f"{where}: {msg}", f)
                if len(issues) > 3:
                    job.report(report, ERROR, f"{where}: {len(issues) - 3} more damaged frames", f)
                continue
        try:
            np.asarray(job.array[region])
        except Exception as e:
            bad = _first_bad_frame(job.array, first, stop)
            which = f": frame {bad - first} of the shard (frame {bad} of the stream)" if bad is not None else ""
            job.report(report, ERROR, f"{where} does not decode{which} ({_reason(e)})", f)
            continue
        report.frames += stop - first
        report.samples += stop - first


def _first_bad_frame(array: zarr.Array, start: int, stop: int) -> int | None:
    """The first frame in ``start..stop`` that fails to decode on its own (to name it in the report)."""
    for i in range(start, stop):
        try:
            np.asarray(array[i : i + 1])
        except Exception:
            return i
    return None


def _check_shard_bytes(raw: bytes, shard_len: int, n_frames: int) -> list[str]:
    """Problems in one shard file: index checksum, and per frame presence, bounds and checksum."""
    n_index = index_nbytes(shard_len)
    if len(raw) < n_index:
        return [f"file is {len(raw)} bytes, too short to hold its index ({n_index} bytes): truncated"]
    try:
        index = parse_index(raw[-n_index:], shard_len, "the shard index")
    except ShardError:
        return ["the shard index checksum does not match: the file is truncated or corrupted"]
    body = len(raw) - n_index
    issues = []
    for k in range(n_frames):
        off, n = int(index[k, 0]), int(index[k, 1])
        if off == EMPTY and n == EMPTY:
            issues.append(f"frame {k} of the shard is missing from its index")
        elif off + n > body or n < 4:
            issues.append(f"frame {k} of the shard lies outside the file (bytes {off}..{off + n}, file body {body})")
        else:
            try:
                strip_crc(raw[off : off + n], "frame")
            except ShardError:
                issues.append(f"frame {k} of the shard fails its checksum (corrupted bytes)")
    return issues


def _key(coords: tuple[int, ...]) -> str:
    """The chunk's number along time (the other axes are never split), else its full grid position."""
    return str(coords[0]) if not any(coords[1:]) else "/".join(map(str, coords))


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "checksum" in text.lower():
        return "checksum mismatch: the file is truncated or corrupted"
    return text if len(text) < 200 else text[:200] + "..."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
