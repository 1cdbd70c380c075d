"""A command source in its own process, for the safety filter's fault-injection tests (which SIGKILL it).

Publishes joint positions ``base + amplitude * sin(2 pi t / period)`` on the first joint at ``--rate`` Hz on
``<prefix>/<controller>/commands``, on the domain in ROS_DOMAIN_ID, and prints ``ready`` once it publishes.

    python command_source_child.py --rate 20 --amplitude 0.3 --period 4 0 0.45 1.62 0 1.07 0
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from realloop.robot.msgs import Float64MultiArray
from realloop.robot.node import Node


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=float, nargs="+", help="joint positions, spec order")
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--amplitude", type=float, default=0.0, help="rad, on the first joint")
    ap.add_argument("--period", type=float, default=4.0, help="s")
    ap.add_argument("--topic", default="/unsafe/arm_controller/commands")
    args = ap.parse_args()

    node = Node("command_source", transport="dds")
    pub = node.create_publisher(args.topic, Float64MultiArray)
    base = np.array(args.base)
    t0 = time.monotonic()

    def send() -> None:
        q = base.copy()
        q[0] += args.amplitude * math.sin(2 * math.pi * (time.monotonic() - t0) / args.period)
        pub.publish(Float64MultiArray(data=q))

    node.create_timer(1.0 / args.rate, send)
    print("ready", flush=True)
    node.spin()  # until killed: the tests never stop it cleanly


if __name__ == "__main__":
    main()
