"""The seeded trade sequence of one symbol.

The sequence of bursts (maker side, prices, quantities, event delays) depends only on the seed
and the symbol, never on time or rate: a test can rebuild it offline and compare it with what
REST or the stream served.  Times come from the caller (the wall clock at generation).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, List

from .config import UNITS


@dataclass
class Burst:
    """One taker order filling one or more makers: all fills share T and the maker side."""

    buyer_is_maker: bool
    prices: List[int]  # 1e-8 units, one per fill
    qtys: List[int]
    e_delays_us: List[int]  # E - T per fill, 0..2000 us


class TradeGenerator:
    """Deterministic bursts for one symbol, starting at `price_units`."""

    # Median notional about 30 quote units with a long tail, like retail-heavy spot pairs.
    NOTIONAL_MU = 3.4
    NOTIONAL_SIGMA = 1.4

    def __init__(self, symbol: str, seed: int, price_units: int, tick: int, step: int) -> None:
        # A string seed is hashed with SHA-512, so it is stable across runs and processes.
        self._rng = random.Random(f"{seed}:{symbol}")
        self.anchor = price_units
        self.price = price_units
        self.tick = tick
        self.step = step

    def burst(self) -> Burst:
        rng = self._rng.random
        size = 1 if rng() < 0.55 else 2 + min(int(-math.log(1.0 - rng()) * 2.5), 10)
        maker_buys = rng() < 0.5  # buyer is maker, so the taker sold and walks the bids down
        self._walk(rng)
        direction = -1 if maker_buys else 1
        prices: List[int] = []
        qtys: List[int] = []
        delays: List[int] = []
        price = self.price
        base_delay = int(rng() * 1000)
        for _ in range(size):
            prices.append(price)
            qtys.append(self._qty(price))
            delays.append(base_delay + int(rng() * 1001))
            if rng() < 0.3:  # this maker level is used up, the next fill is one tick further
                price = max(price + direction * self.tick, self.tick)
        self.price = price
        return Burst(maker_buys, prices, qtys, delays)

    def _walk(self, rng: Callable[[], float]) -> None:
        # Random walk in ticks with a weak pull to the start price, so that tiny prices such
        # as 0.00000123 stay positive and big ones do not drift off over millions of trades.
        ticks = int(rng() * 5) - 2
        pull = (self.anchor - self.price) / (self.tick * 2000.0)
        ticks += int(round(pull))
        self.price = max(self.price + ticks * self.tick, self.tick)

    def _qty(self, price: int) -> int:
        notional = math.exp(self.NOTIONAL_MU + self.NOTIONAL_SIGMA * self._gauss())
        steps = int(notional * UNITS / price * UNITS / self.step) if price else 1
        return max(steps, 1) * self.step

    def _gauss(self) -> float:
        # Box-Muller on the one rng, so the sequence stays reproducible draw for draw.
        u1 = 1.0 - self._rng.random()
        u2 = self._rng.random()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
