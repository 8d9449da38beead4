"""The backfiller: fetches missing trade ids from REST `historicalTrades` and feeds them in.

A gap waits a short grace period first: during a make-before-break rotation the old connection
usually delivers the "missing" ids a moment later, and then no REST call is needed at all.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Tuple

from .pipeline import Gap, Pipeline
from .rest import PAGE, RestClient, RestError
from .stats import Stats

log = logging.getLogger(__name__)
GAP_GRACE_S = 2.0


class Backfiller:
    def __init__(self, worker: str, rest: RestClient, pipeline: Pipeline, stats: Stats,
                 max_trades: int) -> None:
        self.worker = worker
        self.rest = rest
        self.pipeline = pipeline
        self.stats = stats
        self.max_trades = max_trades
        self.queue: "queue.Queue[Tuple[float, str, Gap]]" = queue.Queue()
        self.stopping = rest.stopping
        self.thread = threading.Thread(target=self._run, name=f"backfill-{worker}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def report_gap(self, symbol: str, gap: Gap) -> None:
        """Called by the pipeline (under no lock) when ids jump."""
        self.stats.gaps += 1
        log.info("worker=%s symbol=%s event=gap first_id=%d last_id=%d missing=%d", self.worker,
                 symbol, gap[0], gap[1], gap[1] - gap[0] + 1)
        self.queue.put((time.monotonic() + GAP_GRACE_S, symbol, gap))

    def pending(self) -> int:
        return self.queue.qsize()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                due, symbol, gap = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if self.stopping.wait(max(0.0, due - time.monotonic())):
                return
            try:
                self._fill(symbol, gap)
            except RestError as exc:
                self.stats.error(f"backfill {symbol} {gap[0]}..{gap[1]}: {exc}")
                log.error("worker=%s symbol=%s event=backfill_failed first_id=%d last_id=%d "
                          "error=%r retry_in_s=30", self.worker, symbol, gap[0], gap[1], str(exc))
                self.queue.put((time.monotonic() + 30.0, symbol, gap))

    def _still_missing(self, symbol: str, lo: int, hi: int) -> list:
        gaps = self.pipeline.open_gaps().get(symbol, [])
        return [(max(a, lo), min(b, hi)) for a, b in gaps if a <= hi and b >= lo]

    def _fill(self, symbol: str, gap: Gap) -> None:
        for lo, hi in self._still_missing(symbol, *gap):
            if hi - lo + 1 > self.max_trades:
                self._give_up(symbol, lo, hi - self.max_trades, "over BACKFILL_MAX_TRADES")
                lo = hi - self.max_trades + 1
            self._fetch(symbol, lo, hi)

    def _fetch(self, symbol: str, lo: int, hi: int) -> None:
        started = time.monotonic()
        next_id, filled = lo, 0
        while next_id <= hi and not self.stopping.is_set():
            trades = self.rest.trades_from(symbol, next_id, min(PAGE, hi - next_id + 1))
            if not trades:
                self._give_up(symbol, next_id, hi, "the exchange returned no trades")
                return
            if trades[0].trade_id > next_id:  # older than what the exchange still serves
                self._give_up(symbol, next_id, trades[0].trade_id - 1,
                              "no longer served by the exchange")
            for trade in trades:
                if trade.trade_id > hi:
                    break
                if self.pipeline.accept(trade):
                    filled += 1
            next_id = trades[-1].trade_id + 1
        self.stats.backfilled += filled
        log.info("worker=%s symbol=%s event=backfilled first_id=%d last_id=%d trades=%d "
                 "took_s=%.2f", self.worker, symbol, lo, hi, filled, time.monotonic() - started)

    def _give_up(self, symbol: str, lo: int, hi: int, why: str) -> None:
        self.pipeline.give_up(symbol, lo, hi)
        self.stats.given_up += hi - lo + 1
        self.stats.error(f"gave up {symbol} ids {lo}..{hi}: {why}")
        log.error("worker=%s symbol=%s event=gap_given_up first_id=%d last_id=%d missing=%d "
                  "why=%r", self.worker, symbol, lo, hi, hi - lo + 1, why)
