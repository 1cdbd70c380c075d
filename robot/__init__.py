"""realloop.robot: the ROS 2 layer: nodes, DDS transport, messages, safety, recording, launch (docs/architecture.md)."""
