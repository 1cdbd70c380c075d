"""The recorder's status in the teleop terminal: the line format (a pure function), the in-place / log-line
display, and two teleop processes on real DDS, one on a pseudo-terminal (the line rewritten in place) and one
with its output in a file (a log line per change of state)."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import node_env

from realloop.robot.msgs import String
from realloop.robot.node import Node
from realloop.robot.teleop.status import StatusLine, format_status, status_key

TIMEOUT = 60.0


def recording(elapsed: float = 8.42, dead_wrist: bool = False) -> dict[str, Any]:
    """A /recorder/status while recording, as robot/recorder/recorder.py writes it."""

    def stream(written: int, dropped: int = 0, dead: bool = False) -> dict[str, Any]:
        return {"received": written, "written": written, "dropped": dropped, "non_monotonic": 0, "invalid": 0} | {
            "dead": dead,
            "heard": written + 10,
        }

    return {
        "state": "recording",
        "dataset": "outputs/recordings/arm.zarr",
        "episode": 12,
        "episodes": 12,
        "elapsed_s": elapsed,
        "streams": {
            "observation.state": stream(842),
            "action": stream(84),
            "observation.images.front": stream(250, dropped=1),
            "observation.images.wrist": stream(240, dropped=2, dead=dead_wrist),
        },
        "last": {"episode": 11, "outcome": "committed", "success": True, "ended_by": "success"},
    }


def idle(episodes: int = 13, success: bool | None = True, outcome: str = "committed") -> dict[str, Any]:
    last = {"episode": episodes - 1, "outcome": outcome, "success": success, "ended_by": "x"}
    return {"state": "idle", "episode": None, "episodes": episodes, "elapsed_s": None, "streams": {}, "last": last}


def test_recording_line() -> None:
    assert format_status(recording(), "ee", rate_hz=10) == (
        "REC ep 12 | recording 8.4 s | 84 steps | dropped 3 | dead: none | mode ee"
    )
    # steps at the control rate, not a stream's samples (100 Hz joint states, 30 fps cameras); none without a rate
    assert (
        format_status(recording(2.0), rate_hz=50) == "REC ep 12 | recording 2.0 s | 100 steps | dropped 3 | dead: none"
    )
    assert format_status(recording(dead_wrist=True)) == "REC ep 12 | recording 8.4 s | dropped 3 | dead: wrist"


def test_other_states() -> None:
    assert format_status(idle(), "joint") == "idle | 13 episodes | last ep 12 success | mode joint"
    assert format_status(idle(1, None)) == "idle | 1 episode | last ep 0 unlabelled"
    assert format_status(idle(2, False)) == "idle | 2 episodes | last ep 1 failure"
    assert format_status(idle(2, None, "discarded")) == "idle | 2 episodes | last discarded"
    waiting = {"state": "waiting", "waiting_for": ["observation.images.front"], "start_pending": True}
    assert format_status(waiting, "base") == "waiting for a first frame of front | start pending | mode base"
    assert format_status({"state": "stopped", "episodes": 4}) == "recorder stopped | 4 episodes"
    assert format_status(idle(), "ee", stale_s=4.2) == (
        "idle | 13 episodes | last ep 12 success | no recorder status for 4 s | mode ee"
    )
    assert format_status({}) == "recorder None"  # whatever arrives, one line and no exception


def test_the_log_key_ignores_what_changes_every_status() -> None:
    assert status_key(recording(8.4)) == status_key(recording(9.9))
    assert status_key(recording()) != status_key(recording(dead_wrist=True))
    assert status_key(recording()) != status_key(idle())
    assert status_key(idle(13)) != status_key(idle(14))


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_in_place_on_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    out = FakeTTY()
    line = StatusLine(out, logging.getLogger("t"))
    assert line.live
    line.show("a", 1)
    line.show("a", 1)  # unchanged: nothing written
    line.show("b", 1)
    assert out.getvalue() == "\r\x1b[Ka\r\x1b[Kb"
    handler = logging.StreamHandler(out)
    logging.getLogger().addHandler(handler)
    try:
        line.install()
        logging.getLogger("t").warning("news")  # starts on a cleared line
        line.show("b", 1)  # redrawn after it
        line.close()
    finally:
        logging.getLogger().removeHandler(handler)
    assert out.getvalue() == "\r\x1b[Ka\r\x1b[Kb\r\x1b[Knews\n\r\x1b[Kb\n"
    assert not handler.filters  # close() removes its filter


def test_status_line_logs_changes_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    line = StatusLine(out, logging.getLogger("t"))
    assert not line.live
    with caplog.at_level(logging.INFO, logger="t"):
        line.show("REC ep 1 | recording 0.1 s", "rec")
        line.show("REC ep 1 | recording 0.6 s", "rec")
        line.show("idle | 2 episodes", "idle")
        line.close()
    assert [r.getMessage() for r in caplog.records] == ["REC ep 1 | recording 0.1 s", "idle | 2 episodes"]
    assert out.getvalue() == ""


class Pty:
    """The master side of a pseudo-terminal, read without blocking into ``text``."""

    def __init__(self, master: int) -> None:
        self.master, self.text = master, ""

    def read_until(self, node: Node, pred: Callable[[str], bool]) -> bool:
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end:
            while select.select([self.master], [], [], 0)[0]:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the child closed its side
                    return pred(self.text)
            if pred(self.text):
                return True
            node.spin(0.05)
        return False


def test_teleop_shows_the_recorder_status(start_node, test_node: Node, domain_id: int) -> None:
    current: list[dict[str, Any] | None] = [None]
    pub = test_node.create_publisher("/recorder/status", String, qos="latched")
    test_node.create_timer(0.3, lambda: current[0] is not None and pub.publish(String(json.dumps(current[0]))))

    logged = start_node("teleop")  # output to a file: a log line per change of state
    master, slave = pty.openpty()
    term = Pty(master)
    live = subprocess.Popen(  # the operator's terminal: keyboard on stdin, the status line on stdout
        [sys.executable, "-m", "realloop.robot.nodes", "teleop"],
        env=node_env(domain_id),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    try:
        assert term.read_until(test_node, lambda t: "teleop: arm6 arm" in t), term.text
        assert test_node.spin_until(lambda: "teleop: arm6 arm" in logged.log_text(), TIMEOUT), logged.log_text()

        rec_line = "REC ep 12 | recording 8.4 s | 84 steps | dropped 3 | dead: none | mode ee"
        current[0] = recording(8.42)
        assert term.read_until(test_node, lambda t: "\r\x1b[K" + rec_line in t), term.text
        assert test_node.spin_until(lambda: rec_line in logged.log_text(), TIMEOUT), logged.log_text()
        current[0] = recording(9.04, dead_wrist=True)  # in place on the terminal; a dead stream is news in the log
        assert term.read_until(
            test_node,
            lambda t: "\r\x1b[KREC ep 12 | recording 9.0 s | 90 steps | dropped 3 | dead: wrist | mode ee" in t,
        ), term.text[-500:]
        assert test_node.spin_until(lambda: "dead: wrist" in logged.log_text(), TIMEOUT), logged.log_text()
        current[0] = idle()
        idle_line = "idle | 13 episodes | last ep 12 success | mode ee"
        assert term.read_until(test_node, lambda t: "\r\x1b[K" + idle_line in t), term.text[-500:]
        assert test_node.spin_until(lambda: idle_line in logged.log_text(), TIMEOUT), logged.log_text()

        current[0] = None  # the recorder goes quiet
        assert term.read_until(test_node, lambda t: "no recorder status for 3 s" in t), term.text[-500:]
        assert test_node.spin_until(lambda: "no recorder status" in logged.log_text(), TIMEOUT), logged.log_text()

        os.write(master, b"\x04")  # Ctrl-D: quit; its log line starts on a cleared line, not after the status
        assert live.wait(TIMEOUT) == 0, term.text[-2000:]
        term.read_until(test_node, lambda t: "quit" in t)
        assert re.search(r"\r\x1b\[K\[INFO\] \[teleop\] quit", term.text), term.text[-500:]
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
        os.close(master)
        os.close(slave)

    log = logged.log_text()
    assert log.count("REC ep 12 |") == 2, log  # started, then the wrist went dead: not one line per status
    assert log.count(idle_line) == 1, log
    assert "\r" not in log and "\x1b" not in log  # no terminal control in a log file


def test_a_long_line_is_cut_to_the_terminal_width() -> None:
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 20, 0, 0))  # 20 columns
        with open(slave, "w", closefd=False) as out:
            line = StatusLine(out, logging.getLogger("t"))
            assert line.live
            line.show("REC ep 12 | recording 8.4 s | 84 steps", 1)
        got = os.read(master, 1024).decode()
        assert got == "\r\x1b[KREC ep 12 | reco..."  # a wrapped line could not be rewritten in place
    finally:
        os.close(master)
        os.close(slave)
