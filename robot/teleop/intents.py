"""Device-independent teleoperation intents: what the operator asks for, before any robot is involved.

Every input device (terminal keyboard, ``/joy``, a local gamepad) turns its raw input into an :class:`Intent`;
the commander (:mod:`realloop.robot.teleop.commander`) turns intents into robot commands. So a new device
only needs a mapping to intents, and a new robot only needs a commander.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

# Motion channels, in Intent.motion order. For an arm: end-effector linear (x, y, z) and angular (roll, pitch,
# yaw) velocity in the robot's base frame; in joint mode channel i jogs joint i (of the selected page of joints).
# For a legged base: x, y forward/left velocity and yaw rate.
MOTION_AXES = ("x", "y", "z", "roll", "pitch", "yaw")


class Event(str, enum.Enum):
    """One-shot operator commands (a key press, a button's rising edge)."""

    START = "start"  # recorder: begin an episode
    STOP = "stop"  # recorder: end the episode (no label)
    SUCCESS = "success"  # recorder: end the episode as a success
    FAILURE = "failure"  # recorder: end the episode as a failure
    DISCARD = "discard"  # recorder: drop the episode
    INTERVENTION = "intervention"  # toggle the /intervention flag (a human overrides the running policy)
    GRIPPER = "gripper"  # toggle the gripper open / closed
    MODE = "mode"  # switch arm teleop between end-effector and joint mode
    NEXT_JOINTS = "next_joints"  # joint mode: jog the next six joints (robots with more than six)
    HOME = "home"  # move back to the default pose (at a bounded speed; any motion input cancels it)
    HALT = "halt"  # stop all motion now (keyboard: motion keys keep acting for a short hold time)
    HELP = "help"  # print the key help again
    QUIT = "quit"  # leave the teleop node


EPISODE_EVENTS = (Event.START, Event.STOP, Event.SUCCESS, Event.FAILURE, Event.DISCARD)


@dataclass
class Intent:
    """What the operator wants now: ``motion`` (6,) and ``gripper`` in [-1, 1] as fractions of the configured
    maximum speeds (gripper: + opens, - closes), and the one-shot ``events`` since the last intent."""

    motion: np.ndarray = field(default_factory=lambda: np.zeros(len(MOTION_AXES)))
    gripper: float = 0.0
    events: list[Event] = field(default_factory=list)

    @property
    def moving(self) -> bool:
        """Whether any continuous input (motion or gripper) is non-zero."""
        return bool(np.any(self.motion != 0.0) or self.gripper != 0.0)

    @property
    def linear(self) -> np.ndarray:
        return self.motion[:3]

    @property
    def angular(self) -> np.ndarray:
        return self.motion[3:]

    @staticmethod
    def combine(intents: Iterable[Intent]) -> Intent:
        """Several devices at once: motions add (then clip to [-1, 1]), events concatenate in order."""
        out = Intent()
        for i in intents:
            out.motion = out.motion + i.motion
            out.gripper += i.gripper
            out.events.extend(i.events)
        out.motion = np.clip(out.motion, -1.0, 1.0)
        out.gripper = float(np.clip(out.gripper, -1.0, 1.0))
        return out


def parse_action(text: str) -> tuple[str, float] | Event:
    """A key or button binding: ``+x``/``-yaw``/``+gripper`` (a motion channel and its sign) or an event name.

    Raises ValueError naming the valid choices, so a typo in a key map fails at start-up.
    """
    t = str(text).strip().lower()
    if t[:1] in "+-" and t[1:] in (*MOTION_AXES, "gripper"):
        return t[1:], 1.0 if t[0] == "+" else -1.0
    try:
        return Event(t)
    except ValueError:
        pass
    channels = ", ".join(f"+{a}/-{a}" for a in (*MOTION_AXES, "gripper"))
    events = ", ".join(e.value for e in Event)
    raise ValueError(f"unknown teleop action {text!r}: use a motion ({channels}) or an event ({events})")
