"""Small helpers for specs about time: polling a condition, counting events per window."""
from __future__ import annotations

import time
from typing import Callable, Iterable


def poll(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.005) -> bool:
    """True as soon as `condition()` is true, False if it is still false after `timeout` s.

    For `assert poll(...)` in specs of threads: the timeout is generous because a loaded box
    can be slow; a condition that holds returns at once.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def most_in_any_window(times: Iterable[float], window_s: float) -> int:
    """The largest number of events in one half-open span [t, t + window_s)."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most
