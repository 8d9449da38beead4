"""Capped exponential backoff with jitter, shared by reconnects, write retries and REST calls.

Jitter matters here: after an outage, hundreds of workers behind one IP must not reconnect in
the same second (Binance allows 300 connection attempts per 5 minutes per IP).
"""
from __future__ import annotations

import random
from typing import Optional


class Backoff:
    """Delays initial, 2x, 4x ... up to `maximum`, each drawn from [delay/2, delay]."""

    def __init__(self, initial: float, maximum: float, rng: Optional[random.Random] = None) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self, at_least: float = 0.0) -> float:
        """The wait before the next attempt; `at_least` honours a server's Retry-After."""
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        delay = ceiling / 2 + self._rng.random() * ceiling / 2
        return max(delay, at_least)

    def reset(self) -> None:
        self.attempts = 0
