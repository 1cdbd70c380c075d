"""`make demo` end to end on a tiny budget: collection, dataset CLI steps, training, evaluation, the sim graph."""

from __future__ import annotations

import json
from pathlib import Path

from realloop.demo import main


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--episodes", "5", "--steps", "20", "--eval-episodes", "2", "--graph-timeout", "25"]
    assert main(argv) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["episodes"] == 5
    assert (out / "episode0.png").stat().st_size > 10_000
    assert (out / "episode0_front.mp4").stat().st_size > 1_000
    assert summary["train"]["steps"] == 20 and Path(summary["train"]["checkpoint"]).is_dir()
    assert summary["eval"]["episodes"] == 2 and Path(summary["eval"]["json"]).is_file()
    assert len(summary["eval"]["videos"]) == 1 and Path(summary["eval"]["videos"][0]).stat().st_size > 1_000
    graph = summary["graph"]
    # the graph ran the checkpoint: a success is committed by the recorder, anything else discarded on timeout
    assert graph is not None and graph["committed"] is (graph["success"] is True)
    assert graph["committed"] or graph["seconds"] >= 25
