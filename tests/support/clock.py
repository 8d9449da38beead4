"""A fake clock for specs of code that retries or waits: the `Clock` of workers/common/backoff.py.

Time moves only when the code under test sleeps on it (or the spec calls `advance`), so minutes
of backoff, bans and rotation ages take no real time, and every wait is recorded in `sleeps`.

- A sleep moves time to its own end at once. With a `stopping` event that is set (before or by
  a callback during the sleep) it ends there and returns True, as `Event.wait` does.
- `call_later(delay, fn)` runs `fn` when time reaches now + delay: a timer on the fake clock.
- Threads whose waits must overlap, as they do in real time, run inside `participants(n)`:
  while n participants are registered, time moves only once n threads sleep on the clock (then
  to the earliest wake-up). A participant blocked elsewhere for `STUCK_S` real seconds lets
  time move anyway, so a broken spec fails instead of hanging.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Tuple

STUCK_S = 2.0


class FakeClock:
    def __init__(self, now: float = 10_000.0, wall: float = 1_757_522_615.0) -> None:
        self.now = now
        self._wall_offset = wall - now
        self.sleeps: List[float] = []
        self._cond = threading.Condition(threading.RLock())
        self._wakes: List[float] = []  # wake-up times of the threads asleep now
        self._later: List[Tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._participants = 0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self._wall_offset

    def sleep(self, seconds: float, stopping: Optional[threading.Event] = None) -> bool:
        with self._cond:
            self.sleeps.append(seconds)
            wake = self.now + max(0.0, seconds)
            self._wakes.append(wake)
            stuck_at = time.monotonic() + STUCK_S
            try:
                while self.now < wake and not (stopping is not None and stopping.is_set()):
                    waiting = [w for w in self._wakes if w > self.now]  # the others wake up
                    if len(waiting) >= self._participants or time.monotonic() > stuck_at:
                        self._step(min(waiting))
                    else:
                        self._cond.wait(0.02)
            finally:
                self._wakes.remove(wake)
                self._cond.notify_all()
            return stopping is not None and stopping.is_set()

    def advance(self, seconds: float) -> None:
        with self._cond:
            target = self.now + seconds
            while self.now < target:
                self._step(target)

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        with self._cond:
            heapq.heappush(self._later, (self.now + delay, next(self._order), fn))

    @property
    def asleep(self) -> int:
        """How many threads sleep on the clock now (and are not due to wake)."""
        return sum(1 for w in list(self._wakes) if w > self.now)

    @contextmanager
    def participants(self, count: int) -> Iterator[None]:
        """Within it, `count` more threads' sleeps overlap: time moves once they all sleep."""
        with self._cond:
            self._participants += count
        try:
            yield
        finally:
            with self._cond:
                self._participants -= count
                self._cond.notify_all()

    def sleep_until(self, condition: Callable[[], object], step: float = 0.001) -> None:
        """A participant's wait for `condition`: time passes in steps of `step` meanwhile."""
        while not condition():
            self.sleep(step)

    def _step(self, target: float) -> None:
        """Move time to `target`, or to the first timer due before it and run that timer."""
        if self._later and self._later[0][0] <= target:
            at, _, fn = heapq.heappop(self._later)
            self.now = max(self.now, at)
            fn()
        else:
            self.now = max(self.now, target)
        self._cond.notify_all()
