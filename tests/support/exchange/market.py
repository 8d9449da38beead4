"""The listed symbols, their generation rates and the generation tick."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .config import ConfigError, SimConfig, SymbolSpec, check_status, check_symbol
from .frames import TradeEncoder
from .generator import TradeGenerator
from .history import BURST_FLAG, MAKER_FLAG, LedgerEntry, TradeHistory

log = logging.getLogger(__name__)

# A generation loop that fell this far behind (a paused process, a debugger, a rate above
# what this process can make) starts afresh instead of emitting the whole backlog at once.
MAX_BACKLOG_S = 0.5
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
            raise ConfigError(f"unknown symbol {name!r}")
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
        prices: List[int] = []
        qtys: List[int] = []
        times: List[int] = []
        delays: List[int] = []
        flags: List[int] = []
        made = 0
        while made < due:  # whole bursts only, so the sequence does not depend on the rate
            burst = state.generator.burst()
            now_us = max(time.time_ns() // 1000, state.last_time_us)  # T never goes back
            state.last_time_us = now_us
            maker = MAKER_FLAG if burst.buyer_is_maker else 0
            n = len(burst.prices)
            prices.extend(burst.prices)
            qtys.extend(burst.qtys)
            times.extend([now_us] * n)
            delays.extend(burst.e_delays_us)
            flags.append(maker | BURST_FLAG)
            flags.extend([maker] * (n - 1))
            made += n
        return state.history.append(prices, qtys, times, delays, flags)

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
