"""The exchange simulator, run as a real process and spoken to by real clients.

Each test reads as a statement of what the simulator promises the collector's tests:
Binance's wire shapes, consecutive ids, a REST history identical to the stream, and faults
that do exactly what their name says.  Every loop is bounded in count and in time.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import aiohttp
import orjson
import pytest
import websocket

from tests.support.exchange.client import ExchangeSim
from tests.support.exchange.config import fmt8, step_units, tick_units, to_units
from tests.support.exchange.fixtures import StartSim
from tests.support.exchange.generator import TradeGenerator

KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
EIGHT = re.compile(r"^\d+\.\d{8}$")
START = 100_000  # the simulator's default --start-id
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


# --- helpers -------------------------------------------------------------------------------

def connect(sim: ExchangeSim, path: str, timeout: float = 5.0) -> websocket.WebSocket:
    return websocket.create_connection(sim.ws_url + path, timeout=timeout,
                                       skip_utf8_validation=True)


def next_frame(ws: websocket.WebSocket) -> Tuple[int, bytes]:
    """The next frame, control frames included (pings are still answered by the client)."""
    opcode, frame = ws.recv_data_frame(True)
    return opcode, frame.data


def close_code(data: bytes) -> int:
    return int.from_bytes(data[:2], "big")


def read_trades(ws: websocket.WebSocket, count: int, timeout: float = 10.0
                ) -> List[Dict[str, Any]]:
    """`count` trade payloads (combined wrappers removed), other messages skipped."""
    deadline = time.monotonic() + timeout
    trades: List[Dict[str, Any]] = []
    while len(trades) < count:
        assert time.monotonic() < deadline, f"only {len(trades)} of {count} trades in {timeout}s"
        msg = orjson.loads(ws.recv())
        data = msg.get("data", msg)
        if data.get("e") == "trade":
            trades.append(data)
    return trades


def read_until_id(ws: websocket.WebSocket, last_id: int, timeout: float = 15.0
                  ) -> List[Dict[str, Any]]:
    deadline = time.monotonic() + timeout
    trades: List[Dict[str, Any]] = []
    while not trades or trades[-1]["t"] < last_id:
        assert time.monotonic() < deadline, f"id {last_id} not reached in {timeout}s"
        msg = orjson.loads(ws.recv())
        data = msg.get("data", msg)
        if data.get("e") == "trade":
            trades.append(data)
    return trades


def frames_for(ws: websocket.WebSocket, seconds: float) -> List[Tuple[int, bytes]]:
    """Every frame arriving within `seconds` (stops at a close frame)."""
    frames: List[Tuple[int, bytes]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ws.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            frames.append(next_frame(ws))
        except websocket.WebSocketTimeoutException:
            break
        if frames[-1][0] == OP_CLOSE:
            break
    ws.settimeout(5.0)
    return frames


def rest(sim: ExchangeSim, path: str) -> Tuple[int, Any, Any]:
    """(status, headers, JSON body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(sim.rest_url + path, timeout=5) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def offline_fills(symbol: str, price: str, seed: int, count: int) -> List[Tuple[bool, str, str]]:
    """What the seeded generator makes, rebuilt in the test: (m, p, q) by id order."""
    units = to_units(price)
    gen = TradeGenerator(symbol, seed, units, tick_units(units), step_units(units))
    out: List[Tuple[bool, str, str]] = []
    while len(out) < count:
        burst = gen.burst()
        out += [(burst.buyer_is_maker, fmt8(p), fmt8(q))
                for p, q in zip(burst.prices, burst.qtys)]
    return out[:count]


@pytest.fixture
def idle_btc(exchange_sim: StartSim) -> Iterator[ExchangeSim]:
    """A simulator whose BTCUSDT starts at rate 0, so a test can connect before trade one."""
    yield exchange_sim("--symbol", "BTCUSDT:rate=0", "--seed", "7")


# --- payloads ------------------------------------------------------------------------------

def test_raw_and_combined_payloads_match_the_reference(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=400",
                       "--symbol", "1000SATSUSDT:rate=200:price=0.00000123")
    raw = connect(sim, "/ws/btcusdt@trade")
    for msg in (orjson.loads(raw.recv()) for _ in range(30)):
        assert list(msg) == KEYS
        assert msg["e"] == "trade" and msg["s"] == "BTCUSDT" and msg["M"] is True
        assert all(type(msg[k]) is int for k in ("E", "t", "T"))
        assert EIGHT.match(msg["p"]) and EIGHT.match(msg["q"])
        assert isinstance(msg["m"], bool)
        assert len(str(msg["T"])) == 13 and 0 <= msg["E"] - msg["T"] <= 2
    raw.close()
    combined = connect(sim, "/stream?streams=btcusdt@trade/1000satsusdt@trade")
    seen = set()
    for _ in range(200):
        msg = orjson.loads(combined.recv())
        assert list(msg) == ["stream", "data"] and list(msg["data"]) == KEYS
        assert msg["stream"] == msg["data"]["s"].lower() + "@trade"
        seen.add(msg["data"]["s"])
        if msg["data"]["s"] == "1000SATSUSDT":
            assert msg["data"]["p"].startswith("0.00000")  # a tiny price keeps 8 decimals
        if len(seen) == 2:
            break
    assert seen == {"BTCUSDT", "1000SATSUSDT"}
    combined.close()


def test_time_unit_gives_microsecond_E_and_T(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=300")
    for query, digits in (("MICROSECOND", 16), ("microsecond", 16), ("MILLISECOND", 13)):
        ws = connect(sim, f"/stream?streams=btcusdt@trade&timeUnit={query}")
        for trade in read_trades(ws, 5):
            assert len(str(trade["E"])) == digits and len(str(trade["T"])) == digits
            assert trade["E"] >= trade["T"]
        ws.close()
    ws = connect(sim, "/ws/btcusdt@trade?timeUnit=microsecond")
    assert len(str(read_trades(ws, 1)[0]["T"])) == 16
    ws.close()


def test_ids_are_consecutive_bursts_share_T_and_the_sequence_is_the_seeded_one(
        idle_btc: ExchangeSim) -> None:
    ws = connect(idle_btc, "/ws/btcusdt@trade")
    idle_btc.fault("set_rate", symbol="BTCUSDT", rate=3000)
    trades = read_trades(ws, 4000)
    ws.close()
    assert [t["t"] for t in trades] == list(range(START, START + 4000))
    assert [t["T"] for t in trades] == sorted(t["T"] for t in trades)
    # One taker filling several makers: runs of 3+ trades with one T and one maker side.
    runs, run = [], 1
    for a, b in zip(trades, trades[1:]):
        run = run + 1 if (a["T"], a["m"]) == (b["T"], b["m"]) else 1
        runs.append(run)
    assert max(runs) >= 3
    assert [(t["m"], t["p"], t["q"]) for t in trades] == \
        offline_fills("BTCUSDT", "60000.00", 7, 4000)


# --- REST history, withholding, duplicates -----------------------------------------------

def test_withheld_span_is_missing_from_the_stream_and_rest_fills_it(idle_btc: ExchangeSim
                                                                   ) -> None:
    ws = connect(idle_btc, "/ws/btcusdt@trade")
    idle_btc.fault("set_rate", symbol="BTCUSDT", rate=1000)
    before = read_trades(ws, 100)
    span = idle_btc.fault("withhold", symbol="BTCUSDT", count=50)
    first, last = span["from_id"], span["to_id"]
    assert last - first == 49
    after = read_until_id(ws, last + 100)
    ws.close()
    streamed = {t["t"]: t for t in before + after}
    assert set(range(first, last + 1)).isdisjoint(streamed)
    assert set(range(START, last + 101)) - set(streamed) == set(range(first, last + 1))
    ledger = idle_btc.ledger()["BTCUSDT"]
    assert ledger["withheld"] == [[first, last]] and ledger["first"] == START

    status, headers, rows = rest(idle_btc, f"/api/v3/historicalTrades?symbol=BTCUSDT"
                                           f"&fromId={first - 5}&limit=60")
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "26"  # 1 ping + 25
    assert [r["id"] for r in rows] == list(range(first - 5, first + 55))
    assert list(rows[0]) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker",
                             "isBestMatch"]
    expected = offline_fills("BTCUSDT", "60000.00", 7, last + 101 - START)
    for row in rows:
        assert (row["isBuyerMaker"], row["price"], row["qty"]) == expected[row["id"] - START]
        if row["id"] in streamed:  # a trade the stream carried is served identically
            t = streamed[row["id"]]
            assert (row["price"], row["qty"], row["time"], row["isBuyerMaker"]) == \
                (t["p"], t["q"], t["T"], t["m"])
    times = [r["time"] for r in rows]
    assert times == sorted(times)


def test_resend_repeats_a_span_as_duplicates(idle_btc: ExchangeSim) -> None:
    ws = connect(idle_btc, "/ws/btcusdt@trade")
    idle_btc.fault("set_rate", symbol="BTCUSDT", rate=500)
    first_pass = read_trades(ws, 60)
    idle_btc.fault("pause", symbol="BTCUSDT")
    result = idle_btc.fault("resend", symbol="BTCUSDT", from_id=START + 10, to_id=START + 19)
    assert result["connections"] == 1
    last = idle_btc.ledger()["BTCUSDT"]["last"]
    rest_of_stream = read_until_id(ws, last) if first_pass[-1]["t"] < last else []
    repeats = read_trades(ws, 10)
    ws.close()
    assert [t["t"] for t in repeats] == list(range(START + 10, START + 20))
    assert repeats == first_pass[10:20]  # byte-for-byte the same messages
    assert idle_btc.ledger()["BTCUSDT"]["resent"] == [[START + 10, START + 19]]
    assert all(t["t"] > first_pass[-1]["t"] for t in rest_of_stream)


def test_rest_endpoints_answer_like_binance(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=2000", "--symbol", "ETHUSDT:rate=10",
                       "--symbol-status", "LUNAUSDT=HALT", "--quiet-symbols", "3",
                       "--history", "1000")
    assert rest(sim, "/api/v3/ping")[2] == {}
    status, headers, body = rest(sim, "/api/v3/time")
    assert abs(body["serverTime"] - time.time() * 1000) < 5000
    assert headers["X-MBX-USED-WEIGHT-1M"] == "3"  # start-up ping, ping, time
    _, headers, info = rest(sim, "/api/v3/exchangeInfo")
    assert headers["X-MBX-USED-WEIGHT-1M"] == "23"
    statuses = {s["symbol"]: s["status"] for s in info["symbols"]}
    assert statuses == {"BTCUSDT": "TRADING", "ETHUSDT": "TRADING", "LUNAUSDT": "HALT",
                        "Q0001USDT": "TRADING", "Q0002USDT": "TRADING", "Q0003USDT": "TRADING"}
    one = rest(sim, '/api/v3/exchangeInfo?symbols=["ETHUSDT","LUNAUSDT"]')[2]
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT", "LUNAUSDT"]
    assert rest(sim, "/api/v3/exchangeInfo?symbol=BTCUSDT")[2]["symbols"][0]["baseAsset"] == "BTC"
    time.sleep(0.7)  # let BTCUSDT make more than 1000 trades
    status, _, rows = rest(sim, "/api/v3/trades?symbol=BTCUSDT&limit=5")
    assert status == 200 and len(rows) == 5
    assert [r["id"] for r in rows] == list(range(rows[0]["id"], rows[0]["id"] + 5))
    assert len(rest(sim, "/api/v3/historicalTrades?symbol=BTCUSDT")[2]) == 500
    oldest = rest(sim, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={START}&limit=5000")[2]
    assert len(oldest) == 1000  # clamped to the maximum
    # Only the last --history trades are kept: an old fromId starts at the oldest one kept.
    ledger = sim.ledger()["BTCUSDT"]
    assert START < oldest[0]["id"] <= ledger["oldest_served"] == ledger["last"] - 999
    assert rest(sim, "/api/v3/historicalTrades?symbol=LUNAUSDT")[:3:2] == (200, [])
    for path, code in (("/api/v3/trades", -1102), ("/api/v3/trades?symbol=NOPEUSDT", -1121),
                       ("/api/v3/trades?symbol=btcusdt", -1100),
                       ("/api/v3/trades?symbol=BTCUSDT&limit=x", -1100),
                       ("/api/v3/historicalTrades?symbol=BTCUSDT&fromId=-1", -1100),
                       ('/api/v3/exchangeInfo?symbols=["BTCUSDT", "ETHUSDT"]', -1100),
                       ('/api/v3/exchangeInfo?symbols=["BTCUSDT","NOPE"]', -1121),
                       ("/api/v3/exchangeInfo?symbol=NOPE", -1121)):
        status, headers, body = rest(sim, path.replace(" ", "%20"))
        assert (status, body["code"]) == (400, code), path
        assert isinstance(body["msg"], str) and "X-MBX-USED-WEIGHT-1M" in headers


def test_request_weight_past_the_limit_gives_429_with_retry_after(exchange_sim: StartSim
                                                                    ) -> None:
    sim = exchange_sim("--weight-limit", "100")
    for used in ("26", "51", "76"):
        status, headers, _ = rest(sim, "/api/v3/trades?symbol=BTCUSDT&limit=1")
        assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, used)
    # 1 (start-up ping) + 3 x 25 = 76; one more 25 would be 101 > 100.
    status, headers, body = rest(sim, "/api/v3/trades?symbol=BTCUSDT")
    assert status == 429 and body["code"] == -1003
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["X-MBX-USED-WEIGHT-1M"] == "76"
    status, headers, _ = rest(sim, "/api/v3/ping")  # weight 1 still fits
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "77"
    assert sim.stats()["rest"]["/api/v3/trades"] == {"200": 3, "429": 1}


def test_rest_faults_answer_429_418_and_5xx(exchange_sim: StartSim) -> None:
    sim = exchange_sim()
    sim.fault("rest", status=429, count=2, retry_after=7)
    for _ in range(2):
        status, headers, body = rest(sim, "/api/v3/time")
        assert (status, body["code"], headers["Retry-After"]) == (429, -1003, "7")
    assert rest(sim, "/api/v3/time")[0] == 200
    sim.fault("rest", status=418, retry_after=120)
    status, headers, body = rest(sim, "/api/v3/ping")
    assert status == 418 and headers["Retry-After"] == "120" and "banned" in body["msg"]
    sim.fault("rest", status=503, seconds=0.5, path="/api/v3/historicalTrades")
    assert rest(sim, "/api/v3/historicalTrades?symbol=BTCUSDT")[0] == 503
    assert rest(sim, "/api/v3/ping")[0] == 200  # other paths are not affected
    time.sleep(0.6)
    assert rest(sim, "/api/v3/historicalTrades?symbol=BTCUSDT")[0] == 200


# --- connection faults ---------------------------------------------------------------------

def test_close_fault_sends_the_code_to_connections_of_that_symbol(exchange_sim: StartSim
                                                                    ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=200", "--symbol", "ETHUSDT:rate=200")
    btc, eth = connect(sim, "/ws/btcusdt@trade"), connect(sim, "/ws/ethusdt@trade")
    read_trades(btc, 1)
    assert sim.fault("close", symbol="BTCUSDT", code=1001, reason="bye")["connections"] == 1
    frames = frames_for(btc, 5.0)
    assert frames[-1][0] == OP_CLOSE and close_code(frames[-1][1]) == 1001
    assert frames[-1][1][2:] == b"bye"
    assert read_trades(eth, 20)[-1]["s"] == "ETHUSDT"  # the other symbol's connection lives
    eth.close()
    assert sim.stats()["closes"].get("fault_close") == 1


def test_abrupt_close_drops_the_connection_without_a_close_frame(exchange_sim: StartSim
                                                                  ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=200")
    ws = connect(sim, "/ws/btcusdt@trade")
    read_trades(ws, 1)
    sim.fault("abort")
    opcodes = []
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        for _ in range(10_000):  # drains what was in flight, then the socket just ends
            opcodes.append(next_frame(ws)[0])
    assert OP_CLOSE not in opcodes


def test_silence_stops_trades_but_not_pings_or_generation(exchange_sim: StartSim
                                                           ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=200", "--ping-interval", "0.3")
    ws = connect(sim, "/ws/btcusdt@trade")
    last_before = read_trades(ws, 5)[-1]["t"]
    count_before = sim.ledger()["BTCUSDT"]["count"]
    sim.fault("silence", seconds=1.5)
    frames = frames_for(ws, 0.2)  # trades already in flight when the fault arrived
    last_before = max([last_before] + [orjson.loads(d)["t"] for op, d in frames if op == OP_TEXT])
    quiet = frames_for(ws, 1.0)
    assert [op for op, _ in quiet if op == OP_TEXT] == []
    assert OP_PING in [op for op, _ in quiet]
    fresh = connect(sim, "/ws/btcusdt@trade")  # connections opened during the silence get data
    assert read_trades(fresh, 1, timeout=1.0)
    fresh.close()
    assert sim.ledger()["BTCUSDT"]["count"] >= count_before + 150  # generation went on
    resumed = read_trades(ws, 1, timeout=3.0)[0]["t"]
    assert resumed > last_before + 100  # a gap, which REST can fill
    rows = rest(sim, f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={last_before + 1}"
                     f"&limit={resumed - last_before - 1}")[2]
    assert [r["id"] for r in rows] == list(range(last_before + 1, resumed))
    ws.close()


def test_server_shutdown_in_both_framings_then_close(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0")
    raw = connect(sim, "/ws/btcusdt@trade")
    combined = connect(sim, "/stream?streams=btcusdt@trade")
    sim.fault("server_shutdown", close_after=0.5)
    started = time.monotonic()
    raw_event = orjson.loads(raw.recv())
    assert list(raw_event) == ["e", "E"] and raw_event["e"] == "serverShutdown"
    assert len(str(raw_event["E"])) == 13
    wrapped = orjson.loads(combined.recv())
    assert wrapped["stream"] == "!serverShutdown" and wrapped["data"]["e"] == "serverShutdown"
    for ws in (raw, combined):
        op, data = frames_for(ws, 3.0)[-1]
        assert op == OP_CLOSE and close_code(data) == 1001
    assert 0.4 <= time.monotonic() - started <= 3.0


def test_startup_fault_flag_and_max_connection_age(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=50", "--max-conn-age", "1",
                       "--fault", '{"action": "server_shutdown", "at": 0.5, "every": 60}')
    ws = connect(sim, "/ws/btcusdt@trade")
    opened = time.monotonic()
    frames = frames_for(ws, 4.0)
    age = time.monotonic() - opened
    texts = [orjson.loads(d) for op, d in frames if op == OP_TEXT]
    assert frames[-1][0] == OP_CLOSE and close_code(frames[-1][1]) == 1001
    assert 0.9 <= age <= 2.5
    assert any(t.get("e") == "trade" for t in texts)
    assert sim.stats()["closes"].get("max_age") == 1


def test_malformed_frames_of_every_kind_arrive(idle_btc: ExchangeSim) -> None:
    ws = connect(idle_btc, "/ws/btcusdt@trade")
    kinds = ["invalid_json", "missing_fields", "wrong_types", "unknown_event", "huge", "binary"]
    for kind in kinds:
        assert idle_btc.fault("malformed", kind=kind, count=2)["frames"] == 2
    got = [next_frame(ws) for _ in range(12)]
    ws.close()
    texts = [data for op, data in got if op == OP_TEXT]
    assert [op for op, _ in got].count(OP_BINARY) == 2 and len(texts) == 10
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(texts[0])
    missing, wrong, unknown, huge = (orjson.loads(texts[i]) for i in (2, 4, 6, 8))
    assert "t" not in missing and "p" not in missing and missing["e"] == "trade"
    assert isinstance(wrong["t"], str) and isinstance(wrong["p"], float)
    assert unknown["e"] not in ("trade", "serverShutdown")
    assert len(texts[8]) >= 3_000_000 and huge["e"] != "trade"
    assert idle_btc.stats()["malformed"] == {k: 2 for k in kinds}


async def _ping_pong_clients(url: str, seconds: float) -> Dict[str, Tuple[float, Any, int]]:
    """Three clients: silent on pings, answering with a wrong payload, answering properly.
    Returns name -> (seconds until closed or the end, close code, pings seen)."""

    async def client(mode: str) -> Tuple[float, Any, int]:
        started = time.monotonic()
        pings = 0
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, autoping=False) as ws:
                deadline = started + seconds
                while time.monotonic() < deadline:
                    try:
                        msg = await ws.receive(timeout=deadline - time.monotonic())
                    except asyncio.TimeoutError:
                        break
                    if msg.type == aiohttp.WSMsgType.PING:
                        pings += 1
                        if mode != "silent":
                            await ws.pong(msg.data if mode == "proper" else b"not-the-payload")
                    elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        return time.monotonic() - started, ws.close_code or msg.data, pings
                return time.monotonic() - started, None, pings

    results = await asyncio.gather(*(client(m) for m in ("silent", "wrong", "proper")))
    return dict(zip(("silent", "wrong", "proper"), results))


def test_unanswered_pings_close_the_connection_after_the_timeout(exchange_sim: StartSim
                                                                  ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0", "--ping-interval", "1",
                       "--pong-timeout", "2")
    results = asyncio.run(_ping_pong_clients(sim.ws_url + "/ws/btcusdt@trade", 4.5))
    for name in ("silent", "wrong"):
        elapsed, code, pings = results[name]
        assert code == 1008 and 2.8 <= elapsed <= 4.5 and pings >= 2, (name, results[name])
    elapsed, code, pings = results["proper"]
    assert code is None and pings >= 3  # echoing the payload keeps the connection
    assert sim.stats()["closes"].get("pong_timeout") == 2


def test_client_pings_get_pongs_until_told_otherwise(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0", "--ping-interval", "0.3")
    ws = connect(sim, "/ws/btcusdt@trade")
    ws.ping(b"hello")
    assert (OP_PONG, b"hello") in frames_for(ws, 0.5)
    sim.fault("stop_pongs")
    sim.fault("stop_pings")
    frames_for(ws, 0.1)  # a ping already in flight
    ws.ping(b"again")
    assert frames_for(ws, 1.0) == []  # no pong, and no server pings either
    sim.fault("clear")
    ws.ping(b"back")
    frames = frames_for(ws, 0.5)
    assert (OP_PONG, b"back") in frames and OP_PING in [op for op, _ in frames]
    ws.close()


def test_more_than_five_client_frames_in_a_second_close_with_1008(exchange_sim: StartSim
                                                                   ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0")
    polite = connect(sim, "/ws/btcusdt@trade")
    for _burst in range(2):
        for n in range(5):
            polite.ping(b"%d" % n)
        assert [op for op, _ in frames_for(polite, 1.1)] == [OP_PONG] * 5
    polite.close()
    rude = connect(sim, "/ws/btcusdt@trade")
    for n in range(5):
        rude.ping(b"%d" % n)
    rude.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))  # the 6th frame
    frames = frames_for(rude, 2.0)
    assert frames[-1][0] == OP_CLOSE and close_code(frames[-1][1]) == 1008
    assert frames[-1][1][2:] == b"Too many requests"
    stats = sim.stats()
    assert stats["closes"].get("too_many_requests") == 1
    assert stats["refusals"]["too_many_requests_1008"] == 1


# --- live control messages and limits ------------------------------------------------------

def ask(ws: websocket.WebSocket, request: Any) -> Dict[str, Any]:
    """Send a control message; return its answer, skipping trades that arrive meanwhile."""
    ws.send(request if isinstance(request, str) else json.dumps(request))
    for _ in range(10_000):
        msg = orjson.loads(ws.recv())
        if "id" in msg:
            return msg
    raise AssertionError("no answer")


def test_subscribe_list_unsubscribe_and_properties(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=300", "--max-incoming-per-sec", "1000")
    ws = connect(sim, "/ws")
    assert ask(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "nopeusdt@trade"],
                    "id": 1}) == {"result": None, "id": 1}
    assert list(read_trades(ws, 3)[0]) == KEYS
    assert ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2}) == \
        {"result": ["btcusdt@trade", "nopeusdt@trade"], "id": 2}
    assert ask(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 3}) == \
        {"result": None, "id": 3}
    wrapped = [orjson.loads(ws.recv()) for _ in range(3)]
    assert wrapped[-1]["stream"] == "btcusdt@trade"
    assert ask(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 4}) == \
        {"result": True, "id": 4}
    assert ask(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 5}) == \
        {"result": None, "id": 5}
    frames_for(ws, 0.1)
    assert frames_for(ws, 0.5) == []  # nothing more, the unknown symbol included
    invalid = ask(ws, "{oops")
    assert invalid["id"] is None and invalid["error"]["code"] == 3
    bad = ask(ws, {"method": "SUBSCRIBE", "params": ["btcusdt"], "id": 6})
    assert bad["id"] == 6 and bad["error"]["code"] == 2
    many = [f"s{n}usdt@trade" for n in range(1024)]
    too_many = ask(ws, {"method": "SUBSCRIBE", "params": many, "id": 7})
    assert too_many == {"error": {"code": 4, "msg": "Too many subscriptions"}, "id": 7}
    assert ask(ws, {"method": "SUBSCRIBE", "params": many[:1023], "id": 8})["result"] is None
    ws.close()


def test_stream_limit_per_url_and_many_listed_symbols(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--quiet-symbols", "1100")
    names = [f"q{n:04d}usdt@trade" for n in range(1, 1026)]
    info = rest(sim, "/api/v3/exchangeInfo")[2]
    assert len(info["symbols"]) == 1101
    # 1,024 real stream names make a URL of 16,400 characters: over Binance's ~8,000.
    assert refusal(sim, "/stream?streams=" + "/".join(names[:1024]))[0] == 414
    # 1,025 short names fit in the URL, and are one stream too many.
    short = "/ws/" + "/".join(f"{n}@t" for n in range(1025))
    assert len(short) < 8000
    status, _, body = refusal(sim, short)
    assert (status, body) == (400, "Too many streams: 1025 streams in the URL, "
                                   "at most 1024 per connection")
    assert sim.fault("limits", max_url_length=20000)["max_url_length"] == 20000
    ok = connect(sim, "/stream?streams=" + "/".join(names[:1024]))
    assert ask(ok, {"method": "LIST_SUBSCRIPTIONS", "id": 1})["result"] == names[:1024]
    ok.close()
    assert refusal(sim, "/stream?streams=" + "/".join(names))[0] == 400
    stats = sim.stats()
    assert stats["refused"] == 3 and stats["accepted"] == 1
    assert (stats["refusals"]["url_too_long"], stats["refusals"]["too_many_streams"]) == (1, 2)


def refusal(sim: ExchangeSim, path: str) -> Tuple[int, Dict[str, str], str]:
    """(status, headers with lower-case names, body) of a handshake that must be refused."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(sim, path)
    exc = refused.value
    headers = {k.lower(): v for k, v in (exc.resp_headers or {}).items()}
    return exc.status_code, headers, (exc.resp_body or b"").decode()


def url_of_length(length: int) -> str:
    """A combined-stream request target of exactly `length` characters (streams <= 200)."""
    prefix = "/stream?streams="
    budget = length - len(prefix)
    full = (budget - 11) // 101  # streams of 100 characters, each with its "/"
    names = [f"s{i:04d}".ljust(94, "a") + "@trade" for i in range(full)]
    names.append(f"s{full:04d}".ljust(budget - full * 101 - 6, "a") + "@trade")
    url = prefix + "/".join(names)
    assert len(url) == length and len(names) == len(set(names))
    return url


def test_a_url_over_8000_characters_is_refused_with_414_and_counted(exchange_sim: StartSim
                                                                       ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0")
    for length in (7999, 8000):
        ws = connect(sim, url_of_length(length))
        assert len(ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})["result"]) >= 79
        ws.close()
    for length in (8001, 16_000):
        status, headers, body = refusal(sim, url_of_length(length))
        assert (status, body) == (414, f"URL too long: {length} characters, at most 8000")
    stats = sim.stats()
    assert (stats["accepted"], stats["refused"], stats["refusals"]["url_too_long"]) == (2, 2, 2)
    assert sum(stats["refusals"].values()) == 2


def test_subscribe_past_1024_streams_gets_code_4_adds_nothing_and_is_counted(
        exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0")
    ws = connect(sim, "/ws/btcusdt@trade")
    names = [f"s{n}usdt@trade" for n in range(1024)]
    answers = []
    for n, params in enumerate((names[:1000], names[1000:], names[1000:1023],
                                ["btcusdt@trade"], ["one@trade"])):
        answers.append(ask(ws, {"method": "SUBSCRIBE", "params": params, "id": n}))
        time.sleep(0.25)  # 4 messages a second: under the limit of 5
    too_many = {"error": {"code": 4, "msg": "Too many subscriptions"}}
    assert answers == [{"result": None, "id": 0}, {**too_many, "id": 1},
                       {"result": None, "id": 2}, {"result": None, "id": 3},  # already held
                       {**too_many, "id": 4}]
    listed = ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 5})["result"]
    assert listed == ["btcusdt@trade"] + names[:1023]
    ws.close()
    refusals = sim.stats()["refusals"]
    assert (refusals["subscribe_over_limit"], refusals["too_many_requests_1008"]) == (2, 0)


def test_pings_pongs_and_subscribes_all_count_toward_1008(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0", "--no-server-ping")
    ws = connect(sim, "/ws")
    ws.ping(b"1")
    ws.pong(b"")  # unsolicited pongs are allowed, and count
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}))
    ws.ping(b"2")
    ws.pong(b"")
    frames = frames_for(ws, 0.3)
    assert [op for op, _ in frames] == [OP_PONG, OP_TEXT, OP_PONG]  # five frames: all fine
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 2}))
    frames = frames_for(ws, 2.0)
    assert frames[-1][0] == OP_CLOSE and close_code(frames[-1][1]) == 1008
    assert frames[-1][1][2:] == b"Too many requests"
    assert OP_TEXT not in [op for op, _ in frames]  # the 6th is not answered
    stats = sim.stats()
    assert stats["refusals"]["too_many_requests_1008"] == 1
    assert stats["closes"].get("too_many_requests") == 1


@pytest.mark.slow
def test_connection_attempts_past_the_budget_get_429_then_a_418_ban(exchange_sim: StartSim
                                                                      ) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=0", "--max-connect-attempts", "5",
                       "--connect-window", "10", "--ban-seconds", "3")
    for _ in range(5):
        connect(sim, "/ws/btcusdt@trade").close()
    status, headers, body = refusal(sim, "/ws/btcusdt@trade")  # the 6th in 10 s
    assert status == 429 and json.loads(body)["code"] == -1003
    assert 1 <= int(headers["retry-after"]) <= 10  # 10 unless the 5 connects took long
    status, headers, body = refusal(sim, "/ws/btcusdt@trade")  # before Retry-After: banned
    banned = time.monotonic()  # the ban started before this
    assert (status, headers["retry-after"]) == (418, "3")
    assert json.loads(body)["code"] == -1003 and "banned until" in json.loads(body)["msg"]
    time.sleep(1.1)
    status, headers, _ = refusal(sim, "/ws/btcusdt@trade")  # the ban counts down
    assert status == 418 and headers["retry-after"] in ("1", "2")
    time.sleep(max(banned + 3.1 - time.monotonic(), 0))
    # The ban is over, but the attempts made meanwhile still fill the window.
    status, headers, _ = refusal(sim, "/ws/btcusdt@trade")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 10
    last = time.monotonic()
    stats = sim.stats()
    assert (stats["refusals"]["attempts_429"], stats["refusals"]["banned_418"]) == (2, 2)
    assert stats["connect_attempts"]["127.0.0.1"]["attempts_in_window"] == 9
    time.sleep(max(last + 10.2 - time.monotonic(), 0))  # every attempt has aged out
    for _ in range(2):
        ws = connect(sim, "/ws/btcusdt@trade")
        assert ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})["result"] == ["btcusdt@trade"]
        ws.close()
    stats = sim.stats()
    assert (stats["accepted"], stats["refused"]) == (7, 4)
    assert (stats["refusals"]["attempts_429"], stats["refusals"]["banned_418"]) == (2, 2)


# --- rate, run-time control, replay --------------------------------------------------------

def test_twenty_thousand_trades_a_second_arrive_complete_and_in_order(idle_btc: ExchangeSim
                                                                      ) -> None:
    ws = connect(idle_btc, "/ws/btcusdt@trade")
    idle_btc.fault("set_rate", symbol="BTCUSDT", rate=20_000)
    ids: List[int] = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline or len(ids) % 1000:
        ids.append(orjson.loads(ws.recv())["t"])
    idle_btc.fault("pause", symbol="BTCUSDT")
    last = idle_btc.ledger()["BTCUSDT"]["last"]
    for _ in range(last - ids[-1]):  # bounded by what was generated
        ids.append(orjson.loads(ws.recv())["t"])
    ws.close()
    assert ids == list(range(START, last + 1))
    assert len(ids) > 20_000  # about 40,000 unless the machine is badly overloaded


def test_run_time_symbols_rates_and_pauses(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=100")
    ws = connect(sim, "/ws/xrpusdt@trade")  # subscribed before the symbol exists
    sim.fault("add_symbol", symbol="XRPUSDT", rate=200, price="0.5123", start_id=7)
    trade = read_trades(ws, 1, timeout=3.0)[0]
    assert (trade["s"], trade["t"]) == ("XRPUSDT", 7)
    assert "XRPUSDT" in {s["symbol"] for s in rest(sim, "/api/v3/exchangeInfo")[2]["symbols"]}
    sim.fault("pause")
    frozen = {k: v["last"] for k, v in sim.ledger().items()}
    time.sleep(0.3)
    assert {k: v["last"] for k, v in sim.ledger().items()} == frozen
    sim.fault("resume", symbol="BTCUSDT")
    sim.fault("set_rate", symbol="BTCUSDT", rate=1000)
    time.sleep(0.3)
    ledger = sim.ledger()
    assert ledger["BTCUSDT"]["last"] >= frozen["BTCUSDT"] + 150
    assert ledger["XRPUSDT"]["last"] == frozen["XRPUSDT"]
    ws.close()
    with pytest.raises(Exception, match="unknown action"):
        sim.fault("explode")


def test_legacy_fields_option_adds_b_and_a(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=300", "--legacy-fields")
    ws = connect(sim, "/ws/btcusdt@trade")
    trade = read_trades(ws, 1)[0]
    ws.close()
    assert list(trade) == ["e", "E", "s", "t", "p", "q", "b", "a", "T", "m", "M"]
    assert type(trade["b"]) is int and type(trade["a"]) is int and trade["b"] != trade["a"]


def test_a_reader_that_falls_hopelessly_behind_is_dropped(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=50000", "--max-send-buffer-mb", "1")
    ws = websocket.create_connection(sim.ws_url + "/ws/btcusdt@trade", timeout=5,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    deadline = time.monotonic() + 10.0
    while not sim.stats()["closes"].get("slow_client"):  # the test never reads
        assert time.monotonic() < deadline, sim.stats()
        time.sleep(0.1)
    ws.close()
    assert "bytes behind" in sim.output()


def test_replay_serves_the_recorded_trades_on_stream_and_rest(exchange_sim: StartSim,
                                                              tmp_path: Path) -> None:
    recorded: List[Dict[str, Any]] = []
    for n in range(300):
        symbol = "BTCUSDT" if n % 3 else "ETHUSDT"
        t_ms = 1_700_000_000_000 + n // 4  # several trades share a millisecond
        recorded.append({"e": "trade", "E": t_ms + 1, "s": symbol,
                         "t": 5000 + n if symbol == "BTCUSDT" else 900 + n,
                         "p": f"{100 + n % 7}.50000000", "q": "0.01000000", "T": t_ms,
                         "m": n % 2 == 0, "M": True})
    # Ids must be consecutive per symbol: renumber in order of appearance.
    counters = {"BTCUSDT": 5000, "ETHUSDT": 900}
    for msg in recorded:
        msg["t"] = counters[msg["s"]]
        counters[msg["s"]] += 1
    capture = tmp_path / "capture.jsonl"
    capture.write_text("".join(json.dumps({"stream": m["s"].lower() + "@trade", "data": m}) + "\n"
                               for m in recorded))
    sim = exchange_sim("--replay", str(capture), "--replay-timing", "asap",
                       "--replay-wait-for-client")
    ws = connect(sim, "/stream?streams=btcusdt@trade/ethusdt@trade")
    assert read_trades(ws, 300) == recorded
    ws.close()
    ledger = sim.ledger()
    assert ledger["BTCUSDT"] == {"first": 5000, "last": 5199, "count": 200, "withheld": [],
                                 "resent": [], "oldest_served": 5000}
    assert sim.ledger_ids("ETHUSDT") == set(range(900, 1000))
    rows = rest(sim, "/api/v3/historicalTrades?symbol=ETHUSDT&fromId=900&limit=3")[2]
    eth = [m for m in recorded if m["s"] == "ETHUSDT"]
    assert [(r["id"], r["price"], r["time"], r["isBuyerMaker"]) for r in rows] == \
        [(m["t"], m["p"], m["T"], m["m"]) for m in eth[:3]]


def test_replay_keeps_the_recorded_spacing(exchange_sim: StartSim, tmp_path: Path) -> None:
    capture = tmp_path / "spaced.jsonl"
    capture.write_text("".join(json.dumps(
        {"e": "trade", "E": 1_700_000_000_000 + 400 * n, "s": "BTCUSDT", "t": 1 + n,
         "p": "1.00000000", "q": "1.00000000", "T": 1_700_000_000_000 + 400 * n,
         "m": False, "M": True}) + "\n" for n in range(3)))
    sim = exchange_sim("--replay", str(capture), "--replay-speed", "2",
                       "--replay-wait-for-client")
    ws = connect(sim, "/ws/btcusdt@trade")
    started = time.monotonic()
    assert [t["t"] for t in read_trades(ws, 3)] == [1, 2, 3]
    ws.close()
    assert time.monotonic() - started >= 0.3  # 2 x 400 ms recorded, at twice the speed


def test_a_stopped_simulator_refuses_connections(exchange_sim: StartSim) -> None:
    sim = exchange_sim("--symbol", "BTCUSDT:rate=100")
    ws = connect(sim, "/ws/btcusdt@trade")
    read_trades(ws, 1)
    assert sim.stop() == 0
    with pytest.raises((ConnectionError, OSError)):
        connect(sim, "/ws/btcusdt@trade", timeout=1.0)
    assert "Running on http://127.0.0.1" in sim.output()
