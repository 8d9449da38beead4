"""Per-symbol trade store and the ledger spans.

Ids are consecutive, so a trade is found by `id - base_id` and only its values are stored, in
typed arrays (29 bytes a trade: two million trades of a symbol take about 58 MB).
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .config import fmt8, fmt_quote

MAKER_FLAG = 1  # buyer is maker (`m`)
BURST_FLAG = 2  # first fill of a taker order (a new `T` group)


@dataclass
class TradeRow:
    """One stored trade, as REST and the stream see it (times in microseconds)."""

    id: int
    price: int
    qty: int
    time_us: int
    event_us: int
    buyer_is_maker: bool
    burst_start: bool

    def rest(self, micro: bool = False) -> Dict[str, Any]:
        return {"id": self.id, "price": fmt8(self.price), "qty": fmt8(self.qty),
                "quoteQty": fmt_quote(self.price, self.qty),
                "time": self.time_us if micro else self.time_us // 1000,
                "isBuyerMaker": self.buyer_is_maker, "isBestMatch": True}


class TradeHistory:
    """Trades `base_id ..` of one symbol; ids older than the last `retention` are not served."""

    def __init__(self, first_id: int, retention: int) -> None:
        self.first_id = first_id  # the first id ever stored (the ledger's `first`)
        self.base_id = first_id  # id at index 0 of the arrays
        self.retention = max(retention, 1)
        self.prices = array("q")
        self.qtys = array("q")
        self.times_us = array("q")
        self.e_delays = array("i")
        self.flags = bytearray()

    def __len__(self) -> int:
        return len(self.flags)

    @property
    def count(self) -> int:
        """Trades stored since the start, including those trimmed away."""
        return self.next_id - self.first_id

    @property
    def next_id(self) -> int:
        return self.base_id + len(self.flags)

    @property
    def last_id(self) -> Optional[int]:
        return self.next_id - 1 if self.flags else None

    @property
    def oldest_served(self) -> int:
        return max(self.base_id, self.next_id - self.retention)

    def append(self, prices: List[int], qtys: List[int], times_us: List[int],
               e_delays: List[int], flags: List[int]) -> Tuple[int, int]:
        """Store trades with the next ids; returns (first id, last id) of the new ones."""
        first = self.next_id
        self.prices.extend(prices)
        self.qtys.extend(qtys)
        self.times_us.extend(times_us)
        self.e_delays.extend(e_delays)
        self.flags.extend(flags)
        self._trim()
        return first, self.next_id - 1

    def _trim(self) -> None:
        # Deleting from the front moves the arrays, so do it in chunks of a quarter of the
        # retention: amortised O(1) per trade, at most 25 % memory above the retention.
        excess = len(self.flags) - self.retention
        if excess > max(self.retention // 4, 1000):
            for column in (self.prices, self.qtys, self.times_us, self.e_delays, self.flags):
                del column[:excess]
            self.base_id += excess

    def index(self, trade_id: int) -> int:
        return trade_id - self.base_id

    def row(self, trade_id: int) -> TradeRow:
        i = trade_id - self.base_id
        flags = self.flags[i]
        t_us = self.times_us[i]
        return TradeRow(trade_id, self.prices[i], self.qtys[i], t_us, t_us + self.e_delays[i],
                        bool(flags & MAKER_FLAG), bool(flags & BURST_FLAG))

    def rows(self, from_id: int, limit: int) -> List[TradeRow]:
        """Up to `limit` served trades from `from_id` (inclusive, clamped to the oldest served)."""
        start = max(from_id, self.oldest_served)
        end = min(start + max(limit, 0), self.next_id)
        return [self.row(i) for i in range(start, end)]

    def recent(self, limit: int) -> List[TradeRow]:
        return self.rows(max(self.next_id - limit, self.oldest_served), limit)

    def burst_start_id(self, trade_id: int) -> int:
        """Id of the first fill of the taker order that `trade_id` belongs to."""
        i = trade_id - self.base_id
        while i > 0 and not self.flags[i] & BURST_FLAG:
            i -= 1
        return self.base_id + i


@dataclass
class SpanList:
    """Inclusive id spans, merged when they touch: [[100, 149], [300, 300]]."""

    spans: List[List[int]] = field(default_factory=list)

    def add(self, first: int, last: int) -> None:
        if first > last:
            return
        if self.spans and first <= self.spans[-1][1] + 1 and last >= self.spans[-1][0] - 1:
            self.spans[-1] = [min(first, self.spans[-1][0]), max(last, self.spans[-1][1])]
        else:
            self.spans.append([first, last])

    def total(self) -> int:
        return sum(b - a + 1 for a, b in self.spans)


@dataclass
class LedgerEntry:
    """What happened to a symbol's ids: all of first..last exist; some skipped or repeated."""

    withheld: SpanList = field(default_factory=SpanList)
    resent: SpanList = field(default_factory=SpanList)

    def as_dict(self, history: TradeHistory) -> Dict[str, Any]:
        last = history.last_id
        return {"first": history.first_id if last is not None else None, "last": last,
                "count": history.count, "withheld": [list(s) for s in self.withheld.spans],
                "resent": [list(s) for s in self.resent.spans],
                "oldest_served": history.oldest_served if last is not None else None}
