"""Ctrl-C and SIGTERM (a scheduler's or ``docker stop``'s) as a request to stop a training loop after its current
step, so that it can checkpoint that step; a second signal stops at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """``requested`` turns true at the first SIGINT or SIGTERM; a second raises ``KeyboardInterrupt``. Handlers are
    installed only in the main thread (Python's rule) by :meth:`install` and put back by :meth:`restore`."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # a second one: stop now, without a checkpoint of this step
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
