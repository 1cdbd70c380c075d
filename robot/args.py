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
import json
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
    "domain_id": None,  # DDS domain; null: ROS_DOMAIN_ID, else 0 (robot/transport resolve_domain, docs/ros2.md)
}
COMMON_TYPES: dict[str, tuple[str, ...]] = {"domain_id": ("int", "null")}
COMMON_DOCS = (  # for --help, in COMMON_PARAMS' order
    "the node's name (and -r __node:=NAME); empty: the kind",
    "the node clock and timers follow /clock",
    "DDS domain; null: ROS_DOMAIN_ID, else 0 (docs/ros2.md, Which DDS domain)",
)


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
    schema = Schema.from_declaration({**COMMON_PARAMS, **_node_yaml(kind)}, str(CONFIG_DIR / f"{kind}.yaml"))
    return Schema(schema.defaults, schema.open, {**COMMON_TYPES, **schema.types})


def check_params(kind: str, params: dict[str, Any], name: str | None = None) -> None:
    """Raise :class:`ConfigError` (a ValueError) for a parameter the kind does not declare or a value of the
    wrong type: ``unknown parameter 'polcy' for node policy_runner (did you mean 'policy'?); known: ...``.
    ``name``: the node's name in a graph, when it is not the kind."""
    node_schema(kind).check(params, f"node {kind}" if name in (None, kind) else f"node {name} ({kind})")


HELP_FLAGS = ("-h", "--help")


def wants_help(argv: list[str]) -> bool:
    """``-h``/``--help`` among a node's own arguments (before ``--ros-args``)."""
    own = argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv
    return any(a in HELP_FLAGS for a in own)


def kind_summary(kind: str) -> str:
    """What the kind does: the first comment line of ``configs/node/<kind>.yaml``, after its ``Kind node (file):``
    and up to the first full stop."""
    path = CONFIG_DIR / f"{kind}.yaml"
    first = path.read_text().splitlines()[0] if path.exists() else ""
    if not first.startswith("#"):
        return ""
    text = first.lstrip("# ").strip()
    text = text.split("): ", 1)[-1].split(". ", 1)[0]
    return text.rstrip(",:;. ")


def node_help(kind: str, prog: str | None = None) -> str:
    """``realloop-node KIND --help``: the usage, then the kind's declaration (``configs/node/<kind>.yaml``, its
    comments being the documentation), then the parameters every kind takes."""
    prog = prog or f"realloop-node {kind}"
    path = CONFIG_DIR / f"{kind}.yaml"
    lines = []
    for (key, value), doc in zip(COMMON_PARAMS.items(), COMMON_DOCS, strict=True):
        lines.append(f"{key + ': ' + json.dumps(value):<24}# {doc}")
    common = "\n".join(lines)
    return (
        f"usage: {prog} [key=value ...] [--ros-args -p key:=value -r from:=to -r __node:=NAME ...]\n\n"
        "Parameters: the defaults below, then key=value (YAML values; dotted keys reach into mappings:\n"
        "camera_info.hfov_deg=90), then --ros-args -p key:=value. An unknown key or a value of the wrong type\n"
        "exits 2 naming the known keys.\n\n"
        f"# --- {path} ---\n{path.read_text() if path.exists() else '# (no declaration: only the common parameters)'}"
        f"\n# --- every kind ---\n{common}\n"
    )
