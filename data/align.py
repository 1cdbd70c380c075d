"""The one alignment rule of realloop: at a step time ``t``, a stream's sample is the last one stamped at or
before ``t``. Training (the dataset's aligned view) and deployment (the policy runner's stream buffers) both
call :func:`last_at_or_before`, so a policy sees the same samples at the same times in both."""

from __future__ import annotations

import numpy as np

# float rounding in t0 + k / rate must not skip a sample stamped exactly at a step time
TOLERANCE_S = 1e-9


def last_at_or_before(stamps: np.ndarray, times: np.ndarray | float) -> np.ndarray:
    """Per time, the index of the last stamp at or before it (``stamps`` sorted ascending); -1 where none is."""
    return np.searchsorted(stamps, np.asarray(times, dtype=float) + TOLERANCE_S, side="right") - 1
