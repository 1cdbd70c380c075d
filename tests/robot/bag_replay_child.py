"""Child process for the rosbag2 replay test: publishes every message of a bag, as the raw CDR bytes the bag
holds, on its topic over DDS, then stays up (the topics are transient-local, so a subscriber that matches late
still gets the whole history) until SIGINT/SIGTERM.

Run as ``python bag_replay_child.py BAG`` with ROS_DOMAIN_ID / ROS_LOCALHOST_ONLY set. Prints
``published <n>`` once every message is written.
"""

from __future__ import annotations

import signal
import sys

from rosbags.rosbag2 import Reader

from realloop.robot.msgs import REGISTRY
from realloop.robot.node import Node
from realloop.robot.transport import QoS

# Reliable and deep enough to hold the whole bag: nothing may be dropped, whenever the subscriber matches.
REPLAY_QOS = QoS(reliable=True, depth=1000, transient_local=True)


def main(bag: str) -> int:
    node = Node("bag_replay", transport="dds")
    signal.signal(signal.SIGINT, lambda *_: node.shutdown())
    signal.signal(signal.SIGTERM, lambda *_: node.shutdown())
    n = 0
    with Reader(bag) as reader:
        pubs = {c.id: node.create_publisher(c.topic, REGISTRY[c.msgtype], qos=REPLAY_QOS) for c in reader.connections}
        for conn, _t, raw in reader.messages():
            pubs[conn.id].publish_raw(bytes(raw))
            n += 1
    print(f"published {n}", flush=True)
    node.spin(duration=120)  # a safety net: the test stops us long before
    node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
