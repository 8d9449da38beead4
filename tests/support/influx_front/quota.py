"""Sizes, durations and the fixed-window write quota of the front. Pure: the clock is passed in.

The quota is Cloud Serverless's free plan as influxdb-servers.md states it ("Cloud Serverless
free plan": writes 5 MB per fixed 5-minute window, counted as uncompressed line protocol; over
it, 429 with a `Retry-After` of up to ~300 s, Writes table, "quota / overload" row). Windows are
fixed, not sliding: they start at multiples of the window length from `origin` (the front uses
0, the Unix epoch, so a 5-minute window ends at :00, :05, ... like a wall clock).

Admission rule (our choice; the reference gives only the quota): a write is let in while the
window's count is below the quota, and its uncompressed bytes are then counted, so the write that
crosses the quota is stored and the next one is refused until the window ends. A request larger
than the whole quota therefore still goes through in a fresh window instead of never.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

OFF = ("off", "none", "no", "")
SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
              "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
                  "w": 604800.0}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _amount(text: str, units: dict[str, float], what: str) -> float:
    match = _AMOUNT.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in units:
        raise ValueError(f"{what} {text!r}: a number and one of {sorted(u for u in units if u)}")
    return float(match.group(1)) * units[unit]


def parse_size(text: Optional[str]) -> Optional[int]:
    """Bytes of `25MB`, `10MiB`, `5000` (1 MB = 1,000,000 bytes); None for `off`."""
    if text is None or text.strip().lower() in OFF:
        return None
    return int(_amount(text, {k: float(v) for k, v in SIZE_UNITS.items()}, "size"))


def parse_duration(text: Optional[str]) -> Optional[float]:
    """Seconds of `5m`, `72h`, `30d`, `1.5s`; None for `off`."""
    if text is None or text.strip().lower() in OFF:
        return None
    return _amount(text, DURATION_UNITS, "duration")


@dataclass(frozen=True)
class QuotaSpec:
    """`limit_bytes` of uncompressed line protocol per fixed window of `window_s` seconds."""

    limit_bytes: int
    window_s: float

    def describe(self) -> str:
        return f"{self.limit_bytes}B/{self.window_s:g}s"


def parse_quota(text: Optional[str]) -> Optional[QuotaSpec]:
    """`5MB/5m` -> QuotaSpec(5_000_000, 300.0); None for `off`."""
    if text is None or text.strip().lower() in OFF:
        return None
    size, sep, window = text.partition("/")
    limit, seconds = parse_size(size), parse_duration(window) if sep else None
    if not limit or not seconds:
        raise ValueError(f"write quota {text!r}: give SIZE/WINDOW, e.g. 5MB/5m, or off")
    return QuotaSpec(limit, seconds)


class FixedWindowQuota:
    """Counts admitted uncompressed bytes per fixed window; says how long to wait when over."""

    def __init__(self, spec: QuotaSpec, origin: float = 0.0) -> None:
        self.spec = spec
        self.origin = origin
        self.window = -1  # index of the window `used` belongs to
        self.used = 0

    def window_index(self, now: float) -> int:
        return int(math.floor((now - self.origin) / self.spec.window_s))

    def window_end(self, now: float) -> float:
        return self.origin + (self.window_index(now) + 1) * self.spec.window_s

    def used_in(self, now: float) -> int:
        """Bytes counted in the window that holds `now`."""
        return self.used if self.window_index(now) == self.window else 0

    def admit(self, nbytes: int, now: float) -> Optional[int]:
        """None: let in (and counted). Else the whole seconds until the window ends, at least 1,
        for `Retry-After`."""
        index = self.window_index(now)
        if index != self.window:
            self.window, self.used = index, 0
        if self.used >= self.spec.limit_bytes:
            return max(1, math.ceil(self.window_end(now) - now))
        self.used += nbytes
        return None

    def reset(self) -> None:
        self.window, self.used = -1, 0
