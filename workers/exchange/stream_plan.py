"""Which connections a worker opens, and which streams each carries in its URL or subscribes.

Binance limits a stream connection to 1,024 streams (its "Web Socket Streams" documentation)
and cuts its URL at about 8,000 characters (measured by users: 8,004 in 2019; not documented,
so treated as a hard limit). A worker's symbols are therefore spread evenly over
as many connections as 1,024 streams each require; each connection's URL holds the streams that
fit in `max_url_chars`, and the rest follow in SUBSCRIBE messages of `per_message` streams each,
which the connection paces and checks for an acknowledgement (stream.py).

Every URL asks for microsecond times (`timeUnit=MICROSECOND`, Binance's "Web Socket Streams",
since 2024-12-17): the unit is a property of the connection, so the streams added by SUBSCRIBE
get it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from workers.exchange.protocol import stream_name

MAX_STREAMS = 1024  # per connection, the exchange's documented limit
# The exchange cut a URL at 8,004 characters when measured; the margin covers a longer host
# name and proxies that count differently. Streams that do not fit cost one message per 200.
MAX_URL_CHARS = 7000
PER_MESSAGE = 200  # streams per SUBSCRIBE message (a ~3 KB text frame)
TIME_UNIT = "&timeUnit=MICROSECOND"  # after the streams, as in the exchange's own example


@dataclass(frozen=True)
class ConnectionPlan:
    """One connection of a worker: its symbols, its URL and its SUBSCRIBE batches."""

    label: str  # "s1", "s2" ...: which slice of the worker's symbols
    symbols: Tuple[str, ...]
    url: str
    subscribe: Tuple[Tuple[str, ...], ...]  # stream names per SUBSCRIBE message, in order

    @property
    def streams(self) -> int:
        return len(self.symbols)


def url_for(base_url: str, streams: Sequence[str]) -> str:
    return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}{TIME_UNIT}"


def plan_connections(base_url: str, symbols: Sequence[str], max_url_chars: int = MAX_URL_CHARS,
                     max_streams: int = MAX_STREAMS,
                     per_message: int = PER_MESSAGE) -> List[ConnectionPlan]:
    """Spread `symbols` over the fewest connections the limits allow, evenly."""
    if not symbols:
        raise ValueError("a worker needs at least one symbol")
    count = -(-len(symbols) // max_streams)
    size, extra = divmod(len(symbols), count)
    plans, start = [], 0
    for n in range(count):
        part = tuple(symbols[start:start + size + (1 if n < extra else 0)])
        start += len(part)
        plans.append(plan_one(f"s{n + 1}", base_url, part, max_url_chars, per_message))
    return plans


def plan_one(label: str, base_url: str, symbols: Tuple[str, ...], max_url_chars: int,
             per_message: int) -> ConnectionPlan:
    """The URL takes streams while it stays within `max_url_chars` (always at least one)."""
    streams = [stream_name(s) for s in symbols]
    length = len(url_for(base_url, streams[:1]))
    in_url = 1
    while in_url < len(streams) and length + 1 + len(streams[in_url]) <= max_url_chars:
        length += 1 + len(streams[in_url])
        in_url += 1
    rest = streams[in_url:]
    batches = tuple(tuple(rest[i:i + per_message]) for i in range(0, len(rest), per_message))
    return ConnectionPlan(label, symbols, url_for(base_url, streams[:in_url]), batches)
