"""Teleoperation: input devices (terminal keyboard, ``sensor_msgs/Joy``, a local gamepad) to device-independent
intents, and intents to robot commands (arm joint targets through IK on the robot's MJCF, or a base's cmd_vel).

The ROS 2 node is :mod:`realloop.robot.nodes.teleop` (``realloop-teleop``).
"""

from .commander import ArmCommander, BaseCommander, make_commander
from .gamepad import LAYOUTS, JoyMapper, LocalGamepad
from .intents import EPISODE_EVENTS, MOTION_AXES, Event, Intent, parse_action
from .keyboard import DEFAULT_KEYMAP, KeyboardMapper, KeyReader, NotATerminal, parse_keys

__all__ = [
    "DEFAULT_KEYMAP",
    "EPISODE_EVENTS",
    "LAYOUTS",
    "MOTION_AXES",
    "ArmCommander",
    "BaseCommander",
    "Event",
    "Intent",
    "JoyMapper",
    "KeyReader",
    "KeyboardMapper",
    "LocalGamepad",
    "NotATerminal",
    "make_commander",
    "parse_action",
    "parse_keys",
]
