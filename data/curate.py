"""Curating datasets: keep some episodes (filter), join datasets (merge), split one into parts, delete episodes
to a trash and restore them.

>>> filter_dataset("all.zarr", "good.zarr", where=["success=true", "source=teleop"])
>>> merge_datasets("both.zarr", ["a.zarr", "b.zarr"])
>>> split_dataset("all.zarr", ["train.zarr", "val.zarr"], [0.9, 0.1], seed=0)
>>> delete_episodes("all.zarr", [3, 4]); restore_episodes("all.zarr", [3])

Every operation is crash-safe in the way an episode commit is, and holds the writer lock of each dataset it
reads or changes (:class:`DatasetLockedError` when another process writes to one):

- filter, merge and split write each new dataset into a hidden folder next to it (``.DST.curate-<id>/``),
  fsync it and rename it to DST at the end: a crash leaves no DST at all, never a half dataset, and the
  sources untouched. The next operation into that DST removes the leftover folder (its lock shows that no
  process owns it). Copied episodes are renumbered 0..n-1 and keep their files byte for byte (no image is
  re-encoded) and their metadata, plus ``attributes.source_dataset`` and ``attributes.source_episode``; the
  new dataset's statistics are computed (``stats=False`` leaves them to ``realloop-dataset stats``).
- delete moves ``episodes/episode_N`` to ``.trash/episode_N`` and restore moves it back: one rename per
  episode, so a crash leaves each episode whole on one side, and running the command again finishes the job.
  Indices are kept, with gaps (readers list the episodes there are). Purging renames a trashed episode to
  ``.trash/.purging-<id>`` before removing its files, so a half-removed episode is never restorable.

Deleting or restoring changes the episodes the stored statistics were computed over: they become stale
(``Dataset.stale_stats``), which ``load_stats`` refuses until ``realloop-dataset stats PATH`` recomputes them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realloop.data.dataset import Dataset
from realloop.data.layout import EPISODES_DIR, TRASH_DIR, episode_dirname
from realloop.data.writer import _fsync_dir, _fsync_tree

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - Windows: no advisory lock
    fcntl = None

CURATE_MARK = ".curate-"  # staging folders are named .<DST name>.curate-<random>
PURGING_PREFIX = ".purging-"
_ABANDONED_AFTER_S = 600.0  # a staging folder without a lock file is abandoned once this old
_IGNORED_FEATURE_KEYS = ("description",)  # free text: not a schema difference

# Called at named points of an operation ("copied", "stats", "staged", "committed", "trashed", "restored");
# the crash-safety tests set it to kill the process there.
_test_hook: Callable[[str], None] | None = None


class CurateError(ValueError):
    """A request that cannot be carried out as given; the message (one line) names the problem and the fix."""


def _hook(point: str) -> None:
    if _test_hook is not None:
        _test_hook(point)


# -- selecting episodes --------------------------------------------------------------------------------------
_MISSING = object()


@dataclass(frozen=True)
class Condition:
    """``KEY=VALUE`` or ``KEY!=VALUE`` on episode metadata. ``KEY`` is a metadata key (task, success, source,
    robot) or a dotted path into it (``attributes.operator``, ``sim_params.friction``); ``VALUE`` is JSON
    (``true``, ``3``, ``null``) or else plain text. A key an episode lacks counts as null."""

    key: str
    value: Any
    raw: str
    text: str
    negate: bool = False

    @classmethod
    def parse(cls, text: str) -> Condition:
        m = re.match(r"^\s*([^=!\s][^=!]*?)\s*(!=|=)\s*(.*?)\s*$", text)
        if not m:
            raise CurateError(
                f"--where {text!r}: expected KEY=VALUE or KEY!=VALUE, e.g. success=true, source=teleop or "
                "attributes.operator=ada"
            )
        key, op, raw = m.groups()
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        return cls(key=key, value=value, raw=raw, text=text.strip(), negate=op == "!=")

    def lookup(self, meta: Mapping[str, Any]) -> Any:
        """The value at ``key`` in ``meta``, or ``_MISSING``."""
        node: Any = meta
        for part in self.key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return _MISSING
            node = node[part]
        return node

    def matches(self, meta: Mapping[str, Any]) -> bool:
        found = self.lookup(meta)
        v = None if found is _MISSING else found
        # bool is an int in Python: success=1 must not match true
        same = isinstance(v, bool) == isinstance(self.value, bool) and v == self.value
        same = same or (isinstance(v, str) and v == self.raw)  # task=3 matches the text "3"
        return same != self.negate


def parse_episode_spec(text: str) -> list[int]:
    """``"0,3-5"`` -> ``[0, 3, 4, 5]``."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise CurateError(f"expected episode numbers and ranges like 0,3-5, got {text!r}")
        lo = int(m.group(1))
        out.update(range(lo, int(m.group(2) or lo) + 1))
    return sorted(out)


def index_ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0..2, 5``; ``none`` for no indices."""
    indices = sorted(indices)
    if not indices:
        return "none"
    parts, start = [], indices[0]
    for prev, cur in zip(indices, [*indices[1:], None], strict=True):
        if cur is None or cur != prev + 1:
            parts.append(f"{start}..{prev}" if prev > start else str(start))
            start = cur if cur is not None else start
    return ", ".join(parts)


def select_episodes(
    ds: Dataset, where: Sequence[Condition | str] = (), episodes: Sequence[int] | None = None
) -> list[int]:
    """Indices of the committed episodes of ``ds`` among ``episodes`` (default: all) that meet every condition."""
    indices = ds.episode_indices
    if episodes is not None:
        missing = sorted(set(episodes) - set(indices))
        if missing:
            raise CurateError(
                f"--episodes: no episode {index_ranges(missing)} in {ds.path}, which has episodes "
                f"{index_ranges(indices)}; pass episode numbers from those"
            )
        indices = sorted(set(episodes))
    conds = [c if isinstance(c, Condition) else Condition.parse(c) for c in where]
    if not conds:
        return indices
    metas = {i: ds.episode(i).meta for i in indices}
    for c in conds:
        if metas and all(c.lookup(m) is _MISSING for m in metas.values()):
            keys = sorted({k for m in metas.values() for k in m if k not in ("streams", "index")})
            raise CurateError(
                f"--where {c.text}: no episode of {ds.path} has metadata {c.key!r}; use one of {', '.join(keys)} "
                "(or attributes.<name>)"
            )
    return [i for i in indices if all(c.matches(metas[i]) for c in conds)]


# -- new datasets --------------------------------------------------------------------------------------------
@dataclass
class NewDataset:
    """A dataset written by filter, merge or split: ``episodes[k]`` is the (source dataset, source episode
    index) of its episode ``k``; ``stats`` the features whose statistics were computed."""

    path: Path
    episodes: list[tuple[Path, int]]
    stats: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Staged:
    """A new dataset being written in ``.<DST name>.curate-<id>/dataset``, owned through ``.lock`` beside it."""

    def __init__(self, dst: Path, durable: bool) -> None:
        self.dst = dst
        self.durable = durable
        self.wrapper = Path(tempfile.mkdtemp(prefix=f".{dst.name}{CURATE_MARK}", dir=dst.parent))
        self.dir = self.wrapper / "dataset"
        self.lock_fd: int | None = os.open(self.wrapper / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def commit(self) -> None:
        """Make the new dataset visible: one rename (an existing empty directory would be replaced: refuse)."""
        if self.dst.exists():
            raise CurateError(f"{self.dst} appeared while it was being written; choose another path")
        os.rename(self.dir, self.dst)
        if self.durable:
            _fsync_dir(self.dst.parent)
        self._remove()

    def abort(self) -> None:
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.wrapper, ignore_errors=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _clean_leftovers(dst: Path) -> None:
    """Remove the staging folders of operations into ``dst`` that died (nobody holds their lock)."""
    if not dst.parent.is_dir():
        return
    for entry in dst.parent.iterdir():
        if not entry.name.startswith(f".{dst.name}{CURATE_MARK}") or not entry.is_dir():
            continue
        try:
            fd = os.open(entry / ".lock", os.O_RDWR)
        except FileNotFoundError:
            # the lock is made right after the folder: without one, only an old folder is abandoned
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime > _ABANDONED_AFTER_S:
                    shutil.rmtree(entry, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry, ignore_errors=True)
        except BlockingIOError:
            pass  # a live operation owns it
        finally:
            os.close(fd)


def _check_new_path(dst: Path, sources: Sequence[Path], what: str = "DST") -> None:
    if dst.exists():
        raise CurateError(f"{dst} already exists; {what} must be a new path (remove it first, or choose another name)")
    d = dst.resolve()
    for src in sources:
        s = src.resolve()
        if d == s or s in d.parents:
            raise CurateError(f"{dst} is inside the source {src}; write the new dataset elsewhere")


@contextlib.contextmanager
def _locked_sources(paths: Sequence[Path]) -> Iterator[tuple[list[Dataset], list[str]]]:
    """Open the source datasets holding their writer locks (so that no episode changes while they are copied);
    a source on a read-only disk or directory, which nobody can change, is read without the lock."""
    seen: dict[Path, Path] = {}
    for p in paths:
        r = p.resolve()
        if r in seen:
            raise CurateError(f"{p} is given twice (also as {seen[r]}); name each source once")
        seen[r] = p
    opened: list[Dataset] = []
    warnings: list[str] = []
    try:
        for p in paths:
            try:
                opened.append(Dataset.open(p, mode="a"))
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                opened.append(Dataset.open(p, mode="r"))
                warnings.append(f"{p} is read-only here: read without its writer lock")
        yield opened, warnings
    finally:
        for ds in opened:
            ds.close()


def _copy_episode(src: Dataset, index: int, out: Path, new_index: int) -> None:
    """Copy a committed episode's folder byte for byte as episode ``new_index`` of the dataset at ``out``, with
    its index and its origin in the metadata."""
    target = out / EPISODES_DIR / episode_dirname(new_index)
    shutil.copytree(
        src.path / EPISODES_DIR / episode_dirname(index), target, ignore=shutil.ignore_patterns("*.partial")
    )
    meta_path = target / "zarr.json"
    meta = json.loads(meta_path.read_text())
    attrs = meta.setdefault("attributes", {})
    attrs["index"] = new_index
    attrs["attributes"] = {
        **(attrs.get("attributes") or {}),
        "source_dataset": str(src.path.resolve()),
        "source_episode": index,
    }
    meta_path.write_text(json.dumps(meta, indent=2))


def _stage(
    dst: Path,
    template: Dataset,
    robot: Any,
    picks: Sequence[tuple[Dataset, int]],
    derived: Mapping[str, Any],
    stats: bool,
    durable: bool,
) -> tuple[_Staged, list[str]]:
    """Write a new dataset (features of ``template``, the episodes ``picks``) into a staging folder next to
    ``dst``; returns it, not yet committed, and the features whose statistics were computed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    staged = _Staged(dst, durable)
    try:
        attributes = {**(template.info.get("attributes") or {}), "derived_from": dict(derived)}
        out = Dataset.create(staged.dir, template.info["features"], robot=robot, attributes=attributes, durable=durable)
        try:
            for k, (src, i) in enumerate(picks):
                _copy_episode(src, i, out.path, k)
                _hook("copied")
            computed: list[str] = []
            if stats:
                from realloop.data.stats import compute_stats

                values = compute_stats(out)
                out.set_stats(values)
                computed = list(values)
                _hook("stats")
        finally:
            out.close()
        if durable:
            _fsync_tree(staged.dir)
        _hook("staged")
        return staged, computed
    except BaseException:
        staged.abort()
        raise


def _derived(op: str, sources: Sequence[Dataset], **details: Any) -> dict[str, Any]:
    """What the new dataset's ``attributes.derived_from`` records."""
    return {"op": op, "sources": [str(s.path.resolve()) for s in sources], "at": time.time(), **details}


def filter_dataset(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    where: Sequence[Condition | str] = (),
    episodes: Sequence[int] | None = None,
    stats: bool = True,
    durable: bool = True,
) -> NewDataset:
    """Write the episodes of ``src`` that meet every condition of ``where`` (among ``episodes``, default all)
    into the new dataset ``dst``, renumbered 0..n-1; see the module doc."""
    src_p, dst_p = Path(src), Path(dst)
    conds = [c if isinstance(c, Condition) else Condition.parse(c) for c in where]
    _clean_leftovers(dst_p)
    _check_new_path(dst_p, [src_p])
    with _locked_sources([src_p]) as (sources, warnings):
        ds = sources[0]
        picks = select_episodes(ds, conds, episodes)
        if not picks:
            asked = " and ".join(
                [c.text for c in conds] + ([f"episodes {index_ranges(episodes)}"] if episodes is not None else [])
            )
            raise CurateError(
                f"no episode of {src_p} matches {asked or 'the selection'} ({len(ds)} episodes); nothing was "
                f"written (`realloop-dataset info {src_p}` shows its tasks, sources and success counts)"
            )
        details = {"where": [c.text for c in conds], "episodes": list(episodes) if episodes is not None else None}
        staged, computed = _stage(
            dst_p, ds, ds.robot, [(ds, i) for i in picks], _derived("filter", sources, **details), stats, durable
        )
        try:
            staged.commit()
        except BaseException:
            staged.abort()
            raise
        return NewDataset(dst_p, [(src_p, i) for i in picks], computed, warnings)


def schema_difference(a: Dataset, b: Dataset) -> str | None:
    """How the feature schemas of two datasets differ (the first feature that does), or None."""

    def plain(f: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in f.items() if k not in _IGNORED_FEATURE_KEYS}

    fa, fb = a.info["features"], b.info["features"]
    for name in sorted(set(fa) | set(fb)):
        if name not in fb:
            return f"feature {name!r} is in {a.path} but not in {b.path}"
        if name not in fa:
            return f"feature {name!r} is in {b.path} but not in {a.path}"
        da, db = plain(fa[name]), plain(fb[name])
        if da != db:
            keys = [k for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]
            diffs = ", ".join(f"{k} {da.get(k)!r} vs {db.get(k)!r}" for k in keys)
            return f"feature {name!r} differs between {a.path} and {b.path} ({diffs})"
    return None


def _robot_name(robot: Any) -> str | None:
    if isinstance(robot, Mapping):
        name = robot.get("name")
        return str(name) if name else None
    return str(robot) if robot else None


def merge_datasets(
    dst: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]],
    stats: bool = True,
    durable: bool = True,
) -> NewDataset:
    """Write all episodes of ``sources``, in order, into the new dataset ``dst`` (renumbered 0..n-1).

    Refuses sources whose feature schemas differ, or that were recorded on differently named robots.
    """
    dst_p = Path(dst)
    src_ps = [Path(s) for s in sources]
    if not src_ps:
        raise CurateError("merge needs at least one source dataset: realloop-dataset merge DST SRC [SRC ...]")
    _clean_leftovers(dst_p)
    _check_new_path(dst_p, src_ps)
    with _locked_sources(src_ps) as (opened, warnings):
        first = opened[0]
        robot = first.robot
        for ds in opened[1:]:
            diff = schema_difference(first, ds)
            if diff:
                raise CurateError(
                    f"cannot merge: {diff}; merge only datasets with the same features (compare them with "
                    "`realloop-dataset info`), or convert or re-record the odd one to that schema"
                )
            a, b = _robot_name(robot), _robot_name(ds.robot)
            if a and b and a != b:
                raise CurateError(
                    f"cannot merge: {first.path} was recorded on robot {a!r} and {ds.path} on {b!r}; merge "
                    "datasets of one robot"
                )
            if robot is None:
                robot = ds.robot
            elif ds.robot is not None and ds.robot != robot:
                warnings.append(f"the robot spec of {ds.path} differs from {first.path}'s; {dst_p} keeps the first")
        picks = [(ds, i) for ds in opened for i in ds.episode_indices]
        if not picks:
            raise CurateError(f"the sources have no committed episodes; nothing was written to {dst_p}")
        counts = {str(ds.path): len(ds) for ds in opened}
        staged, computed = _stage(
            dst_p, first, robot, picks, _derived("merge", opened, episodes=counts), stats, durable
        )
        try:
            staged.commit()
        except BaseException:
            staged.abort()
            raise
        return NewDataset(dst_p, [(ds.path, i) for ds, i in picks], computed, warnings)


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` episodes in proportion to ``fractions`` (largest remainders), at least one per part."""
    k = len(fractions)
    if n < k:
        raise CurateError(f"cannot split {n} episode(s) into {k} parts; give fewer --out paths")
    exact = np.asarray(fractions, dtype=np.float64) * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    for j in range(k):  # a tiny fraction of few episodes rounds to none: take one from the largest part
        if counts[j] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[j] = 1
    return [int(c) for c in counts]


def split_dataset(
    src: str | os.PathLike[str],
    outs: Sequence[str | os.PathLike[str]],
    fractions: Sequence[float],
    seed: int = 0,
    stats: bool = True,
    durable: bool = True,
) -> list[NewDataset]:
    """Split the episodes of ``src`` at random (seeded) into disjoint new datasets ``outs``, one per fraction.

    Every output is written whole before the first is renamed into place; a crash between two renames leaves
    the earlier outputs complete and the later ones absent.
    """
    src_p = Path(src)
    out_ps = [Path(o) for o in outs]
    fracs = [float(f) for f in fractions]
    if len(out_ps) != len(fracs) or len(fracs) < 2:
        raise CurateError(
            f"give as many --out paths as --fractions, two or more (got {len(out_ps)} paths, {len(fracs)} fractions)"
        )
    if any(not np.isfinite(f) or f <= 0 for f in fracs) or abs(sum(fracs) - 1.0) > 1e-6:
        raise CurateError(
            f"--fractions must be positive and add up to 1, got {','.join(map(str, fracs))} (sum {sum(fracs):g})"
        )
    if len({o.resolve() for o in out_ps}) != len(out_ps):
        raise CurateError("the --out paths must differ from one another")
    for o in out_ps:
        _clean_leftovers(o)
        _check_new_path(o, [src_p], what="every --out path")
    with _locked_sources([src_p]) as (sources, warnings):
        ds = sources[0]
        indices = ds.episode_indices
        counts = split_counts(len(indices), fracs)
        perm = np.random.default_rng(seed).permutation(len(indices))
        bounds = np.cumsum([0, *counts])
        parts = [sorted(indices[j] for j in perm[bounds[p] : bounds[p + 1]]) for p in range(len(counts))]
        staged: list[_Staged] = []
        results = []
        try:
            for p, (out, part) in enumerate(zip(out_ps, parts, strict=True)):
                derived = _derived("split", sources, fractions=fracs, seed=seed, part=p)
                st, computed = _stage(out, ds, ds.robot, [(ds, i) for i in part], derived, stats, durable)
                staged.append(st)
                results.append(NewDataset(out, [(src_p, i) for i in part], computed, list(warnings)))
            for st in staged:
                st.commit()
                _hook("committed")
        except BaseException:
            for st in staged:
                st.abort()  # the committed ones have only their empty wrapper left
            raise
        return results


# -- trash ---------------------------------------------------------------------------------------------------
@dataclass
class TrashResult:
    """What delete or restore did: ``done`` the episodes moved (or purged), ``skipped`` those already where
    asked; ``episodes`` and ``trashed`` the counts afterwards; ``stale_stats`` the features whose stored
    statistics no longer match the episodes."""

    path: Path
    done: list[int]
    skipped: list[int]
    episodes: int
    trashed: int
    stale_stats: list[str]


def _open_for_change(path: str | os.PathLike[str]) -> Dataset:
    ds = Dataset.open(path, mode="a")
    # leftovers of a purge that died (we hold the lock: nobody else is purging)
    trash = ds.path / TRASH_DIR
    if trash.is_dir():
        for name in os.listdir(trash):
            if name.startswith(PURGING_PREFIX):
                shutil.rmtree(trash / name, ignore_errors=True)
    return ds


def _move(src: Path, dst: Path, durable: bool) -> None:
    dst.parent.mkdir(exist_ok=True)
    os.rename(src, dst)  # the commit point
    if durable:
        _fsync_dir(dst.parent)
        _fsync_dir(src.parent)


def _purge(trashed: Path) -> None:
    doomed = trashed.parent / f"{PURGING_PREFIX}{uuid.uuid4().hex}"
    os.rename(trashed, doomed)  # from here on, never restorable
    shutil.rmtree(doomed)


def _result(ds: Dataset, done: list[int], skipped: list[int]) -> TrashResult:
    ds._episode_cache.clear()  # the episodes moved under this handle
    return TrashResult(ds.path, done, skipped, len(ds.episode_indices), len(ds.trashed_indices), ds.stale_stats())


def delete_episodes(
    path: str | os.PathLike[str], episodes: Sequence[int] | None, purge: bool = False, durable: bool = True
) -> TrashResult:
    """Move ``episodes`` to the trash (already trashed ones are skipped). With ``purge``, remove them for good
    (trashed or not); ``purge`` without ``episodes`` empties the trash."""
    ds = _open_for_change(path)
    try:
        live, trashed = set(ds.episode_indices), set(ds.trashed_indices)
        if episodes is None:
            if not purge:
                raise CurateError("name the episodes to delete with --episodes (e.g. 0,3-5); --purge empties the trash")
            targets = sorted(trashed)
        else:
            targets = sorted(set(episodes))
            unknown = [i for i in targets if i not in live and i not in trashed]
            if unknown:
                raise CurateError(
                    f"no episode {index_ranges(unknown)} in {ds.path} (episodes {index_ranges(sorted(live))}; "
                    f"trash {index_ranges(sorted(trashed))}); pass episode numbers from those"
                )
        done, skipped = [], []
        for i in targets:
            in_trash = ds.path / TRASH_DIR / episode_dirname(i)
            if i in live and i in trashed:  # an older realloop reused the index of a deleted episode
                if not purge:
                    raise CurateError(
                        f"episode {i} of {ds.path} is also in its trash (an older realloop recorded over its index); "
                        f"empty the trash first with `realloop-dataset delete {ds.path} --purge`"
                    )
                _purge(in_trash)
            if i in live:
                _move(ds.path / EPISODES_DIR / episode_dirname(i), in_trash, durable)
                _hook("trashed")
                done.append(i)
            elif not purge:
                skipped.append(i)
            if purge:
                _purge(in_trash)
                if i not in live:
                    done.append(i)
        return _result(ds, sorted(done), skipped)
    finally:
        ds.close()


def restore_episodes(
    path: str | os.PathLike[str], episodes: Sequence[int] | None = None, durable: bool = True
) -> TrashResult:
    """Bring ``episodes`` (default: the whole trash) back from the trash, with their indices."""
    ds = _open_for_change(path)
    try:
        live, trashed = set(ds.episode_indices), set(ds.trashed_indices)
        targets = sorted(trashed) if episodes is None else sorted(set(episodes))
        unknown = [i for i in targets if i not in live and i not in trashed]
        if unknown:
            raise CurateError(
                f"no episode {index_ranges(unknown)} in the trash of {ds.path} (trash: "
                f"{index_ranges(sorted(trashed))}); pass episode numbers from it"
            )
        done, skipped = [], []
        for i in targets:
            if i in live and i in trashed:  # written by an older realloop that reused the index
                raise CurateError(
                    f"cannot restore episode {i}: {ds.path} has a newer episode {i} (an older realloop recorded over "
                    f"its index); empty the trash with `realloop-dataset delete {ds.path} --purge` (the trashed "
                    "one is then lost)"
                )
            if i in live:
                skipped.append(i)
                continue
            _move(ds.path / TRASH_DIR / episode_dirname(i), ds.path / EPISODES_DIR / episode_dirname(i), durable)
            _hook("restored")
            done.append(i)
        return _result(ds, done, skipped)
    finally:
        ds.close()
