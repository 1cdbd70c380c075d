"""ChunkSchedule: a policy's action chunks on the control clock, the next one predicted before it is needed.

A chunk predicted from the observation at time ``t0`` holds the actions for ``t0``, ``t0 + 1/rate``, ... Inference
takes time. A runner that asks for the next chunk only when its queue is empty executes that chunk's first action
late and drops the ones whose time passed meanwhile. With delta actions (ee_delta) each dropped action is motion
lost: on the lift task one dropped action per 8-step chunk took a 28/30 policy to 22/30, and two dropped took it to
14/30 (gym rollouts; see docs/ros2.md).

So the schedule starts the next prediction ``lead`` control steps before the queue runs out, in a worker thread,
and the current chunk's actions go on meanwhile. When the new chunk arrives it replaces the queue from its first
action that is not yet due; the old chunk's actions executed meanwhile stand in for the ones before it.
``lead`` follows the measured inference time (its recent maximum, in control periods, rounded up) unless fixed.
When nothing is left to execute (the first chunk of an episode, or inference slower than the lead) the control
loop does not block: its ticks send nothing (counted as ``waits``; the robot holds its last target) and the chunk,
when it comes, is shifted by that wait, so its first action not covered by the old chunk runs at once and none is
dropped. Blocking instead made the tick after the wait come at once, two commands a few milliseconds apart.
A prediction that must read state the control thread changes (the scripted expert reads the task model) runs
inline instead, when the queue is empty, and gets no lead.

Transport-free and driven by explicit times, so it is unit-testable; the policy runner node owns one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

Predict = Callable[[], np.ndarray]


class ChunkSchedule:
    """Action chunks timed at ``rate`` Hz (see the module doc).

    Args:
        rate: control rate (Hz); action ``k`` of a chunk observed at ``t0`` is due at ``t0 + k / rate``.
        lead: control steps of actions left when the next prediction starts; None follows the inference time.
        window: how many recent inference times the automatic lead looks at.
    """

    def __init__(self, rate: float, lead: int | None = None, window: int = 20) -> None:
        if not rate > 0:
            raise ValueError(f"ChunkSchedule: rate must be > 0 Hz, got {rate}")
        if lead is not None and int(lead) < 0:
            raise ValueError(f"ChunkSchedule: lead must be >= 0 control steps or None (automatic), got {lead}")
        self.period = 1.0 / rate
        self.fixed_lead = None if lead is None else int(lead)
        self.latency_s: deque[float] = deque(maxlen=window)
        self.queue: deque[tuple[float, np.ndarray]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._job: tuple[int, float, Future] | None = None  # (generation, observation time, result)
        self._starved_at: float | None = None  # the first tick with nothing to execute while a chunk was due
        self._generation = 0
        self.chunks = 0  # chunks that reached the queue
        self.dropped = 0  # actions whose time passed before they could run
        self.waits = 0  # ticks that sent nothing: a chunk in flight and nothing left to execute

    @property
    def lead(self) -> int:
        """Actions left in the queue when the next background prediction starts."""
        if self.fixed_lead is not None:
            return self.fixed_lead
        if not self.latency_s:
            return 1
        return max(1, math.ceil(max(self.latency_s) / self.period))

    @property
    def in_flight(self) -> bool:
        return self._job is not None

    @property
    def ready(self) -> bool:
        """A prediction in flight has finished: the next :meth:`next_action` takes it in."""
        return self._job is not None and self._job[2].done()

    def clear(self) -> None:
        """Drop the queue and forget an in-flight prediction (its result is discarded when it comes)."""
        self.queue.clear()
        self._generation += 1
        self._job = None
        self._starved_at = None

    def due(self, t: float) -> bool:
        """Whether a prediction should start at time ``t``: none in flight and at most ``lead`` actions left."""
        self._drop_stale(t)
        return self._job is None and len(self.queue) <= self.lead

    def start(self, t: float, predict: Predict, background: bool = True) -> None:
        """Predict a chunk for the observation at time ``t``: in the worker thread, or now when ``background`` is
        False (the chunk then replaces the queue at once)."""
        if self._job is not None:
            raise RuntimeError("ChunkSchedule.start: a prediction is already in flight")
        if not background:
            self._place(t, self._timed(predict))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-inference")
        self._job = (self._generation, t, self._pool.submit(self._timed, predict))

    def next_action(self, t: float) -> np.ndarray | None:
        """The action due at time ``t``; None when there is none: a prediction still in flight with nothing left
        to execute (a wait), nothing predicted yet, or the policy stopped. A finished prediction is taken in first.
        """
        if self._job is not None:
            gen, t0, future = self._job
            if future.done():
                self._job = None
                chunk = future.result()  # raises the policy's error here, on the control thread
                if gen == self._generation:
                    # the ticks that waited sent nothing: shift the chunk by them, so no action is lost
                    shift = 0.0 if self._starved_at is None else max(t - self._starved_at, 0.0)
                    self._place(t0 + shift, chunk)
                    # its actions before t: the old chunk's ran in their place
                    self._drop_stale(t, count=False)
                self._starved_at = None
            elif not self._has_action(t):
                self.waits += 1
                if self._starved_at is None:
                    self._starved_at = t
                return None
        self._drop_stale(t)
        return self.queue.popleft()[1] if self.queue else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------------------------------------------
    def _timed(self, predict: Predict) -> np.ndarray:
        start = time.perf_counter()
        chunk = np.atleast_2d(np.asarray(predict()))
        self.latency_s.append(time.perf_counter() - start)
        return chunk

    def _place(self, t0: float, chunk: np.ndarray) -> None:
        self.queue = deque((t0 + k * self.period, a) for k, a in enumerate(chunk))
        self.chunks += 1

    def _has_action(self, t: float) -> bool:
        half = 0.5 * self.period
        return any(ts >= t - half for ts, _ in self.queue)

    def _drop_stale(self, t: float, count: bool = True) -> None:
        half = 0.5 * self.period
        while self.queue and self.queue[0][0] < t - half:
            self.queue.popleft()
            self.dropped += count
