"""Node graphs: configs/graph/*.yaml started by ``realloop-launch`` (no ROS needed) or ``ros2 launch``."""

from .graph import Graph, NodeEntry, load_graph, node_command

__all__ = ["Graph", "NodeEntry", "load_graph", "node_command"]
