"""Terminal keyboard teleop: no display, no X server, works over ssh.

:class:`KeyReader` puts a tty (a file descriptor, stdin by default) into cbreak mode (no line buffering, no echo;
Ctrl-C still raises SIGINT), reads key presses without blocking and restores the terminal on close, at exit
and on errors. :func:`parse_keys` turns the bytes a terminal sends into key names, escape sequences for arrows
and the like included. :class:`KeyboardMapper` turns key names into :class:`~.intents.Intent` objects.

A terminal reports presses only, never releases; a motion key therefore acts for ``hold_s`` after each press
(the terminal's auto-repeat keeps a held key going) and ``halt`` stops everything at once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import sys
import termios
from collections.abc import Iterable, Mapping

import numpy as np

from .intents import EPISODE_EVENTS, MOTION_AXES, Event, Intent, parse_action

ESC = 0x1B

# final byte of a CSI (ESC [) or SS3 (ESC O) sequence -> key name
_CSI_FINAL = {
    "A": "up",
    "B": "down",
    "C": "right",
    "D": "left",
    "H": "home",
    "F": "end",
    "P": "f1",
    "Q": "f2",
    "R": "f3",
    "S": "f4",
    "Z": "shift+tab",
}
# ESC [ <n> ~ -> key name
_CSI_TILDE = {
    1: "home",
    2: "insert",
    3: "delete",
    4: "end",
    5: "pageup",
    6: "pagedown",
    7: "home",
    8: "end",
    15: "f5",
    17: "f6",
    18: "f7",
    19: "f8",
    20: "f9",
    21: "f10",
    23: "f11",
    24: "f12",
}
_CONTROL = {0x09: "tab", 0x0A: "enter", 0x0D: "enter", 0x7F: "backspace", 0x08: "backspace", 0x00: "ctrl+space"}


def parse_keys(data: bytes, final: bool = False) -> tuple[list[str], bytes]:
    """Split terminal input into key names; returns ``(keys, rest)``.

    Printable characters are themselves (``"w"``, ``"W"``, ``"?"``, ``"é"``); space is ``"space"``; control
    keys are ``"enter"``, ``"tab"``, ``"backspace"``, ``"esc"``, ``"ctrl+a"``...; escape sequences become
    ``"up"``, ``"down"``, ``"left"``, ``"right"``, ``"pageup"``, ``"home"``, ``"f5"``... (modifiers such as
    Ctrl+arrow are dropped: ``ESC [1;5A`` is ``"up"``); ``ESC x`` is ``"alt+x"``.

    ``rest`` is an incomplete tail (a lone ESC, a cut escape sequence, a cut UTF-8 character) to prepend to the
    next read. With ``final=True`` (no more bytes came), a lone ESC is the Escape key and nothing is held back.
    """
    keys: list[str] = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == ESC:
            if i + 1 >= n:
                if not final:
                    return keys, data[i:]
                keys.append("esc")
                i += 1
                continue
            nxt = data[i + 1]
            if nxt in (ord("["), ord("O")):
                # CSI: ESC [ params (0x30-0x3F)* intermediates (0x20-0x2F)* final (0x40-0x7E); SS3: ESC O final
                j = i + 2
                while j < n and 0x20 <= data[j] <= 0x3F:
                    j += 1
                if j >= n:
                    if not final:
                        return keys, data[i:]
                    keys.append("esc")  # a cut sequence at the very end: treat what we have as plain keys
                    i += 1
                    continue
                fin = chr(data[j])
                params = data[i + 2 : j].decode("ascii", "replace")
                if fin == "~":
                    first = params.split(";")[0]
                    keys.append(
                        _CSI_TILDE.get(int(first), f"unknown:{params}~") if first.isdigit() else f"unknown:{params}~"
                    )
                elif fin in _CSI_FINAL:
                    keys.append(_CSI_FINAL[fin])
                else:
                    keys.append(f"unknown:{params}{fin}")
                i = j + 1
                continue
            if 0x21 <= nxt <= 0x7E:  # Alt+key sends ESC then the key
                keys.append(f"alt+{chr(nxt)}")
                i += 2
                continue
            keys.append("esc")  # ESC ESC, ESC space, ...: a plain Escape, then the next key on its own
            i += 1
            continue
        if b in _CONTROL:
            keys.append(_CONTROL[b])
            i += 1
        elif b < 0x20:
            keys.append(f"ctrl+{chr(b + 0x60)}")
            i += 1
        elif b == 0x20:
            keys.append("space")
            i += 1
        elif b < 0x80:
            keys.append(chr(b))
            i += 1
        else:  # UTF-8: the lead byte says how many bytes the character has
            size = 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 1
            if i + size > n and not final:
                return keys, data[i:]
            keys.append(data[i : i + size].decode("utf-8", "replace"))
            i += size
    return keys, b""


class NotATerminal(OSError):
    """The file descriptor given to :class:`KeyReader` is not a terminal (e.g. stdin under a launcher)."""


class KeyReader:
    """Key presses from a terminal, without blocking: ``with KeyReader() as keys: keys.read()``.

    ``fd`` is the terminal's file descriptor (default: stdin). The terminal is switched to cbreak mode when the
    reader opens and restored when it closes (also at interpreter exit, should the owner forget). Raises
    :class:`NotATerminal` when ``fd`` is not a tty.
    """

    def __init__(self, fd: int | None = None, escape_timeout: float = 0.03):
        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise NotATerminal(
                f"stdin (fd {self.fd}) is not a terminal"
                if self.fd == 0
                else f"file descriptor {self.fd} is not a terminal"
            )
        try:
            foreground = os.tcgetpgrp(self.fd)
        except OSError:
            foreground = None  # not our controlling terminal: job control does not apply
        if foreground is not None and foreground != os.getpgrp():
            # changing a terminal's mode from a background job (``realloop-teleop &``) would stop the process
            raise NotATerminal("running as a background job (the terminal belongs to the foreground job)")
        self.escape_timeout = escape_timeout
        self._saved: list | None = None
        self._pending = b""

    def open(self) -> KeyReader:
        if self._saved is not None:
            return self
        self._saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        # cbreak: bytes arrive as typed and are not echoed; ISIG stays on so Ctrl-C still stops the process, and
        # output processing (OPOST) stays on so log lines keep their line breaks
        mode[3] &= ~(termios.ICANON | termios.ECHO)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)  # TCSANOW keeps keys typed before the switch
        atexit.register(self.close)
        return self

    def close(self) -> None:
        """Restore the terminal; keys typed but not read are dropped so they do not spill into the shell."""
        if self._saved is None:
            return
        saved, self._saved = self._saved, None
        atexit.unregister(self.close)
        with contextlib.suppress(termios.error):  # the terminal went away (ssh dropped): nothing to restore
            termios.tcsetattr(self.fd, termios.TCSAFLUSH, saved)

    def __enter__(self) -> KeyReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._saved is not None

    def _readable(self, timeout: float) -> bool:
        return bool(select.select([self.fd], [], [], max(timeout, 0.0))[0])

    def read(self, timeout: float = 0.0) -> list[str]:
        """Keys pressed since the last call; waits up to ``timeout`` s for the first byte. Raises EOFError (or
        OSError) once the terminal has gone away."""
        data = self._pending
        if self._readable(timeout if not data else 0.0):
            chunk = os.read(self.fd, 1024)
            if not chunk:
                raise EOFError(f"end of input on fd {self.fd}")
            data += chunk
        keys, rest = parse_keys(data)
        # an escape sequence arrives in one write; if its tail has not come within escape_timeout, it never will
        while rest and self._readable(self.escape_timeout):
            chunk = os.read(self.fd, 1024)
            if not chunk:
                break
            more, rest = parse_keys(rest + chunk)
            keys += more
        if rest:
            more, rest = parse_keys(rest, final=True)
            keys += more
        self._pending = rest
        return keys


# the default key map (configs/node/teleop.yaml carries the same, so users see and edit it)
DEFAULT_KEYMAP: dict[str, str] = {
    "w": "+x", "s": "-x", "a": "+y", "d": "-y", "r": "+z", "f": "-z",
    "z": "+roll", "x": "-roll", "t": "+pitch", "g": "-pitch", "c": "+yaw", "v": "-yaw", "q": "+yaw", "e": "-yaw",
    "up": "+x", "down": "-x", "left": "+y", "right": "-y", "pageup": "+z", "pagedown": "-z",
    "space": "gripper", ".": "+gripper", ",": "-gripper",
    "n": "start", "m": "stop", "y": "success", "u": "failure", "k": "discard", "backspace": "discard",
    "i": "intervention", "j": "mode", "p": "next_joints", "h": "home", "0": "halt", "?": "help",
    "ctrl+d": "quit",
}  # fmt: skip


class KeyboardMapper:
    """Key names to intents with a configurable key map (key name -> ``+x``/``-yaw``/``+gripper``/event name).

    Keys are matched exactly, then in lower case (so caps lock does not break teleop). A motion key sets its
    channel to +-1 for ``hold_s`` seconds after the last press; the newest key of a channel wins.
    """

    def __init__(self, keymap: Mapping[str, str] | None = None, hold_s: float = 0.2):
        if not hold_s > 0:
            raise ValueError(f"keyboard hold_s must be > 0 s, got {hold_s}")
        self.hold_s = float(hold_s)
        keymap = DEFAULT_KEYMAP if keymap is None else keymap
        # a key bound to null in config is unbound (how a user frees a default key)
        self.bindings = {str(k): parse_action(v) for k, v in keymap.items() if v is not None}
        self._channels = (*MOTION_AXES, "gripper")
        self._value = dict.fromkeys(self._channels, 0.0)
        self._until = dict.fromkeys(self._channels, -np.inf)

    def action(self, key: str) -> tuple[str, float] | Event | None:
        return self.bindings.get(key, self.bindings.get(key.lower()))

    def update(self, keys: Iterable[str], now: float) -> Intent:
        """The intent after ``keys`` were pressed (at wall time ``now``, seconds)."""
        events: list[Event] = []
        for key in keys:
            act = self.action(key)
            if act is None:
                continue
            if isinstance(act, Event):
                if act is Event.HALT:
                    self.halt()
                events.append(act)
            else:
                channel, sign = act
                self._value[channel] = sign
                self._until[channel] = now + self.hold_s
        live = {c: (self._value[c] if now < self._until[c] else 0.0) for c in self._channels}
        return Intent(np.array([live[a] for a in MOTION_AXES]), live["gripper"], events)

    def halt(self) -> None:
        """Forget every held motion key."""
        self._until = dict.fromkeys(self._channels, -np.inf)

    def help_lines(
        self, channels: Iterable[str] = (*MOTION_AXES, "gripper"), events: Iterable[Event] = tuple(Event)
    ) -> list[str]:
        """A compact key help (motion pairs, gripper, episode keys, the rest) for the channels and events that
        the robot at hand uses."""
        channels, event_names = set(channels), {e.value for e in events}
        by_action: dict[str, list[str]] = {}
        for key, act in self.bindings.items():
            if isinstance(act, Event):
                name, used = act.value, act.value in event_names
            else:
                name, used = f"{'+' if act[1] > 0 else '-'}{act[0]}", act[0] in channels
            if used:
                by_action.setdefault(name, []).append(key)

        def keys(name: str) -> str:
            return ",".join(by_action.pop(name, [])) or "-"

        def pairs(axes: Iterable[str]) -> str:
            return "   ".join(f"{a}: {keys('+' + a)} / {keys('-' + a)}" for a in axes)

        lines = []
        for label, axes in (("move    ", MOTION_AXES[:3]), ("rotate  ", MOTION_AXES[3:])):
            if channels & set(axes):
                lines.append(label + pairs(a for a in axes if a in channels))
        grip = [
            f"{keys(n)} {label}"
            for n, label in (("gripper", "toggle"), ("+gripper", "open"), ("-gripper", "close"))
            if n in by_action
        ]
        if grip:
            lines.append("gripper " + ", ".join(grip))
        lines.append(
            "episode " + ", ".join(f"{keys(e.value)} {e.value}" for e in EPISODE_EVENTS if e.value in by_action)
        )
        rest = [f"{','.join(k)} {name}" for name, k in by_action.items() if name[:1] not in "+-"]
        lines.append("other   " + ", ".join(rest))
        return lines
