"""REST checks of quiet streams, on a thread of their own so that REST never delays a reconnect.

Silence alone is no proof that a stream is stale (quiet pairs go minutes without a trade), so
before a silent connection is dropped the prober asks REST for the latest trade ids. It also
checks once every new connection that stays quiet for a few seconds: the trades just before a
disconnect or a restart are otherwise only noticed when the next one arrives, which for a quiet
pair can be minutes later. What REST shows and we have not seen is registered as a gap (the
backfiller fetches it); a stale connection gets `stale_reason`, and its keeper replaces it.

The keeper calls `check` on every tick and it never blocks: a REST endpoint that hangs for
minutes delays only the next probe, never the keeper's dead-peer checks, reconnects or rotations.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Dict, List, Set, Tuple

from workers.capture.pipeline import Pipeline
from workers.errors import RestError, RestStopped
from workers.exchange.connection import Connection
from workers.exchange.rest import RestClient
from workers.health import Stats

log = logging.getLogger(__name__)
OPENING_PROBE_S = 3.0  # a new connection without a trade by then gets one REST check
SYMBOLS_PER_PROBE = 3  # weight 25 each: the most recently active symbols of the connection


class Prober:
    def __init__(self, worker: str, rest: RestClient, pipeline: Pipeline, stats: Stats,
                 stall_after_s: float, stopping: threading.Event) -> None:
        self.worker = worker
        self.rest = rest
        self.pipeline = pipeline
        self.stats = stats
        self.stall_after_s = stall_after_s
        self.stopping = stopping
        self._queue: "queue.Queue[Tuple[Connection, bool]]" = queue.Queue()
        self._queued: Set[str] = set()  # plan labels with a probe waiting or running
        self._last_stall_probe: Dict[str, float] = {}
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"probe-{worker}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # -- keeper thread: decide, never wait -------------------------------------------------
    def check(self, conn: Connection) -> None:
        now = time.monotonic()
        if not conn.opening_probed and conn.trades == 0 and \
                now - conn.opened_at >= OPENING_PROBE_S:
            conn.opening_probed = True
            self._request(conn, opening=True)
            return
        label = conn.plan.label
        quiet_for = now - max(conn.opened_at, conn.last_trade_at)
        if quiet_for < self.stall_after_s or \
                now - self._last_stall_probe.get(label, 0.0) < self.stall_after_s:
            return
        self._last_stall_probe[label] = now
        self._request(conn, opening=False)

    def _request(self, conn: Connection, opening: bool) -> None:
        with self._lock:
            if conn.plan.label in self._queued:
                return  # one probe per connection at a time, however long REST takes
            self._queued.add(conn.plan.label)
        self._queue.put((conn, opening))

    # -- prober thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, opening = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                stale = self.probe(list(conn.plan.symbols))
            finally:
                with self._lock:
                    self._queued.discard(conn.plan.label)
            if stale and not opening and not conn.ended.is_set():
                conn.stale_reason = f"stalled: REST shows newer trades ({'; '.join(stale)})"

    def probe(self, symbols: List[str]) -> List[str]:
        """Ask REST for the latest ids; register (as gaps) and return what we have not seen."""
        last_ids = self.pipeline.last_ids()
        stale = []
        for symbol in self._most_recent(symbols):
            if self.stopping.is_set():
                break
            try:
                latest = self.rest.latest_trade_id(symbol)
            except RestStopped:
                break
            except RestError as exc:
                log.warning("worker=%s symbol=%s event=stall_probe_failed error=%r", self.worker,
                            symbol, str(exc))
                continue
            known = last_ids.get(symbol)
            if latest is not None and known is not None and latest > known:
                stale.append(f"{symbol} at {latest}, we have {known}")
                self.pipeline.expect_up_to(symbol, latest)
        return stale

    def _most_recent(self, symbols: List[str]) -> List[str]:
        last = self.stats.last_trade_ms
        if len(symbols) <= SYMBOLS_PER_PROBE:
            return symbols
        wanted = set(symbols)
        recent = sorted(((ms, s) for s, ms in list(last.items()) if s in wanted), reverse=True)
        return [s for _, s in recent[:SYMBOLS_PER_PROBE]] or symbols[:SYMBOLS_PER_PROBE]
