"""ChunkSchedule: chunks predicted ahead of need, in a worker thread, on the control clock."""

import threading

import numpy as np
import pytest

from realloop.robot.nodes.chunk_schedule import ChunkSchedule


def chunk_from(t0: float, n: int = 8) -> np.ndarray:
    """A chunk whose action k holds the time it is due at (t0 + k / 10 Hz)."""
    return np.array([[t0 + 0.1 * k] for k in range(n)])


def test_the_next_chunk_is_predicted_ahead_and_no_action_is_lost_or_late() -> None:
    sched = ChunkSchedule(rate=10.0, lead=2)
    gate = threading.Event()
    executed: list[tuple[float, float | None]] = []  # (tick, the action's value: the time it was planned for)
    started = 0
    for i in range(30):
        t = round(0.1 * i, 6)
        if sched.due(t):
            gate.clear()  # the worker finishes only when the control thread says so
            sched.start(t, lambda t0=t: (gate.wait(5), chunk_from(t0))[1])
            started = i
        if sched.in_flight and i == started + (2 if sched.chunks == 0 else 1):
            gate.set()
            while sched.in_flight and not sched.ready:  # the worker's result is in before the tick
                threading.Event().wait(0.001)
        a = sched.next_action(t)
        executed.append((t, None if a is None else float(a[0])))
    # the first chunk: two ticks wait (nothing sent, the control loop not blocked), then its action 0 runs
    assert [v for _, v in executed[:3]] == [None, None, pytest.approx(0.0)]
    assert sched.waits == 2
    # from then on every tick runs an action; the later chunks, predicted ahead, run on their own times
    assert all(v is not None for _, v in executed[2:])
    later = [(t, v) for t, v in executed if v is not None and v > t - 0.15]
    assert len(later) >= 15 and all(v == pytest.approx(t) for t, v in later)
    assert sched.dropped == 0 and sched.chunks >= 4
    sched.close()


def test_inference_slower_than_the_lead_shifts_the_chunk_instead_of_dropping() -> None:
    """The queue runs dry one tick before the next chunk comes: that tick sends nothing, and the new chunk resumes
    with the action the old chunk had not covered (delta actions: a dropped one is motion lost)."""
    sched = ChunkSchedule(rate=10.0, lead=1)
    sched.start(0.0, lambda: chunk_from(0.0, n=3), background=False)
    assert sched.next_action(0.0)[0] == pytest.approx(0.0)
    assert sched.next_action(0.1)[0] == pytest.approx(0.1)
    gate = threading.Event()
    assert sched.due(0.2)
    sched.start(0.2, lambda: (gate.wait(5), chunk_from(10.0, n=4))[1])  # its action k is worth 10 + 0.1 k
    assert sched.next_action(0.2)[0] == pytest.approx(0.2)  # the old chunk's last action covers 0.2
    assert sched.next_action(0.3) is None and sched.waits == 1  # dry: nothing sent
    gate.set()
    while not sched.ready:
        threading.Event().wait(0.001)
    # new action 0 stood for the old action at 0.2; its action 1 (planned for 0.3) runs now, at 0.4
    assert sched.next_action(0.4)[0] == pytest.approx(10.1)
    assert sched.next_action(0.5)[0] == pytest.approx(10.2)
    assert sched.dropped == 0
    sched.close()


def test_automatic_lead_follows_the_inference_time_and_clear_discards_a_late_chunk() -> None:
    sched = ChunkSchedule(rate=10.0)
    assert sched.lead == 1
    sched.latency_s.append(0.25)
    assert sched.lead == 3  # 250 ms at 10 Hz: start three actions before the queue runs out
    sched.start(0.0, lambda: chunk_from(0.0))
    assert sched.next_action(0.0)[0] == pytest.approx(0.0)
    gate = threading.Event()
    sched.start(0.1, lambda: (gate.wait(5), chunk_from(5.0))[1])
    sched.clear()  # a reset while predicting: the late chunk must not be executed
    gate.set()
    assert sched.next_action(0.2) is None or sched.next_action(0.2)[0] != pytest.approx(5.2)
    sched.close()


def test_a_slow_prediction_drops_only_actions_whose_time_passed() -> None:
    sched = ChunkSchedule(rate=10.0, lead=1)
    sched.start(0.0, lambda: chunk_from(0.0, n=3))
    assert sched.next_action(0.0)[0] == pytest.approx(0.0)
    # the control loop stalls for 0.3 s: the actions due at 0.1 and 0.2 are dropped, not bunched
    a = sched.next_action(0.3)
    assert a is None or a[0] >= 0.25
    assert sched.dropped == 2


def test_inline_predictions_and_bad_settings() -> None:
    sched = ChunkSchedule(rate=10.0)
    sched.start(0.0, lambda: chunk_from(0.0, n=1), background=False)
    assert sched.next_action(0.0)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="rate"):
        ChunkSchedule(rate=0.0)
    with pytest.raises(ValueError, match="lead"):
        ChunkSchedule(rate=10.0, lead=-1)


def test_a_policy_error_reaches_the_control_thread() -> None:
    sched = ChunkSchedule(rate=10.0)

    def broken() -> np.ndarray:
        raise FloatingPointError("the policy produced NaN")

    sched.start(0.0, broken)
    with pytest.raises(FloatingPointError, match="NaN"):  # on the first tick after the worker failed
        for i in range(1000):
            sched.next_action(0.1 * i)
            threading.Event().wait(0.001)
    sched.close()
