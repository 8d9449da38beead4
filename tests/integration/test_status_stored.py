"""scripts/status --stored: the last trade stored per pair, read from the real InfluxDB."""
from __future__ import annotations

import time

from tests.support.capture import influx_env
from workers.ops import status


def test_stored_shows_the_last_trade_per_pair_and_says_when_there_is_none(
        influx_front, influx_db, monkeypatch):
    now_ns = time.time_ns()
    influx_db.write_lines("\n".join(
        f"price_ticks,symbol=BTCUSDT price_str=\"1.0\",trade_id={i}i {now_ns - (10 - i) * 10**9}"
        for i in range(1, 11)))
    for name, value in influx_env(influx_front, influx_db).items():
        monkeypatch.setenv(name, value)

    report = status.stored(["BTCUSDT", "ETHUSDT"], now=now_ns / 1e9)

    assert report["symbols"]["ETHUSDT"] is None
    assert report["symbols"]["BTCUSDT"]["last_id"] == 10
    assert report["symbols"]["BTCUSDT"]["age_s"] < 2
    assert status.stored_lines(report) == ["stored: BTCUSDT last id 10 (0s ago)",
                                           "stored: ETHUSDT nothing in the last 24 h"]


def test_stored_says_why_it_cannot_tell(monkeypatch):
    monkeypatch.setenv("INFLUXDB_URL", "http://127.0.0.1:9")
    for name in ("INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET"):
        monkeypatch.setenv(name, "x")
    lines = status.stored_lines(status.stored(["BTCUSDT"]))
    assert len(lines) == 1 and lines[0].startswith("stored: cannot tell: SinkError")
