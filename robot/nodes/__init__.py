"""realloop's ROS 2 nodes, each a module with a Node subclass and ``main(argv)``; ``realloop-node KIND`` runs one.

Kinds: camera, driver, sim_mirror, recorder, teleop, policy_runner, safety_filter, viewer,
scripted_operator (``NODES``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from realloop.registry import Registry

from ..args import (
    HELP_FLAGS,
    check_params,
    kind_summary,
    load_node_config,
    merge,
    node_help,
    parse_node_args,
    wants_help,
)
from ..node import Node

NODES = Registry(
    "node kind",
    {
        kind: f"realloop.robot.nodes.{kind}:main"
        for kind in ("camera", "driver", "sim_mirror", "recorder", "teleop", "policy_runner", "safety_filter", "viewer")
    }
    # sim-side stand-ins, importing MuJoCo
    | {"scripted_operator": "realloop.sim.operator:main"},
)


def run_node(kind: str, factory: Callable[..., Node], argv: list[str] | None = None) -> int:
    """Build a node from its config and command line, spin it until SIGINT/SIGTERM, close it. Exit code 0 on a
    clean stop, 2 on a bad command line or config (the message names the parameter). The parameters are checked
    against the kind's declaration (:func:`realloop.robot.args.check_params`) before the node is built."""
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        script = os.path.basename(sys.argv[0])  # realloop-teleop, or realloop-node / python -m
        print(node_help(kind, script if script.startswith("realloop-") and script != "realloop-node" else None))
        return 0
    try:
        args = parse_node_args(argv)
    except (ValueError, OSError) as e:
        print(f"realloop-node {kind}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=(args.log_level or "info").upper(), format=f"[%(levelname)s] [{kind}] %(message)s")
    params = merge(load_node_config(kind), args.overrides)
    try:
        check_params(kind, params)
        node = factory(
            name=args.name or params.pop("name", None) or kind,
            params=params,
            namespace=args.namespace,
            remaps=args.remaps,
        )
    except (ValueError, FileNotFoundError, KeyError) as e:
        logging.getLogger(kind).error("%s", e)
        return 2

    def stop(signum: int, _frame: Any) -> None:
        node.shutdown()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        node.spin()
    finally:
        node.close()
    return int(getattr(node, "exit_code", 0) or 0)


def main(argv: list[str] | None = None) -> int:
    """``realloop-node KIND [key=value ...] [--ros-args ...]``."""
    argv = sys.argv[1:] if argv is None else argv
    usage = f"usage: realloop-node {{{','.join(NODES)}}} [key=value ...] [--ros-args ...]"
    if argv and argv[0] in HELP_FLAGS:
        kinds = "\n".join(f"  {kind:<14} {kind_summary(kind)}" for kind in NODES)
        print(f"{usage}\n\nRuns one node. Kinds:\n{kinds}\n\n'realloop-node KIND --help' lists a kind's parameters.")
        return 0
    if not argv or argv[0] not in NODES:
        print(f"{usage}\n'realloop-node --help' lists the kinds.", file=sys.stderr)
        return 2
    if wants_help(argv[1:]):  # without importing the kind's module (and mujoco, torch...)
        print(node_help(argv[0]))
        return 0
    return NODES.get(argv[0])(argv[1:])
