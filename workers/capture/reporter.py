"""What a worker tells about itself: the status file, the summary line and the health point.

All three show one snapshot (a `StatusFile`, workers/health.py): the status file is the
snapshot itself (every second, for scripts/status), the summary line and the health point show
the figures `FIGURES` names (a log line every SUMMARY_INTERVAL_S, a point in InfluxDB every
10 s, for the dashboards). The worker's main thread calls all three; nothing here is on the
per-trade path.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from workers.health import (
    FIGURES,
    ConnectionState,
    Stats,
    StatusFile,
    counters,
    figure_value,
    percentile,
    write_status,
)

log = logging.getLogger(__name__)
RATE_WINDOW_S = 5.0  # TRADES/S covers this much of the recent past
# LAG covers the trades stored in this much of the recent past; with none stored in it (an
# InfluxDB outage, a silent stream, a quiet pair) it is unknown, not its last figures. 10 s: the
# worker's health-point period, so each point's lag covers the trades stored since the last one.
LAG_WINDOW_S = 10.0


@dataclass
class Sources:
    """What a snapshot reads of the running worker besides its Stats (tests pass fakes)."""
    received: Callable[[], int]  # trades parsed: the connections' own counts, summed
    connections: Callable[[], List[ConnectionState]]
    spool_bytes: Callable[[], int]  # waiting in the spool for InfluxDB (0 without a spool)
    queue_batches: Callable[[], int]  # batches waiting for the writer thread
    checkpoint: Callable[[], Dict[str, int]]  # symbol -> last stored trade id


class Reporter:
    def __init__(self, worker: str, host: str, symbols: Sequence[str], stats: Stats,
                 sources: Sources, status_path: Path, point_key: str,
                 add_line: Callable[[str], None],
                 clock: Callable[[], float] = time.time) -> None:
        """`point_key` is the health point's `measurement,tags`; `add_line` sends the point
        to the database with the trades."""
        self.worker = worker
        self.host = host
        self.symbols = list(symbols)
        self.stats = stats
        self.sources = sources
        self.status_path = status_path
        self.point_key = point_key
        self.add_line = add_line
        self.clock = clock
        self.pid = os.getpid()
        self.started = clock()
        self.last: Optional[StatusFile] = None  # the last status file written
        # (taken at, lags) of the trades stored in the last LAG_WINDOW_S
        self._lags: Deque[Tuple[float, List[float]]] = deque()
        # (time, received) of the snapshots of the last RATE_WINDOW_S, for TRADES/S
        self._rate_samples: Deque[Tuple[float, int]] = deque([(self.started, 0)])
        self._connected_once: Set[str] = set()  # connections that have been open since start

    def snapshot(self) -> StatusFile:
        """Every figure, as of now."""
        now = self.clock()
        lags = self._recent_lags(now)
        received = self.stats.received = self.sources.received()
        connections = self._connections()
        status: StatusFile = {
            "worker": self.worker, "host": self.host, "symbols": list(self.symbols),
            "pid": self.pid, "started": self.started, "updated": now,
            "trades_per_s": round(self._rate(now, received), 2),
            "lag_p50_ms": percentile(lags, 0.5),
            "lag_p99_ms": percentile(lags, 0.99),
            "spool_backlog_bytes": self.sources.spool_bytes(),
            "queue_batches": self.sources.queue_batches(),
            "checkpoint": self.sources.checkpoint(),
            "connected": all(c.get("connected", False) for c in connections),
            "connections": connections,
        }
        status.update(counters(self.stats))
        last = max(status["last_trade_ms"].values(), default=None)
        # the newest trade's age when this file was written (LAST TRADE in scripts/status)
        status["last_trade_age_s"] = None if last is None else \
            round(max(0.0, now - last / 1000), 3)
        return status

    def write_status(self) -> None:
        """Write the status file (a failure is logged: the worker goes on capturing)."""
        self.last = self.snapshot()
        try:
            write_status(self.status_path, self.last)
        except OSError as exc:
            log.warning("worker=%s event=status_write_failed error=%s", self.worker, exc)

    def summary(self) -> None:
        """The summary line, of the last status file written (or of now, before the first)."""
        log.info("worker=%s event=summary %s", self.worker,
                 summary_text(self.last or self.snapshot()))

    def health_point(self) -> None:
        """A small self-metrics point, written with the trades (measurement streamer_health)."""
        status = self.snapshot()
        self.add_line(point_line(self.point_key, status, int(status["updated"] * 1e9)))

    def _recent_lags(self, now: float) -> List[float]:
        """The lags of the trades stored in the last LAG_WINDOW_S, sorted."""
        taken = self.stats.take_lags()
        if taken:
            self._lags.append((now, taken))
        while self._lags and now - self._lags[0][0] >= LAG_WINDOW_S:
            self._lags.popleft()
        return sorted(lag for _, lags in self._lags for lag in lags)

    def _rate(self, now: float, received: int) -> float:
        samples = self._rate_samples
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()  # keep one sample at least RATE_WINDOW_S old
        rate = (received - samples[0][1]) / max(1e-6, now - samples[0][0])
        samples.append((now, received))
        return rate

    def _connections(self) -> List[ConnectionState]:
        connections = self.sources.connections()
        for conn in connections:
            label = conn.get("conn", "")
            if conn.get("connected"):
                self._connected_once.add(label)
            conn["connected_once"] = label in self._connected_once
        return connections


def summary_text(status: StatusFile) -> str:
    """`trades_per_s=12.5 received=100 ... lag_p99_ms=180`: the summary line's figures."""
    parts = []
    for figure in FIGURES:
        if figure.summary:
            value = figure_value(status, figure)
            if figure.kind == "rate":
                shown = f"{value or 0.0:.1f}"
            elif figure.kind == "ms":
                shown = "-" if value is None else f"{value:.0f}"
            else:
                shown = "%d" % (value or 0)
            parts.append(f"{figure.summary}={shown}")
    return " ".join(parts)


def point_line(key: str, status: StatusFile, time_ns: int) -> str:
    """The health point in line protocol: counts as integers, a latency only when known."""
    fields = []
    for figure in FIGURES:
        if figure.point:
            value = figure_value(status, figure)
            if figure.kind == "ms":
                if value is not None:
                    fields.append(f"{figure.point}={value:.1f}")
            else:
                fields.append(f"{figure.point}={int(value or 0)}i")
    return f"{key} {','.join(fields)} {time_ns}"
