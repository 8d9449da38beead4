"""One worker process: wires stream -> pipeline -> writer, and runs the lifecycle.

    StreamKeepers (one per connection plan, reader threads) --trades--> Pipeline --batches-->
          ^ stale? (never waits)                                 | gaps        Writer --> InfluxDB
          +-- Prober --> RestClient <---- Backfiller <-----------+               \\--> spool

The main thread cuts time-based batches, writes the summary line and the status file, and
handles signals: the first SIGTERM/SIGINT stops reading and flushes; a second one exits at once.
An unexpected exception in any thread (threads.install) or in the main loop is logged with its
traceback; the worker then flushes what it can and exits 1, and supervisord restarts it.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

from workers.capture.backfill import Backfiller
from workers.capture.pipeline import Gap, Pipeline
from workers.capture.prober import Prober
from workers.capture.reporter import Reporter, Sources
from workers.common import threads
from workers.common.timefmt import iso_millis
from workers.errors import (
    EXIT_OK,
    EXIT_UNEXPECTED,
    ConfigError,
    InvalidMessage,
    NoMapping,
    RestError,
    SinkError,
)
from workers.exchange.connect_budget import ConnectBudget, budget_path
from workers.exchange.connection import OP_TEXT, Connection
from workers.exchange.protocol import ControlReply, MessageParser, ServerShutdown
from workers.exchange.rest import RestClient
from workers.exchange.stream import StreamKeeper
from workers.exchange.stream_plan import plan_connections
from workers.health import ConnectionState, Stats
from workers.settings import Settings, injected_fault
from workers.storage.checkpoint import Checkpoint
from workers.storage.influx_query import InfluxQuery
from workers.storage.lineproto import LineRenderer, escape_key
from workers.storage.sink import FileSink, InfluxSink, Sink
from workers.storage.spool import Spool
from workers.storage.writer import Writer
from workers.symbols import WorkerSpec
from workers.trade import Trade

log = logging.getLogger(__name__)
# The status file every second, so scripts/status's LAST TRADE is at most 1 s behind: a
# 1,000-symbol group's file (69 KB: checkpoint and last_trade_ms maps) costs ~1 ms of CPU to
# write (measured), 0.1 % of a core. TRADES/S and LAG still cover reporter.RATE_WINDOW_S.
STATUS_EVERY_S = 1.0
HEALTH_EVERY_S = 10.0
INVALID_LOG_EVERY_S = 60.0
STOP_FLUSH_S = 8.0  # keep well under supervisor's stopwaitsecs
CRASH_EXIT_S = 15.0  # after a crash, exit by then even if the flush hangs (stopwaitsecs is 20)
# Resume from the database: the one query a start may wait for. A busy pair's max(trade_id)
# over 24 h scans a few million points, seconds; a server that takes longer is given up on.
RESUME_QUERY_TIMEOUT_S = 10.0
RESUME_FAILED_NOTE = ("starting from the live stream: trades before the first one seen are "
                      "not stored by this host")


class Worker:
    def __init__(self, spec: WorkerSpec, settings: Settings) -> None:
        self.spec = spec
        self.name = spec.name
        self.settings = settings
        self.stats = Stats()
        self.stop_requested = threading.Event()
        self.crashed = ""  # the thread that met an unexpected exception, if one did
        data = settings.data_dir / spec.name
        influx = settings.influx
        self.database = influx.bucket if influx else settings.file_database
        self.renderer = LineRenderer(influx.measurement if influx else "price_ticks")
        sink: Sink
        if influx is not None:
            sink = InfluxSink(influx)
            spool: Optional[Spool] = Spool(data / "spool", self.database, spec.name)
        else:
            sink = FileSink(settings.data_dir / "lp" / spec.name, spec.name, self.database,
                            settings.file_rotate_s)
            spool = None
        self.spool = spool
        self.checkpoint = Checkpoint(data / "checkpoint.json", spec.name, spec.symbols)
        self.writer = Writer(spec.name, sink, spool, self.checkpoint, settings.write, self.stats)
        self.rest = RestClient(settings.rest_url, spec.name, stopping=self.stop_requested)
        self.pipeline = Pipeline(self.renderer, settings.write.batch_size,
                                 self.checkpoint.snapshot(), self._on_gap, self.writer.submit)
        self.backfiller = Backfiller(spec.name, self.rest, self.pipeline, self.stats,
                                     settings.backfill_max_trades)
        self.parser = MessageParser(spec.symbols)
        self.prober = Prober(spec.name, self.rest, self.pipeline, self.stats,
                             settings.stall_after_s, self.stop_requested)
        budget = ConnectBudget(budget_path(settings.run_dir), settings.connect_limit,
                               settings.connect_window_s)
        plans = plan_connections(settings.ws_url, spec.symbols)
        if len(plans) > 1:
            log.info("worker=%s event=group_split symbols=%d connections=%d note='over 1024 "
                     "streams: spread evenly over several connections'", self.name,
                     len(spec.symbols), len(plans))
        self.keepers = [StreamKeeper(spec.name, plan, self.on_frame, settings.dead_after_s,
                                     settings.max_conn_age_s, self._on_reconnect,
                                     self.prober.check, budget, settings.ws_url)
                        for plan in plans]
        self._invalid_logged: Dict[str, float] = {}
        self.reporter = self._reporter()

    def _reporter(self) -> Reporter:
        influx, spool = self.settings.influx, self.spool
        measurement = influx.health_measurement if influx else "streamer_health"
        # Tags in key order (as InfluxDB sorts them); `host` keeps each host's health apart when
        # several hosts capture the same pairs. Trade points carry no host: two hosts writing
        # one trade must write the identical point.
        point_key = (f"{escape_key(measurement)},host={escape_key(self.settings.capture_host)},"
                     f"worker={escape_key(self.name)}")
        sources = Sources(
            received=self._received,
            connections=lambda: [cast(ConnectionState, k.state()) for k in self.keepers],
            spool_bytes=spool.backlog_bytes if spool else lambda: 0,
            queue_batches=self.writer.queue.qsize, checkpoint=self.checkpoint.snapshot)
        return Reporter(self.name, self.settings.capture_host, self.spec.symbols, self.stats,
                        sources, self.settings.run_dir / "status" / f"{self.name}.json",
                        point_key, self.pipeline.add_line)

    # -- hot path: runs on a reader thread for every frame ------------------------------
    def on_frame(self, data: bytes, opcode: int, conn: Connection) -> None:
        if opcode != OP_TEXT:
            self._invalid("binary_frame", f"{len(data)} bytes")
            return
        try:
            msg = self.parser.parse(data)
        except InvalidMessage as exc:
            self._invalid(exc.reason, exc.detail)
            return
        if type(msg) is Trade:
            conn.trades += 1
            conn.last_trade_at = conn.last_frame_at
            # No lock here: conn.trades is this reader thread's own count (`received` is their
            # sum), and one dict store is atomic; a duplicate is rare enough for the lock.
            self.stats.last_trade_ms[msg.symbol] = msg.time_ms
            if not self.pipeline.accept(msg):
                self.stats.add("duplicates")
        elif type(msg) is ServerShutdown:
            conn.shutdown_announced = True
            log.warning("worker=%s event=server_shutdown conn=%s", self.name, conn.label)
        elif type(msg) is ControlReply:
            conn.control_reply(msg)

    def _invalid(self, reason: str, detail: str) -> None:
        with self.stats.lock:
            self.stats.invalid[reason] += 1
        now = time.monotonic()
        if now - self._invalid_logged.get(reason, -INVALID_LOG_EVERY_S) >= INVALID_LOG_EVERY_S:
            self._invalid_logged[reason] = now
            log.warning("worker=%s event=invalid_message reason=%s count=%d detail=%r "
                        "note='skipped; logged at most once a minute per reason'", self.name,
                        reason, self.stats.invalid[reason], detail[:120])

    # -- callbacks ----------------------------------------------------------------------
    def _on_gap(self, symbol: str, gap: Gap) -> None:
        self.backfiller.report_gap(symbol, gap)

    def _on_reconnect(self, reason: str) -> None:
        with self.stats.lock:  # one keeper thread per connection plan
            self.stats.reconnects += 1

    def _received(self) -> int:
        return sum(keeper.trades for keeper in self.keepers)

    def _crashed(self, thread: str, exc: BaseException) -> None:
        """A thread met an unexpected exception (already logged): flush, exit 1, be restarted."""
        if not self.crashed:
            self.crashed = thread
            self.stats.error(f"thread {thread} crashed: {type(exc).__name__}: {exc}"[:300])
        self.stop_requested.set()

    # -- lifecycle ----------------------------------------------------------------------
    def check_symbols(self) -> None:
        """Refuse unknown symbols (one clear error); warn about ones not trading now."""
        try:
            statuses = self.rest.symbol_statuses(self.spec.symbols)
        except RestError as exc:
            log.warning("worker=%s event=symbol_check_skipped reason=%r", self.name, str(exc))
            return
        unknown = [s for s in self.spec.symbols if s not in statuses]
        if unknown:
            raise ConfigError(f"worker {self.name} (line {self.spec.line} of the symbols file): "
                              f"unknown to the exchange: {', '.join(unknown)}; fix the spelling "
                              f"or remove {'it' if len(unknown) == 1 else 'them'}")
        idle = {s: st for s, st in statuses.items() if st != "TRADING"}
        if idle:
            log.warning("worker=%s event=symbols_not_trading symbols=%r note='captured when "
                        "trading resumes'", self.name, idle)

    def resume_from_db(self) -> Dict[str, int]:
        """Symbols with no local checkpoint resume from the highest id stored in InfluxDB.

        One query for all of them, before the stream opens; never raises (see resume_from_db).
        """
        influx = self.settings.influx
        if influx is None:  # files mode: no database to ask
            return {}
        known = self.checkpoint.snapshot()
        missing = [s for s in self.spec.symbols if s not in known]
        if not missing:
            return {}
        query = InfluxQuery(influx)
        lookback_h = self.settings.resume_lookback_h

        def ask() -> Dict[str, Tuple[int, int]]:
            return query.last_trades(missing, lookback_h, RESUME_QUERY_TIMEOUT_S)

        found = resume_from_db(self.name, missing, ask, lookback_h)
        self.pipeline.resume(found)
        return found

    def run(self) -> int:
        self._install_signals()
        self.resume_from_db()
        log.info("worker=%s event=starting symbols=%s sink=%s resume_from=%s", self.name,
                 _brief(self.spec.symbols), "influxdb" if self.settings.influx else "files",
                 _brief([f"{k}:{v}" for k, v in self.pipeline.resume_from.items()]))
        threads.install(self.name, self._crashed)
        inject_fault(self, injected_fault())
        self.writer.start()
        self.backfiller.start()
        self.prober.start()
        for keeper in self.keepers:
            keeper.start()
        try:
            self._loop()
        except Exception as exc:  # the main loop is a thread like the others
            log.critical("worker=%s event=thread_crashed thread=main error=%r", self.name,
                         f"{type(exc).__name__}: {exc}"[:300], exc_info=True)
            self._crashed("main", exc)
        return self._shutdown()

    def _loop(self) -> None:
        flush_s = self.settings.write.flush_interval_s
        tick = min(0.1, flush_s / 4)
        next_summary = time.monotonic() + self.settings.summary_interval_s
        next_status = next_health = time.monotonic()
        while not self.stop_requested.wait(tick):
            # Cut one tick early, so no trade waits longer than the flush interval.
            self.pipeline.flush(older_than=flush_s - tick)
            now = time.monotonic()
            if now >= next_health:
                next_health = now + HEALTH_EVERY_S
                self.reporter.health_point()
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                self.reporter.write_status()
            if now >= next_summary:
                next_summary = now + self.settings.summary_interval_s
                self.reporter.summary()

    def _shutdown(self) -> int:
        started = time.monotonic()
        if self.crashed:
            # Whatever state the crash left, the process ends in time and supervisord restarts it.
            timer = threading.Timer(CRASH_EXIT_S, _exit_now, (self.name,))
            timer.daemon = True
            timer.start()
        log.info("worker=%s event=stopping%s", self.name,
                 f" cause='thread {self.crashed} crashed'" if self.crashed else "")
        steps: List[Callable[[], object]] = [
            *(keeper.stop for keeper in self.keepers), self.pipeline.flush,
            lambda: self.writer.stop(STOP_FLUSH_S), self.reporter.write_status,
            self.reporter.summary]
        for step in steps:
            try:  # each step on its own: a failing one (a full disk) must not skip the rest
                step()
            except Exception as exc:
                log.critical("worker=%s event=stop_step_failed error=%r", self.name,
                             f"{type(exc).__name__}: {exc}"[:300], exc_info=True)
                self._crashed("main", exc)
        log.info("worker=%s event=stopped took_s=%.2f checkpoint=%s exit=%d", self.name,
                 time.monotonic() - started,
                 _brief([f"{k}:{v}" for k, v in self.checkpoint.snapshot().items()]),
                 EXIT_UNEXPECTED if self.crashed else EXIT_OK)
        return EXIT_UNEXPECTED if self.crashed else EXIT_OK

    def _install_signals(self) -> None:
        def handler(signum: int, frame: object) -> None:
            if self.stop_requested.is_set():
                log.error("worker=%s event=forced_exit signal=%d", self.name, signum)
                os._exit(EXIT_UNEXPECTED)  # the flush was cut short: not a clean stop
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def resume_from_db(worker: str, missing: Sequence[str],
                   ask: Callable[[], Dict[str, Tuple[int, int]]],
                   lookback_h: float) -> Dict[str, int]:
    """{symbol: last stored id} for the `missing` symbols InfluxDB has (`ask` runs the query).

    Logs `event=resumed_from_db` per symbol found, and ONE warning naming the symbols that
    start from the live stream and why: a token that cannot read (401/403), a bucket without
    a DBRP mapping (Cloud Serverless: the fix, whole), a failed query, or no trade of theirs
    in the last `lookback_h` hours. Never raises: a worker that cannot ask still captures.
    """
    reason = ""
    found: Dict[str, Tuple[int, int]] = {}
    try:
        found = {s: v for s, v in ask().items() if s in set(missing)}
    except NoMapping as exc:
        reason = str(exc)
    except SinkError as exc:
        if exc.status in (401, 403):
            reason = (f"the token cannot read the bucket (InfluxDB /query answered {exc.status}): "
                      "give it read access to resume from the database")
        else:
            reason = f"the query failed: {exc}"[:300]
    except Exception as exc:  # a bug or an odd answer must not stop the capture
        reason = f"the query failed: {type(exc).__name__}: {exc}"[:300]
    for symbol in missing:
        if symbol in found:
            last, when_ns = found[symbol]
            log.info("worker=%s symbol=%s event=resumed_from_db last_id=%d stored_at=%s "
                     "note='no local checkpoint: backfilling from the next id'", worker, symbol,
                     last, iso_millis(when_ns))
    rest = [s for s in missing if s not in found]
    if rest:
        if not reason:
            reason = f"no trade stored in the last {lookback_h:g} h (RESUME_LOOKBACK_H)"
        log.warning("worker=%s event=resume_from_db_failed symbols=%s reason=%r note=%r",
                    worker, _brief(rest), reason, RESUME_FAILED_NOTE)
    return {s: v[0] for s, v in found.items()}


def _brief(items: Sequence[str], shown: int = 10) -> str:
    """A list for one log line: a 1,000-symbol group names ten and counts the rest."""
    more = len(items) - shown
    return ",".join(items[:shown]) + (f",+{more} more" if more > 0 else "") if items else "-"


def _exit_now(worker: str) -> None:
    log.critical("worker=%s event=forced_exit after_s=%.0f reason='flush after a crash did not "
                 "finish'", worker, CRASH_EXIT_S)
    os._exit(EXIT_UNEXPECTED)


INJECTABLE = ("reader", "keeper", "writer", "checkpoint", "backfill", "prober", "main")


def inject_fault(worker: Worker, where: str) -> None:
    """Make one thread meet an unexpected exception (WORKER_INJECT_FAULT=<thread>), for tests.

    reader: the next frame handled; keeper: the next tick; writer: the next batch delivered;
    checkpoint: the next checkpoint save fails as a full disk does (ENOSPC, on the writer
    thread); backfill: the next gap filled; prober: the next REST probe; main: the next loop.
    """
    if not where:
        return
    if where not in INJECTABLE:
        log.error("worker=%s event=inject_fault_unknown value=%r expected=%s", worker.name, where,
                  ",".join(INJECTABLE))
        return
    log.warning("worker=%s event=inject_fault thread=%s", worker.name, where)

    def boom(*args: object, **kwargs: object) -> None:
        if where == "checkpoint":
            raise OSError(28, "No space left on device (injected)")
        raise RuntimeError(f"injected fault in {where}")

    if where == "reader":
        worker.on_frame = boom  # type: ignore[method-assign]
        for keeper in worker.keepers:
            keeper.on_frame = boom
    elif where == "keeper":
        for keeper in worker.keepers:
            keeper.tick = boom  # type: ignore[method-assign]
    elif where == "writer":
        worker.writer._deliver = boom  # type: ignore[method-assign]
    elif where == "checkpoint":
        worker.checkpoint._save = boom  # type: ignore[method-assign]
    elif where == "backfill":
        worker.backfiller._fill = boom  # type: ignore[method-assign]
    elif where == "prober":
        worker.prober.probe = boom  # type: ignore[method-assign,assignment]
    elif where == "main":
        worker.reporter.health_point = boom  # type: ignore[method-assign]
