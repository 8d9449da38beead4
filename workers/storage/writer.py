"""The write path: a bounded queue of batches, one writer thread, retries, the spool, the
checkpoint.

    pipeline --batch--> queue (bounded RAM) --> writer thread --> sink (InfluxDB or files)
                          | full                   | retry budget spent, or refused
                          v                        v
                        spool (disk) <-------------+      drained in order once the sink answers

A batch counts as stored when the sink took it or it is fsynced in the spool; only then does
the checkpoint move. Nothing is dropped: when RAM and disk are both full, `submit` blocks, the
stream falls behind and disconnects, and the gap is backfilled later from the checkpoint.

Lines the server refuses are set aside, never lost, and no other line with them: what a partial
write refused, or what made the server refuse a batch whole (2.7 and 3 Core refuse a batch for
one line), is found by writing the batch again in parts, and only the refused lines go to
`data/<worker>/rejected.lp`; only then does the batch count as stored (refusals.py says how). A
batch still answered 500 when its retry budget is spent is sorted out the same way (some 3.x
releases answered a malformed batch so), so one broken line is not spooled and replayed forever.
If a re-write fails otherwise (InfluxDB busy or down, token refused), nothing is set aside and
the whole batch takes the normal retry/spool path.

A 429 (Cloud Serverless: the write quota of a fixed 5-minute window is used up) is waited out
whole, however long its Retry-After: no request until then, batches go to the spool meanwhile
(never dropped, never set aside), and the wait is said once (`event=write_quota_wait until=`)
and kept in the status file (`write_quota_until`) for scripts/status.

So that the quota can be seen coming, each request's uncompressed body is counted (Stats
`count_sent`: one add per request, never per trade) in fixed windows of INFLUXDB_WRITE_LIMIT's
length (300 s without one) aligned to the epoch, as Cloud Serverless counts. Which requests
count: Cloud counts what it ingests, so every request the server answered counts, a refused or
partial one included (it may have been parsed and counted; counting too much warns early, never
late), except the answers given before the body is ingested: 429 (the quota itself), 401/403/404
(token, bucket) and 413 (too large). A request with no answer (unreachable, timed out) does not
count: an outage's retries would fill the window with bytes the server never saw.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Dict, Optional, Protocol

from workers.common import diskerrors
from workers.common.backoff import SYSTEM_CLOCK, Backoff, Clock
from workers.common.timefmt import iso_seconds
from workers.errors import ContentRefused, PermanentWriteError, RetryableWriteError
from workers.health import Stats
from workers.settings import QUOTA_WINDOW_S, WriteSettings
from workers.storage.batch import Batch
from workers.storage.refusals import SERVER_ERROR, SPLIT_STATUSES, Outcome, Refusals
from workers.storage.sink import Sink
from workers.storage.spool import Spool

log = logging.getLogger(__name__)
# After a refusal a person must fix (token, bucket), probe again this often, and say it again
# this often: once clearly, never in a hot loop.
SETUP_REFUSALS = (401, 403, 404)  # the server refuses us; other refusals are about the batch
NOT_INGESTED = SETUP_REFUSALS + (413, 429)  # answers that leave the quota's count as it was
PERMANENT_PROBE_S = 30.0
PERMANENT_REMIND_S = 600.0
QUOTA_STATUS = 429


def batch_backoff(settings: WriteSettings, clock: Clock) -> Backoff:
    """The retries of one batch (the writer's, and load-files'): WRITE_RETRY_INITIAL_MS doubling
    up to WRITE_RETRY_MAX_DELAY_S, within WRITE_RETRY_BUDGET_S."""
    return Backoff(settings.retry_initial_s, settings.retry_max_delay_s,
                   budget_s=settings.retry_budget_s, clock=clock)


class DurableMarks(Protocol):
    """Told of each batch once it is stored, spooled or set aside: the worker's Checkpoint, or
    the history loader's counter (history/load.py), which must not move the worker's."""

    def batch_durable(self, seq: int, marks: Dict[str, int]) -> bool: ...


class Writer:
    def __init__(self, worker: str, sink: Sink, spool: Optional[Spool], checkpoint: DurableMarks,
                 settings: WriteSettings, stats: Stats, clock: Clock = SYSTEM_CLOCK) -> None:
        self.worker = worker
        self.sink = sink
        self.spool = spool
        self.checkpoint = checkpoint
        self.settings = settings
        self.stats = stats
        limit = settings.write_limit
        stats.quota_window_s = limit.window_s if limit else QUOTA_WINDOW_S
        self.queue: "queue.Queue[Batch]" = queue.Queue(maxsize=settings.queue_batches)
        self.stopping = threading.Event()
        self.clock = clock  # the retries' time and waits
        self._blocked_until = 0.0  # after a permanent refusal: no attempt before this
        self._last_permanent = ""
        self._last_reminder = 0.0
        self._retry_after = 0.0  # the server's Retry-After of the last failed attempt
        self._failed: Optional[RetryableWriteError] = None  # the last attempt's, if retryable
        self._quota_until = 0.0  # after a 429: no attempt before this (monotonic)
        self._replay_failing_since: Optional[float] = None  # the spool's oldest chunk fails
        self._refused_status: Optional[int] = None  # status of the last permanent refusal
        self._refused: Optional[Exception] = None  # the last permanent refusal itself
        self._set_aside = (0, 0)  # (lines, trades) the last attempt put in rejected.lp
        self.refusals = Refusals(worker, self._send, spool, stats)
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

    def _to_spool(self, batch: Batch, why: str, quiet: bool = False) -> bool:
        if self.spool is None:
            return False
        try:
            self.spool.append(batch.body())
        except OSError as exc:
            self.stats.error(f"spool write failed: {exc}")
            log.error("worker=%s event=spool_failed why=%s cause=%s error=%s fix='%s; batches "
                      "wait in memory meanwhile'", self.worker, why, diskerrors.cause(exc), exc,
                      diskerrors.fix(exc, str(self.spool.directory), "DATA_DIR"))
            return False
        self.stats.add("spooled", batch.trades)  # also on producer threads (queue full)
        # quiet: a wait already said once (the write quota), not a line per batch
        log.log(logging.DEBUG if quiet else logging.WARNING,
                "worker=%s event=spooled why=%s trades=%d backlog_bytes=%d", self.worker, why,
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
        if time.monotonic() < self._blocked_until:
            quota = self._quota_waiting()
            if self._to_spool(batch, "write_quota" if quota else "sink_unavailable", quota):
                return
        backoff = batch_backoff(self.settings, self.clock)
        while True:
            ok = self._attempt(batch.body(), batch.trades)
            if ok is None and self._reject_if_content(batch.body()):
                ok = True  # kept in the rejected file; nothing is left to send
            if ok:
                self._done(batch)
                return
            if ok is False and self._quota_waiting() and \
                    self._to_spool(batch, "write_quota", quiet=True):
                return
            if ok is None or self.stopping.is_set():  # refused for good, or shutting down
                if self._to_spool(batch, "refused" if ok is None else "shutdown"):
                    return
            delay = backoff.next_delay(self._retry_after)
            if not backoff.fits(delay):
                if self._sort_failed(batch.body()):
                    self._done(batch)
                    return
                if self._to_spool(batch, "retry_budget_spent"):
                    return
            self.stats.retries += 1
            self.clock.sleep(min(delay, 5.0) if self.stopping.is_set() else delay, self.stopping)

    def _done(self, batch: Batch) -> None:
        """The batch is stored, but for what the last attempt set aside."""
        written = batch.trades - self._set_aside[1]
        self.stats.written += written
        if written:
            self.stats.record_lags(batch.trade_times_ms())
        self._stored(batch)

    def _attempt(self, body: str, trades: int) -> Optional[bool]:
        """True: stored (lines the server refused are in rejected.lp). False: worth retrying.
        None: refused until a person acts, or refused whole for its content."""
        self._retry_after = 0.0
        self._failed = None
        self._set_aside = (0, 0)
        error = self._send(body)
        if isinstance(error, ContentRefused) and error.status in SPLIT_STATUSES:
            return self._settle(body, error)  # a partial write, or refused whole for lines
        return self._judge(error)

    def _send(self, body: str) -> Optional[Exception]:
        """One request; the write error, or None when the sink took every line."""
        self.stats.write_requests += 1
        try:
            self.sink.write(body)
        except (RetryableWriteError, PermanentWriteError) as exc:
            if exc.status and exc.status not in NOT_INGESTED:
                self._count_sent(body)
            return exc
        self._count_sent(body)
        return None

    def _count_sent(self, body: str) -> None:
        """The body's uncompressed bytes (what the quota counts, gzip or not) and lines."""
        nbytes = len(body) if body.isascii() else len(body.encode())  # isascii: O(1)
        self.stats.count_sent(nbytes, body.count("\n") + 1, self.clock.time())

    def _judge(self, error: Optional[Exception]) -> Optional[bool]:
        """Log an answer and say what it means: see `_attempt`."""
        if error is None:
            if self._last_permanent:
                log.info("worker=%s event=write_recovered after=%r", self.worker,
                         self._last_permanent)
                self._last_permanent = ""
            self._blocked_until = 0.0
            return True
        if isinstance(error, RetryableWriteError):
            self._retry_after = error.retry_after or 0.0
            self._failed = error
            self.stats.error(str(error))
            if error.status == QUOTA_STATUS:
                self._quota_wait(error)
                return False
            log.warning("worker=%s event=write_failed retryable=true status=%s retry_after=%s "
                        "error=%r", self.worker, error.status, error.retry_after, str(error)[:200])
            return False
        assert isinstance(error, PermanentWriteError), error
        self._refused_status = error.status
        self._refused = error
        if error.status in SETUP_REFUSALS:
            self._permanent(error)
        else:
            self.stats.error(str(error))
            log.error("worker=%s event=batch_refused status=%s error=%r", self.worker,
                      error.status, str(error)[:300])
        return None

    def _settle(self, body: str, first: Exception) -> Optional[bool]:
        """Sort out which lines the server refused and set them aside (refusals.py).

        True once every line is stored or fsynced in rejected.lp. False or None (as `_attempt`)
        when a re-write failed for another reason: then nothing is set aside and the caller
        treats the whole batch as not stored.
        """
        outcome = self.refusals.sort_out(body, first)
        if outcome.failure is not None:
            return self._judge(outcome.failure)
        if not self._took(outcome):
            return False
        return self._judge(None)

    def _sort_failed(self, body: str) -> bool:
        """A batch the server still answers 500 when its retry budget is spent: sorted out like
        a batch refused whole (refusals.py), so a line it cannot take is set aside and the rest
        stored. False when it is not such a batch, or the server fails every part (then it is
        the server, not the batch: the caller spools it)."""
        error = self._failed
        if error is None or error.status != SERVER_ERROR:
            return False
        return self._settle(body, error) is True

    def _quota_wait(self, error: RetryableWriteError) -> None:
        """A 429: InfluxDB's write quota is used up until its Retry-After (Cloud Serverless: the
        end of a fixed 5-minute window, up to ~300 s). No attempt until then, whatever the retry
        budget; said once per wait, with its end, and kept for scripts/status."""
        wait = error.retry_after or self.settings.retry_max_delay_s
        self._quota_until = time.monotonic() + wait
        self._blocked_until = max(self._blocked_until, self._quota_until)
        now = self.clock.time()
        if self.stats.write_quota_until <= now:  # not waiting yet
            log.warning("worker=%s event=write_quota_wait until=%s wait_s=%.0f status=%d "
                        "note='InfluxDB write quota used up: no write until then; batches wait "
                        "in the spool, none is dropped'", self.worker, iso_seconds(now + wait),
                        wait, QUOTA_STATUS)
        self.stats.write_quota_until = now + wait

    def _quota_waiting(self) -> bool:
        return time.monotonic() < self._quota_until

    def _reject_if_content(self, body: str) -> bool:
        """A batch refused whole for what no part of it can change (413, its size) is set
        aside, not retried."""
        error = self._refused
        if not isinstance(error, ContentRefused) or self._refused_status in SETUP_REFUSALS:
            return False
        return self._took(self.refusals.refused_whole(body, error))

    def _took(self, outcome: Outcome) -> bool:
        """Whether the batch is settled; if so, what it set aside counts against the written
        and replayed counts (of this attempt: `_attempt` clears it)."""
        if not outcome.settled:
            return False
        self._set_aside = (outcome.refused_lines, outcome.refused_trades)
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
        """Send the spool's oldest lines while the sink answers; stop at the first failure.

        Live batches go first: once a chunk is replayed, a live batch waiting in the queue is
        served before the next chunk (the writer's loop comes back here after it). So a long
        drain delays live trades by one chunk's write, not by a queue of them (measured before:
        live lag p99 18.6 s while an hour's spool drained), and both always move on."""
        if self.spool is None or time.monotonic() < self._blocked_until:
            return
        while not self.stopping.is_set():
            chunk = self.spool.peek(self.settings.batch_size)
            if chunk is None:
                return
            body, segment, end = chunk
            lines = body.count("\n") + 1
            ok = self._attempt(body, lines)
            if ok is None and self._reject_if_content(body):
                ok = True
            if ok is False and self._replay_budget_spent() and self._sort_failed(body):
                ok = True
            if not ok:
                if ok is False:
                    self._blocked_until = max(self._blocked_until, time.monotonic() + min(
                        self.settings.retry_max_delay_s, max(1.0, self._retry_after)))
                return
            self._replay_failing_since = None
            self.spool.commit(segment, end)
            self.stats.replayed += lines - self._set_aside[0]
            log.info("worker=%s event=spool_replayed trades=%d backlog_bytes=%d", self.worker,
                     lines, self.spool.backlog_bytes())
            if not self.queue.empty():
                return  # a live batch waits: it goes next

    def _replay_budget_spent(self) -> bool:
        """The spool's oldest chunk has failed for the retry budget (counted from its first
        failure, as a live batch's from its first attempt)."""
        now = time.monotonic()
        if self._replay_failing_since is None:
            self._replay_failing_since = now
        return now - self._replay_failing_since >= self.settings.retry_budget_s

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

