"""Counters served by GET /_sim/stats."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict


@dataclass
class SimStats:
    started_at: float = field(default_factory=time.monotonic)
    accepted: int = 0
    refused: int = 0  # handshakes answered with HTTP 400
    closes: Counter[str] = field(default_factory=Counter)  # cause -> connections
    malformed: Counter[str] = field(default_factory=Counter)  # kind -> frames
    rest: Dict[str, Counter[str]] = field(default_factory=dict)  # path -> status -> requests
    trades_sent: int = 0  # trade frames written, summed over connections
    resent: int = 0  # trade frames written again by `resend`

    def count_rest(self, path: str, status: int) -> None:
        self.rest.setdefault(path, Counter())[str(status)] += 1

    def as_dict(self) -> Dict[str, Any]:
        return {"uptime": round(time.monotonic() - self.started_at, 3),
                "accepted": self.accepted, "refused": self.refused,
                "closes": dict(self.closes), "malformed": dict(self.malformed),
                "rest": {path: dict(by_status) for path, by_status in self.rest.items()},
                "trades_sent": self.trades_sent, "resent": self.resent}
