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
    executed: list[float] = []
    for i in range(30):
        t = round(0.1 * i, 6)
        if sched.due(t):
            if sched.chunks == 0:
                sched.start(t, lambda t0=t: chunk_from(t0))
            else:  # the worker finishes only when the control thread says so: 1.5 periods later
                gate.clear()
                sched.start(t, lambda t0=t: (gate.wait(5), chunk_from(t0))[1])
                started = i
        if sched.chunks and sched.in_flight and i == started + 2:
            gate.set()
        a = sched.next_action(t)
        assert a is not None
        executed.append(float(a[0]))
        assert executed[-1] == pytest.approx(t)  # every tick runs the action due now
    assert sched.dropped == 0
    assert sched.chunks >= 4
    assert sched.waits >= 1  # the first chunk: nothing to execute before it
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
    with pytest.raises(FloatingPointError, match="NaN"):
        sched.next_action(0.0)
    sched.close()
