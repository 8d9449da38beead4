"""The Binance spot trade protocol: stream URLs, and checking every message before it is trusted.

A message that fails a check raises InvalidMessage (errors.py) with a short reason; the caller
counts it and goes on. Facts: Binance's spot API documentation (binance-spot-api-docs: "Web Socket
Streams" for the URL forms and the trade payload, "REST API" for historicalTrades rows).

Times: the worker asks for microseconds (`timeUnit=MICROSECOND` on the stream URL,
`X-MBX-TIME-UNIT: MICROSECOND` on REST), and a time is told to be µs or ms by its magnitude
(MICROSECOND_THRESHOLD), so an answer in ms (an exchange that ignores the request, a replayed
capture) is still read right. Every Trade gets both: `time_ms` is the µs time floor-divided by
1000, exactly what it was when only ms was asked for (the point key is built from it), and
`time_us` is the µs time, or `time_ms * 1000` for a time given in ms or dated before
MICROS_FROM_US (storage/lineproto.py: every source must store the same value for a trade).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Union
from urllib.parse import quote

import orjson

from workers.errors import InvalidMessage
from workers.trade import Trade

# 2017-07-01, before Binance's first trade: an earlier trade time is a corrupt message.
EARLIEST_TRADE_MS = 1_498_867_200_000
# A trade time this far ahead of our clock is not plausible either (clock skew allowance).
FUTURE_SLACK_MS = 24 * 3600 * 1000
# Times of 10**14 and above are microseconds (timeUnit=MICROSECOND, 16 digits).
MICROSECOND_THRESHOLD = 10 ** 14
FUTURE_SLACK_US = FUTURE_SLACK_MS * 1000

# 2025-01-01 00:00 UTC in µs: Binance's archive has ms before, µs from then on. A trade before
# it is stored with time_us = time_ms * 1000 whatever the source, so that all sources agree.
MICROS_FROM_US = 1_735_689_600_000_000


_DECIMAL = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,20})?")


# The hot path checks price and quantity in one match: both plain decimals, both above zero
# (the lookahead wants a nonzero digit). One regex call instead of two plus two strip()s.
_POSITIVE = r"(?=[0.]*[1-9])[0-9]{1,20}(?:\.[0-9]{1,20})?"


_PRICE_SPACE_QTY = re.compile(f"{_POSITIVE} {_POSITIVE}").fullmatch


@dataclass(frozen=True)
class ServerShutdown:
    """The exchange announced it will close this connection soon."""

    event_time_ms: int


@dataclass(frozen=True)
class ControlReply:
    """The answer to a SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS request."""

    request_id: Any
    result: Any
    error: Optional[Dict[str, Any]]


Message = Union[Trade, ServerShutdown, ControlReply]


def stream_name(symbol: str) -> str:
    """`BTCUSDT` -> `btcusdt@trade`; non-ASCII symbols keep their case and are URL-encoded."""
    name = symbol.lower() if symbol.isascii() else quote(symbol, safe="")
    return f"{name}@trade"


def _decimal(value: Any, field: str) -> str:
    if type(value) is not str:
        raise InvalidMessage("wrong_type", f"{field} is {type(value).__name__}, not a string")
    if not _DECIMAL.fullmatch(value):
        raise InvalidMessage("bad_number", f"{field}={value[:40]!r}")
    return value


def _positive_decimal(value: Any, field: str) -> str:
    text = _decimal(value, field)
    if text.strip("0.") == "":
        raise InvalidMessage("bad_number", f"{field}={text!r} is zero")
    return text


def _int(value: Any, field: str) -> int:
    if type(value) is not int:  # bool is an int subclass: refuse it too
        raise InvalidMessage("wrong_type", f"{field} is {type(value).__name__}, not an integer")
    return value


def _bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise InvalidMessage("wrong_type", f"{field} is {type(value).__name__}, not a boolean")
    return value


def trade_time_ms(value: Any, field: str = "T", now_ms: Optional[int] = None) -> int:
    """A trade time in ms (microsecond times are cut to ms), checked to be plausible."""
    t = _int(value, field)
    if t >= MICROSECOND_THRESHOLD:
        t //= 1000
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if t < EARLIEST_TRADE_MS or t > now + FUTURE_SLACK_MS:
        raise InvalidMessage("implausible_time", f"{field}={value}")
    return t


def micros(value: int) -> int:
    """The stored µs time of a checked trade time (ms or µs, by magnitude): the µs time, or
    time_ms * 1000 for a ms time or a time before MICROS_FROM_US."""
    if value < MICROSECOND_THRESHOLD:
        return value * 1000
    return value if value >= MICROS_FROM_US else value - value % 1000


def make_trade(symbol: str, trade_id: Any, price: Any, qty: Any, time_value: Any,
               buyer_maker: Any, now_ms: Optional[int] = None) -> Trade:
    """A checked Trade from the values of a stream event or a REST row."""
    tid = _int(trade_id, "trade id")
    if tid < 0:
        raise InvalidMessage("bad_number", f"trade id {tid}")
    t_ms = trade_time_ms(time_value, now_ms=now_ms)  # checked: time_value is an int now
    return Trade(symbol, tid, _positive_decimal(price, "price"), _positive_decimal(qty, "qty"),
                 t_ms, _bool(buyer_maker, "m"), micros(time_value))


class MessageParser:
    """Turns stream frames into checked messages for a fixed set of subscribed symbols."""

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols = frozenset(symbols)
        # The latest plausible trade time (µs), refreshed only when a trade passes it: time only
        # moves on, so a trade within an older bound is within the current one too (this saves
        # a clock read per trade).
        self._latest_us = 0.0

    def parse(self, data: Union[bytes, str]) -> Message:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidMessage("invalid_json", f"{len(data)} bytes") from None
        if type(msg) is not dict:
            raise InvalidMessage("not_an_object", type(msg).__name__)
        payload = msg.get("data")
        if payload is None:  # raw stream, or a reply to a control request
            if "id" in msg and ("result" in msg or "error" in msg):
                return ControlReply(msg["id"], msg.get("result"), msg.get("error"))
            payload = msg
        elif type(payload) is not dict or type(msg.get("stream")) is not str:
            raise InvalidMessage("wrong_type", "combined wrapper without stream/data object")
        event = payload.get("e")
        if event == "trade":
            return self._trade(payload)
        if event == "serverShutdown":
            when = payload.get("E")  # µs too on a timeUnit=MICROSECOND connection
            if type(when) is not int:
                return ServerShutdown(0)
            return ServerShutdown(when // 1000 if when >= MICROSECOND_THRESHOLD else when)
        raise InvalidMessage("unknown_event", repr(event)[:40])

    def _trade(self, p: Dict[str, Any]) -> Trade:
        try:
            symbol, tid, price, qty, t, m = p["s"], p["t"], p["p"], p["q"], p["T"], p["m"]
        except KeyError as missing:
            raise InvalidMessage("missing_field", str(missing)) from None
        # Fast path for the common, valid case (the per-trade budget is a few microseconds):
        # a µs time as asked for, else a ms time (an exchange that ignored timeUnit); anything
        # unusual (a µs time before 2025 too) goes through make_trade for its precise reason.
        if (type(tid) is int and type(price) is str and type(qty) is str and type(t) is int
                and type(m) is bool and type(symbol) is str and symbol in self.symbols
                and tid >= 0 and _PRICE_SPACE_QTY(f"{price} {qty}")):
            if MICROS_FROM_US <= t and (t <= self._latest_us or t <= self._refresh_latest()):
                return Trade(symbol, tid, price, qty, t // 1000, m, t)
            t_us = t * 1000
            if (EARLIEST_TRADE_MS <= t < MICROSECOND_THRESHOLD
                    and (t_us <= self._latest_us or t_us <= self._refresh_latest())):
                return Trade(symbol, tid, price, qty, t, m, t_us)
        if type(symbol) is not str:
            raise InvalidMessage("wrong_type", f"s is {type(symbol).__name__}, not a string")
        if symbol not in self.symbols:
            raise InvalidMessage("unknown_symbol", repr(symbol)[:40])
        return make_trade(symbol, tid, price, qty, t, m)

    def _refresh_latest(self) -> float:
        self._latest_us = time.time() * 1_000_000 + FUTURE_SLACK_US
        return self._latest_us


def trade_from_rest(symbol: str, row: Any, now_ms: Optional[int] = None) -> Trade:
    """A checked Trade from a `/api/v3/historicalTrades` row."""
    if type(row) is not dict:
        raise InvalidMessage("not_an_object", type(row).__name__)
    try:
        return make_trade(symbol, row["id"], row["price"], row["qty"], row["time"],
                          row["isBuyerMaker"], now_ms=now_ms)
    except KeyError as missing:
        raise InvalidMessage("missing_field", str(missing)) from None
