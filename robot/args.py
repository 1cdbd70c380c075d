"""Node command lines: ``realloop-node KIND [key=value ...] [--ros-args -p k:=v -r from:=to ...]``.

Parameters come from ``configs/node/<kind>.yaml``, then the ``key=value`` overrides (what realloop-launch passes
from a graph), then ``--ros-args`` (what ``ros2 launch`` and ``ros2 run`` append). Values are YAML scalars.

``configs/node/<kind>.yaml`` is also the declaration of the kind's parameters (:mod:`realloop.configs.schema`):
every parameter is a key there, and its default gives its type (``true`` bool, ``30`` int, ``30.0`` a number,
ints accepted, ``"x"`` str, ``[]`` list, a mapping checks its own keys, ``null`` takes anything). Two keys that
are not parameters say what defaults cannot::

    _open: [policy, offsets]                   # mappings whose keys are free-form (any keys, values unchecked)
    _types: {device: int|str, workspace: mapping|null}   # replace inferred types: bool int number str list
                                                         # mapping null any, joined by '|'; dotted keys reach in

:data:`COMMON_PARAMS` are taken by every kind. :func:`check_params` refuses an undeclared key (naming the known
ones) or a value of the wrong type; ``run_node`` calls it on what each node process gets, and
``realloop.robot.launch`` on each graph node's parameters when the graph loads, before any process starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from realloop.configs import config_dir
from realloop.configs.schema import ConfigError, Schema

CONFIG_DIR = config_dir("node")  # realloop.configs: the checkout's configs/node, or the installed copy


@dataclasses.dataclass
class NodeArgs:
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    remaps: dict[str, str] = dataclasses.field(default_factory=dict)
    name: str | None = None
    namespace: str = "/"
    log_level: str | None = None


def _value(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def _split(item: str, sep: str, what: str) -> tuple[str, str]:
    if sep not in item:
        raise ValueError(f"bad {what} {item!r}: expected KEY{sep}VALUE")
    k, v = item.split(sep, 1)
    return k.strip(), v


def parse_node_args(argv: list[str]) -> NodeArgs:
    """Split a node command line into parameter overrides, remaps and node name/namespace."""
    out = NodeArgs()
    ros = False
    it = iter(argv)
    for arg in it:
        if arg == "--ros-args":
            ros = True
        elif arg == "--":
            ros = False
        elif not ros:
            k, v = _split(arg, "=", "override")
            set_dotted(out.overrides, k, _value(v))
        elif arg in ("-p", "--param"):
            k, v = _split(next(it, ""), ":=", "parameter")
            set_dotted(out.overrides, k, _value(v))
        elif arg in ("-r", "--remap"):
            k, v = _split(next(it, ""), ":=", "remap")
            if k == "__node" or k == "__name":
                out.name = v
            elif k == "__ns":
                out.namespace = v
            else:
                out.remaps[k] = v
        elif arg == "--params-file":
            for k, v in load_ros_params_file(next(it, "")).items():
                set_dotted(out.overrides, k, v)
        elif arg == "--log-level":
            out.log_level = next(it, "info")
        elif arg in ("--enclave", "-e"):
            next(it, None)
        else:
            raise ValueError(f"unsupported --ros-args argument {arg!r} (supported: -p, -r, --params-file, --log-level)")
    return out


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ValueError(f"parameter {key!r} goes inside {p!r}, which is not a mapping")
    d[parts[-1]] = value


def load_ros_params_file(path: str) -> dict[str, Any]:
    """A ROS 2 params file: ``<node or /**>: {ros__parameters: {...}}``; all sections are merged."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    out: dict[str, Any] = {}
    for section in data.values():
        if isinstance(section, dict):
            out.update(section.get("ros__parameters", {}))
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge (over wins), returning a new dict."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# parameters of every node kind (robot/node.py, robot/nodes/__init__.py run_node), declared as in a node YAML
COMMON_PARAMS: dict[str, Any] = {
    "name": "",  # the node's name; a graph and ``-r __node:=NAME`` set it too ("" : the kind)
    "use_sim_time": False,  # the node clock and timers follow /clock
}


def _node_yaml(kind: str) -> dict[str, Any]:
    path = CONFIG_DIR / f"{kind}.yaml"
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of parameters, got {type(data).__name__}")
    return data


def load_node_config(kind: str) -> dict[str, Any]:
    """The defaults of a node kind, ``configs/node/<kind>.yaml`` (empty when there is none), without the
    declaration's ``_open``/``_types`` keys."""
    return {k: v for k, v in _node_yaml(kind).items() if k not in ("_open", "_types")}


def node_schema(kind: str) -> Schema:
    """The declared parameters of a node kind: :data:`COMMON_PARAMS` and ``configs/node/<kind>.yaml``."""
    return Schema.from_declaration({**COMMON_PARAMS, **_node_yaml(kind)}, str(CONFIG_DIR / f"{kind}.yaml"))


def check_params(kind: str, params: dict[str, Any], name: str | None = None) -> None:
    """Raise :class:`ConfigError` (a ValueError) for a parameter the kind does not declare or a value of the
    wrong type: ``unknown parameter 'polcy' for node policy_runner (did you mean 'policy'?); known: ...``.
    ``name``: the node's name in a graph, when it is not the kind."""
    node_schema(kind).check(params, f"node {kind}" if name in (None, kind) else f"node {name} ({kind})")
