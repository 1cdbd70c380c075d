"""`make demo` end to end on a tiny budget: sim collection, dataset CLI steps, a training batch."""

from __future__ import annotations

import json
from pathlib import Path

from realloop.demo import main


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--episodes", "2", "--task", "arm_reach"]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["episodes"] == 2
    assert (out / "episode0.png").stat().st_size > 10_000
    assert (out / "episode0_front.mp4").stat().st_size > 1_000
    assert summary["training_batch"]["action"][1:] == [16, 7]
