"""CPU use of the recorder node recording the sim arm graph with two cameras, as real processes on DDS.

The sim mirror (arm lift, front and wrist cameras as JPEG at 30 fps, joint states at 100 Hz) and the recorder
(default streams) run under realloop-launch's Launcher on a private domain; after the recorder has recorded
for a few seconds, the CPU time of each process is sampled over `--seconds`. Prints a table, writes JSON.

    python benchmarks/recorder_cpu.py                       # 320x240 and 640x480 cameras, 10 s each
    python benchmarks/recorder_cpu.py --sizes 320x240 --seconds 5
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from realloop.data import Dataset
from realloop.robot.launch.cli import Launcher
from realloop.robot.launch.graph import graph_from_dict
from realloop.robot.msgs import String
from realloop.robot.node import Node

DOMAIN = 217


def measure(width: int, height: int, seconds: float, workdir: Path) -> dict[str, Any]:
    path = workdir / f"rec_{width}x{height}.zarr"
    graph = graph_from_dict(
        {
            "name": "bench_recorder",
            "domain_id": DOMAIN,
            "localhost_only": True,
            "nodes": {
                "sim_mirror": {
                    "kind": "sim_mirror",
                    "params": {"task": "arm_lift", "seed": 0, "image_width": width, "image_height": height},
                },
                "recorder": {"kind": "recorder", "params": {"dataset": str(path), "auto_start": True, "source": "sim"}},
            },
        }
    )
    node = Node("bench", transport="dds", domain_id=DOMAIN, localhost_only=True)
    status: list[dict] = []
    node.create_subscription("/recorder/status", String, lambda m: status.append(json.loads(m.data)), qos="latched")
    launcher = Launcher(graph, out=io.StringIO())
    launcher.start()
    try:
        ok = node.spin_until(lambda: bool(status) and (status[-1].get("elapsed_s") or 0) > 3.0, 120)
        if not ok:
            raise RuntimeError(f"the recorder did not start recording: {status[-1:]}")
        procs = {r.node.name: psutil.Process(r.proc.pid) for r in launcher.running}
        before = {n: p.cpu_times() for n, p in procs.items()}
        start = time.perf_counter()
        node.spin(seconds)
        wall = time.perf_counter() - start
        cpu = {n: (sum(p.cpu_times()[:2]) - sum(before[n][:2])) / wall for n, p in procs.items()}
        rss = {n: p.memory_info().rss / 2**20 for n, p in procs.items()}
        cmd = node.create_publisher("/recorder/command", String)
        n_done = len(status)
        for _ in range(20):
            cmd.publish(String("success"))
            if node.spin_until(lambda: len(status) > n_done and status[-1]["last"] is not None, 1.0):
                break
    finally:
        launcher.shutdown()
        node.close()
    ep = Dataset.open(path).episode(0)
    dur = ep.duration
    return {
        "camera_size": f"{width}x{height}",
        "seconds": round(wall, 2),
        "recorder_cpu_cores": round(cpu["recorder"], 3),
        "sim_mirror_cpu_cores": round(cpu["sim_mirror"], 3),
        "recorder_rss_mb": round(rss["recorder"], 1),
        "recorded_s": round(dur, 2),
        "frames_per_s": {c: round(len(ep.stream(f"observation.images.{c}")) / dur, 1) for c in ("front", "wrist")},
        "state_per_s": round(len(ep.stream("observation.state")) / dur, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", default="outputs/bench/recorder_cpu.json")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            w, h = (int(x) for x in size.split("x"))
            rows.append(measure(w, h, args.seconds, Path(tmp)))
            r = rows[-1]
            print(
                f"{r['camera_size']:>8}: recorder {100 * r['recorder_cpu_cores']:5.1f}% of a core "
                f"(RSS {r['recorder_rss_mb']:.0f} MB), sim mirror {100 * r['sim_mirror_cpu_cores']:5.1f}%; "
                f"recorded front {r['frames_per_s']['front']} fps, wrist {r['frames_per_s']['wrist']} fps, "
                f"state {r['state_per_s']} Hz"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    figures = ", ".join(f"{r['camera_size']} {100 * r['recorder_cpu_cores']:.1f}%" for r in rows)
    print(f"recorder CPU: {figures} of one core -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
