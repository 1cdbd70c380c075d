"""realloop.data.verify on real datasets written by the real writer, clean and deliberately damaged."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr

from realloop.data.cli import main
from realloop.data.dataset import Dataset
from realloop.data.verify import verify

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [3], "names": ["shoulder", "elbow", "wrist"]},
    "action": {"dtype": "float32", "shape": [2], "names": ["vx", "wz"]},
    "next.reward": {"dtype": "float32", "shape": []},
    "observation.images.front": {"shape": [32, 32, 3]},
}
STATE_N, ACTION_N, FRAMES = 1500, 30, 130  # 3 s at 500 Hz / 10 Hz, 4.3 s at 30 Hz: two image shards


def write_dataset(path: Path, episodes: int = 2) -> Path:
    rng = np.random.default_rng(0)
    ds = Dataset.create(path, FEATURES, durable=False)
    for e in range(episodes):
        t0 = 100.0 + 10 * e
        with ds.begin_episode(task="pick", source="teleop") as ep:
            jitter = rng.uniform(-2e-4, 2e-4, STATE_N)
            ep.extend("observation.state", t0 + np.arange(STATE_N) / 500 + jitter, rng.normal(size=(STATE_N, 3)))
            ta = t0 + np.arange(ACTION_N) / 10
            ep.extend("action", ta, rng.normal(size=(ACTION_N, 2)))
            ep.extend("next.reward", ta, rng.normal(size=ACTION_N))
            frames = rng.integers(0, 256, size=(FRAMES, 32, 32, 3), dtype=np.uint8)
            ep.extend("observation.images.front", t0 + np.arange(FRAMES) / 30, frames)
            ep.commit(success=True)
    ds.close()
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("pristine") / "ds.zarr")


@pytest.fixture
def ds_path(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the pristine dataset that a test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "ds.zarr"))


EP1 = "episodes/episode_000001"


def frame_extent(shard: Path, k: int, n_inner: int = 100) -> tuple[int, int]:
    """Byte offset and length (image + crc32c) of frame ``k`` inside a shard file (index at the end)."""
    raw = shard.read_bytes()
    index = np.frombuffer(raw[-n_inner * 16 - 4 : -4], dtype="<u8").reshape(-1, 2)
    return int(index[k, 0]), int(index[k, 1])


def truncate_numeric_chunk(root: Path) -> Path:
    f = root / EP1 / "observation.state/data/c/0/0"
    os.truncate(f, f.stat().st_size // 2)
    return f


def truncate_shard(root: Path) -> Path:
    f = root / EP1 / "observation.images.front/data/c/1/0/0/0"
    os.truncate(f, f.stat().st_size - 100)
    return f


def corrupt_jpeg_bytes(root: Path) -> Path:
    f = root / EP1 / "observation.images.front/data/c/0/0/0/0"
    off, n = frame_extent(f, 7)
    raw = bytearray(f.read_bytes())
    for i in range(off + n // 2, off + n // 2 + 16):
        raw[i] ^= 0xFF
    f.write_bytes(bytes(raw))
    return f


def corrupt_jpeg_header_keep_crc(root: Path) -> Path:
    """Damage the JPEG itself and recompute its checksum, so that only the image decoder can notice."""
    f = root / EP1 / "observation.images.front/data/c/0/0/0/0"
    off, n = frame_extent(f, 3)
    raw = bytearray(f.read_bytes())
    raw[off : off + 64] = b"\x00" * 64
    raw[off + n - 4 : off + n] = np.uint32(google_crc32c.value(bytes(raw[off : off + n - 4]))).tobytes()
    f.write_bytes(bytes(raw))
    return f


def delete_timestamp_chunk(root: Path) -> Path:
    f = root / EP1 / "action/timestamp/c/0"
    f.unlink()
    return f


def edit_episode_count(root: Path) -> Path:
    f = root / EP1 / "zarr.json"
    meta = json.loads(f.read_text())
    meta["attributes"]["streams"]["observation.state"]["count"] += 1
    f.write_text(json.dumps(meta))
    return f


DAMAGE: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "truncated numeric chunk": (truncate_numeric_chunk, "observation.state", "checksum"),
    "truncated image shard": (truncate_shard, "observation.images.front", "shard 1"),
    "corrupted jpeg bytes": (corrupt_jpeg_bytes, "observation.images.front", "frame 7"),
    "corrupted jpeg, valid checksum": (
        corrupt_jpeg_header_keep_crc,
        "observation.images.front",
        "frame 3 of the shard",
    ),
    "deleted timestamp chunk": (delete_timestamp_chunk, "action", "missing"),
    "edited episode count": (edit_episode_count, "observation.state", "1501"),
}


def test_clean_dataset_passes(pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify(pristine, progress=True)
    assert report.ok and report.is_dataset
    assert report.problems == []
    assert (report.episodes, report.streams) == (2, 8)
    # per episode: 4 timestamp chunks, 3 numeric data chunks, 2 image shards
    assert report.chunks == 2 * (4 + 3 + 2)
    assert report.frames == 2 * FRAMES
    assert report.samples == 2 * (STATE_N + 2 * ACTION_N + FRAMES)
    assert report.summary().startswith(f"OK {pristine}")
    capsys.readouterr()

    out = pristine.parent / "verify.json"
    assert main(["verify", str(pristine), "--json-out", str(out), "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.strip().splitlines()[-1].startswith("OK ")
    saved = json.loads(out.read_text())
    assert saved["ok"] is True and saved["episodes"] == 2 and saved["problems"] == []


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_reported_with_its_file(ds_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    make, stream, words = DAMAGE[damage]
    damaged = make(ds_path)
    report = verify(ds_path)
    assert not report.ok
    hits = [p for p in report.errors if p.path == str(damaged)]
    assert hits, f"no error names {damaged}: {[str(p) for p in report.problems]}"
    assert all(p.episode == 1 and p.stream == stream for p in hits)
    assert any(words in p.message for p in hits), [p.message for p in hits]
    assert report.damaged_episodes == [1]  # episode 0 is intact
    assert report.summary().startswith("DAMAGED")

    assert main(["verify", str(ds_path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert str(damaged) in captured.out
    assert "damaged" in captured.err and "episode_000001" in captured.err
    assert "Traceback" not in captured.err
    saved = json.loads((ds_path.parent / "ds.zarr.verify.json").read_text())
    assert saved["ok"] is False and str(damaged) in {p["path"] for p in saved["problems"]}


def test_writer_leftovers_are_info_not_damage(ds_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    staged = ds_path / ".staging" / "0123abcd" / "observation.state"
    staged.mkdir(parents=True)
    (staged / "zarr.json").write_text("{}")
    (ds_path / "zarr.json.partial").write_bytes(b"{")
    report = verify(ds_path)
    assert report.ok
    assert {p.path for p in report.infos} == {str(ds_path / ".staging"), str(ds_path / "zarr.json.partial")}
    assert main(["verify", str(ds_path), "-v"]) == 0
    assert ".staging" in capsys.readouterr().out


def test_timestamps_out_of_order(ds_path: Path) -> None:
    ts = zarr.open_array(ds_path / EP1 / "observation.state/timestamp", mode="r+")
    t = ts[:]
    t[10], t[11] = t[11], t[10]
    ts[:] = t
    report = verify(ds_path)
    (err,) = report.errors
    assert "increase strictly at sample 11" in err.message
    assert err.path == str(ds_path / EP1 / "observation.state/timestamp/c/0")


def test_episode_without_metadata(ds_path: Path) -> None:
    (ds_path / EP1 / "zarr.json").unlink()
    report = verify(ds_path)
    assert report.episodes == 1
    (err,) = report.errors
    assert err.episode == 1 and err.path == str(ds_path / EP1 / "zarr.json")


def test_missing_all_zero_numeric_chunk_is_damage(ds_path: Path) -> None:
    """The writer stores chunks that hold only zeros too, so a missing chunk file is always damage."""
    with Dataset.open(ds_path, mode="a") as ds, ds.begin_episode() as ep:
        ep.extend("next.reward", np.arange(5) / 10, np.zeros(5))
    f = ds_path / "episodes/episode_000002/next.reward/data/c/0"
    assert f.is_file()
    assert verify(ds_path).ok
    f.unlink()
    report = verify(ds_path)
    (error,) = report.errors
    assert error.path == str(f) and "is missing" in error.message


def test_only_some_episodes(ds_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truncate_numeric_chunk(ds_path)
    report = verify(ds_path, episodes=[0])
    assert report.ok and report.episodes == 1
    assert main(["verify", str(ds_path), "--episodes", "0"]) == 0
    assert main(["verify", str(ds_path), "--episodes", "0,1"]) == 1
    assert not verify(ds_path, episodes=[5]).ok  # asking for an episode that does not exist
    capsys.readouterr()


def test_not_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = verify(tmp_path)
    assert not report.ok and not report.is_dataset
    assert "not a realloop dataset" in report.errors[0].message
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a realloop dataset" in err


def test_episodes_out_of_range_is_a_usage_error_and_keeps_the_last_report(
    ds_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_file = Path(f"{ds_path}.verify.json")
    assert main(["verify", str(ds_path), "--no-progress"]) == 0
    before = report_file.read_bytes()
    capsys.readouterr()
    assert main(["verify", str(ds_path), "--episodes", "0,33", "--no-progress"]) == 2  # not "damaged" (1)
    captured = capsys.readouterr()
    assert captured.err == (
        f"realloop-dataset verify: error: --episodes: no episode 33 in {ds_path}, which has episodes 0..1 (2 in all); "
        "pass episode numbers from that range\n"
    )
    assert "DAMAGED" not in captured.out
    assert report_file.read_bytes() == before  # the last report is untouched
    shutil.rmtree(ds_path / "episodes/episode_000000")  # a gap: the remaining episodes are named as they are
    assert main(["verify", str(ds_path), "--episodes", "0", "--no-progress"]) == 2
    assert "no episode 0 in" in capsys.readouterr().err and report_file.read_bytes() == before
