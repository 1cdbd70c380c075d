"""Safety between command sources and the robot: limits, rate limits, workspace box, watchdog, latched e-stop.

The core (:class:`SafetyFilter`) is transport-free; ``realloop-node safety_filter`` runs it as a ROS 2 node.
"""

from realloop.robot.safety.filter import ESTOP, HOLD, OK, Decision, SafetyConfig, SafetyFilter, TickOutput

__all__ = ["ESTOP", "HOLD", "OK", "Decision", "SafetyConfig", "SafetyFilter", "TickOutput"]
