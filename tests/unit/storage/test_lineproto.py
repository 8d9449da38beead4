"""The point model as line protocol: exact text, unique and repeatable timestamps, escaping.

Facts: InfluxDB's line-protocol reference (syntax, escaping) and its duplicate-point rule (same
series and timestamp: the last write wins), hence unique ns timestamps.
"""
from __future__ import annotations

import pytest

from workers.exchange.protocol import make_trade
from workers.storage.lineproto import (
    NS_PER_MS,
    PRECISION,
    LineRenderer,
    escape_key,
    escape_string_field,
    trade_timestamp_ns,
)
from workers.trade import Trade


def trade(trade_id=5225367649, price="113747.89000000", qty="0.00060000", time_ms=1757522615939,
          buyer_maker=True, symbol="BTCUSDT", time_us=None) -> Trade:
    return Trade(symbol, trade_id, price, qty, time_ms, buyer_maker,
                 time_ms * 1000 if time_us is None else time_us)


@pytest.fixture
def renderer() -> LineRenderer:
    return LineRenderer("price_ticks")


def test_known_trade_renders_to_the_exact_line(renderer):
    assert renderer.line(trade()) == (
        'price_ticks,symbol=BTCUSDT price=113747.89000000,price_str="113747.89000000",'
        'qty=0.00060000,qty_str="0.00060000",trade_id=5225367649i,time_us=1757522615939000i,'
        'buyer_maker=true 1757522615939367649')


def test_buyer_maker_false_is_written_as_false(renderer):
    line = renderer.line(trade(buyer_maker=False))

    assert ",buyer_maker=false " in line
    assert "true" not in line


def test_tiny_price_is_kept_exactly_as_binance_wrote_it_in_both_fields(renderer):
    line = renderer.line(trade(price="0.00000123", qty="1000000.00000000"))

    assert "price=0.00000123," in line
    assert 'price_str="0.00000123"' in line
    assert "qty=1000000.00000000," in line
    assert "e-" not in line  # never re-formatted as 1.23e-06


def test_unpadded_decimals_are_kept_as_written(renderer):
    line = renderer.line(trade(price="100", qty="0.001"))

    assert 'price=100,price_str="100",qty=0.001,qty_str="0.001",' in line


def test_trade_id_is_an_integer_field(renderer):
    assert ",trade_id=5225367649i," in renderer.line(trade())


def test_the_exchange_microseconds_are_an_integer_field(renderer):
    line = renderer.line(trade(time_ms=1757522615939, time_us=1757522615939254))

    assert ",time_us=1757522615939254i," in line


def test_the_microseconds_leave_the_key_as_it_was(renderer):
    """Stored points and dedup depend on the key: ms * 10**6 + id % 10**6, µs or not."""
    in_ms = renderer.line(trade(time_ms=1757522615939))
    in_us = renderer.line(trade(time_ms=1757522615939, time_us=1757522615939999))

    assert in_us.rsplit(" ", 1)[1] == in_ms.rsplit(" ", 1)[1] == "1757522615939367649"


def test_a_trade_known_in_ms_only_stores_its_ms_times_1000(renderer):
    """What a ms-only source (a day before 2025, a ms answer) stores: every source agrees."""
    known_in_ms = make_trade("BTCUSDT", 5225367649, "113747.89000000", "0.00060000",
                             1757522615939, True)

    assert ",time_us=1757522615939000i," in renderer.line(known_in_ms)


def test_one_trade_from_ms_and_us_sources_differs_only_in_time_us(renderer):
    args = ("BTCUSDT", 5225367649, "113747.89000000", "0.00060000")
    in_ms = renderer.line(make_trade(*args, 1757522615939, True))
    in_us = renderer.line(make_trade(*args, 1757522615939254, True))

    assert in_ms.replace("time_us=1757522615939000i", "time_us=1757522615939254i") == in_us


def test_timestamp_is_trade_ms_times_a_million_plus_id_remainder(renderer):
    t = trade(trade_id=5225367649, time_ms=1757522615939)
    expected = 1757522615939 * 1_000_000 + 5225367649 % 1_000_000

    assert trade_timestamp_ns(t.time_ms, t.trade_id) == expected
    assert renderer.line(t).rsplit(" ", 1)[1] == str(expected)


def test_timestamp_keeps_the_trade_millisecond_exact(renderer):
    for trade_id in (0, 1, 999_999, 1_000_000, 5225367649):
        ts = int(renderer.line(trade(trade_id=trade_id)).rsplit(" ", 1)[1])

        assert ts // NS_PER_MS == 1757522615939


def test_same_millisecond_trades_get_distinct_timestamps(renderer):
    burst = [trade(trade_id=5225367649 + i) for i in range(1000)]  # one taker, many makers

    stamps = {renderer.line(t).rsplit(" ", 1)[1] for t in burst}

    assert len(stamps) == len(burst)


def test_same_trade_twice_gives_the_identical_line():
    first = LineRenderer("price_ticks").line(trade())
    again = LineRenderer("price_ticks").line(trade())

    assert first == again


def test_timestamps_are_nanoseconds_to_match_the_write_precision():
    assert PRECISION == "ns"
    assert NS_PER_MS == 1_000_000


def test_line_is_a_single_line_without_carriage_return(renderer):
    line = renderer.line(trade())

    assert "\n" not in line and "\r" not in line


def test_each_symbol_gets_its_own_series(renderer):
    btc = renderer.line(trade(symbol="BTCUSDT"))
    eth = renderer.line(trade(symbol="ETHUSDT"))

    assert btc.startswith("price_ticks,symbol=BTCUSDT ")
    assert eth.startswith("price_ticks,symbol=ETHUSDT ")


def test_unicode_symbol_is_written_as_utf8_text(renderer):
    line = renderer.line(trade(symbol="这是测试币456"))

    assert line.startswith("price_ticks,symbol=这是测试币456 price=")
    line.encode("utf-8")  # must be encodable for the request body


def test_measurement_name_comes_from_the_renderer():
    assert LineRenderer("trades").line(trade()).startswith("trades,symbol=BTCUSDT ")


# -- escaping (influxdb.md 3.3) --------------------------------------------------------------

@pytest.mark.parametrize("raw, escaped", [
    ("a,b", r"a\,b"),
    ("a b", r"a\ b"),
    ("a=b", r"a\=b"),
    ("a, =b", r"a\,\ \=b"),
    ("plain_name-1", "plain_name-1"),
    ("这是", "这是"),
])
def test_tag_keys_and_values_escape_comma_space_and_equals(raw, escaped):
    assert escape_key(raw) == escaped


def test_a_trailing_backslash_cannot_escape_the_separator_after_it():
    escaped = escape_key("abc\\")

    # An even run of backslashes before the separator: the space after it stays a separator.
    assert escaped.endswith("\\\\")


def test_measurement_with_comma_and_space_is_escaped_in_the_line():
    line = LineRenderer("my ticks,v2").line(trade())

    assert line.startswith(r"my\ ticks\,v2,symbol=BTCUSDT price=")


def test_tag_value_with_special_characters_is_escaped_in_the_line(renderer):
    line = renderer.line(trade(symbol="A B,C=D"))

    assert line.startswith(r"price_ticks,symbol=A\ B\,C\=D price=")


def test_string_field_escapes_quote_and_backslash():
    assert escape_string_field('say "hi" \\ bye') == 'say \\"hi\\" \\\\ bye'
