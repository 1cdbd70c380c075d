"""`make demo` end to end on a tiny budget: collection, dataset CLI steps, training, evaluation, the sim graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realloop.demo import main

pytestmark = pytest.mark.slow  # whole-pipeline runs: make test-fast leaves them out


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = [
        "--out",
        str(out),
        "--episodes",
        "5",
        "--steps",
        "20",
        "--eval-episodes",
        "2",
        "--graph-episodes",
        "1",
        "--graph-episode-s",
        "4",
        "--graph-timeout",
        "60",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["episodes"] == 5
    assert (out / "episode0.png").stat().st_size > 10_000
    assert (out / "episode0_front.mp4").stat().st_size > 1_000
    assert summary["train"]["steps"] == 20 and Path(summary["train"]["checkpoint"]).is_dir()
    assert summary["eval"]["episodes"] == 2 and Path(summary["eval"]["json"]).is_file()
    assert len(summary["eval"]["videos"]) == 1 and Path(summary["eval"]["videos"][0]).stat().st_size > 1_000
    graph = summary["graph"]
    # the graph ran the checkpoint and the recorder committed the episode: a success, or a failure after 4 s
    assert graph is not None and graph["episodes"] == 1
    (episode,) = graph["results"]
    assert episode["committed"] and graph["successes"] == int(episode["success"] is True)
    assert Path(episode["recording"]).is_dir() and episode["actions"] > 0
