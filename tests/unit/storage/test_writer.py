"""The write path: retries, the disk spool, the checkpoint, and refusals a person must fix.

The writer runs its real thread against an in-memory sink and a real spool in tmp_path. Its
clock is a fake one that only moves when the writer sleeps (or the test advances it), so retry
budgets and probe intervals of many seconds take no real time.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest

from tests.support.clock import FakeClock
from tests.support.timing import poll as wait_for
from workers.common.timefmt import iso_seconds
from workers.errors import PartialWrite, RetryableWriteError
from workers.health import Stats
from workers.settings import InfluxSettings, WriteLimit, WriteSettings
from workers.storage import refusals
from workers.storage import writer as writer_module
from workers.storage.batch import Batch
from workers.storage.checkpoint import Checkpoint
from workers.storage.lineproto import LineRenderer
from workers.storage.sink import classify_status
from workers.storage.spool import Spool
from workers.storage.writer import PERMANENT_PROBE_S, PERMANENT_REMIND_S, Writer
from workers.trade import Trade

INFLUX = InfluxSettings(url="http://influx:8086", token="tok", org="acme", bucket="ticks",
                        measurement="price_ticks", health_measurement="streamer_health",
                        timeout_s=10.0, gzip=False)
REFUSED = classify_status(401, "unauthorized", None, INFLUX)
BUSY = classify_status(503, "service unavailable", None, INFLUX)
BROKEN = classify_status(500, '{"code":"internal error","message":"failed to write"}', None,
                         INFLUX)
RENDERER = LineRenderer("price_ticks")


class FakeSink:
    """Records every body it is offered; can fail the next N writes, or every write."""

    def __init__(self) -> None:
        self.offered: List[str] = []
        self.stored: List[str] = []
        self.planned: List[Exception] = []
        self.always: Optional[Exception] = None
        self.answer_for: Optional[Callable[[str], Optional[Exception]]] = None  # by content
        self.gate: Optional[threading.Event] = None  # when set, write() waits for it
        # Like InfluxDB 1.x: lines for which `refuse(line)` gives a reason are dropped, the
        # others stored, and the answer is 400 "partial write: <first reason> dropped=N".
        self.refuse: Optional[Callable[[str], Optional[str]]] = None
        # With `refuse`: like InfluxDB 2.7 and 3 Core, a body holding a refused line is refused
        # whole (400 with the first reason), nothing of it stored.
        self.whole = False
        self.closed = False
        self.lock = threading.Lock()

    def fail_next(self, error: Exception, times: int = 1) -> None:
        self.planned.extend([error] * times)

    def write(self, body: str) -> None:
        with self.lock:
            self.offered.append(body)
            error = self.always or (self.planned.pop(0) if self.planned else None) or (
                self.answer_for(body) if self.answer_for else None)
        if self.gate is not None:
            self.gate.wait(2.0)
        if error is not None:
            if isinstance(error, PartialWrite):
                self.stored.append(body)  # the server kept the good lines
            raise error
        if self.refuse is not None:
            lines = body.split("\n")
            reasons = [self.refuse(line) for line in lines]
            good = [line for line, why in zip(lines, reasons) if not why]
            bad = [why for why in reasons if why]
            if bad and self.whole:
                raise classify_status(400, json.dumps({"code": "invalid", "message": bad[0]}),
                                      None, INFLUX)
            if good:
                self.stored.append("\n".join(good))
            if bad:
                raise classify_status(400, json.dumps(
                    {"error": f"partial write: {bad[0]} dropped={len(bad)}"}), None, INFLUX)
            return
        self.stored.append(body)

    def stored_lines(self) -> List[str]:
        return [line for body in self.stored for line in body.split("\n")]

    def close(self) -> None:
        self.closed = True


def make_batch(seq: int, first_id: int, n: int = 3, symbol: str = "BTCUSDT") -> Batch:
    now_ms = int(time.time() * 1000)
    lines = [RENDERER.line(Trade(symbol, i, "100.00000000", "0.50000000", now_ms, False,
                                   now_ms * 1000))
             for i in range(first_id, first_id + n)]
    return Batch(seq, lines, n, {symbol: first_id + n - 1}, now_ms)


def spooled_lines(spool: Spool) -> List[str]:
    chunk = spool.peek(10_000)
    return chunk[0].split("\n") if chunk else []


def events(caplog, name: str) -> int:
    return sum(f"event={name} " in r.getMessage() for r in caplog.records)


class Rig:
    def __init__(self, tmp_path, clock: FakeClock, use_spool: bool, **write) -> None:
        values: Dict[str, Any] = dict(batch_size=100, flush_interval_s=1.0, retry_initial_s=1.0,
                                      retry_max_delay_s=4.0, retry_budget_s=10.0, queue_batches=4)
        values.update(write)
        self.settings = WriteSettings(**values)
        self.clock = clock
        self.sink = FakeSink()
        self.spool = Spool(tmp_path / "spool", "ticks", "btcusdt") if use_spool else None
        self.checkpoint = Checkpoint(tmp_path / "checkpoint.json", "btcusdt")
        self.stats = Stats()
        self.writer = Writer("btcusdt", self.sink, self.spool, self.checkpoint, self.settings,
                             self.stats, clock=clock)

    def stop(self) -> None:
        if self.writer.thread.is_alive():
            self.writer.stop(1.0)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(writer_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def make_rig(tmp_path, clock):
    rigs = []

    def make(use_spool: bool = True, **write) -> Rig:
        rig = Rig(tmp_path, clock, use_spool, **write)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stop()


# -- the normal path -----------------------------------------------------------------------------

def test_a_stored_batch_moves_the_checkpoint(make_rig):
    rig = make_rig()
    batch = make_batch(1, 101)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})
    assert rig.sink.stored == [batch.body()]
    assert rig.stats.written == 3
    assert rig.spool.peek(10) is None


def test_batches_are_written_in_the_order_they_were_submitted(make_rig):
    rig = make_rig()
    batches = [make_batch(i, 100 * i) for i in range(1, 4)]
    rig.writer.start()

    for batch in batches:
        rig.writer.submit(batch)

    assert wait_for(lambda: len(rig.sink.stored) == 3)
    assert rig.sink.stored == [b.body() for b in batches]


# -- retries -------------------------------------------------------------------------------------

def test_retryable_errors_are_retried_with_growing_delays_until_the_write_succeeds(make_rig):
    rig = make_rig()
    rig.sink.fail_next(BUSY, times=2)
    batch = make_batch(1, 101)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})
    assert rig.sink.offered == [batch.body()] * 3
    assert rig.sink.stored == [batch.body()]
    assert rig.stats.retries == 2
    first, second = rig.clock.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0
    assert rig.spool.peek(10) is None


def test_the_servers_retry_after_is_waited_at_least(make_rig):
    rig = make_rig()
    rig.sink.fail_next(classify_status(503, "slow down", 3.5, INFLUX))  # (429: the quota, below)
    rig.writer.start()

    rig.writer.submit(make_batch(1, 101))

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})
    assert rig.clock.sleeps[0] >= 3.5


def test_a_batch_goes_to_the_spool_when_the_retry_budget_is_spent(make_rig, caplog):
    rig = make_rig()
    rig.sink.always = BUSY
    batch = make_batch(1, 101)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})  # spooled = stored
    assert rig.sink.stored == []
    assert len(rig.sink.offered) >= 2
    assert sum(rig.clock.sleeps) <= rig.settings.retry_budget_s
    assert rig.stats.spooled == 3
    rig.stop()
    assert spooled_lines(rig.spool) == batch.lines
    assert any("why=retry_budget_spent" in r.getMessage() for r in caplog.records)


def test_spooled_batches_are_replayed_in_order_once_the_sink_works_again(make_rig):
    rig = make_rig()
    rig.sink.always = BUSY
    first, second = make_batch(1, 101), make_batch(2, 104)
    rig.writer.start()
    rig.writer.submit(first)
    rig.writer.submit(second)
    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 106})
    assert rig.sink.stored == []

    rig.sink.always = None
    rig.clock.advance(60)

    assert wait_for(lambda: rig.spool.backlog_bytes() == 0 and rig.sink.stored)
    assert rig.sink.stored_lines() == first.lines + second.lines
    assert rig.stats.replayed == 6


def test_without_a_spool_a_failing_batch_is_retried_past_the_budget_never_dropped(make_rig):
    rig = make_rig(use_spool=False, retry_budget_s=2.0)
    rig.sink.fail_next(BUSY, times=6)
    batch = make_batch(1, 101)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.sink.stored == [batch.body()])
    assert sum(rig.clock.sleeps) > rig.settings.retry_budget_s
    assert rig.checkpoint.snapshot() == {"BTCUSDT": 103}


# -- refusals a person must fix ---------------------------------------------------------------

def test_a_refused_token_is_logged_once_and_batches_are_spooled(make_rig, caplog):
    rig = make_rig()
    rig.sink.always = REFUSED
    batches = [make_batch(i, 100 * i) for i in range(1, 6)]
    rig.writer.start()

    for batch in batches:
        rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 502})
    assert len(rig.sink.offered) == 1  # later batches go straight to the spool
    rig.clock.advance(PERMANENT_PROBE_S + 1)
    assert wait_for(lambda: len(rig.sink.offered) == 2)  # one probe after the interval
    rig.stop()

    assert events(caplog, "write_refused") == 1
    refusal = next(r.getMessage() for r in caplog.records if "event=write_refused" in
                   r.getMessage())
    assert "INFLUXDB_TOKEN" in refusal and "status=401" in refusal
    # The queue holds 4, so the fifth may have been spooled before the first: order is free here.
    assert sorted(spooled_lines(rig.spool)) == sorted(line for b in batches for line in b.lines)


def test_a_lasting_refusal_is_repeated_every_ten_minutes_not_more(make_rig, caplog):
    rig = make_rig()
    rig.sink.always = REFUSED
    rig.writer.start()
    rig.writer.submit(make_batch(1, 101))
    assert wait_for(lambda: events(caplog, "write_refused") == 1)

    rig.clock.advance(PERMANENT_REMIND_S + 1)

    assert wait_for(lambda: events(caplog, "write_refused") == 2)


def test_after_a_refusal_is_fixed_the_spool_drains_and_recovery_is_logged(make_rig, caplog):
    caplog.set_level(logging.INFO, logger="workers.storage.writer")
    rig = make_rig()
    rig.sink.always = REFUSED
    batch = make_batch(1, 101)
    rig.writer.start()
    rig.writer.submit(batch)
    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})

    rig.sink.always = None  # the token was fixed
    rig.clock.advance(PERMANENT_PROBE_S + 1)

    assert wait_for(lambda: rig.spool.backlog_bytes() == 0 and rig.sink.stored)
    assert rig.sink.stored_lines() == batch.lines
    assert wait_for(lambda: events(caplog, "write_recovered") == 1)


# -- lines the server refuses: set aside in rejected.lp, never lost --------------------------------

PRICE_CONFLICT = ('field type conflict: input field "price_str" on measurement "price_ticks" is '
                  'type string, already exists as type float')
HEALTH_CONFLICT = ('field type conflict: input field "received" on measurement "streamer_health" '
                   'is type integer, already exists as type string')
RETENTION = "points beyond retention policy"
LINE = re.compile(r'^[a-z_]+,(symbol|worker)=[A-Za-z0-9]+ [a-z_0-9]+=[^ ]+(,[a-z_0-9]+=[^ ]+)* '
                  r'\d+$')


def mixed_batch(seq: int, first_id: int, n: int, health: int = 1, old: Tuple[str, ...] = (),
                old_ms: int = 1_600_000_000_000) -> Batch:
    """n trades of BTCUSDT and ETHUSDT alternately (symbols in `old` dated `old_ms`), then
    `health` health lines."""
    now_ms = int(time.time() * 1000)
    lines = []
    for i in range(n):
        symbol = "BTCUSDT" if i % 2 == 0 else "ETHUSDT"
        when = old_ms + i if symbol in old else now_ms + i
        lines.append(RENDERER.line(Trade(symbol, first_id + i, "100.00000000", "0.50000000",
                                         when, False, when * 1000)))
    lines += [f"streamer_health,worker=btcusdt received={k}i {time.time_ns() + k}"
              for k in range(health)]
    return Batch(seq, lines, n, {"BTCUSDT": first_id + n - 1}, now_ms)


def trade_id(line: str) -> int:
    return int(line.split("trade_id=")[1].split("i")[0])


def rejected_file(rig) -> List[Tuple[str, List[str]]]:
    """rejected.lp as (comment, lines) groups, checking it is loadable line protocol."""
    path = rig.spool.rejected_path
    if not path.exists():
        return []
    text = path.read_text()
    assert text.startswith("# DML\n# CONTEXT-DATABASE: ticks\n")
    groups: List[Tuple[str, List[str]]] = []
    for line in text.splitlines()[2:]:
        if line.startswith("#"):
            assert re.match(r"# \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line), line
            groups.append((line, []))
        else:
            assert groups, "a line before any reason comment"
            assert LINE.match(line), line
            groups[-1][1].append(line)
    return groups


def rejected_lines(rig) -> List[str]:
    return [line for _, lines in rejected_file(rig) for line in lines]


def assert_each_line_stored_or_set_aside(rig, batch: Batch, refused: List[str]) -> None:
    stored, aside = set(rig.sink.stored_lines()), rejected_lines(rig)
    assert sorted(aside) == sorted(refused), "set aside lines differ from the refused ones"
    assert len(aside) == len(set(aside)), "a line set aside twice"
    assert stored | set(aside) == set(batch.lines)
    assert not stored & set(aside), "a stored line was set aside"


def test_a_refused_health_line_is_set_aside_and_every_trade_stored(make_rig, caplog):
    rig = make_rig()
    rig.sink.refuse = lambda line: HEALTH_CONFLICT if line.startswith("streamer_health") else None
    batch = mixed_batch(1, 101, 50)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 150})
    assert_each_line_stored_or_set_aside(rig, batch, batch.lines[-1:])
    (comment, _), = rejected_file(rig)
    assert "rejected by InfluxDB (400): partial write: " + HEALTH_CONFLICT in comment
    assert len(rig.sink.offered) == 3  # the batch, then each measurement once
    assert (rig.stats.written, rig.stats.rejected_lines, rig.stats.rejected_trades) == (50, 1, 0)
    said = [r.getMessage() for r in caplog.records if "event=lines_rejected " in r.getMessage()]
    assert len(said) == 1 and "dropped" not in said[0]
    assert "streamer_health" in said[0] and "INFLUXDB_HEALTH_MEASUREMENT" in said[0]
    assert "rejected.lp" in said[0] and "lines=1 " in said[0]


def test_a_group_refused_whole_is_set_aside_without_splitting_it(make_rig):
    rig = make_rig()
    rig.sink.refuse = lambda line: PRICE_CONFLICT if line.startswith("price_ticks") else None
    batch = mixed_batch(1, 101, 200, health=2)

    rig.writer.start()
    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 300})
    assert_each_line_stored_or_set_aside(rig, batch, batch.lines[:200])
    assert len(rig.sink.offered) == 3  # no bisection: dropped == the group's line count
    assert (rig.stats.written, rig.stats.rejected_lines, rig.stats.rejected_trades) == (0, 200,
                                                                                        200)


def test_a_batch_of_one_measurement_refused_whole_costs_no_extra_request(make_rig):
    rig = make_rig()
    rig.sink.refuse = lambda line: PRICE_CONFLICT
    batch = mixed_batch(1, 101, 100, health=0)

    rig.writer.start()
    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 200})
    assert len(rig.sink.offered) == 1
    assert sorted(rejected_lines(rig)) == sorted(batch.lines)


def test_lines_refused_for_their_time_are_found_by_bisection_within_the_bound(make_rig, caplog):
    rig = make_rig(batch_size=5000)
    old = "price_ticks,symbol=BTCUSDT "  # BTCUSDT's trades are old: beyond the retention
    rig.sink.refuse = lambda line: RETENTION if line.startswith(old) else None
    batch = mixed_batch(1, 101, 1000, old=("BTCUSDT",))
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 1100})
    refused = [line for line in batch.lines if line.startswith(old)]
    assert_each_line_stored_or_set_aside(rig, batch, refused)
    extra = len(rig.sink.offered) - 1
    assert extra <= 2 + 4 * 10  # groups + 4 * ceil(log2(1001))
    assert rig.stats.written == 500 and rig.stats.rejected_trades == 500
    said = [r.getMessage() for r in caplog.records if "event=lines_rejected " in r.getMessage()]
    assert len(said) == 1 and "retention" in said[0] and "lines=500 " in said[0]


def test_one_symbols_lines_refused_amid_anothers_are_found_within_the_bound(make_rig):
    rig = make_rig(batch_size=5000)
    eth = "price_ticks,symbol=ETHUSDT "  # e.g. a tag value over max-values-per-tag
    rig.sink.refuse = lambda line: "max-values-per-tag limit exceeded" if line.startswith(eth) \
        else None
    batch = mixed_batch(1, 101, 1000)  # BTCUSDT and ETHUSDT alternate, same times
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 1100})
    assert_each_line_stored_or_set_aside(rig, batch, [ln for ln in batch.lines
                                                      if ln.startswith(eth)])
    assert len(rig.sink.offered) - 1 <= 2 + 4 * 10


def test_scattered_refusals_stop_at_the_request_bound_and_set_the_rest_aside(make_rig, caplog):
    rig = make_rig()
    rig.sink.refuse = lambda line: PRICE_CONFLICT if trade_id(line) % 3 == 0 else None
    batch = mixed_batch(1, 101, 64, health=0)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 164})
    # the bound for one group of 64 lines
    assert len(rig.sink.offered) - 1 == 1 + refusals.SPLIT_REQUESTS_PER_LEVEL * 6
    refused = {line for line in batch.lines if trade_id(line) % 3 == 0}
    aside = rejected_lines(rig)
    assert refused <= set(aside), "a refused line is neither stored nor set aside"
    assert set(rig.sink.stored_lines()) | set(aside) == set(batch.lines)
    comments = [c for c, _ in rejected_file(rig)]
    assert any("may or may not be stored" in c for c in comments)
    said = [r.getMessage() for r in caplog.records if "event=lines_rejected " in r.getMessage()]
    assert len(said) == 1 and "may or may not be stored" in said[0]
    assert "request bound: partial write: field type conflict" in said[0]


def test_the_checkpoint_moves_only_once_the_refused_lines_are_fsynced(make_rig, monkeypatch):
    rig = make_rig()
    rig.sink.refuse = lambda line: HEALTH_CONFLICT if line.startswith("streamer_health") else None
    gate = threading.Event()
    real_reject = rig.spool.reject

    def slow_reject(groups):
        gate.wait(2.0)
        return real_reject(groups)

    monkeypatch.setattr(rig.spool, "reject", slow_reject)
    batch = mixed_batch(1, 101, 10)
    rig.writer.start()
    rig.writer.submit(batch)

    assert wait_for(lambda: len(rig.sink.offered) == 3)  # the trades are stored by now
    time.sleep(0.05)
    assert rig.checkpoint.snapshot() == {}
    gate.set()
    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 110})
    assert rejected_lines(rig) == batch.lines[-1:]


def test_a_failed_write_of_rejected_lp_keeps_the_batch_unstored_until_it_works(make_rig,
                                                                             monkeypatch):
    rig = make_rig()
    rig.sink.refuse = lambda line: HEALTH_CONFLICT if line.startswith("streamer_health") else None
    real_reject = rig.spool.reject
    failures = [OSError(28, "No space left on device")]

    def failing_reject(groups):
        if failures:
            raise failures.pop()
        return real_reject(groups)

    monkeypatch.setattr(rig.spool, "reject", failing_reject)
    batch = mixed_batch(1, 101, 10)
    rig.writer.start()
    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 110})
    assert len(rig.sink.offered) == 6  # sorted out twice
    assert rejected_lines(rig) == batch.lines[-1:]
    assert rig.stats.rejected_lines == 1


def test_a_busy_server_while_sorting_out_sets_nothing_aside_and_retries_the_batch(make_rig):
    rig = make_rig()
    rig.sink.refuse = lambda line: HEALTH_CONFLICT if line.startswith("streamer_health") else None
    batch = mixed_batch(1, 101, 10)
    original_write = rig.sink.write
    calls = []

    def write(body):
        calls.append(body)
        if len(calls) == 2:  # the first re-write
            raise BUSY
        original_write(body)

    rig.sink.write = write
    rig.writer.start()
    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 110})
    assert rejected_lines(rig) == batch.lines[-1:]  # once, though sorted out twice
    assert rig.stats.retries == 1 and rig.stats.rejected_lines == 1


def test_a_replayed_spool_batch_meeting_a_partial_write_sets_the_refused_lines_aside(make_rig):
    rig = make_rig()
    rig.sink.always = BUSY
    batch = mixed_batch(1, 101, 20)
    rig.writer.start()
    rig.writer.submit(batch)
    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 120})  # spooled
    assert rig.sink.stored == []

    rig.sink.always = None
    rig.sink.refuse = lambda line: HEALTH_CONFLICT if line.startswith("streamer_health") else None
    rig.clock.advance(60)

    assert wait_for(lambda: rig.spool.backlog_bytes() == 0 and rig.stats.replayed)
    assert_each_line_stored_or_set_aside(rig, batch, batch.lines[-1:])
    assert rig.stats.replayed == 20 and rig.stats.rejected_lines == 1


def test_a_batch_refused_whole_goes_to_rejected_lp_with_the_reason(make_rig, caplog):
    # Every line refused (a batch with good lines among them is sorted out: see below).
    rig = make_rig()
    rig.sink.refuse = lambda line: "unable to parse 'x y': bad timestamp"
    rig.sink.whole = True
    batch = make_batch(1, 101)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})
    (comment, lines), = rejected_file(rig)
    assert lines == batch.lines
    assert "rejected by InfluxDB (400): unable to parse 'x y': bad timestamp" in comment
    assert rig.stats.rejected_lines == 3 and rig.stats.written == 0
    assert events(caplog, "lines_rejected") == 1
    assert rig.spool.peek(10) is None


BAD_LINE = "unable to parse 'price_ticks,symbol=BTCUSDT price=oops': invalid number"


def refused_ids(ids: Set[int]) -> Callable[[str], Optional[str]]:
    """`refuse` for the trade lines of these ids (a line that does not parse, say)."""
    return lambda line: BAD_LINE if "trade_id=" in line and trade_id(line) in ids else None


def test_a_batch_refused_whole_for_three_lines_sets_aside_those_three_only(make_rig):
    # 2.7 and 3 Core refuse a whole batch for one line that does not parse
    rig = make_rig(batch_size=5000)
    bad = {117, 2500, 4321}  # scattered: each costs its own bisection
    rig.sink.refuse, rig.sink.whole = refused_ids(bad), True
    batch = mixed_batch(1, 1, 5000)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 5000}, timeout=10)
    assert_each_line_stored_or_set_aside(
        rig, batch, [line for line in batch.lines if refused_ids(bad)(line)])
    (comment, _), = rejected_file(rig)  # one reason: one comment
    assert BAD_LINE in comment
    # two measurements, then at most 2 requests per level for each refused line
    assert len(rig.sink.offered) - 1 <= 2 + 2 * len(bad) * 13
    assert (rig.stats.written, rig.stats.rejected_trades, rig.stats.spooled) == (4997, 3, 0)


def test_a_batch_refused_whole_for_a_field_type_conflict_is_set_aside_unsplit(make_rig):
    # 3 Core: a column's type is fixed by its first write; every trade line has the same fields
    rig = make_rig()
    conflict = "invalid column type for column 'price', expected String, got Float"
    rig.sink.refuse = lambda line: conflict if line.startswith("price_ticks") else None
    rig.sink.whole = True
    batch = mixed_batch(1, 101, 200, health=2)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 300})
    assert_each_line_stored_or_set_aside(rig, batch, batch.lines[:200])
    assert len(rig.sink.offered) == 3  # the batch, then each measurement once


def test_a_batch_refused_in_every_part_stops_splitting_after_three_levels(make_rig):
    rig = make_rig()
    rig.sink.refuse, rig.sink.whole = (lambda line: "schema rejected"), True
    batch = mixed_batch(1, 101, 64, health=0)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 164})
    assert len(rig.sink.offered) - 1 == refusals.DENSE_PARTS  # 2 + 4 + 8 parts
    assert sorted(rejected_lines(rig)) == sorted(batch.lines)
    (comment, _), = rejected_file(rig)
    assert "refused in each of the first 14 parts tried" in comment
    assert "some may be good (loading them again is harmless)" in comment


def test_a_batch_still_failing_with_500_past_its_budget_sets_aside_the_line_it_fails_on(
        make_rig, caplog):
    # some InfluxDB 3.0-3.9 releases answered a malformed batch with 500
    rig = make_rig()
    rig.sink.answer_for = lambda body: BROKEN if "trade_id=130i" in body else None
    batch = mixed_batch(1, 101, 50)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 150})
    assert_each_line_stored_or_set_aside(
        rig, batch, [line for line in batch.lines if "trade_id=130i" in line])
    assert sum(rig.clock.sleeps) <= rig.settings.retry_budget_s  # retried first
    assert rig.stats.spooled == 0 and rig.stats.written == 49
    (comment, _), = rejected_file(rig)
    assert "rejected by InfluxDB (500)" in comment


def test_a_server_failing_every_part_with_500_gets_the_batch_spooled_not_set_aside(make_rig):
    rig = make_rig()
    rig.sink.always = BROKEN
    batch = mixed_batch(1, 101, 30)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 130})  # spooled
    assert rig.stats.spooled == 30 and rig.stats.rejected_lines == 0
    assert not rig.spool.rejected_path.exists()


def test_a_spooled_chunk_failing_with_500_for_the_budget_is_sorted_out(make_rig):
    rig = make_rig()
    rig.sink.always = BUSY
    batch = mixed_batch(1, 101, 20)
    rig.writer.start()
    rig.writer.submit(batch)
    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 120})  # spooled
    rig.sink.always = None
    rig.sink.answer_for = lambda body: BROKEN if "trade_id=110i" in body else None

    sent = len(rig.sink.offered)
    rig.clock.advance(60)  # the replay meets the 500: its budget starts
    assert wait_for(lambda: len(rig.sink.offered) > sent)
    rig.clock.advance(rig.settings.retry_budget_s + 1)

    assert wait_for(lambda: rig.spool.backlog_bytes() == 0)
    assert_each_line_stored_or_set_aside(
        rig, batch, [line for line in batch.lines if "trade_id=110i" in line])
    assert rig.stats.replayed == 20  # 20 trades and a health line, one of them set aside


# -- the write quota: 429 -----------------------------------------------------------------------

def test_a_429_is_waited_out_whole_batches_spooled_meanwhile_and_said_once(make_rig, caplog):
    # Cloud Serverless: the quota of a fixed 5-minute window; Retry-After up to ~300 s, far
    # past the retry budget
    rig = make_rig(retry_budget_s=10.0)
    rig.sink.fail_next(classify_status(429, "", 300.0, INFLUX))
    batches = [make_batch(i, 100 * i) for i in range(1, 4)]
    rig.writer.start()
    ends = rig.clock.time() + 300

    for batch in batches:
        rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 302})  # spooled = stored
    assert len(rig.sink.offered) == 1  # no request while the quota is used up
    assert rig.stats.spooled == 9 and rig.stats.rejected_lines == 0
    assert rig.stats.write_quota_until == pytest.approx(ends)
    rig.clock.advance(299)
    time.sleep(0.3)
    assert len(rig.sink.offered) == 1
    rig.clock.advance(2)
    assert wait_for(lambda: rig.spool.backlog_bytes() == 0)
    assert rig.sink.stored_lines() == [line for b in batches for line in b.lines]
    said = [r.getMessage() for r in caplog.records if "event=write_quota_wait " in r.getMessage()]
    assert len(said) == 1 and f"until={iso_seconds(ends)} wait_s=300 " in said[0], said
    assert events(caplog, "write_failed") == events(caplog, "spooled") == 0


def test_a_429_without_a_spool_is_waited_out_in_the_writer_whole(make_rig):
    rig = make_rig(use_spool=False, retry_budget_s=10.0)
    rig.sink.fail_next(classify_status(429, "", 120.0, INFLUX))
    rig.writer.start()

    rig.writer.submit(make_batch(1, 101))

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})
    assert rig.clock.sleeps[0] >= 120.0 and len(rig.sink.offered) == 2


# -- the bytes the quota counts (INFLUXDB_WRITE_LIMIT) ------------------------------------------

def test_the_bytes_sent_are_counted_per_window_of_the_write_limit_aligned_to_the_epoch(make_rig):
    rig = make_rig(write_limit=WriteLimit(50_000, 60.0))
    first, second = make_batch(1, 101, n=5), make_batch(2, 201, n=7)
    start = rig.clock.time() // 60 * 60  # the fake wall clock's window: 35 s of it gone
    rig.writer.start()

    rig.writer.submit(first)
    assert wait_for(lambda: rig.stats.written == 5)
    assert rig.stats.quota_window_s == 60.0
    assert (rig.stats.quota_window_start, rig.stats.quota_window_bytes) == (
        start, len(first.body()))

    rig.clock.advance(30)  # into the next window: counted from zero
    rig.writer.submit(second)
    assert wait_for(lambda: rig.stats.written == 12)
    assert (rig.stats.quota_window_start, rig.stats.quota_window_bytes) == (
        start + 60, len(second.body()))
    assert rig.stats.sent_bytes == len(first.body()) + len(second.body())
    assert rig.stats.sent_lines == 12


def test_without_a_write_limit_the_bytes_are_counted_per_5_minutes(make_rig):
    rig = make_rig()
    rig.writer.start()

    rig.writer.submit(make_batch(1, 101))

    assert wait_for(lambda: rig.stats.written == 3)
    assert rig.stats.quota_window_s == 300.0
    assert rig.stats.quota_window_start % 300 == 0


@pytest.mark.parametrize("first_answer, counted", [
    (BUSY, 2),  # answered: the server may have counted it (conservative), then the retry
    (classify_status(429, "", 1.0, INFLUX), 1),  # the quota refused it before ingesting
    (RetryableWriteError("InfluxDB at http://influx:8086 unreachable: refused"), 1),  # no answer
    (classify_status(413, "too large", None, INFLUX), 1),  # refused unread; then taken
])
def test_a_request_counts_when_the_server_may_have_ingested_it(make_rig, first_answer, counted):
    rig = make_rig(use_spool=False, retry_budget_s=10.0)
    rig.sink.fail_next(first_answer)
    batch = make_batch(1, 101)
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 103})
    assert rig.stats.sent_bytes == counted * len(batch.body())
    assert rig.stats.sent_lines == counted * 3


def test_each_reason_is_logged_once_whatever_its_counts_and_values(make_rig, caplog):
    rig = make_rig()
    rig.sink.refuse = lambda line: HEALTH_CONFLICT if line.startswith("streamer_health") else None
    rig.writer.start()

    for seq in range(1, 4):
        rig.writer.submit(mixed_batch(seq, 100 * seq, 10, health=seq))

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 309})
    assert events(caplog, "lines_rejected") == 1
    assert rig.stats.rejected_lines == 6


@pytest.mark.parametrize("a, b", [
    ("partial write: points beyond retention policy dropped=3",
     "partial write: points beyond retention policy dropped=17"),
    ("partial write: unable to parse 'price_ticks,symbol=X price=1 12': bad timestamp dropped=0",
     "partial write: unable to parse 'price_ticks,symbol=Y price=2 13': bad timestamp dropped=0"),
    ("partial write: max-values-per-tag limit exceeded (100000/100000): measurement=\"price_ticks\""
     " tag=\"symbol\" value=\"AAA\" dropped=1",
     "partial write: max-values-per-tag limit exceeded (100000/100000): measurement=\"price_ticks\""
     " tag=\"symbol\" value=\"BBB\" dropped=2"),
])
def test_reasons_differing_only_in_counts_and_values_are_one_reason(a, b):
    assert refusals.reason_key(a) == refusals.reason_key(b)
    assert "dropped" not in refusals.reason_key(a)


def test_field_type_conflicts_of_different_fields_are_different_reasons():
    assert refusals.reason_key(PRICE_CONFLICT) != refusals.reason_key(HEALTH_CONFLICT)
    fix = refusals.fix_for(refusals.reason_key(PRICE_CONFLICT), "data/w/rejected.lp")
    assert "measurement price_ticks" in fix and "INFLUXDB_MEASUREMENT" in fix
    assert "influx -import" in fix


# -- backpressure and shutdown ---------------------------------------------------------------

def test_live_batches_are_not_held_behind_a_long_spool_replay(make_rig):
    rig = make_rig(batch_size=3)
    spooled = [make_batch(i, 1000 + 3 * i) for i in range(1, 5)]  # four chunks of 3 lines
    for batch in spooled:
        rig.spool.append(batch.body())
    live = [make_batch(10 + i, 2000 + 3 * i) for i in range(2)]
    for batch in live:
        rig.writer.submit(batch)  # waiting before the writer starts

    rig.writer.start()

    assert wait_for(lambda: rig.spool.backlog_bytes() == 0 and len(rig.sink.stored) == 6)
    written = [body.split("\n") for body in rig.sink.stored]
    # one chunk, then a waiting live batch, and so on: never the whole spool first
    assert written == [spooled[0].lines, live[0].lines, spooled[1].lines, live[1].lines,
                       spooled[2].lines, spooled[3].lines]


def test_a_full_queue_sends_new_batches_to_the_spool_instead_of_blocking(make_rig):
    rig = make_rig(queue_batches=1)
    older, newer = make_batch(1, 101), make_batch(2, 104)
    rig.writer.submit(older)  # the writer thread is not running: the queue stays full

    started = time.monotonic()
    rig.writer.submit(newer)

    assert time.monotonic() - started < 0.5
    assert rig.writer.queue.qsize() == 1
    assert spooled_lines(rig.spool) == newer.lines
    assert rig.stats.spooled == 3
    assert rig.checkpoint.snapshot() == {}  # the older batch is not stored yet


def test_a_spooled_batch_moves_the_checkpoint_once_the_older_queued_one_is_stored(make_rig):
    rig = make_rig(queue_batches=1)
    older, newer = make_batch(1, 101), make_batch(2, 104)
    rig.writer.submit(older)
    rig.writer.submit(newer)  # spooled

    rig.writer.start()

    assert wait_for(lambda: rig.checkpoint.snapshot() == {"BTCUSDT": 106})
    assert wait_for(lambda: rig.spool.backlog_bytes() == 0)
    assert sorted(rig.sink.stored_lines()) == sorted(older.lines + newer.lines)


def test_stop_spools_the_batches_still_queued(make_rig, caplog):
    rig = make_rig()
    rig.sink.gate = threading.Event()  # the first write hangs
    first, second, third = make_batch(1, 101), make_batch(2, 104), make_batch(3, 107)
    rig.writer.start()
    rig.writer.submit(first)
    assert wait_for(lambda: len(rig.sink.offered) == 1)
    rig.writer.submit(second)
    rig.writer.submit(third)

    rig.writer.stop(0.05)

    assert spooled_lines(rig.spool) == second.lines + third.lines
    assert rig.sink.closed
    assert any("why=shutdown" in r.getMessage() for r in caplog.records)
    rig.sink.gate.set()
    rig.writer.thread.join(1.0)
    assert rig.checkpoint.snapshot() == {"BTCUSDT": 109}


def test_a_batch_without_trades_records_no_lag(make_rig):
    rig = make_rig()
    health_only = Batch(1, ["streamer_health,worker=btcusdt received=0i 1"], 0, {}, 0)
    rig.writer.start()

    rig.writer.submit(health_only)

    assert wait_for(lambda: rig.sink.stored)
    assert rig.stats.take_lags() == []


def test_each_stored_trade_lags_from_its_own_trade_time_not_the_batchs_oldest(make_rig):
    """Issue 21.8: LAG read ~1,000 ms at defaults, the oldest trade of each 1 s batch."""
    rig = make_rig()
    now_ms = int(time.time() * 1000)
    ages_ms = [900, 500, 100]  # a batch cut after 1 s holds trades of every age up to 1 s
    lines = ["streamer_health,worker=btcusdt received=3i 1"] + [
        RENDERER.line(Trade("BTCUSDT", 101 + i, "100.00000000", "0.50000000", now_ms - age,
                            False, (now_ms - age) * 1000)) for i, age in enumerate(ages_ms)]
    batch = Batch(1, lines, 3, {"BTCUSDT": 103}, now_ms - 900, others=[0])
    rig.writer.start()

    rig.writer.submit(batch)

    assert wait_for(lambda: rig.sink.stored)
    lags = rig.stats.take_lags()
    assert len(lags) == 3  # one per trade; the health point is not a trade
    assert [round(lag, -2) for lag in lags] == sorted(ages_ms), lags  # stored within 50 ms


def test_a_big_batch_records_an_even_sample_of_its_trades(make_rig):
    rig = make_rig()
    now_ms = int(time.time() * 1000)
    lines = [RENDERER.line(Trade("BTCUSDT", 1 + i, "1.0", "1.0", now_ms - 5000 + i, False,
                                 (now_ms - 5000 + i) * 1000)) for i in range(5000)]
    rig.writer.start()

    rig.writer.submit(Batch(1, lines, 5000, {"BTCUSDT": 5000}, now_ms - 5000))

    assert wait_for(lambda: rig.sink.stored)
    lags = sorted(rig.stats.take_lags())
    assert len(lags) == 100  # batch.LAG_SAMPLES: the writer parses 100 lines, not 5,000
    assert lags[0] < 200 and lags[-1] > 4800  # from the newest trade to the oldest
