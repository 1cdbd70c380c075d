"""Gamepad teleop: ``sensor_msgs/Joy`` axes and buttons to intents, and a local gamepad read through SDL.

:class:`JoyMapper` maps a Joy message (from ``/joy``, published by ROS 2's ``joy`` package, or from
:class:`LocalGamepad`) to an :class:`~.intents.Intent` with a configurable mapping. Layout presets:

- ``xbox`` (default): ROS 2 ``game_controller_node`` (SDL's GameController database, so every supported pad
  -- Xbox, PlayStation, Switch Pro -- has this order) and :class:`LocalGamepad`. Axes: 0 left stick x (left
  +), 1 left stick y (up +), 2 right stick x, 3 right stick y, 4 left trigger, 5 right trigger (0 released, -1
  pressed). Buttons: 0 A, 1 B, 2 X, 3 Y, 4 back, 5 guide, 6 start, 7 left stick, 8 right stick, 9 LB, 10 RB,
  11-14 d-pad up/down/left/right.
- ``xbox_joy_node``: ROS 2 ``joy_node`` / ROS 1 ``joy_linux`` with an Xbox pad on Linux (raw joystick order).
  Axes: 0 left x, 1 left y, 2 LT (1 released, -1 pressed), 3 right x, 4 right y, 5 RT, 6 d-pad x, 7 d-pad y.
  Buttons: 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 back, 7 start, 8 guide, 9 left stick, 10 right stick.

Default bindings (both presets): left stick -> x (forward) / y (left); right stick -> z (up) / yaw; d-pad ->
pitch / roll; left trigger opens and right trigger closes the gripper; LB toggles the gripper; RB switches
end-effector / joint mode; start / back / A / B / X -> episode start / stop / success / failure / discard;
Y toggles the intervention flag; right stick click -> home; left stick click -> next joints.

A source is ``axisN``, ``buttonN`` (0 or 1) or ``triggerN`` (0 released .. 1 pressed, from the layout's
trigger range), optionally with a leading ``-``; a channel adds up its sources.

The local gamepad needs pygame (the ``joystick`` extra: ``pip install 'realloop[joystick]'``); it is imported
only when a :class:`LocalGamepad` is created.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..msgs import Joy, header
from .intents import MOTION_AXES, Event, Intent

JOYSTICK_EXTRA = "joystick"

LAYOUTS: dict[str, dict[str, Any]] = {
    "xbox": {
        "trigger_range": [0.0, -1.0],  # [released, pressed]
        "motion": {
            "x": ["axis1"],
            "y": ["axis0"],
            "z": ["axis3"],
            "yaw": ["axis2"],
            "pitch": ["button11", "-button12"],
            "roll": ["button14", "-button13"],
        },
        "gripper": ["trigger4", "-trigger5"],
        "buttons": {
            "start": 6,
            "stop": 4,
            "success": 0,
            "failure": 1,
            "discard": 2,
            "intervention": 3,
            "gripper": 9,
            "mode": 10,
            "home": 8,
            "next_joints": 7,
        },
    },
    "xbox_joy_node": {
        "trigger_range": [1.0, -1.0],
        "motion": {
            "x": ["axis1"],
            "y": ["axis0"],
            "z": ["axis4"],
            "yaw": ["axis3"],
            "pitch": ["axis7"],
            "roll": ["-axis6"],
        },
        "gripper": ["trigger2", "-trigger5"],
        "buttons": {
            "start": 7,
            "stop": 6,
            "success": 0,
            "failure": 1,
            "discard": 2,
            "intervention": 3,
            "gripper": 4,
            "mode": 5,
            "home": 10,
            "next_joints": 9,
        },
    },
}

_SOURCE = re.compile(r"^\s*([+-]?)\s*(axis|button|trigger)\s*(\d+)\s*$")


@dataclass(frozen=True)
class Source:
    """One input feeding a channel: an axis, a button (0/1) or a trigger (0 released .. 1 pressed), signed."""

    kind: str
    index: int
    sign: float = 1.0

    @staticmethod
    def parse(text: str) -> Source:
        m = _SOURCE.match(str(text))
        if not m:
            raise ValueError(f"bad joy source {text!r}: expected axisN, buttonN or triggerN, optionally with '-'")
        return Source(m.group(2), int(m.group(3)), -1.0 if m.group(1) == "-" else 1.0)


def resolve_mapping(layout: str = "xbox", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A layout preset with per-entry overrides (``motion``, ``gripper``, ``buttons``, ``trigger_range``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown joy layout {layout!r}; known: {', '.join(LAYOUTS)}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in LAYOUTS[layout].items()}
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"unknown joy mapping key {key!r}; known: {', '.join(out)}")
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key].update(value)
        else:
            out[key] = value
    return out


class JoyMapper:
    """``sensor_msgs/Joy`` -> :class:`Intent`. Motion channels below ``deadzone`` read 0; events fire on a
    button's rising edge. With ``enable_button`` set, motion counts only while that button is held (a
    dead-man switch); with ``timeout_s`` > 0, :meth:`current` reads no motion once messages stop coming (a
    driver that died, a pad out of range)."""

    def __init__(
        self,
        layout: str = "xbox",
        mapping: Mapping[str, Any] | None = None,
        deadzone: float = 0.1,
        enable_button: int | None = None,
        timeout_s: float = 0.5,
    ):
        m = resolve_mapping(layout, mapping)
        unknown = sorted(set(m["motion"]) - set(MOTION_AXES))
        if unknown:
            raise ValueError(f"unknown joy motion channel(s) {', '.join(unknown)}; known: {', '.join(MOTION_AXES)}")
        self.motion = {ch: [Source.parse(s) for s in _as_list(srcs)] for ch, srcs in m["motion"].items()}
        self.gripper = [Source.parse(s) for s in _as_list(m["gripper"])]
        self.buttons: dict[Event, int] = {}
        for name, idx in m["buttons"].items():
            if idx is None:
                continue  # a binding switched off in config
            try:
                ev = Event(name)
            except ValueError:
                raise ValueError(
                    f"unknown joy button action {name!r}; known: {', '.join(e.value for e in Event)}"
                ) from None
            self.buttons[ev] = int(idx)
        released, pressed = (float(x) for x in m["trigger_range"])
        if released == pressed:
            raise ValueError(f"joy trigger_range needs distinct released and pressed values, got {m['trigger_range']}")
        self._trigger = (released, pressed)
        if not 0 <= deadzone < 1:
            raise ValueError(f"joy deadzone must be in [0, 1), got {deadzone}")
        self.deadzone = float(deadzone)
        self.enable_button = None if enable_button is None else int(enable_button)
        self.timeout_s = float(timeout_s)
        self._prev_buttons = np.zeros(0, dtype=np.int64)
        self._trigger_live: set[int] = set()
        self._last: Intent = Intent()
        self._last_t = -np.inf

    def _trigger_value(self, axes: np.ndarray, i: int) -> float:
        v = float(axes[i])
        released, pressed = self._trigger
        # joy_linux and some SDL back ends report exactly 0 for a trigger until it is first touched, which reads
        # as half pressed when the layout's rest value is not 0: such a trigger counts once it reports anything else
        if i not in self._trigger_live:
            if v == 0.0 and released != 0.0:
                return 0.0
            self._trigger_live.add(i)
        return float(np.clip((v - released) / (pressed - released), 0.0, 1.0))

    def _channel(self, sources: Sequence[Source], axes: np.ndarray, buttons: np.ndarray) -> float:
        total = 0.0
        for s in sources:
            if s.kind == "button":
                v = float(buttons[s.index] != 0) if s.index < len(buttons) else 0.0
            elif s.index >= len(axes):
                v = 0.0
            elif s.kind == "trigger":
                v = self._trigger_value(axes, s.index)
            else:
                v = float(axes[s.index])
            total += s.sign * v
        total = float(np.clip(total, -1.0, 1.0))
        if abs(total) <= self.deadzone:
            return 0.0
        # rescale so the output starts at 0 just past the deadzone and still reaches 1
        return float(np.sign(total) * (abs(total) - self.deadzone) / (1.0 - self.deadzone))

    def update(self, joy: Joy, now: float | None = None) -> Intent:
        """The intent for a new Joy message; ``now`` (s) is when it arrived (for the timeout)."""
        axes = np.asarray(joy.axes, dtype=float)
        buttons = np.asarray(joy.buttons, dtype=np.int64)
        events = []
        for ev, idx in self.buttons.items():
            pressed = idx < len(buttons) and buttons[idx] != 0
            was = idx < len(self._prev_buttons) and self._prev_buttons[idx] != 0
            if pressed and not was:
                events.append(ev)
        self._prev_buttons = buttons
        enabled = self.enable_button is None or (self.enable_button < len(buttons) and buttons[self.enable_button])
        motion = np.zeros(len(MOTION_AXES))
        gripper = 0.0
        if enabled:
            for k, ch in enumerate(MOTION_AXES):
                motion[k] = self._channel(self.motion.get(ch, ()), axes, buttons)
            gripper = self._channel(self.gripper, axes, buttons)
        self._last = Intent(motion, gripper)
        self._last_t = np.inf if now is None else now
        return Intent(motion.copy(), gripper, events)

    def current(self, now: float) -> Intent:
        """The held motion of the last message (no events), or none after ``timeout_s`` without messages."""
        if self.timeout_s > 0 and now - self._last_t > self.timeout_s:
            return Intent()
        return Intent(self._last.motion.copy(), self._last.gripper)


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


class LocalGamepad:
    """A gamepad on this computer, read through SDL (pygame), as ``sensor_msgs/Joy`` in the ``xbox`` layout.

    Pads in SDL's GameController database (Xbox, PlayStation, Switch Pro and most clones) come out exactly as
    ROS 2's ``game_controller_node`` publishes them (same order, same signs), so one mapping serves both.
    Others come out in raw joystick order (``layout`` says ``"joystick"``): configure a mapping for them.
    No window is opened: SDL runs with its dummy video driver and reads the pad in the background.
    """

    def __init__(self, index: int = 0, deadzone: float = 0.05):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")  # no focused window here, ever
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError as e:
            raise RuntimeError(
                f"reading a local gamepad needs pygame: pip install 'realloop[{JOYSTICK_EXTRA}]' "
                f"(or subscribe to /joy from ROS 2's joy package with device=joy)"
            ) from e
        self._pg = pygame
        pygame.display.init()  # the event queue (which feeds joystick state) lives in the video subsystem
        pygame.joystick.init()
        from pygame._sdl2 import controller

        controller.init()
        count = pygame.joystick.get_count()
        if index >= count:
            pygame.quit()
            raise RuntimeError(f"no gamepad at index {index}: SDL sees {count} joystick(s)")
        self.deadzone = float(deadzone)
        self._pad: Any
        if controller.is_controller(index):
            self._pad = controller.Controller(index)
            self.layout = "xbox"
            self.name = controller.name_forindex(index)
            # pygame's names for SDL_GameControllerAxis / SDL_GameControllerButton, in ROS 2 Joy order
            self._axes = [
                getattr(pygame, f"CONTROLLER_AXIS_{a}")
                for a in ("LEFTX", "LEFTY", "RIGHTX", "RIGHTY", "TRIGGERLEFT", "TRIGGERRIGHT")
            ]
            self._buttons = [
                getattr(pygame, f"CONTROLLER_BUTTON_{b}")
                for b in (
                    "A",
                    "B",
                    "X",
                    "Y",
                    "BACK",
                    "GUIDE",
                    "START",
                    "LEFTSTICK",
                    "RIGHTSTICK",
                    "LEFTSHOULDER",
                    "RIGHTSHOULDER",
                    "DPAD_UP",
                    "DPAD_DOWN",
                    "DPAD_LEFT",
                    "DPAD_RIGHT",
                )
            ]
        else:
            self._pad = pygame.joystick.Joystick(index)
            self.layout = "joystick"
            self.name = self._pad.get_name()

    def read(self, t: float) -> Joy:
        """The pad's state now, stamped ``t`` (s)."""
        pg = self._pg
        pg.event.pump()
        hats: list[float] = []
        if self.layout == "xbox":
            raw = np.array([self._pad.get_axis(a) for a in self._axes], dtype=float) / 32767.0
            buttons = [int(self._pad.get_button(b)) for b in self._buttons]
        else:
            raw = np.array([self._pad.get_axis(i) for i in range(self._pad.get_numaxes())], dtype=float)
            buttons = [int(self._pad.get_button(i)) for i in range(self._pad.get_numbuttons())]
            for h in range(self._pad.get_numhats()):  # each hat as two axes, left and up positive, as joy_node does
                hx, hy = self._pad.get_hat(h)
                hats += [-float(hx), float(hy)]
        # ROS convention (game_controller_node): negate SDL's axes so left / up / forward are positive, and
        # apply a smooth deadzone that still reaches +-1
        mag = np.clip((np.abs(raw) - self.deadzone) / (1.0 - self.deadzone), 0.0, 1.0)
        axes = np.append(-np.sign(raw) * mag, hats)
        return Joy(header(t, "joy"), axes.astype(np.float32), np.array(buttons, dtype=np.int32))

    def close(self) -> None:
        self._pg.quit()
