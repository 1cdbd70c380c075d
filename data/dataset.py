"""The episode dataset: create or open one, record episodes into it, read them back.

>>> ds = Dataset.create("demo.zarr", features={"observation.state": {"dtype": "float32", "shape": [7]}})
>>> with ds.begin_episode(task="lift", source="teleop") as ep:
...     ep.add("observation.state", 0.0, np.zeros(7))
>>> Dataset.open("demo.zarr").episode(0).stream("observation.state").timestamps
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import zarr

from realloop.data.episode import Episode
from realloop.data.layout import (
    EPISODES_DIR,
    LOCK_FILE,
    STAGING_DIR,
    episode_dirname,
    list_episode_indices,
    list_trashed_indices,
)
from realloop.data.schema import FORMAT_NAME, FORMAT_VERSION, Feature, parse_features
from realloop.data.writer import EpisodeWriter, validate_episode_meta

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - Windows: no advisory lock
    fcntl = None


class NotADatasetError(ValueError):
    """The path is not a realloop dataset (missing, foreign zarr, or an unsupported format version)."""


class DatasetLockedError(RuntimeError):
    """Another process is writing to this dataset."""


class Dataset:
    """A realloop episode dataset on disk. Use :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, root: zarr.Group, writable: bool, durable: bool = True) -> None:
        self.path = path
        self.root = root
        self.writable = writable
        self.durable = durable
        info = root.attrs["realloop"]
        assert isinstance(info, dict), "create() wrote it, check_is_dataset() checked it"
        self.info: dict[str, Any] = dict(info)
        self.features: dict[str, Feature] = parse_features(self.info["features"])
        self._active: EpisodeWriter | None = None
        self._lock_fd: int | None = None
        self._episode_cache: dict[int, Episode] = {}

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        features: Mapping[str, Any] | Sequence[Feature],
        robot: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
        durable: bool = True,
    ) -> Dataset:
        """Create a new dataset (opened for appending). ``robot`` is the robot spec, stored as is.

        With ``exist_ok=True`` an existing dataset with the same features is opened instead.
        """
        p = Path(path)
        feats = parse_features(features)
        if p.exists() and not p.is_dir():
            raise NotADatasetError(
                f"{p} is a file, not a dataset (a dataset is a directory); choose a new path or an existing dataset"
            )
        if p.exists() and any(p.iterdir()):
            if not exist_ok:
                raise FileExistsError(f"{p} already exists; open it with Dataset.open(path, mode='a') to append")
            ds = cls.open(p, mode="a", durable=durable)
            if {n: f.to_dict() for n, f in ds.features.items()} != {n: f.to_dict() for n, f in feats.items()}:
                ds.close()
                raise NotADatasetError(f"{p} exists with different features: {sorted(ds.features)}")
            return ds
        root = zarr.open_group(p, mode="w")
        root.attrs["realloop"] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "features": {n: f.to_dict() for n, f in feats.items()},
            "robot": dict(robot) if robot else None,
            "attributes": dict(attributes or {}),
            "stats": None,
        }
        root.create_group(EPISODES_DIR)
        ds = cls(p, root, writable=True, durable=durable)
        ds._acquire_lock()
        return ds

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r", durable: bool = True) -> Dataset:
        """Open a dataset to read (``mode='r'``) or to append episodes (``mode='a'``)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        p = Path(path)
        check_is_dataset(p)
        root = zarr.open_group(p, mode="r" if mode == "r" else "r+")
        ds = cls(p, root, writable=mode == "a", durable=durable)
        if mode == "a":
            ds._acquire_lock()
            ds._clean_staging()
        return ds

    def _acquire_lock(self) -> None:
        if fcntl is None:
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatasetLockedError(
                f"another process is writing to {self.path}; stop it, or record into another dataset"
            ) from None
        self._lock_fd = fd

    def _clean_staging(self) -> None:
        """Remove what a killed writer left behind (never committed, never visible)."""
        shutil.rmtree(self.path / STAGING_DIR, ignore_errors=True)
        for name in os.listdir(self.path):
            if name.endswith(".partial"):  # zarr's interrupted atomic metadata writes
                (self.path / name).unlink(missing_ok=True)

    def close(self) -> None:
        if self._active is not None:
            self._active.discard()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------
    def begin_episode(
        self,
        task: str = "",
        source: str = "teleop",
        robot: str | None = None,
        success: bool | None = None,
        sim_params: Mapping[str, Any] | None = None,
        **attributes: Any,
    ) -> EpisodeWriter:
        """Start recording an episode; returns an :class:`EpisodeWriter` (also a context manager).

        ``source`` is one of teleop, policy, intervention, scripted, sim; extra keyword arguments are stored
        as free-form attributes (JSON-serialisable).
        """
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only; use Dataset.open(path, mode='a')")
        if self._active is not None and not self._active.closed:
            raise RuntimeError("an episode is already being recorded: commit or discard it first")
        meta = {
            "task": task,
            "source": source,
            "robot": robot if robot is not None else (self.robot or {}).get("name"),
            "success": success,
            "sim_params": dict(sim_params) if sim_params else None,
            "attributes": attributes,
        }
        validate_episode_meta(meta)
        json.dumps(meta)  # fail now, not at commit, on values that cannot be stored
        staging = self.path / STAGING_DIR / uuid.uuid4().hex
        staging.parent.mkdir(exist_ok=True)
        self._active = EpisodeWriter(self, staging, meta)
        return self._active

    def _next_index(self) -> int:
        # past the trash too, so that restoring a deleted episode never meets a newer one at its index
        idx = list_episode_indices(self.path) + list_trashed_indices(self.path)
        return max(idx) + 1 if idx else 0

    def set_stats(self, stats: Mapping[str, Any], fresh: Iterable[str] | None = None) -> None:
        """Store normalisation statistics in the root attributes (an atomic metadata write).

        The features in ``fresh`` (default: all of ``stats``) are recorded as computed over the episodes the
        dataset has now (:meth:`episodes_fingerprint`); the others keep the record they had, so that statistics
        carried over from before a change of episodes stay stale (:meth:`stale_stats`).
        """
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only; use Dataset.open(path, mode='a')")
        now = self.episodes_fingerprint()
        new = set(stats) if fresh is None else set(fresh)
        old = self.info.get("stats_episodes") or {}
        self.info["stats"] = dict(stats)
        self.info["stats_episodes"] = {n: now if n in new else old[n] for n in stats if n in new or n in old}
        self.root.attrs["realloop"] = self.info

    def episodes_fingerprint(self) -> dict[str, Any]:
        """The committed episodes in short: their number and a hash of each one's index and identity (commit
        time, time span, samples per stream). Deleting, restoring, adding or replacing an episode changes it."""
        items = []
        for i in self.episode_indices:
            # read afresh (not the cached Episode.meta): another process may have changed the episodes
            meta = json.loads((self.path / EPISODES_DIR / episode_dirname(i) / "zarr.json").read_text())
            a = meta.get("attributes") or {}
            counts = {n: s.get("count") for n, s in (a.get("streams") or {}).items()}
            items.append([i, a.get("committed_at"), a.get("start_time"), a.get("end_time"), counts])
        digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]
        return {"episodes": len(items), "sha256": digest}

    def stale_stats(self) -> list[str]:
        """Features whose stored statistics were not computed over the episodes the dataset has now (or carry
        no record of the episodes they cover: stored by an older realloop). Empty when all are current."""
        stats = self.stats
        if not stats:
            return []
        record = self.info.get("stats_episodes") or {}
        now = self.episodes_fingerprint()
        return [n for n in stats if record.get(n) != now]

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def robot(self) -> dict[str, Any] | None:
        return self.info.get("robot")

    @property
    def stats(self) -> dict[str, Any] | None:
        """Normalisation statistics per feature (min, max, mean, std, q01, q99), or None if not computed.

        As stored: they may be stale (:meth:`stale_stats`); ``realloop.data.stats.load_stats`` refuses those.
        """
        return self.info.get("stats")

    @property
    def episode_indices(self) -> list[int]:
        """Indices of the committed episodes, in order; deleted ones (in the trash) leave gaps."""
        return list_episode_indices(self.path)

    @property
    def trashed_indices(self) -> list[int]:
        """Indices of the deleted episodes that ``realloop-dataset restore`` can bring back."""
        return list_trashed_indices(self.path)

    def __len__(self) -> int:
        return len(self.episode_indices)

    def episode(self, index: int) -> Episode:
        """The committed episode with this index (negative indices count from the end)."""
        if index in self._episode_cache:
            return self._episode_cache[index]
        indices = self.episode_indices
        if index < 0:
            if -index > len(indices):
                raise IndexError(f"episode {index} out of range: the dataset has {len(indices)} episodes")
            index = indices[index]
        if index not in self._episode_cache:
            if index not in indices:
                if index in self.trashed_indices:
                    raise IndexError(
                        f"episode {index} of {self.path} was deleted (it is in the trash); bring it back with "
                        f"`realloop-dataset restore {self.path} --episodes {index}`"
                    )
                raise IndexError(f"no episode {index} in {self.path}; episodes: {_ranges(indices)}")
            self._episode_cache[index] = Episode(
                self.path / EPISODES_DIR / episode_dirname(index), self.features, index
            )
        return self._episode_cache[index]

    def episodes(self) -> Iterator[Episode]:
        for i in self.episode_indices:
            yield self.episode(i)

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, episodes={len(self)}, features={list(self.features)})"


def check_is_dataset(path: Path) -> None:
    """Raise NotADatasetError with a useful message unless ``path`` holds a realloop dataset."""
    if not path.exists():
        raise NotADatasetError(f"{path} does not exist; create a dataset with Dataset.create(path, features)")
    meta = path / "zarr.json"
    if not meta.is_file():
        hint = " (a zarr v2 store: import it with `realloop-dataset convert`)" if (path / ".zgroup").exists() else ""
        raise NotADatasetError(f"{path} is not a realloop dataset: no zarr.json at its root{hint}")
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError) as e:
        raise NotADatasetError(f"{path}/zarr.json is unreadable or not JSON ({e}); the dataset is damaged") from e
    info = attrs.get("realloop") if isinstance(attrs, dict) else None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise NotADatasetError(
            f"{path} is a zarr store but not a realloop dataset (no 'realloop' format attribute); "
            "import foreign data with `realloop-dataset convert`"
        )
    if info.get("version") != FORMAT_VERSION:
        raise NotADatasetError(
            f"{path} has realloop format version {info.get('version')}, this realloop reads version "
            f"{FORMAT_VERSION}; upgrade realloop"
        )


def _ranges(indices: list[int]) -> str:
    if not indices:
        return "none"
    return f"{indices[0]}..{indices[-1]} ({len(indices)} in all)"
