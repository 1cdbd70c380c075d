"""``realloop-launch graph=NAME [key=value ...]``: start a graph's nodes as processes on the DDS transport,
supervise them, and shut all of them down cleanly on Ctrl-C (or when a required node exits).

Output of every node is prefixed with its name. At the end it prints one summary line and writes
``outputs/launch/<graph>.launch.json`` (nodes, exit codes, run time). Exit code: 0 when every node stopped
cleanly, 1 when a node failed, 2 on a bad graph, 130 after Ctrl-C with clean stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from realloop.configs import config_file, config_names
from realloop.configs.schema import ConfigError, Schema

from .graph import GRAPH_SCHEMA, Graph, NodeEntry, load_graph, node_command

SHUTDOWN_TIMEOUT = 10.0  # s a node gets to exit after SIGINT before SIGTERM, then SIGKILL


@dataclass
class Running:
    node: NodeEntry
    proc: subprocess.Popen
    started: float
    ended: float | None = None
    returncode: int | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def _pump(prefix: str, stream: IO[bytes], out: IO[str]) -> None:
    for line in iter(stream.readline, b""):
        out.write(f"[{prefix}] {line.decode(errors='replace')}")
        out.flush()


class Launcher:
    """Starts a graph's nodes and supervises them; :meth:`shutdown` stops them (SIGINT, then SIGTERM, SIGKILL)."""

    def __init__(self, graph: Graph, out: IO[str] = sys.stdout):
        self.graph, self.out = graph, out
        self.running: list[Running] = []
        self._stop = threading.Event()
        self.reason = ""

    def start(self) -> None:
        env = self.graph.env(os.environ)
        for node in self.graph.nodes:
            proc = subprocess.Popen(
                node_command(node),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=None if node.terminal else subprocess.DEVNULL,
                start_new_session=not node.terminal,
            )  # Ctrl-C reaches the launcher, which forwards it in order
            run = Running(node, proc, time.monotonic())
            run.reader = threading.Thread(target=_pump, args=(node.name, proc.stdout, self.out), daemon=True)
            run.reader.start()
            self.running.append(run)
        names = ", ".join(f"{r.node.name}({r.proc.pid})" for r in self.running)
        self.out.write(
            f"[launch] graph {self.graph.name}: started {names} on domain "
            f"{self.graph.domain_id if self.graph.domain_id is not None else 'from ROS_DOMAIN_ID'}\n"
        )

    def supervise(self, duration: float | None = None) -> None:
        """Return when asked to stop, after ``duration`` s, or when a required node exits."""
        end = None if duration is None else time.monotonic() + duration
        while not self._stop.is_set():
            for run in self.running:
                if run.returncode is None and run.proc.poll() is not None:
                    run.returncode, run.ended = run.proc.returncode, time.monotonic()
                    self.out.write(f"[launch] {run.node.name} exited with code {run.returncode}\n")
                    if run.node.required:
                        self.reason = f"{run.node.name} exited ({run.returncode})"
                        return
            if end is not None and time.monotonic() >= end:
                self.reason = "duration reached"
                return
            self._stop.wait(0.1)
        self.reason = self.reason or "interrupted"

    def request_stop(self, reason: str = "interrupted") -> None:
        self.reason = reason
        self._stop.set()

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        alive = [r for r in self.running if r.proc.poll() is None]
        for run in alive:  # all at once: each node (the recorder too) handles SIGINT by itself
            run.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for run in alive:
            try:
                run.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.out.write(f"[launch] {run.node.name} ignored SIGINT for {timeout:.0f} s: terminating\n")
                run.proc.terminate()
                try:
                    run.proc.wait(3)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                    run.proc.wait()
        for run in self.running:
            if run.returncode is None:
                run.returncode, run.ended = run.proc.returncode, time.monotonic()
            if run.reader is not None:
                run.reader.join(2)

    def summary(self) -> dict:
        return {
            "graph": self.graph.name,
            "reason": self.reason,
            "nodes": [
                {
                    "name": r.node.name,
                    "kind": r.node.kind,
                    "pid": r.proc.pid,
                    "returncode": r.returncode,
                    "seconds": round((r.ended or time.monotonic()) - r.started, 3),
                }
                for r in self.running
            ],
        }


# realloop-launch's own parameters; every other key=value overrides the graph (GRAPH_SCHEMA's keys)
LAUNCH_SCHEMA = Schema(
    {"graph": "", "duration": None, **GRAPH_SCHEMA.defaults},
    open=frozenset({"nodes"}),
    types={"duration": ("number", "null"), **GRAPH_SCHEMA.types},
)
USAGE = "usage: realloop-launch graph=NAME [duration=SECONDS] [nodes.<node>.params.<key>=VALUE ...]"


def help_text() -> str:
    """``realloop-launch --help``: what it does, its parameters and the graphs there are."""
    graphs = []
    for name in config_names("graph"):
        try:
            desc = str((yaml.safe_load(config_file("graph", name).read_text()) or {}).get("description") or "")
        except (OSError, yaml.YAMLError):
            desc = ""
        graphs.append(f"  {name:<18} {desc.strip().splitlines()[0] if desc.strip() else ''}".rstrip())
    return (
        f"{USAGE}\n\n{__doc__.strip()}\n\n"
        "parameters (KEY=VALUE, values are YAML):\n"
        "  graph=NAME|PATH.yaml    the graph: a name below (configs/graph/NAME.yaml) or a .yaml file; required\n"
        "  duration=SECONDS        stop the graph after this long (default: run until Ctrl-C or a required\n"
        "                          node exits)\n"
        "  domain_id=N             the graph's DDS domain for every node (null: ROS_DOMAIN_ID; docs/ros2.md)\n"
        "  localhost_only=BOOL     keep DDS traffic on this machine\n"
        "  nodes.NODE.params.KEY=VALUE   a node's parameter (realloop-node KIND --help lists a kind's)\n"
        "  nodes.NODE.remaps.FROM=TO     a topic remap of a node\n"
        "  nodes.NODE.enabled=false      leave a node out; also nodes.NODE.required, nodes.NODE.terminal\n\n"
        "graphs:\n" + ("\n".join(graphs) or "  (none)") + "\n\n"
        "example: realloop-launch graph=sim_arm_policy duration=30 nodes.recorder.params.dataset=/data/run1.zarr"
    )


def parse_args(argv: list[str]) -> tuple[str, float | None, list[str]]:
    """``graph=NAME duration=S k=v ...`` -> (graph, duration, graph overrides); raises ConfigError (one line)
    for an argument that is not KEY=VALUE, an unknown key, or a bad graph name or duration."""
    own: dict[str, Any] = {"graph": ""}
    overrides = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad argument {arg!r}: expected KEY=VALUE; {USAGE}")
        LAUNCH_SCHEMA.check_key(key)
        if key in ("graph", "duration"):
            own[key] = yaml.safe_load(value) if key == "duration" and value else value
        else:
            overrides.append(arg)
    LAUNCH_SCHEMA.check(own)
    duration = own.get("duration")
    if duration is not None and not duration > 0:
        raise ConfigError(f"parameter 'duration' must be > 0 s, got {duration}")
    return own["graph"], duration, overrides


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    try:
        graph_name, duration, overrides = parse_args(argv)
    except ConfigError as e:
        print(f"realloop-launch: {e}", file=sys.stderr)
        return 2
    if not graph_name:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        graph = load_graph(graph_name, overrides)
    except (FileNotFoundError, ValueError) as e:
        print(f"realloop-launch: {e}", file=sys.stderr)
        return 2
    launcher = Launcher(graph)
    signal.signal(signal.SIGINT, lambda *_: launcher.request_stop("interrupted"))
    signal.signal(signal.SIGTERM, lambda *_: launcher.request_stop("terminated"))
    launcher.start()
    try:
        launcher.supervise(duration)
    finally:
        launcher.shutdown()
    summary = launcher.summary()
    out = Path("outputs/launch") / f"{graph.name}.launch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    failed = [n["name"] for n in summary["nodes"] if n["returncode"] not in (0, None)]
    print(
        f"realloop-launch: graph {graph.name} stopped ({launcher.reason}); "
        f"{len(summary['nodes']) - len(failed)}/{len(summary['nodes'])} nodes exited cleanly"
        + (f", failed: {', '.join(failed)}" if failed else "")
        + f"; summary in {out}"
    )
    if failed:
        return 1
    return 130 if launcher.reason == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
