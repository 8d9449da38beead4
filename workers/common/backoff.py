"""Retries: capped exponential backoff with jitter, on a clock a spec can replace.

The one contract of every retry loop of the service (REST requests, the stream keeper's
reconnects, the writer's batch retries, load-files): a `Backoff` says how long to wait before the
next attempt (capped exponential, jittered, never less than a server's Retry-After) and, given a
budget, whether that wait still ends within it; the `Clock` it was given tells the time and does
the waiting. The loops own what differs (what they log, what they give up to: the spool, an
error, the next tick); they take their time and their sleep from the clock, so a spec drives
minutes of retries on a fake clock in no real time.

Jitter matters here: after an outage, hundreds of workers behind one IP must not reconnect in
the same second (Binance allows 300 connection attempts per 5 minutes per IP).
"""
from __future__ import annotations

import math
import random
import threading
import time
from typing import Optional, Protocol


class Clock(Protocol):
    """Time and waiting, for everything that retries or waits its turn."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, ages, holds)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (what is shown to people, a ban's end)."""
        ...

    def sleep(self, seconds: float, stopping: Optional[threading.Event] = None) -> bool:
        """Wait `seconds`, less if `stopping` is set meanwhile; True when it is set."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time`, and a sleep that a stop event cuts short."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float, stopping: Optional[threading.Event] = None) -> bool:
        if stopping is None:
            time.sleep(max(0.0, seconds))
            return False
        return stopping.wait(max(0.0, seconds))


SYSTEM_CLOCK: Clock = SystemClock()


class Draw(Protocol):
    """Where the jitter comes from: random.Random, or a fixed draw in specs."""

    def random(self) -> float: ...


class Backoff:
    """Delays initial, 2x, 4x ... up to `maximum`, each drawn from [delay/2, delay].

    With `budget_s`, the retries of one operation (one batch, say) must end within that many
    seconds of the Backoff's creation: `fits(delay)` says whether a wait still does. `reset()`
    starts the delays afresh (a connection that worked); the budget is the operation's and stays.
    """

    def __init__(self, initial: float, maximum: float, rng: Optional[Draw] = None,
                 *, budget_s: Optional[float] = None, clock: Clock = SYSTEM_CLOCK) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        self.clock = clock
        self._rng: Draw = rng or random.Random()
        self.deadline = math.inf if budget_s is None else clock.monotonic() + budget_s

    def next_delay(self, at_least: float = 0.0) -> float:
        """The wait before the next attempt; `at_least` honours a server's Retry-After."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.attempts, 30))
        self.attempts += 1
        delay = ceiling / 2 + self._rng.random() * ceiling / 2
        return max(delay, at_least)

    def fits(self, delay: float) -> bool:
        """Whether a wait of `delay` from now ends within the budget (always, without one)."""
        return self.clock.monotonic() + delay <= self.deadline

    def reset(self) -> None:
        self.attempts = 0
