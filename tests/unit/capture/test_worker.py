"""Resume from the database, and the host on health points, status and logs.

The query is built and parsed here against canned InfluxDB answers from a small local HTTP
server; tests/integration/test_resume_from_db.py runs it against a real InfluxDB.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from tests.support.canned_http import CannedHttp, canned_http
from workers.__main__ import set_log_host
from workers.capture.worker import RESUME_FAILED_NOTE, Worker, resume_from_db
from workers.errors import NoMapping, SinkError
from workers.settings import load_settings
from workers.storage.influx_query import (
    SYMBOL_FILTER_MAX,
    InfluxQuery,
    last_trades_query,
    parse_last_trades,
)
from workers.symbols import WorkerSpec

TOKEN = "tok-123"


# -- the query -----------------------------------------------------------------------------------

def test_query_asks_one_max_per_symbol_of_the_look_back_for_the_named_symbols():
    q = last_trades_query("price_ticks", ["BTCUSDT", "ETHUSDT"], 24)
    assert q == ('SELECT max(trade_id) FROM "price_ticks" WHERE time > now() - 24h AND '
                 "(symbol = 'BTCUSDT' OR symbol = 'ETHUSDT') GROUP BY symbol")


def test_query_for_a_big_group_or_none_has_no_symbol_filter():
    many = [f"S{i}USDT" for i in range(SYMBOL_FILTER_MAX + 1)]
    expected = 'SELECT max(trade_id) FROM "price_ticks" WHERE time > now() - 24h GROUP BY symbol'
    assert last_trades_query("price_ticks", many, 24) == expected
    assert last_trades_query("price_ticks", None, 24) == expected


def test_query_quotes_odd_names_and_takes_a_fraction_of_an_hour():
    q = last_trades_query('my "ticks"', ["A'B"], 0.5)
    assert q == ('SELECT max(trade_id) FROM "my \\"ticks\\"" WHERE time > now() - 1800s AND '
                 "(symbol = 'A\\'B') GROUP BY symbol")


SERIES = [
    {"name": "price_ticks", "tags": {"symbol": "BTCUSDT"}, "columns": ["time", "max"],
     "values": [[1764478800123004567, 4567]]},
    {"name": "price_ticks", "tags": {"symbol": "ETHUSDT"}, "columns": ["time", "max"],
     "values": [[1764478800200000012, 12]]},
]


def test_answer_is_parsed_to_last_id_and_time_per_symbol():
    assert parse_last_trades(SERIES) == {"BTCUSDT": (4567, 1764478800123004567),
                                         "ETHUSDT": (12, 1764478800200000012)}


def test_answer_without_rows_or_with_a_null_is_empty():
    assert parse_last_trades([]) == {}
    assert parse_last_trades([{"tags": {"symbol": "X"}, "columns": ["time", "max"],
                               "values": [[1, None]]}]) == {}


# -- InfluxQuery.last_trades against canned answers ---------------------------------------------

NO_READ = {"code": "forbidden", "message": "no read"}  # a 403's body


@pytest.fixture
def fake_influx() -> Iterator[CannedHttp]:
    yield from canned_http({"results": [{"statement_id": 0, "series": SERIES}]})


def influx_settings(url: str, tmp_path: Path, bucket: str = "ticks", **extra: str):
    env = {"INFLUXDB_URL": url, "INFLUXDB_TOKEN": TOKEN, "INFLUXDB_ORG": "o",
           "INFLUXDB_BUCKET": bucket, "DATA_DIR": str(tmp_path / "data"),
           "RUN_DIR": str(tmp_path / "run"), "CAPTURE_HOST": "capture-a",
           "BINANCE_REST_URL": "http://127.0.0.1:9", "BINANCE_WS_URL": "ws://127.0.0.1:9"}
    env.update(extra)
    return load_settings(env)


def test_last_trades_sends_one_query_with_the_token_and_narrows_to_the_symbols(fake_influx,
                                                                              tmp_path):
    settings = influx_settings(fake_influx.url, tmp_path, bucket="ticks/autogen")
    assert settings.influx is not None
    found = InfluxQuery(settings.influx).last_trades(["BTCUSDT"], 24, timeout_s=5)
    assert found == {"BTCUSDT": (4567, 1764478800123004567)}
    ((_, params, headers),) = fake_influx.requests
    assert headers["Authorization"] == f"Token {TOKEN}"
    assert params["db"] == ["ticks"] and params["rp"] == ["autogen"]
    assert params["epoch"] == ["ns"]
    assert params["q"] == [last_trades_query("price_ticks", ["BTCUSDT"], 24)]


def test_last_trades_of_a_token_that_cannot_read_raises_with_the_status(fake_influx, tmp_path):
    fake_influx.status, fake_influx.body = 403, NO_READ
    settings = influx_settings(fake_influx.url, tmp_path)
    assert settings.influx is not None
    with pytest.raises(SinkError) as caught:
        InfluxQuery(settings.influx).last_trades(["BTCUSDT"], 24, timeout_s=5)
    assert caught.value.status == 403


def test_last_trades_of_a_query_error_raises(fake_influx, tmp_path):
    fake_influx.body = {"results": [{"statement_id": 0, "error": "database not found: ticks"}]}
    settings = influx_settings(fake_influx.url, tmp_path)
    assert settings.influx is not None
    with pytest.raises(SinkError, match="database not found"):
        InfluxQuery(settings.influx).last_trades(["BTCUSDT"], 24, timeout_s=5)


# -- the decisions -------------------------------------------------------------------------------

def events(caplog: pytest.LogCaptureFixture, event: str) -> List[logging.LogRecord]:
    return [r for r in caplog.records if f"event={event} " in r.getMessage()]


def answer(value: Optional[Dict[str, Tuple[int, int]]] = None, error: Optional[Exception] = None):
    def ask() -> Dict[str, Tuple[int, int]]:
        if error is not None:
            raise error
        return value or {}
    return ask


def test_found_symbols_resume_and_say_so_without_a_warning(caplog):
    caplog.set_level(logging.INFO)
    found = resume_from_db("w", ["BTCUSDT"], answer({"BTCUSDT": (4567, 1764478800123004567)}), 24)
    assert found == {"BTCUSDT": 4567}
    (line,) = events(caplog, "resumed_from_db")
    assert "symbol=BTCUSDT" in line.getMessage() and "last_id=4567" in line.getMessage()
    assert "stored_at=2025-11-30T05:00:00.123Z" in line.getMessage()
    assert not events(caplog, "resume_from_db_failed")


@pytest.mark.parametrize("status", [401, 403])
def test_a_token_that_cannot_read_is_one_warning_and_the_live_stream(caplog, status):
    found = resume_from_db("w", ["BTCUSDT", "ETHUSDT"],
                           answer(error=SinkError("InfluxDB /query answered", status)), 24)
    assert found == {}
    (line,) = events(caplog, "resume_from_db_failed")
    text = line.getMessage()
    assert line.levelno == logging.WARNING
    assert "symbols=BTCUSDT,ETHUSDT" in text
    assert f"cannot read the bucket (InfluxDB /query answered {status})" in text
    assert f"note='{RESUME_FAILED_NOTE}'" in text


def test_an_unreachable_database_or_a_bug_is_one_warning_never_an_exception(caplog):
    assert resume_from_db("w", ["BTCUSDT"], answer(error=SinkError("unreachable: timed out")),
                          24) == {}
    assert resume_from_db("w", ["BTCUSDT"], answer(error=KeyError("max")), 24) == {}
    first, second = events(caplog, "resume_from_db_failed")
    assert "the query failed: unreachable: timed out" in first.getMessage()
    assert "KeyError" in second.getMessage()


def test_a_bucket_without_a_dbrp_mapping_is_one_warning_carrying_the_whole_fix(caplog):
    fix = ("InfluxDB query error: database not found: ticks: bucket 'ticks' has no DBRP mapping "
           "for InfluxQL reads (" + "x" * 300 + "): create it with `influx v1 dbrp create --db "
           "ticks --rp autogen --bucket-id 0a1b --default`")
    assert resume_from_db("w", ["BTCUSDT"], answer(error=NoMapping(fix)), 24) == {}
    (line,) = events(caplog, "resume_from_db_failed")
    assert f"reason={fix!r}" in line.getMessage()  # uncut: the command is at its end
    assert "\n" not in line.getMessage()


def test_empty_result_warns_naming_only_the_symbols_not_found(caplog):
    caplog.set_level(logging.INFO)
    found = resume_from_db("w", ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
                           answer({"ETHUSDT": (12, 1), "XRPUSDT": (99, 1)}), 6)
    assert found == {"ETHUSDT": 12}  # XRPUSDT was not asked for
    (line,) = events(caplog, "resume_from_db_failed")
    assert "symbols=BTCUSDT,SOLUSDT " in line.getMessage()
    assert "no trade stored in the last 6 h (RESUME_LOOKBACK_H)" in line.getMessage()


# -- the worker ----------------------------------------------------------------------------------

def make_worker(settings, symbols=("BTCUSDT",)) -> Worker:
    return Worker(WorkerSpec("btcusdt", tuple(symbols), 1, len(symbols) > 1), settings)


def test_worker_without_a_checkpoint_resumes_its_pipeline_from_the_database(fake_influx,
                                                                             tmp_path):
    worker = make_worker(influx_settings(fake_influx.url, tmp_path), ("BTCUSDT", "ETHUSDT"))
    assert worker.resume_from_db() == {"BTCUSDT": 4567, "ETHUSDT": 12}
    assert worker.pipeline.resume_from == {"BTCUSDT": 4567, "ETHUSDT": 12}
    assert worker.pipeline.last_ids() == {"BTCUSDT": 4567, "ETHUSDT": 12}
    assert len(fake_influx.requests) == 1


def test_worker_asks_only_for_symbols_without_a_checkpoint(fake_influx, tmp_path):
    data = tmp_path / "data" / "btcusdt"
    data.mkdir(parents=True)
    (data / "checkpoint.json").write_text(json.dumps({"last_stored_id": {"BTCUSDT": 9000}}))
    worker = make_worker(influx_settings(fake_influx.url, tmp_path), ("BTCUSDT", "ETHUSDT"))
    assert worker.resume_from_db() == {"ETHUSDT": 12}
    assert worker.pipeline.resume_from == {"BTCUSDT": 9000, "ETHUSDT": 12}
    ((_, params, _),) = fake_influx.requests
    assert "'ETHUSDT'" in params["q"][0] and "BTCUSDT" not in params["q"][0]


def test_worker_with_every_checkpoint_or_without_a_database_asks_nothing(fake_influx, tmp_path):
    data = tmp_path / "data" / "btcusdt"
    data.mkdir(parents=True)
    (data / "checkpoint.json").write_text(json.dumps({"last_stored_id": {"BTCUSDT": 9000}}))
    assert make_worker(influx_settings(fake_influx.url, tmp_path)).resume_from_db() == {}
    files = load_settings({"DATA_DIR": str(tmp_path / "files"), "RUN_DIR": str(tmp_path / "run")})
    assert make_worker(files).resume_from_db() == {}
    assert fake_influx.requests == []


def test_worker_whose_token_cannot_read_starts_from_the_live_stream(fake_influx, tmp_path,
                                                                    caplog):
    fake_influx.status, fake_influx.body = 403, NO_READ
    worker = make_worker(influx_settings(fake_influx.url, tmp_path))
    assert worker.resume_from_db() == {}
    assert worker.pipeline.resume_from == {}
    assert len(events(caplog, "resume_from_db_failed")) == 1


# -- host everywhere -----------------------------------------------------------------------------

def test_health_point_is_tagged_with_host_and_worker_and_trades_are_not(fake_influx, tmp_path):
    worker = make_worker(influx_settings(fake_influx.url, tmp_path, CAPTURE_HOST="cap-a"))
    worker.reporter.health_point()
    batch = worker.pipeline.flush()
    assert batch is not None
    (line,) = batch.lines
    assert line.startswith("streamer_health,host=cap-a,worker=btcusdt received=0i,")
    from workers.trade import Trade
    trade = worker.renderer.line(Trade("BTCUSDT", 1, "1.0", "2.0", 1764478800123, False,
                                       1764478800123000))
    assert trade.startswith("price_ticks,symbol=BTCUSDT ") and "host" not in trade


def test_status_file_names_the_host(tmp_path):
    settings = load_settings({"DATA_DIR": str(tmp_path / "d"), "RUN_DIR": str(tmp_path / "r"),
                              "CAPTURE_HOST": "cap-b"})
    worker = make_worker(settings)
    worker.reporter.write_status()
    status = json.loads((tmp_path / "r" / "status" / "btcusdt.json").read_text())
    assert status["host"] == "cap-b"


def test_log_lines_carry_the_host_after_the_time_and_level():
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    saved = [(h, h.formatter) for h in root.handlers]
    try:
        set_log_host("cap-a")
        record = logging.LogRecord("workers", logging.INFO, __file__, 1, "worker=w event=x",
                                   None, None)
        text = handler.format(record)
    finally:
        for h, formatter in saved:
            h.setFormatter(formatter)
        root.removeHandler(handler)
    stamp, rest = text[:23], text[24:]
    assert rest == "INFO host=cap-a worker=w event=x"
    # the time stays first, as tests/integration/test_exchange_limits.py reads it
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$", stamp), stamp

