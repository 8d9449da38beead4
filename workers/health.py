"""Counters of one worker, the periodic summary line, and the status file `scripts/status` reads."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional

from workers.common.atomic import write_atomic


@dataclass
class Stats:
    received: int = 0  # frames that parsed as trades: the connections' own counts, summed on read
    invalid: Counter = field(default_factory=Counter)  # reason -> count
    duplicates: int = 0
    written: int = 0  # trades in batches stored in InfluxDB (or data files)
    write_requests: int = 0
    retries: int = 0
    spooled: int = 0  # trades that went to the disk spool
    replayed: int = 0  # trades replayed from the spool
    rejected_lines: int = 0  # lines the server refused, set aside in rejected.lp (all kinds)
    rejected_trades: int = 0  # of them, trade lines (the rest are health points)
    reconnects: int = 0
    gaps: int = 0
    backfilled: int = 0
    given_up: int = 0  # trade ids abandoned after the backfill cap
    last_trade_ms: Dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    lags_ms: List[float] = field(default_factory=list)  # trade time -> stored, since last summary
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, counter: str, n: int = 1) -> None:
        """Add to a counter that more than one thread updates (`+=` is not atomic)."""
        with self.lock:
            setattr(self, counter, getattr(self, counter) + n)

    def error(self, text: str) -> None:
        self.last_error = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}"

    def record_lag(self, first_time_ms: int) -> None:
        lag = time.time() * 1000 - first_time_ms
        with self.lock:
            if len(self.lags_ms) < 10_000:
                self.lags_ms.append(lag)

    def take_lags(self) -> List[float]:
        with self.lock:
            lags, self.lags_ms = self.lags_ms, []
        return sorted(lags)


def percentile(sorted_values: List[float], q: float) -> Optional[float]:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def write_status(path: Path, status: dict) -> None:
    """Replace the status file atomically, so a reader never sees half of it."""
    write_atomic(path, json.dumps(status, sort_keys=True), durable=False)


def counters(stats: Stats) -> dict:
    """The counters as plain JSON-able values."""
    data = {f.name: getattr(stats, f.name) for f in fields(stats)
            if f.name not in ("lock", "lags_ms")}
    data["invalid"] = dict(stats.invalid)
    data["last_trade_ms"] = dict(stats.last_trade_ms)
    return data
