"""The point model, rendered as InfluxDB line protocol by hand (2x faster than `Point`).

    price_ticks,symbol=BTCUSDT price=60000.01,price_str="60000.01000000",qty=0.5,
        qty_str="0.50000000",trade_id=123456789i,buyer_maker=true 1700000000123456789

The timestamp, in nanoseconds, is the trade time in ms times 10**6 plus `trade_id % 10**6`:
the millisecond stays exact, trades of the same millisecond get distinct keys (InfluxDB keeps
one point per series and timestamp), and a trade written twice lands on the same key, so a
re-sent or backfilled trade overwrites itself instead of adding a point.
"""
from __future__ import annotations

from typing import Dict

from workers.trade import Trade

NS_PER_MS = 1_000_000
PRECISION = "ns"


def escape_key(text: str) -> str:
    """Escape a measurement, tag key, tag value or field key (`,`, `=`, space, backslash)."""
    return (text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
            .replace(" ", "\\ ").replace("\n", "\\n"))


def escape_string_field(text: str) -> str:
    """Escape the inside of a double-quoted string field value."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def trade_timestamp_ns(time_ms: int, trade_id: int) -> int:
    """Unique and repeatable key of a trade: see the module docstring."""
    return time_ms * NS_PER_MS + trade_id % NS_PER_MS


def line_time_ms(line: str) -> int:
    """The trade time (ms) of a trade line: its timestamp, the line's last field, undone."""
    return int(line[line.rindex(" ") + 1:]) // NS_PER_MS


class LineRenderer:
    """Renders trades of one measurement; the per-symbol line prefix is built once."""

    def __init__(self, measurement: str) -> None:
        self.measurement = escape_key(measurement)
        self._prefixes: Dict[str, str] = {}

    def prefix(self, symbol: str) -> str:
        prefix = self._prefixes.get(symbol)
        if prefix is None:
            prefix = f"{self.measurement},symbol={escape_key(symbol)} "
            self._prefixes[symbol] = prefix
        return prefix

    def line(self, trade: Trade) -> str:
        # price and qty were checked to be plain decimals, so they are valid float literals and
        # safe inside quotes as they are.
        p, q, tid = trade.price, trade.qty, trade.trade_id
        prefix = self._prefixes.get(trade.symbol) or self.prefix(trade.symbol)
        return (f"{prefix}price={p},price_str=\"{p}\",qty={q},"
                f"qty_str=\"{q}\",trade_id={tid}i,"
                f"buyer_maker={'true' if trade.buyer_maker else 'false'} "
                f"{trade.time_ms * NS_PER_MS + tid % NS_PER_MS}")
