"""The backfiller with a fake REST client and the real Pipeline: gaps served by due time, invalid
REST rows given up by id (so the checkpoint moves past them), nothing that can freeze the thread.

Facts: Binance's spot "REST API" documentation (historicalTrades rows ascend from fromId).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from tests.support.timing import poll as wait_for
from workers.capture import backfill as backfill_module
from workers.capture.backfill import Backfiller
from workers.capture.pipeline import Pipeline
from workers.errors import RestError, RestShapeError
from workers.exchange.rest import TradePage
from workers.health import Stats
from workers.storage.batch import Batch
from workers.storage.lineproto import LineRenderer
from workers.trade import Trade

BASE_MS = 1_757_522_615_939
ID_RE = re.compile(r",trade_id=(\d+)i,")


def trade(trade_id: int, symbol: str = "BTCUSDT") -> Trade:
    return Trade(symbol, trade_id, "100.00000000", "0.50000000", BASE_MS + trade_id, False,
                 (BASE_MS + trade_id) * 1000)


class FakeRest:
    """historicalTrades from a per-symbol history; ids in `invalid` come back as failed rows."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.history: Dict[str, List[int]] = {}
        self.invalid: Dict[Tuple[str, int], str] = {}
        self.fail: Dict[str, int] = {}  # symbol -> RestErrors still to raise
        self.shape_error: Optional[str] = None  # symbol whose answer has the wrong shape
        self.calls: List[Tuple[float, str, int, int]] = []
        self.lock = threading.Lock()

    def trades_page(self, symbol: str, from_id: int, limit: int) -> TradePage:
        with self.lock:
            self.calls.append((time.monotonic(), symbol, from_id, limit))
            if self.fail.get(symbol):
                self.fail[symbol] -= 1
                raise RestError("/api/v3/historicalTrades answered 503: busy", 503, -1008)
        if symbol == self.shape_error:
            raise RestShapeError("/api/v3/historicalTrades", "expected a list, got dict")
        ids = [i for i in self.history.get(symbol, []) if i >= from_id][:limit]
        page = TradePage()
        for i in ids:
            reason = self.invalid.get((symbol, i))
            if reason:
                page.invalid.append((i, reason))
            else:
                page.trades.append(trade(i, symbol))
        if ids:
            page.first_id, page.last_id = ids[0], ids[-1]
        return page

    def calls_for(self, symbol: str) -> List[Tuple[float, str, int, int]]:
        with self.lock:
            return [c for c in self.calls if c[1] == symbol]


class Rig:
    def __init__(self, resume_from: Optional[Dict[str, int]] = None) -> None:
        self.rest = FakeRest()
        self.stats = Stats()
        self.batches: List[Batch] = []
        self.pipeline = Pipeline(LineRenderer("price_ticks"), 100_000, resume_from or {},
                                 lambda s, g: self.backfiller.report_gap(s, g),
                                 self.batches.append)
        self.backfiller = Backfiller("test", self.rest, self.pipeline, self.stats,  # type: ignore
                                     max_trades=1_000_000)

    def accept(self, symbol: str, *ids: int) -> None:
        for i in ids:
            self.pipeline.accept(trade(i, symbol))

    def ids(self, symbol: str) -> List[int]:
        return sorted(int(m.group(1)) for b in self.batches for line in b.lines
                      if f"symbol={symbol} " in line for m in [ID_RE.search(line)] if m)

    def checkpoint(self) -> Dict[str, int]:
        self.pipeline.add_line("probe x=1i 1")
        batch = self.pipeline.flush()
        assert batch is not None
        return batch.checkpoint


@pytest.fixture(autouse=True)
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill_module, "GAP_GRACE_S", 0.05)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.rest.stopping.set()
    if r.backfiller.thread.is_alive():
        r.backfiller.thread.join(2)


def test_a_gap_is_fetched_and_the_checkpoint_moves_to_the_top(rig):
    rig.rest.history["BTCUSDT"] = list(range(1, 11))
    rig.backfiller.start()
    rig.accept("BTCUSDT", 1, 10)
    assert wait_for(lambda: not rig.pipeline.open_gaps())
    assert rig.checkpoint() == {"BTCUSDT": 10}
    assert rig.ids("BTCUSDT") == list(range(1, 11))
    assert rig.stats.gaps == 1 and rig.stats.given_up == 0
    assert wait_for(lambda: rig.stats.backfilled == 8)


def test_the_gap_left_by_a_restart_is_fetched_at_once_a_live_gap_after_the_grace(
        monkeypatch):
    monkeypatch.setattr(backfill_module, "GAP_GRACE_S", 30.0)
    rig = Rig(resume_from={"BTCUSDT": 100})
    rig.rest.history["BTCUSDT"] = list(range(101, 200))
    rig.backfiller.start()
    try:
        rig.accept("BTCUSDT", 110)  # the first trade after the restart: 101..109 are missing
        assert wait_for(lambda: not rig.pipeline.open_gaps(), timeout=5.0)
        rig.accept("BTCUSDT", 120)  # a gap in the live stream: waits its grace
        time.sleep(0.5)
        assert [c[2] for c in rig.rest.calls_for("BTCUSDT")] == [101]
        assert rig.pipeline.open_gaps() == {"BTCUSDT": [(111, 119)]}
    finally:
        rig.rest.stopping.set()
        rig.backfiller.thread.join(2)


def test_a_gap_due_later_does_not_block_an_earlier_due_gap_queued_after_it(rig):
    rig.rest.history = {"AAAUSDT": list(range(1, 6)), "BBBUSDT": list(range(1, 6))}
    rig.rest.fail["AAAUSDT"] = 1  # the first try fails: AAA's gap is due again in 30 s
    rig.backfiller.start()
    rig.accept("AAAUSDT", 1, 5)
    assert wait_for(lambda: len(rig.rest.calls_for("AAAUSDT")) == 1)
    assert wait_for(lambda: rig.backfiller.pending() == 1)  # AAA waits for its retry
    reported = time.monotonic()
    rig.accept("BBBUSDT", 1, 5)  # reported after AAA's retry was queued, due long before it
    assert wait_for(lambda: "BBBUSDT" not in rig.pipeline.open_gaps(), timeout=3.0)
    assert time.monotonic() - reported < 2.0
    assert rig.pipeline.open_gaps() == {"AAAUSDT": [(2, 4)]}  # still waiting, not lost
    assert len(rig.rest.calls_for("AAAUSDT")) == 1
    assert rig.checkpoint() == {"AAAUSDT": 1, "BBBUSDT": 5}


def test_the_failed_gap_is_retried_when_due(rig, monkeypatch):
    monkeypatch.setattr(backfill_module, "RETRY_AFTER_FAILURE_S", 0.3)
    rig.rest.history["AAAUSDT"] = list(range(1, 6))
    rig.rest.fail["AAAUSDT"] = 2
    rig.backfiller.start()
    rig.accept("AAAUSDT", 1, 5)
    assert wait_for(lambda: not rig.pipeline.open_gaps())
    assert len(rig.rest.calls_for("AAAUSDT")) == 3
    assert "503" in rig.stats.last_error


def test_gaps_due_at_once_are_served_in_the_order_reported(rig):
    rig.rest.history = {s: list(range(1, 4)) for s in ("AUSDT", "BUSDT", "CUSDT")}
    for s in ("CUSDT", "AUSDT", "BUSDT"):
        rig.accept(s, 1, 3)
    rig.backfiller.start()
    assert wait_for(lambda: not rig.pipeline.open_gaps())
    assert [c[1] for c in rig.rest.calls] == ["CUSDT", "AUSDT", "BUSDT"]


def test_an_invalid_row_is_given_up_with_its_id_and_the_checkpoint_moves_past_it(rig, caplog):
    caplog.set_level(logging.INFO, logger="workers.capture.backfill")
    rig.rest.history["BTCUSDT"] = list(range(1, 11))
    rig.rest.invalid[("BTCUSDT", 5)] = "bad_price: '-1'"
    rig.backfiller.start()
    rig.accept("BTCUSDT", 1, 10)
    assert wait_for(lambda: not rig.pipeline.open_gaps())
    assert rig.checkpoint() == {"BTCUSDT": 10}
    assert rig.ids("BTCUSDT") == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert rig.stats.given_up == 1
    assert wait_for(lambda: rig.stats.backfilled == 7)
    given_up = [r.getMessage() for r in caplog.records if "event=gap_given_up" in r.getMessage()]
    assert len(given_up) == 1
    assert "first_id=5 last_id=5 missing=1" in given_up[0]
    assert "REST row failed validation: bad_price" in given_up[0]
    assert "5..5" in rig.stats.last_error


def test_an_invalid_last_row_is_given_up_once_and_not_fetched_again(rig):
    rig.rest.history["BTCUSDT"] = list(range(1, 11))
    rig.rest.invalid[("BTCUSDT", 9)] = "missing_field: 'qty'"
    rig.backfiller.start()
    rig.accept("BTCUSDT", 1, 10)  # gap 2..9: the page's last row is the invalid one
    assert wait_for(lambda: not rig.pipeline.open_gaps())
    time.sleep(0.2)
    assert [(c[2], c[3]) for c in rig.rest.calls] == [(2, 8)]
    assert rig.stats.given_up == 1
    assert rig.checkpoint() == {"BTCUSDT": 10}


def test_an_invalid_row_the_stream_delivered_meanwhile_is_not_given_up(rig):
    rig.rest.history["BTCUSDT"] = list(range(1, 11))
    rig.rest.invalid[("BTCUSDT", 5)] = "bad_price: '-1'"
    rig.accept("BTCUSDT", 1, 10)
    rig.accept("BTCUSDT", 5)  # the live stream had it after all
    rig.backfiller.start()
    assert wait_for(lambda: not rig.pipeline.open_gaps())
    assert rig.stats.given_up == 0
    assert rig.checkpoint() == {"BTCUSDT": 10}
    assert rig.ids("BTCUSDT") == list(range(1, 11))


def test_ids_the_exchange_no_longer_serves_are_given_up(rig):
    rig.rest.history["BTCUSDT"] = list(range(6, 11))
    rig.accept("BTCUSDT", 1, 10)
    rig.backfiller.start()
    assert wait_for(lambda: not rig.pipeline.open_gaps())
    assert rig.stats.given_up == 4  # 2..5
    assert rig.checkpoint() == {"BTCUSDT": 10}


def test_a_shape_error_escapes_the_thread_for_the_worker_to_end(rig, monkeypatch, caplog):
    escaped: List[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))
    rig.rest.shape_error = "BTCUSDT"
    rig.accept("BTCUSDT", 1, 10)
    rig.backfiller.start()
    rig.backfiller.thread.join(3)
    assert not rig.backfiller.thread.is_alive()
    assert len(escaped) == 1 and isinstance(escaped[0], RestShapeError)
    assert any("event=backfill_unexpected" in r.getMessage() for r in caplog.records)
    assert rig.pipeline.open_gaps() == {"BTCUSDT": [(2, 9)]}  # not silently given up


def test_stop_ends_the_thread_promptly_with_a_gap_waiting(rig):
    rig.rest.fail["BTCUSDT"] = 1
    rig.rest.history["BTCUSDT"] = list(range(1, 11))
    rig.backfiller.start()
    rig.accept("BTCUSDT", 1, 10)
    assert wait_for(lambda: rig.backfiller.pending() == 1)  # due again in 30 s
    stopped = time.monotonic()
    rig.rest.stopping.set()
    rig.backfiller.thread.join(2)
    assert not rig.backfiller.thread.is_alive()
    assert time.monotonic() - stopped < 0.5
