"""The listed symbols, their generation rates and the generation tick."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Dict, List, Optional, Tuple

from .config import (
    DAY_US,
    ConfigError,
    SimConfig,
    SymbolSpec,
    check_status,
    check_symbol,
    day_start_us,
)
from .frames import TradeEncoder
from .generator import Burst, TradeGenerator
from .history import BURST_FLAG, MAKER_FLAG, LedgerEntry, TradeHistory

log = logging.getLogger(__name__)

# A generation loop that fell this far behind (a paused process, a debugger, a rate above
# what this process can make) starts afresh instead of emitting the whole backlog at once.
MAX_BACKLOG_S = 0.5
# The archive (and the exchange) has only ms times before this day: past days before it are
# generated on whole milliseconds, so that a µs view of them is the ms one times 1000.
MICROS_FROM = date(2025, 1, 1)
# At most this much of a second's rate per tick, so that one late tick cannot block the event
# loop (pings, REST, control) for long; the rest is made in the next ticks.
MAX_TICK_S = 0.02


@dataclass
class SymbolState:
    """One listed symbol: its spec, run-time knobs, trade store and ledger."""

    spec: SymbolSpec
    status: str
    rate: float
    history: TradeHistory
    encoder: TradeEncoder
    generator: Optional[TradeGenerator]  # None while a replay feeds the symbol
    ledger: LedgerEntry = field(default_factory=LedgerEntry)
    paused: bool = False
    withhold_pending: int = 0
    origin: float = 0.0  # monotonic time the current rate accounting started
    done: int = 0  # trades generated since `origin`
    last_time_us: int = 0
    warned_at: float = -1e9  # last "fell behind" warning, to log it once in a while only

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def generating(self) -> bool:
        return (self.generator is not None and self.rate > 0 and not self.paused
                and self.status == "TRADING")

    def restart_clock(self, now: float) -> None:
        self.origin = now
        self.done = 0


@dataclass
class Columns:
    """Generated trades gathered column by column, for one TradeHistory.append."""

    prices: List[int] = field(default_factory=list)
    qtys: List[int] = field(default_factory=list)
    times: List[int] = field(default_factory=list)
    delays: List[int] = field(default_factory=list)
    flags: List[int] = field(default_factory=list)

    def add(self, burst: Burst, t_us: int) -> None:
        """All fills of one taker order, at one time `t_us`."""
        maker = MAKER_FLAG if burst.buyer_is_maker else 0
        n = len(burst.prices)
        self.prices.extend(burst.prices)
        self.qtys.extend(burst.qtys)
        self.times.extend([t_us] * n)
        self.delays.extend(burst.e_delays_us)
        self.flags.append(maker | BURST_FLAG)
        self.flags.extend([maker] * (n - 1))

    def store(self, history: TradeHistory) -> Tuple[int, int]:
        return history.append(self.prices, self.qtys, self.times, self.delays, self.flags)


@dataclass
class Release:
    """New trades of one symbol: ids first..last are stored; only send_from..last go out."""

    state: SymbolState
    first: int
    last: int
    send_from: int


class Market:
    """All listed symbols; `tick()` generates what each active symbol's rate makes due."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.symbols: Dict[str, SymbolState] = {}
        # Symbols that generate, recomputed after any change: with thousands of quiet
        # symbols listed, the tick must not look at every one of them a thousand times a second.
        self._active: Optional[List[SymbolState]] = None

    @property
    def active(self) -> List[SymbolState]:
        if self._active is None:
            self._active = [s for s in self.symbols.values() if s.generating]
        return self._active

    def add(self, spec: SymbolSpec, generated: bool = True) -> SymbolState:
        if spec.name in self.symbols:
            raise ConfigError(f"symbol {spec.name} is already listed")
        start_id = self.config.start_id if spec.start_id is None else spec.start_id
        generator = (TradeGenerator(spec.name, self.config.seed, spec.price_units, spec.tick,
                                    spec.step) if generated else None)
        state = SymbolState(spec, spec.status, spec.rate,
                            TradeHistory(start_id, self.config.history),
                            TradeEncoder(spec.name, self.config.legacy_fields), generator)
        state.restart_clock(time.monotonic())
        self.symbols[spec.name] = state
        self._active = None
        return state

    def get(self, name: str) -> SymbolState:
        state = self.symbols.get(check_symbol(name))
        if state is None:
            raise ConfigError(f"unknown symbol {name!r}: name it with --symbol {name} too")
        return state

    def select(self, name: Optional[str]) -> List[SymbolState]:
        """One symbol by name, or all of them for None."""
        return list(self.symbols.values()) if name is None else [self.get(name)]

    def set_rate(self, name: str, rate: float) -> None:
        if not 0 <= rate <= 1_000_000:
            raise ConfigError("rate must be 0..1000000 trades/s")
        state = self.get(name)
        state.rate = float(rate)
        state.restart_clock(time.monotonic())
        self._active = None

    def set_paused(self, name: Optional[str], paused: bool) -> None:
        for state in self.select(name):
            state.paused = paused
            state.restart_clock(time.monotonic())  # no catch-up burst after a resume
        self._active = None

    def set_status(self, name: str, status: str) -> None:
        state = self.get(name)
        state.status = check_status(status)
        state.restart_clock(time.monotonic())
        self._active = None

    def tick_interval(self) -> float:
        total = sum(s.rate for s in self.active)
        if total <= 0:
            return 0.02
        return min(0.01, max(0.001, 1.0 / total))

    def tick(self, now: float) -> List[Release]:
        """Generate every active symbol's due trades; one Release per symbol that made any."""
        releases: List[Release] = []
        for state in self.active:
            due = int((now - state.origin) * state.rate + 1e-6) - state.done
            if due > state.rate * MAX_BACKLOG_S + 1000:
                if now - state.warned_at > 10.0:
                    log.warning("%s: generation fell %d trades behind the rate of %.6g/s; "
                                "skipping them (ids stay consecutive)", state.name, due, state.rate)
                    state.warned_at = now
                state.restart_clock(now)
                continue
            if due > 0:
                made = self._generate(state, min(due, max(int(state.rate * MAX_TICK_S), 200)))
                state.done += made[1] - made[0] + 1
                releases.append(self._release(state, *made))
        return releases

    def _generate(self, state: SymbolState, due: int) -> tuple[int, int]:
        assert state.generator is not None
        cols = Columns()
        while len(cols.flags) < due:  # whole bursts only: the sequence does not depend on rate
            now_us = max(self.config.now_us(), state.last_time_us)  # T never goes back
            state.last_time_us = now_us
            cols.add(state.generator.burst(), now_us)
        return cols.store(state.history)

    def generate_days(self, name: str, first: date, last: date, per_day: int
                      ) -> Dict[str, Tuple[int, int]]:
        """Generate `per_day` trades (whole taker orders, so up to 10 more) on each UTC day
        first..last, spread evenly over the day, stored with the next ids but sent to no one:
        the history the stream carried before the simulator started.  Returns the first and
        last id of each day.  Days must be over on the simulator's clock and after the
        symbol's last trade, and must fit in --history (the archive reads the stored trades)."""
        state = self.get(name)
        if state.generator is None:
            raise ConfigError(f"{state.name} is replayed, not generated")
        if not 1 <= per_day <= 10_000_000 or first > last:
            raise ConfigError("per_day must be 1..10000000 and from <= to")
        days = (last - first).days + 1
        if day_start_us(last) + DAY_US > self.config.now_us():
            raise ConfigError(f"{last} is not over yet on the simulator's clock")
        if day_start_us(first) < state.last_time_us or (
                state.history.last_id is not None
                and day_start_us(first) <= state.history.times_us[-1]):
            raise ConfigError(f"{state.name} already has trades on or after {first}")
        if len(state.history) + days * (per_day + 10) > state.history.retention:
            raise ConfigError(f"{days} days of {per_day} trades do not fit in --history "
                              f"{state.history.retention} with the {len(state.history)} "
                              "stored")
        out: Dict[str, Tuple[int, int]] = {}
        for n in range(days):
            day = first + timedelta(days=n)
            out[day.isoformat()] = self._generate_day(state, day, per_day)
        return out

    def _generate_day(self, state: SymbolState, day: date, per_day: int) -> Tuple[int, int]:
        assert state.generator is not None
        start = day_start_us(day)
        whole_ms = day < MICROS_FROM
        cols = Columns()
        while len(cols.flags) < per_day:  # whole bursts, as live generation makes them
            burst = state.generator.burst()
            # Steps of at least 8640 us, so a sub-ms part from the seeded draws keeps T rising.
            t_us = start + len(cols.flags) * DAY_US // per_day + burst.e_delays_us[0] % 1000
            cols.add(burst, t_us - t_us % 1000 if whole_ms else t_us)
        state.last_time_us = max(state.last_time_us, cols.times[-1])
        return cols.store(state.history)

    def store(self, state: SymbolState, prices: List[int], qtys: List[int], times: List[int],
              delays: List[int], flags: List[int]) -> Release:
        """Store externally made trades (replay) with the next ids."""
        return self._release(state, *state.history.append(prices, qtys, times, delays, flags))

    def _release(self, state: SymbolState, first: int, last: int) -> Release:
        withheld = min(state.withhold_pending, last - first + 1)
        if withheld:
            state.withhold_pending -= withheld
            state.ledger.withheld.add(first, first + withheld - 1)
        return Release(state, first, last, first + withheld)
