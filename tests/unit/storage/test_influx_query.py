"""The InfluxDB read client: InfluxQL over GET /query, with the token of the writes, and every
failure a SinkError (with the HTTP status when there was an answer).

Against a small local HTTP server; tests/unit/capture/test_worker.py specifies the last-trades
query and tests/unit/common/test_httputil.py the TLS trust it shares with the writes.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import pytest

from tests.support.canned_http import CannedHttp, canned_http
from workers.errors import NoMapping, SinkError
from workers.settings import InfluxSettings
from workers.storage.influx_query import QUERY_WINDOW_H, InfluxQuery, last_trades_query


@pytest.fixture
def answers() -> Iterator[CannedHttp]:
    yield from canned_http()


def settings(url: str, bucket: str = "ticks") -> InfluxSettings:
    return InfluxSettings(url=url, token="tok-123", org="o", bucket=bucket,
                          measurement="price_ticks", health_measurement="h", timeout_s=5.0,
                          gzip=False)


def series(*ids: int) -> dict:
    return {"results": [{"statement_id": 0, "series": [
        {"name": "price_ticks", "columns": ["time", "trade_id"],
         "values": [[i * 1000, i] for i in ids]}]}]}


def test_a_query_is_one_get_of_query_with_the_token_the_database_and_ns_epoch(answers):
    answers.body = series(7)
    found = InfluxQuery(settings(answers.url)).query("SELECT trade_id FROM price_ticks")

    assert found == series(7)["results"][0]["series"]
    ((path, params, headers),) = answers.requests
    assert path == "/query"
    assert params == {"db": ["ticks"], "q": ["SELECT trade_id FROM price_ticks"],
                      "epoch": ["ns"]}
    assert headers["Authorization"] == "Token tok-123"


def test_a_1_8_bucket_names_the_database_and_its_retention_policy(answers):
    InfluxQuery(settings(answers.url, bucket="ticks/autogen")).query("SELECT 1")
    ((_, params, _),) = answers.requests
    assert params["db"] == ["ticks"] and params["rp"] == ["autogen"]


def test_queries_of_one_client_share_a_kept_alive_connection(answers):
    query = InfluxQuery(settings(answers.url))
    query.query("SELECT 1")
    query.query("SELECT 2")
    query.close()
    assert len(answers.requests) == 2 and answers.connections == 1


@pytest.mark.parametrize("status", [401, 403, 404, 500, 503])
def test_an_http_error_raises_with_its_status_and_the_servers_words(answers, status):
    answers.status = status
    answers.body = {"code": "forbidden", "message": "no read"}
    with pytest.raises(SinkError, match=f"/query answered {status}: .*no read") as caught:
        InfluxQuery(settings(answers.url)).query("SELECT 1")
    assert caught.value.status == status


def test_an_error_in_the_answer_raises(answers):
    answers.body = {"results": [{"statement_id": 0, "error": "database not found: ticks"}]}
    with pytest.raises(SinkError, match="query error: database not found"):
        InfluxQuery(settings(answers.url)).query("SELECT 1")


def test_an_answer_that_is_not_json_raises_with_the_status(answers):
    answers.body = b"<html>proxy error</html>"
    with pytest.raises(SinkError, match="without JSON") as caught:
        InfluxQuery(settings(answers.url)).query("SELECT 1")
    assert caught.value.status == 200


def test_an_unreachable_database_raises_without_a_status(refused_url):
    with pytest.raises(SinkError, match="unreachable") as caught:
        InfluxQuery(settings(refused_url)).query("SELECT 1")
    assert caught.value.status is None


def test_a_database_slower_than_the_timeout_raises_as_unreachable(answers):
    answers.hold.clear()
    with pytest.raises(SinkError, match="unreachable") as caught:
        InfluxQuery(settings(answers.url)).query("SELECT 1", timeout_s=0.2)
    assert caught.value.status is None


def test_trade_ids_asks_window_by_window_and_yields_every_id(answers):
    answers.body = series(1, 2)
    s = 1_000_000_000
    ids = list(InfluxQuery(settings(answers.url)).trade_ids("BTCUSDT", 0, 25 * s, window_s=10))

    assert ids == [1, 2] * 3
    bounds = [params["q"][0].split("WHERE ")[1] for _, params, _ in answers.requests]
    assert bounds == [f"symbol = 'BTCUSDT' AND time >= {a} AND time < {b}"
                      for a, b in ((0, 10 * s), (10 * s, 20 * s), (20 * s, 25 * s))]


def tag_values(*values: str) -> dict:
    return {"results": [{"statement_id": 0, "series": [
        {"name": "price_ticks", "columns": ["key", "value"],
         "values": [["symbol", v] for v in values]}]}]}


def test_the_symbols_of_a_week_are_asked_a_window_at_a_time(answers):
    # 3 Core holds SHOW TAG VALUES to its ~72 h span too (it reads them from the data)
    answers.queue = [tag_values("BTCUSDT"), tag_values("ETHUSDT", "BTCUSDT")]
    day = int(QUERY_WINDOW_H * 3600) * 1_000_000_000

    found = InfluxQuery(settings(answers.url)).symbols(0, day + 5)

    assert found == ["BTCUSDT", "ETHUSDT"]
    assert [params["q"][0].split("WHERE ")[1] for _, params, _ in answers.requests] == [
        f"time >= 0 AND time < {day}", f"time >= {day} AND time < {day + 5}"]


def maxima(*rows: Tuple[str, int, int]) -> dict:
    """A last-trades answer: (symbol, max id, its time) per series."""
    return {"results": [{"statement_id": 0, "series": [
        {"name": "price_ticks", "tags": {"symbol": symbol}, "columns": ["time", "max"],
         "values": [[when, top]]} for symbol, top, when in rows]}]}


def test_a_long_look_back_is_walked_in_windows_newest_first_until_each_symbol_is_found(answers):
    # 3 Core refuses a query over more than ~72 h (influxdb-servers.md, Reads, "limits")
    answers.queue = [maxima(("ETHUSDT", 12, 50)), {"results": [{"statement_id": 0}]},
                     maxima(("BTCUSDT", 99, 30), ("ETHUSDT", 10, 20))]
    found = InfluxQuery(settings(answers.url)).last_trades(["BTCUSDT", "ETHUSDT"], 7 * 24)

    assert found == {"ETHUSDT": (12, 50), "BTCUSDT": (99, 30)}  # the newest window's ETHUSDT
    asked = [params["q"][0] for _, params, _ in answers.requests]
    assert asked == [last_trades_query("price_ticks", ["BTCUSDT", "ETHUSDT"], 24),
                     last_trades_query("price_ticks", ["BTCUSDT"], 48, 24),
                     last_trades_query("price_ticks", ["BTCUSDT"], 72, 48)]
    assert "WHERE time > now() - 72h AND time <= now() - 48h AND " in asked[2]


def test_a_look_back_with_nothing_found_asks_each_window_once_and_each_is_bounded(answers):
    found = InfluxQuery(settings(answers.url)).last_trades(["BTCUSDT"], 60)

    assert found == {}
    assert QUERY_WINDOW_H == 24
    assert [params["q"][0].split("WHERE ")[1].split(" AND (")[0]
            for _, params, _ in answers.requests] == [
        "time > now() - 24h", "time > now() - 48h AND time <= now() - 24h",
        "time > now() - 60h AND time <= now() - 48h"]


def test_database_not_found_in_a_200_is_no_mapping_with_the_dbrp_command_and_bucket_id(answers):
    # Cloud Serverless until the bucket has a DBRP mapping (influxdb-servers.md, Reads)
    answers.body = {"results": [{"statement_id": 0, "error": "database not found: ticks"}]}
    answers.paths["/api/v2/buckets"] = (200, {"buckets": [{"id": "0a1b2c3d", "name": "ticks"}]})

    with pytest.raises(NoMapping) as caught:
        InfluxQuery(settings(answers.url)).last_trades(["BTCUSDT"], 24)

    text = str(caught.value)
    assert "\n" not in text and caught.value.status is None
    assert text.startswith("InfluxDB query error: database not found: ticks: bucket 'ticks' "
                           "has no DBRP mapping")
    assert text.endswith("create it with `influx v1 dbrp create --db ticks --rp autogen "
                         "--bucket-id 0a1b2c3d --default`")
    (_, lookup, headers), = [r for r in answers.requests if r[0] == "/api/v2/buckets"]
    assert lookup == {"name": ["ticks"], "org": ["o"]}
    assert headers["Authorization"] == "Token tok-123"


@pytest.mark.parametrize("status, body", [(403, {"code": "forbidden"}), (404, b"404 page"),
                                          (200, {"buckets": []})])
def test_without_the_bucket_id_the_fix_says_how_to_find_it(answers, status, body):
    answers.body = {"results": [{"statement_id": 0, "error": "database not found: ticks"}]}
    answers.paths["/api/v2/buckets"] = (status, body)

    with pytest.raises(NoMapping) as caught:
        InfluxQuery(settings(answers.url)).query("SELECT 1")

    assert "--bucket-id <bucket-id> --default`, <bucket-id> being the id of bucket 'ticks': " \
           "`influx bucket list --name ticks`" in str(caught.value)
