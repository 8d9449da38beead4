"""The exchange simulator's pure parts: trade sequence, store, encoding, control messages."""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, Dict, List

import orjson
import pytest

from tests.support.exchange.cli import build_parser, config_from_args
from tests.support.exchange.config import (
    ConfigError,
    SimConfig,
    fmt8,
    fmt_quote,
    parse_symbol_spec,
    step_units,
    tick_units,
    to_units,
)
from tests.support.exchange.faults import FaultState
from tests.support.exchange.frames import (
    COMBINED_MS,
    COMBINED_US,
    RAW_MS,
    RAW_US,
    TradeEncoder,
    header,
)
from tests.support.exchange.generator import TradeGenerator
from tests.support.exchange.history import SpanList, TradeHistory
from tests.support.exchange.hub import Hub
from tests.support.exchange.market import Market
from tests.support.exchange.protocol import (
    HandshakeError,
    StreamTarget,
    handle_text,
    parse_target,
    trade_symbol,
)
from tests.support.exchange.replay import load
from tests.support.exchange.rest import WeightWindow
from tests.support.exchange.stats import SimStats

KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
EIGHT_DECIMALS = re.compile(r"^\d+\.\d{8}$")


def make_generator(symbol: str = "BTCUSDT", seed: int = 1, price: str = "60000.00"
                   ) -> TradeGenerator:
    units = to_units(price)
    return TradeGenerator(symbol, seed, units, tick_units(units), step_units(units))


def fills(gen: TradeGenerator, n: int) -> List[tuple]:
    out: List[tuple] = []
    while len(out) < n:
        burst = gen.burst()
        out += [(burst.buyer_is_maker, p, q) for p, q in zip(burst.prices, burst.qtys)]
    return out[:n]


# --- generator -------------------------------------------------------------------------------

def test_sequence_depends_only_on_seed_and_symbol() -> None:
    assert fills(make_generator(), 500) == fills(make_generator(), 500)
    assert fills(make_generator(seed=2), 50) != fills(make_generator(), 50)
    assert fills(make_generator("ETHUSDT"), 50) != fills(make_generator(), 50)


def test_bursts_share_the_maker_side_and_walk_the_book_in_the_taker_direction() -> None:
    gen = make_generator()
    sizes = []
    walked = 0
    for _ in range(2000):
        burst = gen.burst()
        sizes.append(len(burst.prices))
        steps = [b - a for a, b in zip(burst.prices, burst.prices[1:])]
        if burst.buyer_is_maker:  # the taker sold: bids are eaten downwards
            assert all(s <= 0 for s in steps)
        else:
            assert all(s >= 0 for s in steps)
        walked += any(steps)
        assert all(0 <= d <= 2000 for d in burst.e_delays_us)
    assert max(sizes) >= 5 and sizes.count(1) > 500 and sum(s > 1 for s in sizes) > 500
    assert walked > 100  # big takers use up a price level and fill at the next


@pytest.mark.parametrize("price, tick, step", [
    ("60000.00", "0.01000000", "0.00001000"),
    ("3000.00", "0.01000000", "0.00010000"),
    ("2.5000", "0.00010000", "0.10000000"),
    ("0.15000", "0.00001000", "1.00000000"),
    ("0.00000123", "0.00000001", "1.00000000"),
])
def test_tick_and_step_follow_the_price_level(price: str, tick: str, step: str) -> None:
    units = to_units(price)
    assert fmt8(tick_units(units)) == tick
    assert fmt8(step_units(units)) == step


def test_prices_and_quantities_are_on_the_grid_and_positive() -> None:
    gen = make_generator("SHIBUSDT", price="0.00000123")
    for _, price, qty in fills(gen, 5000):
        assert price >= 1 and qty % gen.step == 0 and qty > 0
    assert fmt8(123) == "0.00000123"


def test_decimal_formatting() -> None:
    assert fmt8(to_units("60000.07")) == "60000.07000000"
    assert fmt_quote(to_units("4.000001"), to_units("12")) == "48.000012"
    assert fmt_quote(to_units("2"), to_units("3")) == "6.0"
    with pytest.raises(ConfigError):
        to_units("0.000000001")


def test_symbol_spec_parsing() -> None:
    spec = parse_symbol_spec("1000SATSUSDT:rate=200:price=0.0003:start=5", 50)
    assert (spec.name, spec.rate, fmt8(spec.price_units), spec.start_id) == \
        ("1000SATSUSDT", 200.0, "0.00030000", 5)
    assert parse_symbol_spec("btcusdt", 7).rate == 7
    for bad in ("BTC-USDT", "BTCUSDT:speed=3", "BTCUSDT:rate=-1", "BTCUSDT:status=OPEN"):
        with pytest.raises(ConfigError):
            parse_symbol_spec(bad, 1)


# --- history and ledger ----------------------------------------------------------------------

def test_history_serves_by_id_and_forgets_past_the_retention() -> None:
    history = TradeHistory(100, retention=1000)
    for chunk in range(10):
        n = 700
        first, last = history.append([1] * n, [2] * n, [chunk] * n, [0] * n, [0] * n)
        assert first == 100 + chunk * n and last == first + n - 1
    assert history.count == 7000 and history.last_id == 7099
    assert history.oldest_served == 7099 - 999
    assert [r.id for r in history.rows(0, 3)] == [6100, 6101, 6102]  # clamped to retention
    assert [r.id for r in history.rows(7098, 10)] == [7098, 7099]
    assert [r.id for r in history.recent(2)] == [7098, 7099]
    assert len(history) <= 1000 + 1000  # trimmed in chunks, never far past the retention


def test_span_list_merges_touching_spans() -> None:
    spans = SpanList()
    spans.add(10, 19)
    spans.add(20, 29)
    spans.add(40, 40)
    assert spans.spans == [[10, 29], [40, 40]] and spans.total() == 21


# --- encoding --------------------------------------------------------------------------------

def stored(n: int = 5, first_id: int = 100) -> TradeHistory:
    history = TradeHistory(first_id, 10_000)
    t_us = 1_700_000_000_123_456
    history.append([to_units("60000.01")] * n, [to_units("0.0015")] * n, [t_us] * n,
                   [1999] * n, [3] + [1] * (n - 1))
    return history


def test_payload_fields_order_and_types_match_the_reference() -> None:
    enc = TradeEncoder("BTCUSDT", legacy_fields=False)
    msg = orjson.loads(enc.payloads(stored(), 100, 100, micro=False)[0])
    assert list(msg) == KEYS
    assert msg == {"e": "trade", "E": 1_700_000_000_125, "s": "BTCUSDT", "t": 100,
                   "p": "60000.01000000", "q": "0.00150000", "T": 1_700_000_000_123,
                   "m": True, "M": True}
    micro = orjson.loads(enc.payloads(stored(), 100, 100, micro=True)[0])
    assert micro["T"] == 1_700_000_000_123_456 and micro["E"] == 1_700_000_000_125_455
    assert len(str(micro["T"])) == 16 and micro["E"] >= micro["T"]


def test_legacy_fields_add_order_ids_before_T() -> None:
    enc = TradeEncoder("BTCUSDT", legacy_fields=True)
    msgs = [orjson.loads(p) for p in enc.payloads(stored(), 100, 104, micro=False)]
    assert list(msgs[0]) == ["e", "E", "s", "t", "p", "q", "b", "a", "T", "m", "M"]
    # One taker order (the seller, as the buyer is maker) fills five different makers.
    assert len({m["a"] for m in msgs}) == 1 and len({m["b"] for m in msgs}) == 5


@pytest.mark.parametrize("framing", [RAW_MS, RAW_US, COMBINED_MS, COMBINED_US])
def test_frames_are_unmasked_text_frames_with_the_right_lengths(framing: int) -> None:
    enc = TradeEncoder("BTCUSDT", legacy_fields=False)
    blob = enc.frames(stored(), 100, 104, framing, {})
    messages = []
    pos = 0
    while pos < len(blob):
        assert blob[pos] == 0x81
        length = blob[pos + 1]
        assert length & 0x80 == 0  # no mask bit from a server
        pos += 2
        if length == 126:
            length = struct.unpack("!H", blob[pos:pos + 2])[0]
            pos += 2
        messages.append(orjson.loads(blob[pos:pos + length]))
        pos += length
    assert len(messages) == 5
    if framing in (COMBINED_MS, COMBINED_US):
        assert all(m["stream"] == "btcusdt@trade" and list(m) == ["stream", "data"]
                   for m in messages)
        messages = [m["data"] for m in messages]
    assert [m["t"] for m in messages] == [100, 101, 102, 103, 104]


def test_frame_header_length_encodings() -> None:
    assert header(1, 125) == b"\x81\x7d"
    assert header(1, 126) == b"\x81\x7e\x00\x7e"
    assert header(1, 65536) == b"\x81\x7f" + (65536).to_bytes(8, "big")


# --- market ----------------------------------------------------------------------------------

def test_market_tick_follows_the_rate_and_withholds_a_prefix() -> None:
    market = Market(SimConfig(seed=3, start_id=500))
    state = market.add(parse_symbol_spec("BTCUSDT:rate=1000", 1))
    state.restart_clock(10.0)
    releases = market.tick(10.1)
    made = releases[0].last - releases[0].first + 1
    assert releases[0].first == 500 and 100 <= made <= 112  # whole bursts may overshoot
    state.withhold_pending = 30
    rel = market.tick(10.2)[0]
    assert rel.send_from == rel.first + 30
    assert state.ledger.withheld.spans == [[rel.first, rel.first + 29]]
    history = state.history
    times = list(history.times_us)
    assert times == sorted(times)
    offline = fills(TradeGenerator("BTCUSDT", 3, state.spec.price_units, state.spec.tick,
                                   state.spec.step), history.count)
    assert [(r.buyer_is_maker, r.price, r.qty) for r in history.rows(500, 10**6)] == offline


def test_market_pause_and_status_stop_generation() -> None:
    market = Market(SimConfig())
    state = market.add(parse_symbol_spec("ETHUSDT:rate=1000", 1))
    market.set_paused("ETHUSDT", True)
    assert market.tick(state.origin + 1.0) == []
    market.set_paused(None, False)
    market.set_status("ETHUSDT", "HALT")
    assert market.tick(state.origin + 1.0) == []


# --- stream protocol -------------------------------------------------------------------------

def test_stream_urls() -> None:
    t = parse_target("/stream", {"streams": "btcusdt@trade/ethusdt@trade",
                                 "timeUnit": "microsecond"}, 1024)
    assert t == StreamTarget(["btcusdt@trade", "ethusdt@trade"], True, True)
    assert parse_target("/ws/btcusdt@trade", {}, 1024) == StreamTarget(["btcusdt@trade"], False,
                                                                       False)
    assert parse_target("/ws", {}, 1024).streams == []
    with pytest.raises(HandshakeError):
        parse_target("/ws/a@trade/b@trade", {}, 1)
    with pytest.raises(HandshakeError):
        parse_target("/ws/btcusdt", {}, 1024)
    with pytest.raises(HandshakeError):
        parse_target("/ws/btcusdt@trade", {"timeUnit": "SECOND"}, 1024)
    assert trade_symbol("1000satsusdt@trade") == "1000SATSUSDT"
    assert trade_symbol("BTCUSDT@trade") is None and trade_symbol("btcusdt@aggTrade") is None


class FakeTransport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def control_session() -> Any:
    config = SimConfig(max_streams=3)
    hub = Hub(config, Market(config), FaultState(), SimStats())
    conn = hub.open(FakeTransport(), StreamTarget([], False, False), "/ws")  # type: ignore
    return hub, conn


def ask(hub: Hub, conn: Any, request: Any) -> Dict[str, Any]:
    text = request if isinstance(request, str) else orjson.dumps(request).decode()
    return handle_text(hub, conn, text)


def test_control_methods_answer_with_the_exchange_shapes() -> None:
    hub, conn = control_session()
    sub = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 1}
    assert ask(hub, conn, sub) == {"result": None, "id": 1}
    assert conn in hub.subscribers["BTCUSDT"]
    assert ask(hub, conn, {"method": "LIST_SUBSCRIPTIONS", "id": "a1"}) == \
        {"result": ["btcusdt@trade", "ethusdt@trade"], "id": "a1"}
    assert ask(hub, conn, {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}) == \
        {"result": None, "id": 2}
    assert conn not in hub.subscribers["BTCUSDT"]
    assert ask(hub, conn, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}) == \
        {"result": None, "id": 5}
    assert ask(hub, conn, {"method": "GET_PROPERTY", "params": ["combined"], "id": 6}) == \
        {"result": True, "id": 6}


@pytest.mark.parametrize("request_, code, req_id", [
    ("{not json", 3, None),
    ({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1.5}, 2, None),
    ({"params": [], "id": 7}, 2, 7),
    ({"method": "SUBSCRIB", "params": [], "id": 8}, 2, 8),
    ({"method": "SUBSCRIBE", "params": ["btcusdt"], "id": 9}, 2, 9),
    ({"method": "SUBSCRIBE", "params": ["a@trade", "b@trade", "c@trade", "d@trade"], "id": 10},
     4, 10),
    ({"method": "SET_PROPERTY", "params": ["speed", True], "id": 11}, 0, 11),
    ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 12}, 1, 12),
])
def test_control_errors(request_: Any, code: int, req_id: Any) -> None:
    hub, conn = control_session()
    answer = ask(hub, conn, request_)
    assert set(answer) == {"error", "id"} and answer["id"] == req_id
    assert answer["error"]["code"] == code and isinstance(answer["error"]["msg"], str)


# --- REST weight, replay, CLI ----------------------------------------------------------------

def test_weight_window_reports_when_enough_weight_expires() -> None:
    window = WeightWindow(limit=50)
    assert window.take(25, 0.0) is None and window.take(25, 10.0) is None
    assert window.take(1, 20.0) == 40  # the first 25 expire at t=60
    assert window.take(1, 60.5) is None and window.used == 26


def test_replay_file_checks(tmp_path: Path) -> None:
    def line(t: int, s: str = "BTCUSDT") -> str:
        data = {"e": "trade", "E": 1700000000001, "s": s, "t": t, "p": "1.00000000",
                "q": "2.00000000", "T": 1700000000000, "m": False, "M": True}
        return orjson.dumps({"stream": s.lower() + "@trade", "data": data}).decode()

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join([line(5), line(6), line(6), line(9, "ETHUSDT"), line(7)]) + "\n")
    assert [(t.symbol, t.id) for t in load(good)] == \
        [("BTCUSDT", 5), ("BTCUSDT", 6), ("ETHUSDT", 9), ("BTCUSDT", 7)]
    gap = tmp_path / "gap.jsonl"
    gap.write_text(line(5) + "\n" + line(7) + "\n")
    with pytest.raises(ConfigError, match="consecutive"):
        load(gap)


def test_every_cli_option_is_documented_and_parsed() -> None:
    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, action.option_strings
    config = config_from_args(parser.parse_args(
        ["--symbol", "BTCUSDT:rate=5", "--symbol-status", "LUNAUSDT=HALT", "--fault",
         '{"action":"close","at":1}', "--max-conn-age", "3"]))
    assert [(s.name, s.status) for s in config.symbols] == [("BTCUSDT", "TRADING"),
                                                            ("LUNAUSDT", "HALT")]
    assert config.max_conn_age == 3.0 and config.faults == [{"action": "close", "at": 1}]
    with pytest.raises(ConfigError):
        config_from_args(parser.parse_args(["--fault", '{"action":"explode"}']))
