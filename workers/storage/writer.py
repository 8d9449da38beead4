"""The write path: a bounded queue of batches, one writer thread, retries, the spool, the checkpoint.

    pipeline --batch--> queue (bounded RAM) --> writer thread --> sink (InfluxDB or files)
                          | full                   | retry budget spent, or refused
                          v                        v
                        spool (disk) <-------------+      drained in order once the sink answers

A batch counts as stored when the sink took it or it is fsynced in the spool; only then does
the checkpoint move. Nothing is dropped: when RAM and disk are both full, `submit` blocks, the
stream falls behind and disconnects, and the gap is backfilled later from the checkpoint.

Lines the server refuses are set aside, never lost. A partial write (1.x/3.x 400, 2.x 422
"partial write: ... dropped=N": a field type conflict, a point beyond the retention policy, a
line it cannot parse) stores the good lines and drops the others, but does not say WHICH lines
it dropped. The writer finds them by writing the batch again in parts, which is harmless
because a point written twice is the same point (same key, same fields):

  1. the lines are grouped by measurement (trades, the worker's health points), since a field
     type conflict is per measurement; each group is written again on its own (a batch of one
     group reuses the first answer);
  2. a group answered `dropped` == its line count is refused whole and set aside without a
     further request (the usual field-type-conflict case: no request storm); a single refused
     line is set aside;
  3. any other partly refused group is sorted by series (symbol) and timestamp, and split in
     halves, each half written again, recursively (bisection). Refusals follow a series (a tag
     value over `max-values-per-tag`), a shard or the retention cut-off (time ranges), so in
     that order the refused lines form a run or a few runs, and only the parts holding a
     boundary between stored and refused lines are split again;
  4. at most `groups + 4 * ceil(log2(lines))` extra requests per batch: enough for two refused
     runs of any length. Lines still unknown when that bound is hit are set aside too, with a
     comment that they may or may not be stored (loading them again is harmless).

A batch refused whole for its content (400 that is not a partial write, 413) is set aside the
same way. Every set-aside group is appended to `data/<worker>/rejected.lp` (fsynced, with the
`# DML` header so `influx -import` loads it), preceded by a `# <UTC time> <server's reason>`
comment. Lines stored by any of these writes count as written; only once every line of the
batch is stored or fsynced in rejected.lp does the batch count as stored and the checkpoint
move. If a re-write fails otherwise (InfluxDB busy or down, token refused), nothing is set aside
and the whole batch takes the normal retry/spool path and is sorted out again later. Each
distinct reason (the server's message without its counts and values) is logged once, with the
fix (`event=lines_rejected`); the counts are in `rejected_lines`/`rejected_trades`.
"""
from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from workers.common.backoff import Backoff
from workers.errors import PermanentWriteError, RetryableWriteError
from workers.health import Stats
from workers.settings import WriteSettings
from workers.storage.batch import Batch
from workers.storage.checkpoint import Checkpoint
from workers.storage.sink import ContentRefused, PartialWrite, Sink
from workers.storage.spool import Spool

log = logging.getLogger(__name__)
# After a refusal a person must fix (token, bucket), probe again this often, and say it again
# this often: once clearly, never in a hot loop.
SETUP_REFUSALS = (401, 403, 404)  # the server refuses us; other refusals are about the batch
PERMANENT_PROBE_S = 30.0
PERMANENT_REMIND_S = 600.0
# Bisection of a partly refused group: per level at most two parts hold a boundary between
# stored and refused lines, and each is written again as two halves.
SPLIT_REQUESTS_PER_LEVEL = 4
UNASKED = object()  # a part not written on its own yet
UNSETTLED = "not sorted out within the request bound"


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
        self._refused: Optional[Exception] = None  # the last permanent refusal itself
        self._set_aside = (0, 0)  # (lines, trades) the last attempt put in rejected.lp
        self._reasons_logged: Set[str] = set()  # event=lines_rejected is said once per reason
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
        self.stats.add("spooled", batch.trades)  # also on producer threads (queue full)
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
                self.stats.written += batch.trades - self._set_aside[1]
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
        """True: stored (lines the server refused are in rejected.lp). False: worth retrying.
        None: refused until a person acts, or refused whole for its content."""
        self._retry_after = 0.0
        self._set_aside = (0, 0)
        error = self._send(body)
        if isinstance(error, PartialWrite):
            return self._settle(body, error)
        return self._judge(error)

    def _send(self, body: str) -> Optional[Exception]:
        """One request; the write error, or None when the sink took every line."""
        self.stats.write_requests += 1
        try:
            self.sink.write(body)
        except (RetryableWriteError, PermanentWriteError) as exc:
            return exc
        return None

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
            self.stats.error(str(error))
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

    def _settle(self, body: str, first: PartialWrite) -> Optional[bool]:
        """Find the lines a partial write refused and set them aside (see the module docstring).

        True once every line is stored or fsynced in rejected.lp. False or None (as `_attempt`)
        when a re-write failed for another reason: then nothing is set aside and the caller
        treats the whole batch as not stored.
        """
        lines = body.split("\n")
        groups = _by_measurement(lines)
        limit = len(groups) + SPLIT_REQUESTS_PER_LEVEL * max(1, math.ceil(math.log2(len(lines))))
        pending: Deque[Tuple[List[str], object]] = deque()
        if len(groups) == 1:
            pending.append((groups[0], first))  # the first answer is this group's answer
        else:
            pending.extend((group, UNASKED) for group in groups)
        refused: List[Tuple[ContentRefused, List[str]]] = []
        unsettled: List[str] = []
        extra = 0
        while pending:
            part, answer = pending.popleft()
            if answer is UNASKED:
                if extra >= limit:
                    unsettled.extend(part)
                    continue
                extra += 1
                answer = self._send("\n".join(part))
            if answer is None:
                continue  # stored
            if isinstance(answer, PartialWrite) and len(part) > 1 and (
                    answer.dropped is None or answer.dropped < len(part)):
                # dropped=0 is no proof: 1.x does not count lines it could not parse.
                half = len(part) // 2
                pending.append((part[:half], UNASKED))
                pending.append((part[half:], UNASKED))
            elif isinstance(answer, ContentRefused):
                refused.append((answer, part))
            else:  # busy, down, token or bucket refused: the whole batch is tried again later
                return self._judge(answer if isinstance(answer, Exception) else None)
        groups_out = [(f"rejected by InfluxDB ({err.status}): {err.reason}", part)
                      for err, part in refused]
        if unsettled:
            groups_out.append((f"not sorted out within {limit} extra requests after InfluxDB "
                               f"({first.status}): {first.reason}; these lines may or may not "
                               "be stored (loading them again is harmless)", unsettled))
        keys = [(_reason_key(err.reason), err.reason, len(part)) for err, part in refused]
        if unsettled:
            keys.append((f"{UNSETTLED}: {_reason_key(first.reason)}", first.reason,
                         len(unsettled)))
        log.info("worker=%s event=partial_write_sorted lines=%d refused=%d unsettled=%d "
                 "extra_requests=%d", self.worker, len(lines),
                 sum(len(p) for _, p in refused), len(unsettled), extra)
        if not self._reject(groups_out, keys):
            return False
        return self._judge(None)

    def _reject(self, groups: Sequence[Tuple[str, List[str]]],
                keys: Sequence[Tuple[str, str, int]]) -> bool:
        """Append refused lines to rejected.lp, count them, say each new reason once with its fix.

        `groups`: (comment, lines) for the file; `keys`: (normalised reason, reason, lines).
        False when the file could not be written (nothing is counted then).
        """
        if self.spool is None:  # files mode: no server to refuse anything
            return False
        try:
            path = self.spool.reject(groups)
        except OSError as exc:
            self.stats.error(f"cannot write rejected.lp: {exc}")
            log.error("worker=%s event=reject_failed error=%s fix='free disk space in the data "
                      "directory; the batch is tried again'", self.worker, exc)
            return False
        lines = sum(len(part) for _, part in groups)
        trades = sum(1 for _, part in groups for line in part if _is_trade(line))
        self._set_aside = (lines, trades)
        self.stats.rejected_lines += lines
        self.stats.rejected_trades += trades
        per_key: Dict[str, Tuple[str, int]] = {}
        for key, reason, count in keys:
            seen = per_key.get(key)
            per_key[key] = (reason, count + (seen[1] if seen else 0))
        for key, (reason, count) in per_key.items():
            if key in self._reasons_logged:
                continue
            self._reasons_logged.add(key)
            self.stats.error(f"lines rejected: {reason}")
            log.error("worker=%s event=lines_rejected reason=%r lines=%d file=%s fix=%r",
                      self.worker, key, count, path, _fix(key, path))
        return True

    def _reject_if_content(self, body: str) -> bool:
        """A batch refused whole for its content (400, 413 ...) is set aside, not retried."""
        error = self._refused
        if not isinstance(error, ContentRefused) or self._refused_status in SETUP_REFUSALS:
            return False
        lines = body.split("\n")
        return self._reject([(f"rejected by InfluxDB ({error.status}): {error.reason}", lines)],
                            [(_reason_key(error.reason), error.reason, len(lines))])

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
            if not ok:
                if ok is False:
                    self._blocked_until = time.monotonic() + min(
                        self.settings.retry_max_delay_s, max(1.0, self._retry_after))
                return
            self.spool.commit(segment, end)
            self.stats.replayed += lines - self._set_aside[0]
            log.info("worker=%s event=spool_replayed trades=%d backlog_bytes=%d", self.worker,
                     lines, self.spool.backlog_bytes())
            if not self.queue.empty():
                return  # a live batch waits: it goes next

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


def _measurement(line: str) -> str:
    """The measurement of a line: up to the first unescaped comma or space."""
    match = _MEASUREMENT.match(line)
    return match.group(0) if match else line


_MEASUREMENT = re.compile(r"(?:[^\\, ]|\\.)*")


def _series_and_time(line: str) -> Tuple[str, int]:
    """(measurement and tags, timestamp) of a line: the order in which refused lines bunch."""
    series = _SERIES.match(line)
    try:
        stamp = int(line.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        stamp = 0
    return (series.group(0) if series else line), stamp


_SERIES = re.compile(r"(?:[^\\ ]|\\.)*")


def _by_measurement(lines: List[str]) -> List[List[str]]:
    """The lines grouped by measurement (first seen first), each sorted by series and time."""
    groups: Dict[str, List[str]] = {}
    for line in lines:
        groups.setdefault(_measurement(line), []).append(line)
    return [sorted(group, key=_series_and_time) for group in groups.values()]


def _is_trade(line: str) -> bool:
    return ",trade_id=" in line  # the point model of lineproto.py; health points have none


def _reason_key(reason: str) -> str:
    """A server message without what varies from one refusal to the next: counts, the quoted
    offending line or value, numbers. Field and measurement names stay (they say what to fix)."""
    text = re.sub(r"\s*dropped=\d+", "", reason)
    text = re.sub(r"'[^']*'", "'...'", text)
    text = re.sub(r"\b(value|values|line)=\S+", r"\1=...", text)
    text = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", "N", text)
    return " ".join(text.split()).rstrip(" :;,")


def _fix(key: str, path: object) -> str:
    """What a person does about lines refused for this reason."""
    load = f"then load {path} with influx -import (the # lines are comments)"
    if key.startswith(UNSETTLED):
        return (f"these lines may or may not be stored: load {path} with influx -import; a point "
                "loaded twice is the same point")
    if "field type conflict" in key:
        found = re.search(r'measurement "?([^" ]+)"?', key)
        name = found.group(1) if found else "?"
        return (f"a field of measurement {name} has another type in this bucket: write to a new "
                "bucket or measurement (INFLUXDB_MEASUREMENT for trades, "
                f"INFLUXDB_HEALTH_MEASUREMENT for health points), {load}")
    if "retention" in key:
        return ("the bucket's retention is shorter than the trade's age (old trades from a "
                "backfill or the spool): lengthen the retention or write to a bucket that keeps "
                f"them, {load}")
    if "max-values-per-tag" in key:
        return ("raise max-values-per-tag in influxdb.conf (0: no limit) and restart InfluxDB, "
                f"{load}")
    if "unable to parse" in key or "invalid" in key:
        return (f"InfluxDB cannot parse these lines: please report it with {path}; once fixed, "
                "load it with influx -import")
    return f"inspect {path}: fix the cause, {load}"
