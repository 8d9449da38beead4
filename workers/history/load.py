"""Loading archive files through the worker's own write path.

    read_trades (zip, row by row) --lines--> Batch --> Writer (retries, spool, set-aside) --> sink

Each trade of a file is rendered by the worker's LineRenderer (same point key, same fields,
`time_us` by make_trade's rule), so a trade the stream or REST already stored is the same point
and overwrites itself: loading is idempotent, and loading a day live capture also stored adds
nothing. The batches (WRITE_BATCH_SIZE lines) go to a storage Writer of the loader's own:
its retries, its spool (DATA_DIR/history/<SYMBOL>/spool, replayed on the next run of the
loader) and its rejected.lp beside it, never the live worker's. Nothing moves the worker's
checkpoint: the writer reports each settled batch to a `Settled` counter instead.

Unlike the worker, the loader waits when the writer's queue is full (backpressure) instead of
spooling: a file is read faster than any InfluxDB takes it, and a spool filled on purpose would
only be written twice. A batch goes to the spool only when InfluxDB fails past the retry budget,
and then the file stops there (`FileLoad.spooled`): the caller says InfluxDB failed.

One loader per pair at a time: it holds DATA_DIR/history/<SYMBOL>/lock (common/lock.py) for
its life, so a second scripts/history of the pair, or a verify --repair of it, is refused
(AlreadyRunning) instead of appending to the same spool.

With no INFLUXDB_URL (the no-database mode) the lines go to line-protocol files the way the
worker's do, under DATA_DIR/lp/history-<symbol>/, which scripts/load-files loads later.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Container, Dict, List, Optional

from workers.common import lock
from workers.errors import AlreadyRunning, ArchiveCorrupt
from workers.exchange.archive import DAY_MS, ArchiveFile, Downloaded, read_trades, utc_day
from workers.health import Stats
from workers.settings import Settings
from workers.storage.batch import Batch
from workers.storage.lineproto import LineRenderer
from workers.storage.sink import FileSink, InfluxSink, Sink
from workers.storage.spool import Spool
from workers.storage.writer import Writer

log = logging.getLogger(__name__)
PUT_WAIT_S = 0.5  # a full queue is waited on in steps this long, so a stop is seen
STOP_FLUSH_S = 30.0  # close(): what the writer has not stored by then goes to the spool


@dataclass
class DaySpan:
    """The trades of one UTC day in a file (a monthly file holds ~30)."""

    day: date
    trades: int = 0
    first_id: int = 0
    last_id: int = 0


@dataclass
class FileLoad:
    """What loading one archive file did."""

    file: ArchiveFile
    trades: int = 0  # rows read from the file
    written: int = 0  # of them, trades stored (or written to the files of the no-database mode)
    first_id: Optional[int] = None  # the file's first and last trade ids read
    last_id: Optional[int] = None
    set_aside: int = 0  # trades InfluxDB refused, kept in rejected.lp
    spooled: int = 0  # trades in the spool: InfluxDB failed, they go out on the next run
    problem: str = ""  # "" when the whole file went through
    days: List[DaySpan] = field(default_factory=list)  # per UTC day read, in file order

    @property
    def whole(self) -> bool:
        """Every trade of the file is stored (or set aside with its reason)."""
        return not self.problem and not self.spooled


class Settled:
    """Counts the batches the writer settled (stored, spooled or set aside): the writer's
    checkpoint, for a loader that has no checkpoint to move."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def batch_durable(self, seq: int, marks: Dict[str, int]) -> bool:
        with self.changed:
            self.count += 1
            self.changed.notify_all()
        return False

    def wait_for(self, count: int, writer_alive: Callable[[], bool],
                 stopping: threading.Event) -> bool:
        """Wait until `count` batches are settled; False if the writer thread died first, or
        a stop was asked (the writer's close() spools what is left)."""
        with self.changed:
            while self.count < count:
                if not writer_alive() or stopping.is_set():
                    return False
                self.changed.wait(PUT_WAIT_S)
        return True


def busy(symbol: str, exc: AlreadyRunning) -> str:
    """What history and verify --repair say when another loader holds the pair's lock."""
    holder = f"pid {exc.pid}" if exc.pid else str(exc.path)
    return (f"{symbol}: another scripts/history or verify --repair of the pair runs ({holder}): "
            "left to it; run again once it has ended")


def worker_name(symbol: str) -> str:
    """The loader's name in logs, its spool and its files: never a live worker's."""
    return f"history-{symbol.lower()}"


class ArchiveLoader:
    """Loads archive files of one symbol, one after the other, through one Writer."""

    def __init__(self, settings: Settings, symbol: str, stats: Optional[Stats] = None,
                 stopping: Optional[threading.Event] = None) -> None:
        self.settings = settings
        self.symbol = symbol
        self.name = worker_name(symbol)
        self.stats = stats or Stats()
        self.stopping = stopping or threading.Event()
        self.home.mkdir(parents=True, exist_ok=True)
        self.held = lock.hold(self.home / "lock")  # AlreadyRunning: another loader of the pair
        influx = settings.influx
        self.renderer = LineRenderer(influx.measurement if influx else settings.measurement)
        self.batch_size = settings.write.batch_size
        sink: Sink
        spool: Optional[Spool] = None
        if influx is not None:
            sink = InfluxSink(influx)
            spool = Spool(self.home / "spool", influx.bucket, self.name)
        else:
            sink = FileSink(settings.data_dir / "lp" / self.name, self.name,
                            settings.file_database, settings.file_rotate_s)
        self.settled = Settled()
        self.writer = Writer(self.name, sink, spool, self.settled, settings.write, self.stats)
        self._seq = 0
        self._spooled_before = 0
        self.writer.start()

    @property
    def home(self) -> Path:
        return self.settings.data_dir / "history" / self.symbol

    def load(self, downloaded: Downloaded, only_ids: Optional[Container[int]] = None,
             progress: Optional[Callable[[int], None]] = None) -> FileLoad:
        """Write the trades of `downloaded` (only those in `only_ids` when given), and wait
        until each is stored, spooled or set aside. `progress` gets the number of rows read
        since its last call, once per batch.

        A corrupt file (ArchiveCorrupt mid-read) keeps what was written before the bad row:
        correct trades under their own keys; `problem` says so, and the file is not whole.
        """
        result = FileLoad(downloaded.file)
        self._spooled_before = self.stats.spooled
        rejected_before = self.stats.rejected_trades
        lines: List[str] = []
        first_ms = 0
        reported = 0
        corrupt: Optional[ArchiveCorrupt] = None
        day_end = -1
        span = DaySpan(date.min)
        try:
            for trade in read_trades(downloaded.path, self.symbol, downloaded.file.name):
                if trade.time_ms >= day_end:  # rows come in time order: one test per row
                    span = DaySpan(utc_day(trade.time_ms), first_id=trade.trade_id)
                    result.days.append(span)
                    day_end = (trade.time_ms // DAY_MS + 1) * DAY_MS
                    if result.first_id is None:
                        result.first_id = trade.trade_id
                span.trades += 1
                span.last_id = trade.trade_id
                result.last_id = trade.trade_id
                result.trades += 1
                if only_ids is not None and trade.trade_id not in only_ids:
                    continue
                if not lines:
                    first_ms = trade.time_ms
                lines.append(self.renderer.line(trade))
                if len(lines) >= self.batch_size:
                    if not self._submit(lines, first_ms, result):
                        lines = []
                        break
                    lines = []
                    if progress is not None:
                        progress(result.trades - reported)
                        reported = result.trades
        except ArchiveCorrupt as exc:
            corrupt = exc
        if lines:
            self._submit(lines, first_ms, result)
        if progress is not None and result.trades > reported:
            progress(result.trades - reported)
        if not self._settled():
            result.problem = result.problem or (
                "stopped before the end of the file" if self.stopping.is_set() else
                "the writer stopped unexpectedly")
        result.spooled = self.stats.spooled - self._spooled_before
        result.set_aside = self.stats.rejected_trades - rejected_before
        result.written -= result.spooled + result.set_aside
        if corrupt is not None:
            result.problem = (f"corrupt: {corrupt.detail}; {result.written:,} trades before it "
                              "written (correct trades, under their own keys)")
        elif result.spooled:
            result.problem = (f"InfluxDB failed: {result.spooled:,} trades wait in the spool "
                              f"({self.home / 'spool'}), sent on the next run")
        return result

    def _submit(self, lines: List[str], first_ms: int, result: FileLoad,
                others: bool = False) -> bool:
        """Hand one batch to the writer, waiting while its queue is full. False (and nothing
        submitted) when the load is stopping, the writer spooled (InfluxDB failed: reading on
        would only fill the spool) or the writer thread is gone."""
        if self.stopping.is_set():
            result.problem = result.problem or "stopped before the end of the file"
            return False
        if self.stats.spooled > self._spooled_before:
            return False
        self._seq += 1
        batch = Batch(self._seq, lines, 0, {}, first_ms, others=list(range(len(lines)))) \
            if others else Batch(self._seq, lines, len(lines), {}, first_ms)
        while True:
            try:
                self.writer.queue.put(batch, timeout=PUT_WAIT_S)
                break
            except queue.Full:
                if not self.writer.thread.is_alive():
                    self._seq -= 1
                    result.problem = "the writer stopped unexpectedly"
                    return False
        result.written += len(lines)
        return True

    def write_lines(self, lines: List[str]) -> bool:
        """Write points that are not trades (the day checks) the same way, and wait until they
        are stored, spooled or set aside; False when they could not be handed over."""
        if not lines:
            return True
        result = FileLoad(ArchiveFile(self.symbol, "-"))
        self._spooled_before = self.stats.spooled
        if not self._submit(lines, 0, result, others=True):
            return False
        return self._settled()

    def _settled(self) -> bool:
        return self.settled.wait_for(self._seq, self.writer.thread.is_alive, self.stopping)

    def close(self) -> None:
        """Stop the writer once every batch is stored, spooled or set aside: what it has not
        stored within STOP_FLUSH_S (InfluxDB failing) goes to the spool, for the next run."""
        try:
            self.writer.stop(STOP_FLUSH_S)
        finally:
            self.held.release()
