"""Graph descriptions (configs/graph/<name>.yaml), shared by ``realloop-launch`` and ``launch/realloop.launch.py``.

A graph names its nodes, each with a kind (a module of realloop.robot.nodes), parameters and remaps::

    name: sim_arm_teleop
    domain_id: 42            # ROS_DOMAIN_ID of every node; null: the caller's environment
    localhost_only: true
    nodes:
      sim_mirror: {kind: sim_mirror, params: {task: arm_lift}}
      teleop: {kind: teleop, params: {robot: arm6}, terminal: true}    # gets the terminal (keyboard)
      recorder: {kind: recorder, params: {dataset: outputs/recordings/arm_lift.zarr}, remaps: {}}

Each node runs as ``python -m realloop.robot.nodes KIND key=value ... --ros-args -r __node:=NAME -r from:=to``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from realloop.configs import ConfigNotFoundError, config_dir, config_file
from realloop.configs.schema import ConfigError, Schema, to_plain

from ..args import check_params
from ..nodes import NODES

GRAPH_DIR = config_dir("graph")  # realloop.configs: the checkout's configs/graph, or the installed copy

# the keys of a graph and of each of its nodes (the node's params: configs/node/<kind>.yaml)
GRAPH_SCHEMA = Schema(
    {"name": "graph", "description": "", "domain_id": None, "localhost_only": False, "nodes": {}},
    open=frozenset({"nodes"}),
    types={"domain_id": ("int", "null")},
)
NODE_SCHEMA = Schema(
    {"kind": "", "params": {}, "remaps": {}, "terminal": False, "required": True, "enabled": True},
    open=frozenset({"params", "remaps"}),
    types={"params": ("mapping", "null"), "remaps": ("mapping", "null")},
)


@dataclass
class NodeEntry:
    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    remaps: dict[str, str] = field(default_factory=dict)
    terminal: bool = False  # inherits the launcher's stdin (keyboard teleop)
    required: bool = True  # when it exits, the whole graph shuts down (as ros2 launch's on_exit=Shutdown)


@dataclass
class Graph:
    name: str
    nodes: list[NodeEntry]
    domain_id: int | None = None
    localhost_only: bool = False
    description: str = ""

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment of every node process."""
        env = dict(base)
        if self.domain_id is not None:
            env["ROS_DOMAIN_ID"] = str(self.domain_id)
        if self.localhost_only:
            env["ROS_LOCALHOST_ONLY"] = "1"
            env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


def graph_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    try:
        return config_file("graph", name)
    except ConfigNotFoundError as e:
        raise FileNotFoundError(
            f"no graph {name!r}: expected {e.path} or a .yaml path; graphs: {', '.join(e.known)}"
        ) from None


def load_graph(name: str, overrides: Sequence[str] = ()) -> Graph:
    """A graph by name (configs/graph/NAME.yaml) or path, with dotted ``key=value`` overrides
    (``nodes.recorder.params.dataset=/data/x.zarr``)."""
    cfg = OmegaConf.load(graph_path(name))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"bad override {bad[0]!r}: expected KEY=VALUE (nodes.recorder.params.dataset=x.zarr)")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot apply the overrides to graph {name!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"graph {name!r} is a list, not a mapping of keys")
    return graph_from_dict(to_plain(cfg))


def graph_from_dict(d: Mapping[str, Any]) -> Graph:
    """A graph from its mapping, every key checked: the graph's own (:data:`GRAPH_SCHEMA`), each node's
    (:data:`NODE_SCHEMA`) and each node's parameters against its kind's declaration (configs/node/<kind>.yaml), so
    a misspelt parameter fails here, before any node process starts."""
    where = f"graph {d.get('name')!r}"
    GRAPH_SCHEMA.check(d, where, "key")
    nodes = []
    for node_name, spec in (d.get("nodes") or {}).items():
        if spec is None:
            continue
        NODE_SCHEMA.check(spec, f"node {node_name!r} of {where}", "key")
        if spec.get("enabled", True) is False:
            continue
        kind = spec.get("kind", node_name)
        if kind not in NODES:
            raise ValueError(f"{where}: node {node_name!r} has kind {kind!r}; kinds: {', '.join(NODES)}")
        try:
            check_params(kind, dict(spec.get("params") or {}), node_name)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        nodes.append(
            NodeEntry(
                node_name,
                kind,
                dict(spec.get("params") or {}),
                dict(spec.get("remaps") or {}),
                bool(spec.get("terminal", False)),
                bool(spec.get("required", True)),
            )
        )
    if not nodes:
        raise ValueError(f"graph {d.get('name')!r} has no nodes")
    return Graph(
        str(d.get("name", "graph")),
        nodes,
        d.get("domain_id"),
        bool(d.get("localhost_only", False)),
        str(d.get("description", "")),
    )


def flatten(params: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``{"a": {"b": 1}, "s": "x"}`` -> ``['a.b=1', 's="x"']``: JSON values, which the node reads as YAML."""
    out = []
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out += flatten(v, key + ".")
        else:
            out.append(f"{key}={json.dumps(v)}")
    return out


def node_command(node: NodeEntry, python: str = sys.executable) -> list[str]:
    """The command line of one node: what both realloop-launch and ros2 launch execute."""
    cmd = [
        python,
        "-m",
        "realloop.robot.nodes",
        node.kind,
        *flatten(node.params),
        "--ros-args",
        "-r",
        f"__node:={node.name}",
    ]
    for src, dst in node.remaps.items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd
