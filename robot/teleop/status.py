"""The recorder's status as one terminal line, for the operator: what is being recorded, and whether it is healthy.

:func:`format_status` turns a ``/recorder/status`` JSON document (robot/recorder/recorder.py ``Recorder.status``)
into ``REC ep 12 | recording 8.4 s | 84 steps | dropped 0 | dead: none | mode ee``. :class:`StatusLine` shows it:
rewritten in place on a terminal, or one log line per change of state (a pipe, a log file, realloop-launch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from typing import Any, TextIO


def short_name(feature: str) -> str:
    """``observation.images.front`` -> ``front``: the stream names an operator knows from the config."""
    for prefix in ("observation.images.", "observation."):
        if feature.startswith(prefix):
            return feature[len(prefix) :]
    return feature


def _streams(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    streams = status.get("streams")
    if not isinstance(streams, Mapping):
        return {}
    return {str(k): v for k, v in streams.items() if isinstance(v, Mapping)}


def dead_streams(status: Mapping[str, Any]) -> list[str]:
    """Short names of the streams the recorder reports dead (silent longer than their ``dead_after``)."""
    return [short_name(f) for f, s in _streams(status).items() if s.get("dead")]


def _last(status: Mapping[str, Any]) -> str | None:
    last = status.get("last")
    if not isinstance(last, Mapping):
        return None
    if last.get("outcome") != "committed":
        return f"last {last.get('outcome')}"
    success = {True: "success", False: "failure", None: "unlabelled"}.get(last.get("success"), "?")
    return f"last ep {last.get('episode')} {success}"


def format_status(
    status: Mapping[str, Any], mode: str | None = None, stale_s: float | None = None, rate_hz: float | None = None
) -> str:
    """One line for ``/recorder/status``: ``REC ep 12 | recording 8.4 s | 84 steps | dropped 0 | dead: none``.

    ``mode``: the teleop mode to append (``ee``, ``joint``, ``base``); ``stale_s``: seconds since the last status
    arrived, shown when the recorder has gone quiet (it publishes every ``status_period`` while alive);
    ``rate_hz``: the robot's control rate, which turns the recording time into steps (the samples a policy at that
    rate trains on: the streams' own counts run at their rates, 100 Hz joint states, 30 fps cameras); None: no
    steps."""
    state = status.get("state")
    parts: list[str] = []
    if state == "recording":
        streams = _streams(status)
        dropped = sum(int(s.get("dropped") or 0) for s in streams.values())
        dead = dead_streams(status)
        elapsed = float(status.get("elapsed_s") or 0.0)
        parts += [f"REC ep {status.get('episode')}", f"recording {elapsed:.1f} s"]
        if rate_hz:
            parts.append(f"{int(elapsed * rate_hz + 1e-6)} steps")  # 8.4 s at 10 Hz: 84, not 83.99999
        parts += [f"dropped {dropped}", f"dead: {', '.join(dead) if dead else 'none'}"]
        invalid = sum(int(s.get("invalid") or 0) for s in streams.values())
        if invalid:
            parts.append(f"invalid {invalid}")
    elif state == "idle":
        n = int(status.get("episodes") or 0)
        parts += ["idle", f"{n} episode{'' if n == 1 else 's'}"]
        last = _last(status)
        if last:
            parts.append(last)
    elif state == "waiting":
        waiting = [short_name(str(f)) for f in status.get("waiting_for") or []]
        parts.append(f"waiting for a first frame of {', '.join(waiting) if waiting else 'the streams'}")
        if status.get("start_pending"):
            parts.append("start pending")
    elif state == "stopped":
        n = int(status.get("episodes") or 0)
        parts += ["recorder stopped", f"{n} episode{'' if n == 1 else 's'}"]
    else:
        parts.append(f"recorder {state}")
    if stale_s is not None:
        parts.append(f"no recorder status for {stale_s:.0f} s")
    if mode:
        parts.append(f"mode {mode}")
    return " | ".join(parts)


def status_key(status: Mapping[str, Any]) -> Hashable:
    """What is worth a log line when it changes: state, episode, dead streams, the last outcome (not the elapsed
    time or the counts, which change with every status)."""
    last = status.get("last")
    last_key = (last.get("episode"), last.get("outcome"), last.get("success")) if isinstance(last, Mapping) else None
    return (status.get("state"), status.get("episode"), tuple(dead_streams(status)), last_key)


class StatusLine:
    """Shows a status line on ``stream``: rewritten in place when ``live`` (default: ``stream`` is a terminal),
    else logged on ``log`` when its key changes. While a live line is up, :meth:`clear` it before other output
    (:meth:`install` does that for log records) and :meth:`redraw` it afterwards."""

    def __init__(self, stream: TextIO, log: logging.Logger, live: bool | None = None) -> None:
        self.stream, self.log = stream, log
        self.live = stream.isatty() if live is None else live
        self.text = ""
        self._key: Hashable = None
        self._shown = False  # a live line is on the terminal's current line
        self._filter: _ClearBeforeLog | None = None

    def show(self, text: str, key: Hashable) -> None:
        """The new line: drawn in place (live), or logged when ``key`` differs from the last one's."""
        if self.live:
            if text != self.text or not self._shown:  # called every teleop tick: write only what changed
                self.text = text
                self.redraw()
        elif key != self._key:
            self.log.info("%s", text)
        self.text, self._key = text, key

    def redraw(self) -> None:
        if not (self.live and self.text):
            return
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):  # not a terminal after all (a test's StringIO)
            width = 0
        width = width or 120  # a terminal that reports no size (a fresh pseudo-terminal)
        # a line longer than the terminal wraps, and a carriage return would then rewrite only its last row
        text = self.text if len(self.text) < width else self.text[: max(width - 4, 1)] + "..."
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase a live line, so what is printed next starts at the line's beginning."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def install(self) -> None:
        """Clear the live line before each log record (they go to the same terminal)."""
        if self.live and self._filter is None:
            self._filter = _ClearBeforeLog(self)
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._filter)

    def close(self) -> None:
        """Leave the terminal on a fresh line (the shell prompt after exit must not overwrite the status)."""
        if self._filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._filter)
            self._filter = None
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


class _ClearBeforeLog(logging.Filter):
    """A handler filter that lets every record through, after erasing the live status line."""

    def __init__(self, line: StatusLine) -> None:
        super().__init__()
        self.line = line

    def filter(self, record: logging.LogRecord) -> bool:
        self.line.clear()
        return True
