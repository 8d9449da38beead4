"""A batch of line-protocol lines on its way to the database, and what it checkpoints."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class Batch:
    seq: int
    lines: List[str]
    trades: int
    checkpoint: Dict[str, int]  # symbol -> highest id with nothing missing at or below it
    first_time_ms: int  # trade time of the oldest trade in the batch, for lag figures
    created: float = field(default_factory=time.monotonic)

    def body(self) -> str:
        return "\n".join(self.lines)
