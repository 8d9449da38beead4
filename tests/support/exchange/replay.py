"""Play a recorded capture (JSONL, one stream message a line) instead of generating trades.

Lines may be combined messages (`{"stream": ..., "data": {...}}`) or bare payloads; only
`"e": "trade"` events are used.  Each symbol's ids must be consecutive: a repeated id (a
duplicate in the capture) is skipped, a gap is an error, because the ledger promises that
first..last all exist and REST must be able to serve every one of them.
Times are kept as recorded (13-digit ms or 16-digit us); `original` timing spaces the
releases like the recorded event times (divided by --replay-speed), `asap` sends at once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

import orjson

from .config import ConfigError, SymbolSpec, check_symbol, fmt8, to_units
from .history import BURST_FLAG, MAKER_FLAG

if TYPE_CHECKING:
    from .server import Simulator

log = logging.getLogger(__name__)

ASAP_CHUNK = 2000  # trades released per loop turn in asap mode, so the loop stays responsive
MICRO_THRESHOLD = 10 ** 15  # 16-digit times are microseconds


@dataclass
class ReplayTrade:
    symbol: str
    id: int
    price: int
    qty: int
    time_us: int
    event_us: int
    buyer_is_maker: bool


def _to_us(value: int) -> int:
    return value if value >= MICRO_THRESHOLD else value * 1000


def load(path: Path) -> List[ReplayTrade]:
    """Parse and check a capture; raises ConfigError naming the bad line."""
    trades: List[ReplayTrade] = []
    last: Dict[str, int] = {}
    skipped = 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                msg = orjson.loads(line)
                data = msg.get("data", msg) if isinstance(msg, dict) else None
                if not isinstance(data, dict) or data.get("e") != "trade":
                    continue
                symbol = check_symbol(str(data["s"]))
                trade = ReplayTrade(symbol, int(data["t"]), to_units(str(data["p"])),
                                    to_units(str(data["q"])), _to_us(int(data["T"])),
                                    _to_us(int(data["E"])), bool(data["m"]))
            except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
                raise ConfigError(f"{path}:{lineno}: not a trade message ({exc})") from None
            previous = last.get(symbol)
            if previous is not None and trade.id <= previous:
                skipped += 1
                continue
            if previous is not None and trade.id != previous + 1:
                raise ConfigError(f"{path}:{lineno}: {symbol} id {trade.id} follows {previous}; "
                                  "a replay must have consecutive ids")
            last[symbol] = trade.id
            trades.append(trade)
    if not trades:
        raise ConfigError(f"{path}: no trade messages")
    if skipped:
        log.info("replay %s: skipped %d repeated ids", path, skipped)
    return trades


def specs(trades: List[ReplayTrade]) -> List[SymbolSpec]:
    """One listed symbol per replayed symbol, ids starting at its first recorded id."""
    first: Dict[str, ReplayTrade] = {}
    for trade in trades:
        first.setdefault(trade.symbol, trade)
    return [SymbolSpec(t.symbol, 0.0, t.price, "TRADING", t.id) for t in first.values()]


class ReplayPlayer:
    """Releases the recorded trades into the market and the hub."""

    def __init__(self, sim: "Simulator", trades: List[ReplayTrade], timing: str, speed: float,
                 wait_for_client: bool) -> None:
        self.sim = sim
        self.trades = trades
        self.timing = timing
        self.speed = speed
        self.wait_for_client = wait_for_client
        self.released = 0

    async def run(self) -> None:
        symbols = {t.symbol for t in self.trades}
        while self.wait_for_client and not any(self.sim.hub.select(s) for s in symbols):
            await asyncio.sleep(0.02)
        start = time.monotonic()
        t0 = self.trades[0].event_us
        n = len(self.trades)
        while self.released < n:
            if self.timing == "asap":
                end = min(self.released + ASAP_CHUNK, n)
            else:
                due_us = t0 + (time.monotonic() - start) * 1e6 * self.speed
                end = self.released
                while end < n and self.trades[end].event_us <= due_us:
                    end += 1
            if end > self.released:
                self._release(self.released, end)
                self.released = end
            await asyncio.sleep(0 if self.timing == "asap" else 0.002)
        log.info("replay finished: %d trades", n)

    def _release(self, start: int, end: int) -> None:
        """Store and send trades start..end-1 in file order, one run of a symbol at a time
        (so a combined connection sees the recorded interleaving)."""
        market = self.sim.market
        releases = []
        run_start = start
        for i in range(start, end + 1):
            if i < end and self.trades[i].symbol == self.trades[run_start].symbol:
                continue
            run = self.trades[run_start:i]
            state = market.symbols[run[0].symbol]
            flags = []
            last_time, last_maker = state.last_time_us, -1
            for trade in run:
                maker = MAKER_FLAG if trade.buyer_is_maker else 0
                # A new T, or a change of side, starts a new taker order (legacy b/a ids).
                new_burst = trade.time_us != last_time or maker != last_maker
                flags.append(maker | (BURST_FLAG if new_burst else 0))
                last_time, last_maker = trade.time_us, maker
            state.last_time_us = last_time
            releases.append(market.store(state, [t.price for t in run], [t.qty for t in run],
                                         [t.time_us for t in run],
                                         [t.event_us - t.time_us for t in run], flags))
            run_start = i
        self.sim.hub.deliver(releases, time.monotonic())


def describe(trades: List[ReplayTrade]) -> str:
    first, last = trades[0], trades[-1]
    return (f"{len(trades)} trades, {len({t.symbol for t in trades})} symbols, first "
            f"{first.symbol} {first.id} @ {fmt8(first.price)}, last {last.symbol} {last.id}")
