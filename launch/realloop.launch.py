"""``ros2 launch launch/realloop.launch.py graph:=NAME [overrides:="k=v k2=v2"]``: a realloop graph under ros2 launch.

The graph comes from configs/graph/NAME.yaml, the same description ``realloop-launch graph=NAME`` starts; each
node runs the same command line (``python -m realloop.robot.nodes KIND k=v ... --ros-args ...``). With ROS 2
sourced the nodes pick the rclpy transport by themselves. A required node that exits shuts the launch down.
"""

from __future__ import annotations

import os
import shlex

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration

from realloop.robot.launch import load_graph, node_command


def _nodes(context, *args, **kwargs):  # the signature OpaqueFunction calls
    graph = load_graph(
        LaunchConfiguration("graph").perform(context), shlex.split(LaunchConfiguration("overrides").perform(context))
    )
    env = graph.env(os.environ)
    actions = []
    for node in graph.nodes:
        proc = ExecuteProcess(
            cmd=node_command(node),
            name=node.name,
            output="screen",
            additional_env={k: v for k, v in env.items() if os.environ.get(k) != v},
            emulate_tty=node.terminal,
        )
        actions.append(proc)
        if node.required:
            actions.append(
                RegisterEventHandler(
                    OnProcessExit(target_action=proc, on_exit=[EmitEvent(event=Shutdown(reason=f"{node.name} exited"))])
                )
            )
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("graph", description="configs/graph/<name>.yaml, or a path to a graph YAML"),
            DeclareLaunchArgument("overrides", default_value="", description="dotted key=value overrides"),
            OpaqueFunction(function=_nodes),
        ]
    )
