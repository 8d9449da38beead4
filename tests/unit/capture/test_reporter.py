"""The worker's Reporter: one snapshot shown as the status file, the summary line and the
health point, every figure named once (workers/health.py)."""
from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from workers.capture.reporter import RATE_WINDOW_S, Reporter, Sources, point_line, summary_text
from workers.health import (
    FIGURES,
    NOT_COUNTERS,
    ConnectionState,
    Stats,
    StatusFile,
    read_status,
)

T0 = 1_700_000_000.0
KEY = "streamer_health,host=h,worker=btcusdt"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Fakes:
    """The running worker as the reporter sees it."""

    def __init__(self) -> None:
        self.received = 0
        self.connections: List[ConnectionState] = [{"conn": "s1", "streams": 1,
                                                    "connected": True, "subscribed": 1}]
        self.spool_bytes = 0
        self.lines: List[str] = []

    def sources(self) -> Sources:
        return Sources(received=lambda: self.received,
                       connections=lambda: [dict(c) for c in self.connections],  # type: ignore
                       spool_bytes=lambda: self.spool_bytes, queue_batches=lambda: 2,
                       checkpoint=lambda: {"BTCUSDT": 9})


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def reporter(fakes: Fakes, clock: Clock, tmp_path: Path,
             stats: Optional[Stats] = None) -> Reporter:
    return Reporter("btcusdt", "h", ["BTCUSDT"], stats or Stats(), fakes.sources(),
                    tmp_path / "status" / "btcusdt.json", KEY, fakes.lines.append, clock=clock)


def full_status(**extra: object) -> StatusFile:
    status: Dict[str, object] = {
        "trades_per_s": 12.46, "received": 100, "written": 98, "duplicates": 1,
        "invalid": {"bad_json": 2, "no_symbol": 1}, "retries": 4, "spooled": 5,
        "spool_backlog_bytes": 4096, "rejected_lines": 6, "reconnects": 7, "gaps": 8,
        "backfilled": 30, "given_up": 9, "connected": True, "lag_p50_ms": 40.44,
        "lag_p99_ms": 180.06}
    status.update(extra)
    return status  # type: ignore[return-value]


# -- one definition ------------------------------------------------------------------------

def test_the_status_file_holds_every_declared_key_and_nothing_else(fakes, clock, tmp_path):
    status = reporter(fakes, clock, tmp_path).snapshot()
    assert set(status) == set(StatusFile.__annotations__)


def test_every_counter_of_stats_is_in_the_status_file():
    counters = {f.name for f in fields(Stats)} - set(NOT_COUNTERS)
    assert counters <= set(StatusFile.__annotations__)


def test_the_summary_and_the_health_point_show_figures_of_the_status_file():
    assert {f.key for f in FIGURES} <= set(StatusFile.__annotations__)


def test_the_health_point_keeps_the_field_names_the_dashboards_read():
    assert [f.point for f in FIGURES if f.point] == [
        "received", "written", "duplicates", "invalid", "retries", "spooled", "spool_bytes",
        "rejected", "reconnects", "gaps", "backfilled", "given_up", "connected", "lag_p50_ms",
        "lag_p99_ms"]


# -- the summary line and the health point -------------------------------------------------

def test_the_summary_line_text():
    assert summary_text(full_status()) == (
        "trades_per_s=12.5 received=100 written=98 duplicates=1 invalid=3 retries=4 spooled=5 "
        "spool_backlog_bytes=4096 rejected=6 reconnects=7 gaps=8 backfilled=30 given_up=9 "
        "lag_p50_ms=40 lag_p99_ms=180")


def test_the_summary_line_shows_an_unknown_lag_as_a_dash():
    text = summary_text(full_status(lag_p50_ms=None, lag_p99_ms=None))
    assert text.endswith(" lag_p50_ms=- lag_p99_ms=-")


def test_the_health_point_line():
    assert point_line(KEY, full_status(), 123) == (
        "streamer_health,host=h,worker=btcusdt received=100i,written=98i,duplicates=1i,"
        "invalid=3i,retries=4i,spooled=5i,spool_bytes=4096i,rejected=6i,reconnects=7i,gaps=8i,"
        "backfilled=30i,given_up=9i,connected=1i,lag_p50_ms=40.4,lag_p99_ms=180.1 123")


def test_the_health_point_leaves_out_an_unknown_lag():
    line = point_line(KEY, full_status(lag_p50_ms=None, lag_p99_ms=None, connected=False), 1)
    assert line.endswith(",given_up=9i,connected=0i 1") and "lag" not in line


def test_a_health_point_goes_to_the_database_with_the_trades(fakes, clock, tmp_path):
    stats = Stats(written=3)
    fakes.received = 4
    reporter(fakes, clock, tmp_path, stats).health_point()
    (line,) = fakes.lines
    assert line.startswith(f"{KEY} received=4i,written=3i,")
    assert line.endswith(f" {int(T0 * 1e9)}")


def test_the_summary_is_logged_from_the_last_status_written(fakes, clock, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    stats = Stats()
    rep = reporter(fakes, clock, tmp_path, stats)
    rep.summary()  # before any status file: a fresh snapshot
    fakes.received = 7
    rep.write_status()
    fakes.received = 9  # not yet in a status file
    rep.summary()
    lines = [r.getMessage() for r in caplog.records if "event=summary" in r.getMessage()]
    assert [line.split()[3] for line in lines] == ["received=0", "received=7"]
    assert lines[0].startswith("worker=btcusdt event=summary trades_per_s=0.0 ")


# -- the snapshot --------------------------------------------------------------------------

def test_the_status_file_is_written_and_read_back(fakes, clock, tmp_path):
    stats = Stats(gaps=2, backfilled=30)
    stats.invalid["bad_json"] += 1
    stats.last_trade_ms["BTCUSDT"] = int((T0 - 1.5) * 1000)
    rep = reporter(fakes, clock, tmp_path, stats)
    rep.write_status()
    status = read_status(tmp_path / "status" / "btcusdt.json")
    assert status == json.loads((tmp_path / "status" / "btcusdt.json").read_text())
    assert status is not None
    assert (status["worker"], status["host"], status["updated"]) == ("btcusdt", "h", T0)
    assert (status["gaps"], status["backfilled"], status["invalid"]) == (2, 30, {"bad_json": 1})
    assert status["last_trade_age_s"] == 1.5
    assert (status["checkpoint"], status["queue_batches"]) == ({"BTCUSDT": 9}, 2)


def test_a_status_file_that_cannot_be_written_is_logged_and_capture_goes_on(
        fakes, clock, tmp_path, caplog):
    (tmp_path / "status").write_text("a file where the directory should be")
    rep = reporter(fakes, clock, tmp_path)
    rep.write_status()
    assert "event=status_write_failed" in caplog.text
    assert rep.last is not None  # the summary still has its figures


def test_trades_per_s_covers_the_rate_window(fakes, clock, tmp_path):
    rep = reporter(fakes, clock, tmp_path)
    for _ in range(10):  # 100 trades a second for 10 s
        clock.now += 1
        fakes.received += 100
        rep.snapshot()
    clock.now += 1
    fakes.received += 500  # a burst in the last second
    # from the sample RATE_WINDOW_S (5 s) back, at 600: 900 trades over 5 s, not 1500 over 11 s
    assert rep.snapshot()["trades_per_s"] == pytest.approx((1500 - 600) / RATE_WINDOW_S)


def test_the_lag_percentiles_stay_through_a_quiet_period(fakes, clock, tmp_path):
    stats = Stats()
    stats.lags_ms.extend([10.0, 20.0, 30.0])
    rep = reporter(fakes, clock, tmp_path, stats)
    assert (rep.snapshot()["lag_p50_ms"], rep.snapshot()["lag_p99_ms"]) == (20.0, 30.0)
    clock.now += RATE_WINDOW_S  # a new window, no trade stored in it
    assert rep.snapshot()["lag_p99_ms"] == 30.0


def test_the_lag_is_unknown_once_nothing_was_stored_for_10_s(fakes, clock, tmp_path):
    """Issue 21.8: LAG kept its last figures through a 75 s InfluxDB outage."""
    stats = Stats()
    rep = reporter(fakes, clock, tmp_path, stats)
    stats.lags_ms.extend([100.0, 500.0, 900.0])
    assert rep.snapshot()["lag_p99_ms"] == 900.0
    for _ in range(9):  # InfluxDB down: nothing stored, nothing recorded
        clock.now += 1
        status = rep.snapshot()
    assert status["lag_p99_ms"] == 900.0  # stored 9 s ago: still recent
    clock.now += 1
    status = rep.snapshot()
    assert (status["lag_p50_ms"], status["lag_p99_ms"]) == (None, None)
    assert "lag_p50_ms=- lag_p99_ms=-" in summary_text(status)
    assert "lag_p99_ms" not in point_line(KEY, status, 1)
    # Stored again: the new trades' lags only.
    stats.lags_ms.extend([40.0])
    status = rep.snapshot()
    assert (status["lag_p50_ms"], status["lag_p99_ms"]) == (40.0, 40.0)


def test_the_lag_covers_every_trade_stored_in_the_last_10_s(fakes, clock, tmp_path):
    stats = Stats()
    rep = reporter(fakes, clock, tmp_path, stats)
    for second in range(12):  # one trade stored a second, lag 10, 20, ... 120 ms
        clock.now += 1
        stats.lags_ms.append(10.0 * (second + 1))
        status = rep.snapshot()
    # the 10 stored in the last 10 s: 30 ... 120 ms
    assert status["lag_p50_ms"] == 70.0 and status["lag_p99_ms"] == 120.0


def test_a_connection_that_was_up_once_is_remembered(fakes, clock, tmp_path):
    rep = reporter(fakes, clock, tmp_path)
    fakes.connections = [{"conn": "s1", "connected": False}]
    assert rep.snapshot()["connections"][0]["connected_once"] is False
    fakes.connections = [{"conn": "s1", "connected": True}]
    status = rep.snapshot()
    assert status["connected"] and status["connections"][0]["connected_once"]
    fakes.connections = [{"conn": "s1", "connected": False}]
    status = rep.snapshot()
    assert not status["connected"] and status["connections"][0]["connected_once"]


def test_no_trade_yet_is_no_last_trade_age(fakes, clock, tmp_path):
    status = reporter(fakes, clock, tmp_path).snapshot()
    assert status["last_trade_age_s"] is None and status["last_trade_ms"] == {}
