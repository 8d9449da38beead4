"""The write path: a bounded queue of batches, one writer thread, retries, the spool, the checkpoint.

    pipeline --batch--> queue (bounded RAM) --> writer thread --> sink (InfluxDB or files)
                          | full                   | retry budget spent, or refused
                          v                        v
                        spool (disk) <-------------+      drained in order once the sink answers

A batch counts as stored when the sink took it or it is fsynced in the spool; only then does
the checkpoint move. Nothing is dropped: when RAM and disk are both full, `submit` blocks, the
stream falls behind and disconnects, and the gap is backfilled later from the checkpoint.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Optional

from .backoff import Backoff
from .checkpoint import Checkpoint
from .errors import PermanentWriteError, RetryableWriteError
from .pipeline import Batch
from .settings import WriteSettings
from .sink import PartialWrite, Sink
from .spool import Spool
from .stats import Stats

log = logging.getLogger(__name__)
# After a refusal a person must fix (token, bucket), probe again this often, and say it again
# this often: once clearly, never in a hot loop.
SETUP_REFUSALS = (401, 403, 404)  # the server refuses us; other refusals are about the batch
PERMANENT_PROBE_S = 30.0
PERMANENT_REMIND_S = 600.0


class Writer:
    def __init__(self, worker: str, sink: Sink, spool: Optional[Spool], checkpoint: Checkpoint,
                 settings: WriteSettings, stats: Stats,
                 sleep: Optional[Callable[[float], bool]] = None) -> None:
        self.worker = worker
        self.sink = sink
        self.spool = spool
        self.checkpoint = checkpoint
        self.settings = settings
        self.stats = stats
        self.queue: "queue.Queue[Batch]" = queue.Queue(maxsize=settings.queue_batches)
        self.stopping = threading.Event()
        self._sleep = sleep or self.stopping.wait
        self._blocked_until = 0.0  # after a permanent refusal: no attempt before this
        self._last_permanent = ""
        self._last_reminder = 0.0
        self._retry_after = 0.0  # the server's Retry-After of the last failed attempt
        self._refused_status: Optional[int] = None  # status of the last permanent refusal
        self.thread = threading.Thread(target=self._run, name=f"writer-{worker}", daemon=True)

    # -- producer side (stream reader, backfiller, ticker) ---------------------------------
    def submit(self, batch: Batch) -> None:
        """Queue a batch; when the queue is full it goes to the spool, never dropped."""
        while True:
            try:
                self.queue.put_nowait(batch)
                return
            except queue.Full:
                pass
            if self._to_spool(batch, "queue_full"):
                return
            # RAM and disk are full: block (backpressure) until the writer makes room.
            try:
                self.queue.put(batch, timeout=1.0)
                return
            except queue.Full:
                continue

    def _to_spool(self, batch: Batch, why: str) -> bool:
        if self.spool is None:
            return False
        try:
            self.spool.append(batch.body())
        except OSError as exc:
            self.stats.error(f"spool write failed: {exc}")
            log.error("worker=%s event=spool_failed why=%s error=%s fix='free disk space in "
                      "the data directory; batches wait in memory meanwhile'", self.worker, why, exc)
            return False
        self.stats.spooled += batch.trades
        log.warning("worker=%s event=spooled why=%s trades=%d backlog_bytes=%d", self.worker, why,
                    batch.trades, self.spool.backlog_bytes())
        self._stored(batch)
        return True

    def _stored(self, batch: Batch) -> None:
        self.checkpoint.batch_durable(batch.seq, batch.checkpoint)

    # -- writer thread -------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not (self.stopping.is_set() and self.queue.empty()):
            self._replay_spool()
            try:
                batch = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._deliver(batch)

    def _deliver(self, batch: Batch) -> None:
        """Write one batch with the retry policy; spool it when the budget is spent."""
        if time.monotonic() < self._blocked_until and self._to_spool(batch, "sink_unavailable"):
            return
        deadline = time.monotonic() + self.settings.retry_budget_s
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_delay_s)
        while True:
            ok = self._attempt(batch.body(), batch.trades)
            if ok:
                self.stats.written += batch.trades
                if batch.trades:
                    self.stats.record_lag(batch.first_time_ms)
                self._stored(batch)
                return
            if ok is None and self._reject_if_content(batch.body()):
                self._stored(batch)  # kept in the rejected file; nothing is left to send
                return
            if ok is None or self.stopping.is_set():  # refused for good, or shutting down
                if self._to_spool(batch, "refused" if ok is None else "shutdown"):
                    return
            delay = backoff.next_delay(self._retry_after)
            if time.monotonic() + delay > deadline and self._to_spool(batch, "retry_budget_spent"):
                return
            self.stats.retries += 1
            self._sleep(min(delay, 5.0) if self.stopping.is_set() else delay)

    def _attempt(self, body: str, trades: int) -> Optional[bool]:
        """True: stored. False: worth retrying. None: refused until a person acts."""
        self._retry_after = 0.0
        self.stats.write_requests += 1
        try:
            self.sink.write(body)
        except PartialWrite as exc:
            rejected = _dropped_count(str(exc))
            self.stats.rejected_lines += rejected
            self.stats.error(str(exc))
            log.error("worker=%s event=partial_write rejected_lines=%d kept=the_rest detail=%r",
                      self.worker, rejected, str(exc)[:300])
            return True
        except RetryableWriteError as exc:
            self._retry_after = exc.retry_after or 0.0
            self.stats.error(str(exc))
            log.warning("worker=%s event=write_failed retryable=true status=%s retry_after=%s "
                        "error=%r", self.worker, exc.status, exc.retry_after, str(exc)[:200])
            return False
        except PermanentWriteError as exc:
            self._refused_status = exc.status
            if exc.status in SETUP_REFUSALS:
                self._permanent(exc)
            else:
                self.stats.error(str(exc))
                log.error("worker=%s event=batch_refused status=%s error=%r", self.worker,
                          exc.status, str(exc)[:300])
            return None
        if self._last_permanent:
            log.info("worker=%s event=write_recovered after=%r", self.worker, self._last_permanent)
            self._last_permanent = ""
        self._blocked_until = 0.0
        return True

    def _reject_if_content(self, body: str) -> bool:
        """A batch refused for its content (400, 413 ...) is set aside, not retried forever."""
        if self._refused_status in SETUP_REFUSALS or self.spool is None:
            return False
        path = self.spool.reject(body)
        lines = body.count("\n") + 1
        self.stats.rejected_lines += lines
        log.error("worker=%s event=batch_set_aside lines=%d file=%s fix='inspect the file; "
                  "load it with influx -import once fixed'", self.worker, lines, path)
        return True

    def _permanent(self, exc: PermanentWriteError) -> None:
        text = str(exc)
        now = time.monotonic()
        self.stats.error(text)
        if text != self._last_permanent or now - self._last_reminder >= PERMANENT_REMIND_S:
            log.error("worker=%s event=write_refused status=%s error=%r action='batches go to "
                      "the spool; retrying every %ds'", self.worker, exc.status, text,
                      PERMANENT_PROBE_S)
            self._last_reminder = now
        self._last_permanent = text
        self._blocked_until = now + PERMANENT_PROBE_S

    def _replay_spool(self) -> None:
        """Send the spool's oldest lines while the sink answers; stop at the first failure."""
        if self.spool is None or time.monotonic() < self._blocked_until:
            return
        while not self.stopping.is_set() and self.queue.qsize() < self.settings.queue_batches:
            chunk = self.spool.peek(self.settings.batch_size)
            if chunk is None:
                return
            body, segment, end = chunk
            lines = body.count("\n") + 1
            ok = self._attempt(body, lines)
            if ok is None and self._reject_if_content(body):
                ok = True
            if not ok:
                if ok is False:
                    self._blocked_until = time.monotonic() + min(
                        self.settings.retry_max_delay_s, max(1.0, self._retry_after))
                return
            self.spool.commit(segment, end)
            self.stats.replayed += lines
            log.info("worker=%s event=spool_replayed trades=%d backlog_bytes=%d", self.worker,
                     lines, self.spool.backlog_bytes())

    # -- shutdown ------------------------------------------------------------------------
    def stop(self, timeout: float) -> None:
        """Finish the queue within `timeout` s; what is left goes to the spool."""
        self.stopping.set()
        if self.thread.ident is not None:
            self.thread.join(timeout)
        leftovers = 0
        while True:
            try:
                batch = self.queue.get_nowait()
            except queue.Empty:
                break
            if not self._to_spool(batch, "shutdown"):
                leftovers += batch.trades
        if leftovers:
            log.error("worker=%s event=unsaved_at_exit trades=%d note='not in the checkpoint; "
                      "the next start backfills them'", self.worker, leftovers)
        self.sink.close()


def _dropped_count(text: str) -> int:
    marker = "dropped="
    at = text.rfind(marker)
    if at < 0:
        return 0
    digits = ""
    for ch in text[at + len(marker):]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0
