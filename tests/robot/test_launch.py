"""Graph descriptions and realloop-launch: real node processes supervised and stopped on Ctrl-C."""

from __future__ import annotations

import json
import py_compile
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import node_env

from realloop.robot.args import merge, parse_node_args
from realloop.robot.launch import load_graph, node_command
from realloop.robot.launch.graph import GRAPH_DIR, graph_from_dict
from realloop.robot.msgs import String

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted(GRAPH_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_graph_loads_and_its_command_lines_round_trip(path: Path) -> None:
    graph = load_graph(path.stem)
    assert graph.nodes
    for node in graph.nodes:
        cmd = node_command(node)
        assert cmd[:4] == [sys.executable, "-m", "realloop.robot.nodes", node.kind]
        args = parse_node_args(cmd[4:])
        assert args.name == node.name
        assert args.overrides == node.params  # what the node receives is what the graph says
        assert args.remaps == node.remaps


def test_required_graphs_exist() -> None:
    names = {p.stem for p in GRAPH_DIR.glob("*.yaml")}
    assert {"sim_arm_teleop", "sim_arm_policy", "real_arm_teleop", "real_arm_policy", "sim_quad_teleop"} <= names
    kinds = {n.kind for n in load_graph("sim_arm_policy").nodes}
    assert {"sim_mirror", "policy_runner", "safety_filter", "recorder"} <= kinds
    real = load_graph("real_arm_policy")
    assert "sim_mirror" not in {n.kind for n in real.nodes} and real.domain_id is None
    assert load_graph("sim_arm_teleop").domain_id is not None  # sim graphs stay off the robot's domain


def test_overrides_and_bad_graphs() -> None:
    g = load_graph("sim_arm_policy", ["nodes.recorder.params.dataset=/tmp/x.zarr", "domain_id=7"])
    assert g.domain_id == 7
    assert next(n for n in g.nodes if n.name == "recorder").params["dataset"] == "/tmp/x.zarr"
    with pytest.raises(ValueError, match="kind 'nope'"):
        graph_from_dict({"name": "g", "nodes": {"a": {"kind": "nope"}}})
    with pytest.raises(ValueError, match="unknown key 'parms' for node 'a'"):
        graph_from_dict({"name": "g", "nodes": {"a": {"kind": "camera", "parms": {}}}})
    with pytest.raises(FileNotFoundError, match="graphs: "):
        load_graph("no_such_graph")


def test_ros_args_suffix_overrides_config_params() -> None:
    args = parse_node_args(
        [
            "rate_hz=10",
            "a.b=1",
            "--ros-args",
            "-p",
            "rate_hz:=30",
            "-p",
            "a.c:=x",
            "-r",
            "__node:=cam",
            "-r",
            "image:=/front/image",
            "--log-level",
            "debug",
        ]
    )
    merged = merge({"rate_hz": 1, "a": {"b": 0, "d": 2}}, args.overrides)
    assert merged == {"rate_hz": 30, "a": {"b": 1, "c": "x", "d": 2}}
    assert args.name == "cam" and args.remaps == {"image": "/front/image"} and args.log_level == "debug"
    with pytest.raises(ValueError, match="KEY:=VALUE"):
        parse_node_args(["--ros-args", "-p", "novalue"])


def test_ros2_launch_file_compiles() -> None:
    # `launch` (ROS 2) is not installable here; the file's graph logic is the shared code tested above
    py_compile.compile(str(REPO / "launch" / "realloop.launch.py"), doraise=True)


def _write_graph(tmp_path: Path, domain_id: int) -> Path:
    graph = {
        "name": "test_graph",
        "domain_id": domain_id,
        "localhost_only": True,
        "nodes": {
            "sim_mirror": {"kind": "sim_mirror", "params": {"task": "arm_lift", "seed": 2, "cameras": []}},
            "policy_runner": {
                "kind": "policy_runner",
                "params": {"task": "arm_lift", "command_prefix": "", "use_sim_time": True},
            },
        },
    }
    path = tmp_path / "test_graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    return path


def _launch(tmp_path: Path, graph: Path, domain_id: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "realloop.robot.launch.cli", f"graph={graph}"],
        cwd=tmp_path,
        env=node_env(domain_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_launch_runs_graph_and_stops_cleanly_on_ctrl_c(tmp_path: Path, domain_id: int, test_node) -> None:
    status: list[dict] = []
    test_node.create_subscription("/sim/status", String, lambda m: status.append(json.loads(m.data)), qos="latched")
    proc = _launch(tmp_path, _write_graph(tmp_path, domain_id), domain_id)
    try:
        # the scripted policy lifts the cube through the graph
        assert test_node.spin_until(lambda: bool(status) and status[-1]["success"], 90), status[-1:]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert "[sim_mirror]" in out and "[policy_runner]" in out  # node output is prefixed
    summary = json.loads((tmp_path / "outputs/launch/test_graph.launch.json").read_text())
    assert [n["returncode"] for n in summary["nodes"]] == [0, 0], out
    assert "2/2 nodes exited cleanly" in out


def test_launch_shuts_the_graph_down_when_a_required_node_dies(tmp_path: Path, domain_id: int, test_node) -> None:
    status: list[dict] = []
    test_node.create_subscription("/sim/status", String, lambda m: status.append(json.loads(m.data)), qos="latched")
    proc = _launch(tmp_path, _write_graph(tmp_path, domain_id), domain_id)
    try:
        assert test_node.spin_until(lambda: bool(status), 60)
        runner_pid = None
        deadline = time.monotonic() + 30
        while runner_pid is None and time.monotonic() < deadline:
            ps = subprocess.run(
                ["pgrep", "-P", str(proc.pid), "-f", "nodes policy_runner"], capture_output=True, text=True
            )
            runner_pid = int(ps.stdout.split()[0]) if ps.stdout.strip() else None
            time.sleep(0.2)
        assert runner_pid is not None
        subprocess.run(["kill", "-9", str(runner_pid)], check=True)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "policy_runner exited with code -9" in out
    summary = json.loads((tmp_path / "outputs/launch/test_graph.launch.json").read_text())
    assert {n["name"]: n["returncode"] for n in summary["nodes"]} == {"sim_mirror": 0, "policy_runner": -9}
