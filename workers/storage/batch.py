"""A batch of line-protocol lines on its way to the database, and what it checkpoints."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List

from workers.storage.lineproto import line_time_ms

# The trades of a batch whose lag (trade time -> stored) is recorded: evenly spaced, so a batch
# of 5,000 costs the writer thread 100 parses, not 5,000 (the lag is a distribution, not a sum).
LAG_SAMPLES = 100


@dataclass
class Batch:
    seq: int
    lines: List[str]
    trades: int
    checkpoint: Dict[str, int]  # symbol -> highest id with nothing missing at or below it
    first_time_ms: int  # trade time of the oldest trade in the batch
    created: float = field(default_factory=time.monotonic)
    others: List[int] = field(default_factory=list)  # indices of lines that are not trades

    def body(self) -> str:
        return "\n".join(self.lines)

    def trade_times_ms(self, most: int = LAG_SAMPLES) -> List[int]:
        """The trade times of up to `most` of its trades, evenly spaced over the batch: each
        trade's own time, for the lag figures (the health point a batch may carry is left out)."""
        skip = set(self.others)
        trades = [line for i, line in enumerate(self.lines) if i not in skip] if skip \
            else self.lines
        step = max(1.0, len(trades) / most)
        return [line_time_ms(trades[int(k * step)])
                for k in range(min(most, len(trades)))]
