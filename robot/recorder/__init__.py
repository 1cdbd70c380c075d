"""The recorder: ROS 2 streams into the episode dataset (the node is ``realloop.robot.nodes.recorder``).

- :mod:`.streams`: stream specs from config (topic, message type, field, feature, expected rate) and message
  to sample conversion;
- :mod:`.recorder`: the transport-free episode logic (start, commit, discard) and per-stream accounting
  (received, dropped, gaps, non-monotonic, invalid, dead).
"""

from .recorder import IDLE, RECORDING, WAITING, Recorder, StreamStats, report_path_for, summary_line
from .streams import (
    MSG_TYPES,
    EncodedImage,
    InvalidSample,
    StreamConfigError,
    StreamSpec,
    jpeg_shape,
    parse_stream,
    parse_streams,
)

__all__ = [
    "IDLE",
    "MSG_TYPES",
    "RECORDING",
    "WAITING",
    "EncodedImage",
    "InvalidSample",
    "Recorder",
    "StreamConfigError",
    "StreamSpec",
    "StreamStats",
    "jpeg_shape",
    "parse_stream",
    "parse_streams",
    "report_path_for",
    "summary_line",
]
