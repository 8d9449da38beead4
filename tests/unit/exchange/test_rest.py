"""The REST client against a tiny real HTTP/1.1 server on 127.0.0.1: one persistent connection,
one retry policy (429/418/5xx/network errors, Retry-After honoured), errors that say what they are.
The client waits on a fake clock (tests/support/clock.py), which also stamps the requests'
arrival: backoffs and bans of seconds take no real time.

Facts: Binance's spot "REST API" documentation (weights, 429/418 with Retry-After in seconds,
error bodies {"code","msg"}, historicalTrades rows ascending from fromId).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.support.clock import FakeClock
from workers.common.httputil import retry_after_s
from workers.errors import RestError, RestShapeError, RestStopped
from workers.exchange.rest import PAGE, RestClient, TradePage

Answer = Tuple[int, Dict[str, str], Any]  # status, headers, body (JSON-able, or bytes as is)
BASE_MS = 1_757_522_615_939


def row(trade_id: int, price: str = "100.00000000") -> Dict[str, Any]:
    return {"id": trade_id, "price": price, "qty": "0.50000000", "quoteQty": "50.0",
            "time": BASE_MS + trade_id, "isBuyerMaker": False, "isBestMatch": True}


class FakeExchange:
    """Answers from `script` in order (then `default`); counts TCP connections and requests."""

    def __init__(self, clock: FakeClock) -> None:
        self.script: List[Any] = []
        self.default: Answer = (200, {}, [])
        self.connections = 0
        self.paths: List[str] = []
        self.headers: List[Dict[str, str]] = []  # of each request
        self.times: List[float] = []  # arrival of each request on the client's clock
        self.lock = threading.Lock()
        exchange = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def setup(self) -> None:
                super().setup()
                with exchange.lock:
                    exchange.connections += 1

            def do_GET(self) -> None:
                with exchange.lock:
                    exchange.paths.append(self.path)
                    exchange.headers.append(dict(self.headers))
                    exchange.times.append(clock.monotonic())
                    answer = exchange.script.pop(0) if exchange.script else exchange.default
                if answer == "drop":  # close without a word: a network error
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(answer, tuple) and answer[0] == "sleep":  # ("sleep", s[, answer])
                    time.sleep(answer[1])
                    answer = answer[2] if len(answer) > 2 else exchange.default
                status, headers, body = answer
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-MBX-USED-WEIGHT-1M", "25")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a read-timeout spec): not a failure

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def exchange(clock: FakeClock) -> Iterator[FakeExchange]:
    ex = FakeExchange(clock)
    yield ex
    ex.close()


@pytest.fixture
def client(exchange: FakeExchange, clock: FakeClock) -> Iterator[RestClient]:
    c = RestClient(exchange.url, "test", timeout_s=2.0, clock=clock)
    yield c
    c.stopping.set()
    c.close()


def error(status: int, code: int, msg: str, **headers: str) -> Answer:
    return (status, {k.replace("_", "-"): v for k, v in headers.items()},
            {"code": code, "msg": msg})


# -- the connection -------------------------------------------------------------------------

def test_several_calls_reuse_one_persistent_connection(exchange, client):
    exchange.default = (200, {}, [row(7)])
    for _ in range(5):
        assert client.latest_trade_id("BTCUSDT") == 7
    assert exchange.connections == 1
    assert len(exchange.paths) == 5 and client.requests == 5
    assert client.used_weight == 25


def test_query_parameters_are_sent(exchange, client):
    exchange.default = (200, {}, [row(5), row(6)])
    page = client.trades_page("BTCUSDT", 5, 2)
    assert [t.trade_id for t in page.trades] == [5, 6]
    path = exchange.paths[-1]
    assert path.startswith("/api/v3/historicalTrades?")
    assert "symbol=BTCUSDT" in path and "fromId=5" in path and "limit=2" in path


def test_historical_trades_are_asked_for_in_microseconds_and_kept_exact(exchange, client):
    exchange.default = (200, {}, [{**row(5), "time": 1757522615939254}])
    (trade,) = client.trades_page("BTCUSDT", 5, 1).trades
    assert exchange.headers[-1].get("X-MBX-TIME-UNIT") == "MICROSECOND"
    assert (trade.time_ms, trade.time_us) == (1757522615939, 1757522615939254)


def test_a_millisecond_answer_is_stored_as_its_millisecond_times_1000(exchange, client):
    exchange.default = (200, {}, [row(5)])  # an exchange that ignored the header
    (trade,) = client.trades_page("BTCUSDT", 5, 1).trades
    assert (trade.time_ms, trade.time_us) == (BASE_MS + 5, (BASE_MS + 5) * 1000)


def test_two_threads_share_one_client_and_count_every_request(exchange, client):
    exchange.default = (200, {}, [row(9)])
    results: List[Optional[int]] = []

    def calls() -> None:
        for _ in range(15):
            results.append(client.latest_trade_id("BTCUSDT"))

    threads = [threading.Thread(target=calls) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [9] * 30
    assert client.requests == 30 == len(exchange.paths)
    assert exchange.connections <= 2  # one kept-alive connection per thread at most


# -- the retry policy -------------------------------------------------------------------------

def test_429_waits_its_retry_after_then_succeeds(exchange, client, clock):
    exchange.script = [error(429, -1003, "Too much request weight used", Retry_After="1")]
    exchange.default = (200, {}, [row(3)])
    started = clock.monotonic()
    assert client.latest_trade_id("BTCUSDT") == 3
    took = clock.monotonic() - started
    assert 1.0 <= took < 2.5
    assert len(exchange.paths) == 2


def test_418_logs_one_ban_line_with_its_end_time_and_waits_it_out(exchange, client, clock,
                                                                   caplog):
    caplog.set_level(logging.WARNING, logger="workers.exchange.rest")
    until_ms = int(clock.time() * 1000) + 2000
    ban = error(418, -1003, f"Way too much request weight used; IP banned until {until_ms}.",
                Retry_After="2")
    # Both threads are told at once (both requests are in before either answer): one ban, one line.
    exchange.script = [("sleep", 0.3, ban), ("sleep", 0.3, ban)]
    exchange.default = (200, {}, [row(4)])
    results: List[Optional[int]] = []
    started = clock.monotonic()
    threads = [threading.Thread(target=lambda: results.append(client.latest_trade_id("X")))
               for _ in range(2)]
    with clock.participants(2):  # the two threads' waits overlap
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    took = clock.monotonic() - started
    assert results == [4, 4]
    assert 2.0 <= took < 3.5
    bans = [r.getMessage() for r in caplog.records if "event=rest_ip_banned" in r.getMessage()]
    assert len(bans) == 1, bans
    until = re.search(r"until=(\S+)", bans[0])
    assert until is not None, bans[0]
    end = datetime.strptime(until.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(end.timestamp() - (clock.time() - took + 2)) < 3


def test_no_request_is_sent_from_any_thread_during_a_ban(exchange, client, clock):
    exchange.script = [error(418, -1003, "IP banned", Retry_After="2")]
    exchange.default = (200, {}, [row(4)])
    first = threading.Thread(target=client.latest_trade_id, args=("X",))
    with clock.participants(2):  # this thread and `first`
        first.start()
        clock.sleep_until(lambda: exchange.times and clock.asleep == 1)  # `first` is banned
        banned_at = exchange.times[0]
        assert client.latest_trade_id("Y") == 4  # the probe thread, say
        first.join(5)
    assert len(exchange.times) == 3
    assert min(exchange.times[1:]) - banned_at >= 1.9


def test_418_without_retry_after_waits_until_the_time_in_its_message(exchange, client, clock):
    until_ms = int(clock.time() * 1000) + 1500
    exchange.script = [error(418, -1003, f"IP banned until {until_ms}. Use WebSocket.")]
    exchange.default = (200, {}, [row(4)])
    started = clock.monotonic()
    assert client.latest_trade_id("X") == 4
    assert clock.monotonic() - started >= 1.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried(exchange, client, status):
    exchange.script = [error(status, -1001, "Internal error"), error(status, -1008, "busy")]
    exchange.default = (200, {}, [row(11)])
    assert client.latest_trade_id("BTCUSDT") == 11
    assert len(exchange.paths) == 3


def test_a_dropped_connection_is_retried(exchange, client):
    exchange.script = ["drop"]
    exchange.default = (200, {}, [row(12)])
    assert client.latest_trade_id("BTCUSDT") == 12
    assert len(exchange.paths) == 2


def test_a_hanging_answer_times_out_and_is_retried(exchange, clock):
    c = RestClient(exchange.url, "test", timeout_s=0.3, clock=clock)
    exchange.script = [("sleep", 1.5)]
    exchange.default = (200, {}, [row(13)])
    started = time.monotonic()
    assert c.latest_trade_id("BTCUSDT") == 13
    assert time.monotonic() - started < 2.0
    c.close()


def test_retries_run_out_with_a_rest_error(exchange, client):
    exchange.default = error(500, -1001, "Internal error")
    with pytest.raises(RestError) as info:
        client.get("/api/v3/trades", {"symbol": "X"}, attempts=2)
    assert "after 2 attempts" in str(info.value) and "500" in str(info.value)
    assert len(exchange.paths) == 2


def test_400_raises_rest_error_with_status_and_code_at_once(exchange, client):
    exchange.default = error(400, -1121, "Invalid symbol.")
    with pytest.raises(RestError) as info:
        client.latest_trade_id("NOPE")
    assert (info.value.status, info.value.code) == (400, -1121)
    assert "Invalid symbol." in str(info.value)
    assert len(exchange.paths) == 1


def test_symbol_statuses_finds_the_known_ones_after_a_1121(exchange, client):
    exchange.script = [error(400, -1121, "Invalid symbol.")]
    exchange.default = (200, {}, {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING"},
                                              {"symbol": "ETHUSDT", "status": "HALT"}]})
    assert client.symbol_statuses(["BTCUSDT", "NOPE"]) == {"BTCUSDT": "TRADING"}


def test_a_large_group_asks_for_the_whole_list_instead_of_a_very_long_url(exchange, client):
    group = [f"Q{i:04d}USDT" for i in range(1000)]
    exchange.default = (200, {}, {"symbols": [{"symbol": s, "status": "TRADING"}
                                              for s in group[:999]]})
    assert len(client.symbol_statuses(group)) == 999
    assert exchange.paths == ["/api/v3/exchangeInfo"]  # no ?symbols=[...] of 1,000 names


def test_the_start_up_symbol_check_does_not_wait_out_a_long_ban(exchange, client, clock,
                                                                 caplog):
    caplog.set_level(logging.WARNING, logger="workers.exchange.rest")
    exchange.script = [error(418, -1003, "IP banned", Retry_After="3600")]
    started = clock.monotonic()
    with pytest.raises(RestError) as info:
        client.symbol_statuses(["BTCUSDT"])
    assert info.value.status == 418
    with pytest.raises(RestError):  # still banned: no request is sent
        client.symbol_statuses(["BTCUSDT"])
    assert clock.monotonic() - started < 1.0
    assert len(exchange.paths) == 1
    assert sum("event=rest_ip_banned" in r.getMessage() for r in caplog.records) == 1


def test_stop_during_a_wait_returns_promptly(exchange, client, clock):
    exchange.default = error(429, -1003, "Too much request weight used", Retry_After="30")
    clock.call_later(0.3, client.stopping.set)
    started = clock.monotonic()
    with pytest.raises(RestStopped):
        client.latest_trade_id("BTCUSDT")
    assert clock.monotonic() - started < 1.0
    with pytest.raises(RestStopped):  # and no request once stopping
        client.latest_trade_id("BTCUSDT")
    assert len(exchange.paths) == 1


# -- answers of the wrong shape ---------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"code": 0, "msg": "a dict, not a list"},
    [{"price": "1.00000000"}],  # a row without an id
    [row(10), {"id": "11"}],  # an id that is not an integer
    [row(10), row(10)],  # ids that do not ascend
    [row(8)],  # before fromId
    b"<html>proxy error</html>",  # not JSON
])
def test_an_answer_of_the_wrong_shape_raises_the_shape_error(exchange, client, body):
    exchange.default = (200, {}, body)
    with pytest.raises(RestShapeError) as info:
        client.trades_page("BTCUSDT", 10)
    assert not isinstance(info.value, RestError)  # never caught by the retry paths
    assert len(exchange.paths) == 1  # and not retried


def test_latest_trade_id_and_symbol_statuses_check_their_shapes(exchange, client):
    exchange.default = (200, {}, {"id": 5})
    with pytest.raises(RestShapeError):
        client.latest_trade_id("BTCUSDT")
    exchange.default = (200, {}, [{"symbol": "BTCUSDT"}])
    with pytest.raises(RestShapeError):
        client.symbol_statuses(["BTCUSDT"])


def test_an_empty_answer_is_an_empty_page(exchange, client):
    exchange.default = (200, {}, [])
    page = client.trades_page("BTCUSDT", 10)
    assert page == TradePage() and page.empty
    assert client.latest_trade_id("BTCUSDT") is None


def test_a_row_that_fails_validation_is_reported_with_its_id(exchange, client):
    exchange.default = (200, {}, [row(10), row(11, price="-1"), row(12), row(13, price="x")])
    page = client.trades_page("BTCUSDT", 10, PAGE)
    assert [t.trade_id for t in page.trades] == [10, 12]
    assert [i for i, _ in page.invalid] == [11, 13]
    assert all(reason for _, reason in page.invalid)
    assert (page.first_id, page.last_id) == (10, 13)
    assert [t.trade_id for t in client.trades_from("BTCUSDT", 10)] == [10, 12]


# -- Retry-After --------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "1"}, 1.0),
    ({"retry-after": "2.5"}, 2.5),
    ({"Retry-After": " 30 "}, 30.0),
    ({"Retry-After": "-4"}, 0.0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": ""}, None),
    ({}, None),
    (None, None),
    (object(), None),
])
def test_retry_after_seconds(headers, expected):
    assert retry_after_s(headers) == expected


def test_retry_after_as_an_http_date():
    now = datetime(2026, 10, 21, 7, 27, 0, tzinfo=timezone.utc).timestamp()
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, now=now) == 60.0
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2026 07:26:00 GMT"}, now=now) == 0.0
