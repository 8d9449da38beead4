"""Fault state consulted by the hub and the REST middleware, and malformed frame builders."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, List, Optional

from .frames import OP_BINARY, OP_TEXT, frame

MALFORMED_KINDS = ("invalid_json", "missing_fields", "wrong_types", "unknown_event", "huge",
                   "binary")


@dataclass
class SilenceWindow:
    """No trade frames until `until` (monotonic) for `symbol` (None: all symbols).

    Only connections opened before `since` go quiet unless `new_connections`; with
    `pings` false the covered connections also get no pings and no pong answers.
    """

    until: float
    since: float
    symbol: Optional[str] = None
    new_connections: bool = False
    pings: bool = True

    def covers(self, opened_at: float, now: float) -> bool:
        return now < self.until and (self.new_connections or opened_at <= self.since)


@dataclass
class RestFault:
    """Answer `status` to REST requests for `remaining` requests and/or until `until`."""

    status: int
    retry_after: int
    remaining: Optional[int] = None
    until: Optional[float] = None
    path: Optional[str] = None  # only requests whose path starts with this

    def active(self, now: float) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        return self.until is None or now < self.until


@dataclass
class RestHang:
    """Hold REST requests whose path starts with `path` (None: every /api path) until `until`
    (monotonic), then answer them normally: an endpoint that hangs, as a stuck load balancer
    does. A client with a read timeout shorter than the hang sees timeouts until it ends."""

    until: float
    path: Optional[str] = None

    def holds(self, path: str, now: float) -> bool:
        return now < self.until and (self.path is None or path.startswith(self.path))


@dataclass
class FaultState:
    """Run-time switches; `clear()` restores the values the run was started with."""

    server_pings: bool = True
    answer_pings: bool = True
    max_conn_age: Optional[float] = None
    silences: List[SilenceWindow] = field(default_factory=list)
    rest: List[RestFault] = field(default_factory=list)
    rest_hangs: List[RestHang] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._initial = (self.server_pings, self.answer_pings, self.max_conn_age)

    def clear(self) -> None:
        self.server_pings, self.answer_pings, self.max_conn_age = self._initial
        self.silences.clear()
        self.rest.clear()
        self.rest_hangs.clear()

    def data_silenced(self, opened_at: float, symbol: str, now: float) -> bool:
        return any(w.covers(opened_at, now) and w.symbol in (None, symbol)
                   for w in self.silences)

    def pings_silenced(self, opened_at: float, symbols: Iterable[str], now: float) -> bool:
        held = set(symbols)
        return any(not w.pings and w.covers(opened_at, now)
                   and (w.symbol is None or w.symbol in held) for w in self.silences)

    def prune(self, now: float) -> None:
        self.silences = [w for w in self.silences if now < w.until]
        self.rest = [f for f in self.rest if f.active(now)]
        self.rest_hangs = [h for h in self.rest_hangs if now < h.until]

    def rest_hang_left(self, path: str, now: float) -> float:
        """Seconds a request for `path` arriving now is held before it is answered (0: none)."""
        return max([h.until - now for h in self.rest_hangs if h.holds(path, now)], default=0.0)

    def take_rest_fault(self, path: str, now: float) -> Optional[RestFault]:
        """The fault that answers this request, counting it down; None for a normal answer."""
        for fault in self.rest:
            if fault.active(now) and (fault.path is None or path.startswith(fault.path)):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None


def malformed_frame(kind: str, symbol: str, last_id: int, combined: bool, micro: bool,
                    size: int = 3 * 1024 * 1024, now_us: Optional[int] = None) -> bytes:
    """One bad frame of `kind`; it reuses `last_id` so that a parser that wrongly accepts it
    overwrites a known trade (detectable) instead of inventing a new id."""
    now_us = time.time_ns() // 1000 if now_us is None else now_us  # the simulator's clock
    now = now_us if micro else now_us // 1000
    sym = symbol.upper()
    if kind == "binary":
        return frame(OP_BINARY, b"\x00\x01sim-binary\xff\xfe")
    if kind == "invalid_json":
        payload = f'{{"e":"trade","E":{now},"s":"{sym}","t":{last_id},"p":"1.0'
    elif kind == "missing_fields":
        payload = (f'{{"e":"trade","E":{now},"s":"{sym}","q":"1.00000000","T":{now},'
                   f'"m":true,"M":true}}')
    elif kind == "wrong_types":
        payload = (f'{{"e":"trade","E":{now},"s":"{sym}","t":"{last_id}","p":1.5,'
                   f'"q":"1.00000000","T":"{now}","m":"true","M":true}}')
    elif kind == "unknown_event":
        payload = f'{{"e":"simUnknownEvent","E":{now},"s":"{sym}","x":[1,2,3]}}'
    elif kind == "huge":
        pad = "x" * max(size - 80, 0)
        payload = f'{{"e":"simHugeEvent","E":{now},"s":"{sym}","pad":"{pad}"}}'
    else:
        raise ValueError(f"unknown malformed kind {kind!r}: one of {', '.join(MALFORMED_KINDS)}")
    if combined:
        payload = f'{{"stream":"{sym.lower()}@trade","data":{payload}}}'
    return frame(OP_TEXT, payload.encode())
