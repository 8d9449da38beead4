"""The backfiller: fetches missing trade ids from REST `historicalTrades` and feeds them in.

A gap waits a short grace period first: during a make-before-break rotation the old connection
usually delivers the "missing" ids a moment later, and then no REST call is needed at all.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import List, Optional, Tuple

from workers.capture.pipeline import Gap, Pipeline
from workers.errors import RestError, RestStopped
from workers.exchange.rest import PAGE, RestClient
from workers.health import Stats

log = logging.getLogger(__name__)
# A gap in the live stream waits this long before REST is asked: an overlapping connection
# (a rotation) may still deliver it. The gap left by a restart has no such chance: served now.
GAP_GRACE_S = 2.0
RETRY_AFTER_FAILURE_S = 30.0
IDLE_POLL_S = 0.2  # how soon the thread notices `stopping` (an Event cannot wake a Condition)


class Backfiller:
    """One thread that serves gaps by due time (a heap), not in arrival order.

    A gap that waits 30 s for a retry does not hold up an earlier-due gap reported after it.
    A RestError re-queues the gap for 30 s later; RestStopped ends the thread quietly; anything
    else (RestShapeError, a bug) escapes the thread, so the worker logs its traceback and exits
    1 rather than run on without a backfiller.
    """

    def __init__(self, worker: str, rest: RestClient, pipeline: Pipeline, stats: Stats,
                 max_trades: int) -> None:
        self.worker = worker
        self.rest = rest
        self.pipeline = pipeline
        self.stats = stats
        self.max_trades = max_trades
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int, str, Gap]] = []  # (due, arrival, symbol, gap)
        self._arrivals = itertools.count()
        self.stopping = rest.stopping
        self.thread = threading.Thread(target=self._run, name=f"backfill-{worker}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def report_gap(self, symbol: str, gap: Gap) -> None:
        """Called by the pipeline (under no lock) when ids jump."""
        self.stats.add("gaps")
        since_resume = self.pipeline.is_resume_gap(symbol, gap)
        log.info("worker=%s symbol=%s event=gap first_id=%d last_id=%d missing=%d%s",
                 self.worker, symbol, gap[0], gap[1], gap[1] - gap[0] + 1,
                 " cause=restart" if since_resume else "")
        self._schedule(time.monotonic() + (0.0 if since_resume else GAP_GRACE_S), symbol, gap)

    def pending(self) -> int:
        """Gaps queued (not counting the one being fetched)."""
        with self._cond:
            return len(self._heap)

    def _schedule(self, due: float, symbol: str, gap: Gap) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._arrivals), symbol, gap))
            self._cond.notify()

    def _next_due(self) -> Optional[Tuple[str, Gap]]:
        """The earliest-due gap once it is due; None when stopping."""
        with self._cond:
            while not self.stopping.is_set():
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, _, symbol, gap = heapq.heappop(self._heap)
                    return symbol, gap
                wait = self._heap[0][0] - now if self._heap else IDLE_POLL_S
                self._cond.wait(min(wait, IDLE_POLL_S))
        return None

    def _run(self) -> None:
        while True:
            item = self._next_due()
            if item is None:
                return
            symbol, gap = item
            try:
                self._fill(symbol, gap)
            except RestStopped:
                return
            except RestError as exc:
                self.stats.error(f"backfill {symbol} {gap[0]}..{gap[1]}: {exc}")
                log.error("worker=%s symbol=%s event=backfill_failed first_id=%d last_id=%d "
                          "error=%r retry_in_s=%.0f", self.worker, symbol, gap[0], gap[1],
                          str(exc), RETRY_AFTER_FAILURE_S)
                self._schedule(time.monotonic() + RETRY_AFTER_FAILURE_S, symbol, gap)
            except Exception as exc:  # RestShapeError or a bug: not something to retry
                # Named here; it then escapes the thread, whose excepthook
                # (workers/common/threads.py) logs the traceback and ends the worker with exit 1.
                log.error("worker=%s symbol=%s event=backfill_unexpected first_id=%d "
                          "last_id=%d error=%r", self.worker, symbol, gap[0], gap[1],
                          f"{type(exc).__name__}: {exc}"[:300])
                raise

    def _still_missing(self, symbol: str, lo: int, hi: int) -> List[Gap]:
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
            page = self.rest.trades_page(symbol, next_id, min(PAGE, hi - next_id + 1))
            if page.empty:
                self._give_up(symbol, next_id, hi, "the exchange returned no trades")
                return
            assert page.first_id is not None and page.last_id is not None
            if page.first_id > next_id:  # older than what the exchange still serves
                self._give_up(symbol, next_id, min(hi, page.first_id - 1),
                              "no longer served by the exchange")
            for trade_id, reason in page.invalid:
                # Without this the id stays missing forever and holds the checkpoint below it.
                if trade_id <= hi and self._still_missing(symbol, trade_id, trade_id):
                    self._give_up(symbol, trade_id, trade_id,
                                  f"REST row failed validation: {reason}")
            for trade in page.trades:
                if trade.trade_id > hi:
                    break
                if self.pipeline.accept(trade):
                    filled += 1
            next_id = page.last_id + 1
        self.stats.add("backfilled", filled)
        log.info("worker=%s symbol=%s event=backfilled first_id=%d last_id=%d trades=%d "
                 "took_s=%.2f", self.worker, symbol, lo, hi, filled, time.monotonic() - started)

    def _give_up(self, symbol: str, lo: int, hi: int, why: str) -> None:
        self.pipeline.give_up(symbol, lo, hi)
        self.stats.add("given_up", hi - lo + 1)
        self.stats.error(f"gave up {symbol} ids {lo}..{hi}: {why}")
        log.error("worker=%s symbol=%s event=gap_given_up first_id=%d last_id=%d missing=%d "
                  "why=%r", self.worker, symbol, lo, hi, hi - lo + 1, why)
