"""The trade record every layer shares: one spot trade, its price and quantity as sent."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Trade:
    """One spot trade, with price and quantity kept as the exact strings Binance sent.

    `time_ms` is the trade time in whole milliseconds (the point key is built from it, so it is
    always the µs time floor-divided by 1000); `time_us` is the exchange's microsecond time, or
    `time_ms * 1000` when the source gave milliseconds only (storage/lineproto.py says why).

    Not frozen, and slotted: one is built per trade on the hot path, and a frozen dataclass's
    __init__ costs about twice as much.
    """

    __slots__ = ("symbol", "trade_id", "price", "qty", "time_ms", "buyer_maker", "time_us")
    symbol: str
    trade_id: int
    price: str
    qty: str
    time_ms: int
    buyer_maker: bool
    time_us: int
