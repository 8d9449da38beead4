"""The trade record every layer shares: one spot trade, its price and quantity as sent."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Trade:
    """One spot trade, with price and quantity kept as the exact strings Binance sent.

    Not frozen, and slotted: one is built per trade on the hot path, and a frozen dataclass's
    __init__ costs about twice as much.
    """

    __slots__ = ("symbol", "trade_id", "price", "qty", "time_ms", "buyer_maker")
    symbol: str
    trade_id: int
    price: str
    qty: str
    time_ms: int
    buyer_maker: bool
