"""Curating datasets (``realloop-dataset filter/merge/split/delete/restore``) on small real datasets: copied
episodes equal their sources, trashed episodes are invisible and come back, merges refuse other schemas, splits
are disjoint and complete, stale statistics are refused, and a crash never leaves a half dataset."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run

from realloop.data import Dataset, DatasetLockedError
from realloop.data.curate import (
    CURATE_MARK,
    Condition,
    CurateError,
    filter_dataset,
    parse_episode_spec,
    split_counts,
)
from realloop.data.stats import MissingStatsError, StaleStatsError, ensure_stats, load_stats
from realloop.data.training import WindowDataset
from realloop.data.verify import verify

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
    "observation.images.front": {"shape": [16, 16, 3]},  # jpeg: a re-encoded copy would differ
    "action": {"dtype": "float64", "shape": [2]},
}
# (success, source, operator) of each episode
EPISODES = [
    (True, "teleop", "ada"),
    (False, "teleop", "bob"),
    (True, "sim", "ada"),
    (True, "teleop", "bob"),
    (None, "policy", "ada"),
    (False, "sim", "bob"),
]
CHILD = Path(__file__).with_name("curate_crash_child.py")


def record(ds: Dataset, seed: int, success: bool | None, source: str, operator: str) -> None:
    rng = np.random.default_rng(seed)
    t0 = 10.0 * seed
    n_state, n_img, n_act = 150 + 10 * seed, 7 + seed, 12 + seed
    with ds.begin_episode(task=f"task{seed % 2}", source=source, operator=operator, seed=seed) as ep:
        ep.extend("observation.state", t0 + np.arange(n_state) / 100, rng.normal(size=(n_state, 3)))
        frames = rng.integers(0, 255, size=(n_img, 16, 16, 3), dtype=np.uint8)
        ep.extend("observation.images.front", t0 + 0.001 + np.arange(n_img) / 30, frames)
        ep.extend("action", t0 + np.arange(n_act) / 10, rng.normal(size=(n_act, 2)))
        ep.commit(success=success)


def write_dataset(path: Path, features: dict = FEATURES, robot: str = "arm6", episodes: list = EPISODES) -> Path:
    ds = Dataset.create(path, features, robot={"name": robot}, durable=False)
    for seed, (success, source, operator) in enumerate(episodes):
        record(ds, seed, success, source, operator)
    ds.close()
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("curate") / "src.zarr")


@pytest.fixture
def src(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "src.zarr"))


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but the writer's lock file) by its content."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".writer.lock"
    }


def assert_same_episode(a: Dataset, i: int, b: Dataset, j: int) -> None:
    """Episode ``j`` of ``b`` is a copy of episode ``i`` of ``a``: same samples, same files, same metadata
    except its index and origin."""
    ea, eb = a.episode(i), b.episode(j)
    assert ea.stream_names == eb.stream_names
    for name in ea.stream_names:
        np.testing.assert_array_equal(ea.stream(name).timestamps, eb.stream(name).timestamps)
        np.testing.assert_array_equal(ea.stream(name).read(), eb.stream(name).read())
    files_a = {k: v for k, v in tree_digest(ea.path).items() if k != "zarr.json"}
    assert files_a == {k: v for k, v in tree_digest(eb.path).items() if k != "zarr.json"}
    ma, mb = dict(ea.meta), dict(eb.meta)
    assert mb.pop("index") == j and ma.pop("index") == i
    origin = dict(mb["attributes"])
    assert origin.pop("source_episode") == i and origin.pop("source_dataset") == str(a.path.resolve())
    mb["attributes"] = origin
    assert ma == mb


# -- filter --------------------------------------------------------------------------------------------------
def test_filter_success_copies_the_episodes_bit_for_bit(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_digest(src)
    dst = tmp_path / "good.zarr"
    code, out, err = run(capsys, "filter", str(src), str(dst), "--success")
    assert code == 0, err
    kept = [i for i, (s, _, _) in enumerate(EPISODES) if s is True]
    assert out.startswith(f"wrote {dst}: 3 of 6 episodes of {src} (success=true), renumbered 0..2 (from 0, 2..3)")
    a, b = Dataset.open(src), Dataset.open(dst)
    assert b.episode_indices == [0, 1, 2]
    for j, i in enumerate(kept):
        assert_same_episode(a, i, b, j)
    assert b.info["features"] == a.info["features"] and b.robot == a.robot
    assert b.info["attributes"]["derived_from"]["op"] == "filter"
    assert set(b.stats or {}) == set(FEATURES) and not b.stale_stats()
    assert b.stats["action"]["count"] == sum(12 + i for i in kept)
    assert verify(dst).ok
    assert tree_digest(src) == before
    assert not [p for p in tmp_path.iterdir() if CURATE_MARK in p.name]  # no staging left


def test_filter_where_and_episodes(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "f.zarr"
    args = ["--where", "source=teleop", "--where", "attributes.operator!=ada", "--episodes", "0,2-5", "--no-stats"]
    code, out, _ = run(capsys, "filter", str(src), str(dst), *args)
    assert code == 0
    assert "no statistics (--no-stats)" in out
    b = Dataset.open(dst)
    assert [b.episode(i).meta["attributes"]["source_episode"] for i in b.episode_indices] == [3]
    assert b.stats is None
    # values are JSON where they parse: a number, null, a boolean; text otherwise
    picked = filter_dataset(src, tmp_path / "g.zarr", where=["attributes.seed=4", "success=null"], stats=False)
    assert [i for _, i in picked.episodes] == [4]
    assert Condition.parse("task = task1").matches({"task": "task1"})
    assert not Condition.parse("success=1").matches({"success": True})
    assert parse_episode_spec("5, 0,2-3") == [0, 2, 3, 5]


def test_filter_refusals(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "exists.zarr"
    existing.mkdir()
    code, _, err = run(capsys, "filter", str(src), str(existing), "--success")
    assert code == 2
    assert_one_line_error(err, "already exists", "new path")
    code, _, err = run(capsys, "filter", str(src), str(tmp_path / "x.zarr"), "--where", "sucess=true")
    assert code == 2
    assert_one_line_error(err, "'sucess'", "success")
    code, _, err = run(capsys, "filter", str(src), str(tmp_path / "x.zarr"), "--where", "source=scripted")
    assert code == 2
    assert_one_line_error(err, "no episode of", "nothing was written", "realloop-dataset info")
    code, _, err = run(capsys, "filter", str(src), str(tmp_path / "x.zarr"), "--where", "=3")
    assert code == 2
    assert_one_line_error(err, "KEY=VALUE")
    code, _, err = run(capsys, "filter", str(src), str(tmp_path / "x.zarr"), "--episodes", "2,9")
    assert code == 2
    assert_one_line_error(err, "no episode 9", "0..5")
    code, _, err = run(capsys, "filter", str(src), str(src / "inside.zarr"))
    assert code == 2
    assert_one_line_error(err, "inside the source")
    code, _, err = run(capsys, "filter", str(tmp_path / "nope.zarr"), str(tmp_path / "x.zarr"))
    assert code == 2
    assert_one_line_error(err, "does not exist")
    assert not (tmp_path / "x.zarr").exists()


def test_operations_hold_the_writer_lock(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Dataset.open(src, mode="a"):  # another process recording
        with pytest.raises(DatasetLockedError):
            filter_dataset(src, tmp_path / "f.zarr")
        for argv in (["delete", str(src), "--episodes", "1"], ["merge", str(tmp_path / "m.zarr"), str(src)]):
            code, _, err = run(capsys, *argv)
            assert code == 2
            assert_one_line_error(err, "another process is writing")
    assert Dataset.open(src).episode_indices == list(range(6))
    assert not (tmp_path / "f.zarr").exists() and not (tmp_path / "m.zarr").exists()


# -- delete / restore ----------------------------------------------------------------------------------------
def test_deleted_episodes_are_invisible_and_restore_brings_them_back(
    src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = {i: tree_digest(src / "episodes" / f"episode_{i:06d}") for i in range(6)}
    code, out, _ = run(capsys, "delete", str(src), "--episodes", "1,3-4")
    assert code == 0
    assert out.splitlines()[0] == (
        f"moved 3 episodes (1, 3..4) of {src} to its trash (`realloop-dataset restore {src} --episodes 1,3-4` "
        "brings them back); 3 episodes remain, 3 in the trash"
    )
    ds = Dataset.open(src)
    assert ds.episode_indices == [0, 2, 5] and len(ds) == 3 and ds.trashed_indices == [1, 3, 4]
    with pytest.raises(IndexError, match="realloop-dataset restore"):
        ds.episode(3)
    windows = WindowDataset(src, {"action": [0]})
    assert windows.episodes == [0, 2, 5]
    assert len(windows) == sum(12 + i for i in (0, 2, 5))
    report = verify(src)
    assert report.ok and report.episodes == 3
    assert any("deleted episode(s)" in p.message for p in report.infos)
    code, out, _ = run(capsys, "info", str(src))
    assert "episodes  3 (indices 0, 2, 5)" in out and "trash     3 deleted episodes (1, 3..4)" in out

    # deleting again is a no-op for those already in the trash (a rerun after a crash finishes the job)
    code, out, _ = run(capsys, "delete", str(src), "--episodes", "1,2")
    assert code == 0 and "already in the trash: 1" in out
    # a new recording never takes the index of a trashed episode
    with Dataset.open(src, mode="a") as w:
        record(w, 4, True, "teleop", "ada")
    assert Dataset.open(src).episode_indices == [0, 5, 6]

    code, out, _ = run(capsys, "restore", str(src), "--episodes", "3-4")
    assert code == 0 and out.startswith(f"restored 2 episodes (3..4) of {src}; 5 episodes, 2 left in the trash")
    code, out, _ = run(capsys, "restore", str(src), "--all")
    assert code == 0
    assert Dataset.open(src).episode_indices == list(range(7)) and Dataset.open(src).trashed_indices == []
    for i in range(6):
        assert tree_digest(src / "episodes" / f"episode_{i:06d}") == original[i]
    assert verify(src).ok

    code, _, err = run(capsys, "restore", str(src), "--episodes", "9")
    assert code == 2
    assert_one_line_error(err, "no episode 9 in the trash")
    code, _, err = run(capsys, "delete", str(src))
    assert code == 2
    assert_one_line_error(err, "--episodes")


def test_purge_deletes_for_good(src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "delete", str(src), "--episodes", "0,1")
    code, out, _ = run(capsys, "delete", str(src), "--episodes", "1,2", "--purge")
    assert code == 0 and out.startswith(f"deleted 2 episodes (1..2) of {src} for good; 3 episodes remain, 1 in")
    assert not (src / "episodes" / "episode_000002").exists() and not (src / ".trash" / "episode_000001").exists()
    code, _, err = run(capsys, "restore", str(src), "--episodes", "2")
    assert code == 2
    assert_one_line_error(err, "no episode 2 in the trash")
    code, out, _ = run(capsys, "delete", str(src), "--purge")  # empties the trash
    assert code == 0 and "deleted 1 episode (0)" in out
    assert os.listdir(src / ".trash") == []
    assert Dataset.open(src).episode_indices == [3, 4, 5] and verify(src).ok


# -- merge ---------------------------------------------------------------------------------------------------
def test_merge_joins_in_order(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = write_dataset(tmp_path / "other.zarr", episodes=EPISODES[:2])
    dst = tmp_path / "merged.zarr"
    code, out, err = run(capsys, "merge", str(dst), str(src), str(other))
    assert code == 0, err
    assert out.startswith(f"wrote {dst}: 8 episodes from 2 datasets ({src}: 6, {other}: 2), renumbered 0..7")
    m, a, b = Dataset.open(dst), Dataset.open(src), Dataset.open(other)
    assert m.episode_indices == list(range(8))
    for j in range(6):
        assert_same_episode(a, j, m, j)
    for j in range(2):
        assert_same_episode(b, j, m, 6 + j)
    assert m.stats["action"]["count"] == sum(12 + i for i in range(6)) + 12 + 13 and not m.stale_stats()
    code, _, err = run(capsys, "merge", str(tmp_path / "twice.zarr"), str(src), str(src))
    assert code == 2
    assert_one_line_error(err, "given twice")


def test_merge_refuses_other_schemas_and_robots(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wider = write_dataset(
        tmp_path / "wider.zarr",
        features={**FEATURES, "action": {"dtype": "float64", "shape": [3]}},
        episodes=[],
    )
    dst = tmp_path / "m.zarr"
    code, _, err = run(capsys, "merge", str(dst), str(src), str(wider))
    assert code == 2
    assert_one_line_error(err, "feature 'action' differs", "shape [2] vs [3]", "same features")
    fewer = {k: v for k, v in FEATURES.items() if k != "observation.images.front"}
    no_cam = write_dataset(tmp_path / "nocam.zarr", features=fewer, episodes=[])
    code, _, err = run(capsys, "merge", str(dst), str(src), str(no_cam))
    assert code == 2
    assert_one_line_error(err, "feature 'observation.images.front' is in", "but not in", "same features")
    quad = write_dataset(tmp_path / "quad.zarr", robot="quad", episodes=EPISODES[:1])
    code, _, err = run(capsys, "merge", str(dst), str(src), str(quad))
    assert code == 2
    assert_one_line_error(err, "robot 'arm6'", "'quad'", "one robot")
    assert not dst.exists()


# -- split ---------------------------------------------------------------------------------------------------
def test_split_is_disjoint_and_complete(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = [tmp_path / f"part{k}.zarr" for k in range(3)]
    code, out, err = run(
        capsys, "split", str(src), "--fractions", "0.5,0.3,0.2", "--out", *map(str, outs), "--seed", "3"
    )
    assert code == 0, err
    assert out.splitlines()[-1] == f"split {src} (6 episodes, seed 3) into 3 disjoint datasets"
    a = Dataset.open(src)
    parts = []
    for o in outs:
        d = Dataset.open(o)
        origin = [d.episode(i).meta["attributes"]["source_episode"] for i in d.episode_indices]
        assert d.episode_indices == list(range(len(origin))) and origin == sorted(origin)
        for j, i in enumerate(origin):
            assert_same_episode(a, i, d, j)
        assert not d.stale_stats()
        parts.append(set(origin))
    assert [len(p) for p in parts] == [3, 2, 1]
    assert set.union(*parts) == set(range(6)) and sum(map(len, parts)) == 6
    # the same seed gives the same split
    again = [tmp_path / f"again{k}.zarr" for k in range(3)]
    run(capsys, "split", str(src), "--fractions", "0.5,0.3,0.2", "--out", *map(str, again), "--seed", "3")
    for o, p in zip(again, parts, strict=True):
        d = Dataset.open(o)
        assert {d.episode(i).meta["attributes"]["source_episode"] for i in d.episode_indices} == p

    code, _, err = run(capsys, "split", str(src), "--fractions", "0.9,0.2", "--out", "x.zarr", "y.zarr")
    assert code == 2
    assert_one_line_error(err, "add up to 1")
    code, _, err = run(capsys, "split", str(src), "--fractions", "0.5,0.5", "--out", str(outs[0]), "y.zarr")
    assert code == 2
    assert_one_line_error(err, "already exists")
    assert split_counts(10, [0.9, 0.1]) == [9, 1]
    assert split_counts(3, [0.98, 0.01, 0.01]) == [1, 1, 1]
    with pytest.raises(CurateError, match="cannot split 2 episode"):
        split_counts(2, [0.5, 0.25, 0.25])


# -- statistics ----------------------------------------------------------------------------------------------
def test_stale_statistics_are_refused_until_recomputed(src: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "stats", str(src), "--no-progress")[0] == 0
    assert load_stats(src)["action"]["count"] == sum(12 + i for i in range(6))
    code, out, _ = run(capsys, "delete", str(src), "--episodes", "5")
    assert (
        out.splitlines()[-1]
        == f"the stored statistics are stale now; recompute them with `realloop-dataset stats {src}`"
    )
    with pytest.raises(StaleStatsError) as exc:
        load_stats(src)
    message = str(exc.value)
    assert "\n" not in message and f"`realloop-dataset stats {src}`" in message
    assert "computed over 6 episodes, the dataset now has 5" in message
    assert isinstance(exc.value, MissingStatsError)  # realloop-train prints those as one line, exit 2
    code, out, _ = run(capsys, "info", str(src))
    assert "stale for all" in out
    # restoring the episode makes the statistics current again
    code, out, _ = run(capsys, "restore", str(src), "--all")
    assert "statistics are stale" not in out
    load_stats(src)

    # a recomputed subset leaves the other features stale
    run(capsys, "delete", str(src), "--episodes", "0")
    code, out, _ = run(capsys, "stats", str(src), "--no-progress", "--features", "action")
    assert code == 0 and "still stale" in out
    assert Dataset.open(src).stale_stats() == ["observation.state", "observation.images.front"]
    with pytest.raises(StaleStatsError, match=r"stale for observation\.state, observation\.images\.front"):
        load_stats(src)
    # training's ensure_stats recomputes what is stale (and only that)
    action_before = Dataset.open(src).stats["action"]
    stats = ensure_stats(src)
    assert stats["observation.state"]["count"] == sum(150 + 10 * i for i in range(1, 6))
    assert stats["action"] == action_before
    assert not Dataset.open(src).stale_stats()
    load_stats(src)
    # recording a new episode makes them stale too
    with Dataset.open(src, mode="a") as w:
        record(w, 9, True, "teleop", "ada")
    with pytest.raises(StaleStatsError, match="now has 6"):
        load_stats(src)


def test_statistics_without_a_record_of_their_episodes_are_stale(src: Path) -> None:
    """Statistics stored by an older realloop say nothing of the episodes they cover: never trusted."""
    ensure_stats(src)
    with Dataset.open(src, mode="a") as ds:
        del ds.info["stats_episodes"]
        ds.root.attrs["realloop"] = ds.info
    with pytest.raises(StaleStatsError, match="without a record"):
        load_stats(src)
    ensure_stats(src)
    load_stats(src)


# -- crash safety --------------------------------------------------------------------------------------------
def run_child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow  # child processes: make test-fast leaves them out
@pytest.mark.parametrize(
    ("op", "point", "n"),
    [("filter", "copied", 2), ("filter", "stats", 1), ("merge", "staged", 1), ("split", "staged", 2)],
)
def test_a_crash_leaves_no_half_dataset(src: Path, tmp_path: Path, op: str, point: str, n: int) -> None:
    other = write_dataset(tmp_path / "other.zarr", episodes=EPISODES[:3])
    sources = {src: tree_digest(src), other: tree_digest(other)}
    dsts = {
        "filter": [tmp_path / "dst.zarr"],
        "merge": [tmp_path / "dst.zarr"],
        "split": [tmp_path / "a.zarr", tmp_path / "b.zarr"],
    }[op]
    args = {
        "filter": [str(src), str(dsts[0])],
        "merge": [str(dsts[0]), str(src), str(other)],
        "split": [str(src), *map(str, dsts)],
    }[op]
    proc = run_child(point, str(n), op, *args)
    assert proc.returncode == 9, proc.stdout + proc.stderr
    assert not any(d.exists() for d in dsts)  # nothing, rather than part of a dataset
    assert [p for p in tmp_path.iterdir() if CURATE_MARK in p.name]  # what the crash left, hidden
    for path, digest in sources.items():
        assert tree_digest(path) == digest
        assert verify(path).ok
    # the next run removes the leftovers of the dead one and succeeds
    proc = run_child("never", "1", op, *args)
    assert proc.returncode == 0 and proc.stdout == "finished\n", proc.stderr
    assert not [p for p in tmp_path.iterdir() if CURATE_MARK in p.name]
    for d in dsts:
        assert verify(d).ok and not Dataset.open(d).stale_stats()


@pytest.mark.slow
def test_a_crash_between_split_renames_leaves_whole_datasets(src: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    proc = run_child("committed", "1", "split", str(src), str(a), str(b))
    assert proc.returncode == 9, proc.stderr
    assert a.exists() and not b.exists()
    assert verify(a).ok and len(Dataset.open(a)) == 3


@pytest.mark.slow
def test_a_crash_in_a_delete_leaves_each_episode_whole(src: Path) -> None:
    proc = run_child("trashed", "2", "delete", str(src), "1-3")
    assert proc.returncode == 9, proc.stderr
    ds = Dataset.open(src)
    assert ds.episode_indices == [0, 3, 4, 5] and ds.trashed_indices == [1, 2]
    assert verify(src).ok
    proc = run_child("never", "1", "delete", str(src), "1-3")  # running it again finishes the job
    assert proc.returncode == 0, proc.stderr
    assert Dataset.open(src).episode_indices == [0, 4, 5]


def test_a_live_operations_staging_is_left_alone(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst.zarr"
    live = tmp_path / f".dst.zarr{CURATE_MARK}live"
    live.mkdir()
    fd = os.open(live / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        filter_dataset(src, dst, stats=False, durable=False)
        assert live.is_dir()  # its owner still holds the lock
    finally:
        os.close(fd)
    assert json.loads((dst / "zarr.json").read_text())["attributes"]["realloop"]["stats"] is None
