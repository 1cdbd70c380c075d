"""SIGKILL the writing process at many random instants: committed episodes always survive, bit for bit."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from realloop.data import Dataset
from realloop.data.verify import verify

pytestmark = pytest.mark.slow  # whole-pipeline runs: make test-fast leaves them out

CHILD = Path(__file__).with_name("crash_writer_child.py")
_spec = importlib.util.spec_from_file_location("crash_writer_child", CHILD)
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

KILLS = 55


def check_episode(ds: Dataset, index: int) -> int:
    ep = ds.episode(index)
    seed = ep.meta["attributes"]["seed"]
    assert ep.meta["success"] == bool(seed % 2)
    for name, (ts, vals) in child.episode_content(seed).items():
        if len(ts) == 0:
            assert name not in ep.stream_names
            continue
        s = ep.stream(name)
        np.testing.assert_array_equal(s.timestamps, ts)
        np.testing.assert_array_equal(s.read(), vals)
    return seed


def test_sigkill_at_random_points_loses_only_the_uncommitted_episode(tmp_path: Path) -> None:
    path = tmp_path / "crash.zarr"
    rng = random.Random(1234)
    reported: dict[int, int] = {}  # episode index -> seed, as printed by the children
    seen: dict[int, int] = {}
    next_seed = 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), str(next_seed)], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout.readline().strip() == "ready", "the child writer did not start"
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():
            _, index, seed = line.split()
            reported[int(index)] = int(seed)

        ds = Dataset.open(path)
        indices = ds.episode_indices
        assert indices == list(range(len(indices))), f"kill {kill}: episode indices have a gap: {indices}"
        # nothing committed is ever lost, nothing half-written is ever visible
        assert set(reported) <= set(indices), f"kill {kill}: committed episodes lost"
        new = [i for i in indices if i not in seen]
        # a kill between commit and print leaves one episode unreported; each kill can do that once
        unreported = [i for i in new if i not in reported]
        assert len(unreported) <= 1, f"kill {kill}: episodes {unreported} committed by this child lack a report"
        for index in new:
            seed = check_episode(ds, index)
            assert reported.get(index, seed) == seed
            seen[index] = seed
        report = verify(path, episodes=new)
        assert report.ok, f"kill {kill}: verify found {report.errors}"
        next_seed = max(seen.values(), default=-1) + 1
    final = verify(path)
    assert final.ok and final.episodes == len(seen), final.errors
    assert len(seen) >= 20, f"only {len(seen)} episodes committed over {KILLS} kills; the test killed too early"
