"""The Binance spot trade protocol: every frame is checked before it is trusted.

Facts: Binance's spot API documentation, "Web Socket Streams" (URL forms, the trade payload,
the live control methods and their error replies).
"""
from __future__ import annotations

import time

import orjson
import pytest

from workers.errors import InvalidMessage
from workers.exchange.protocol import (
    EARLIEST_TRADE_MS,
    MICROS_FROM_US,
    ControlReply,
    MessageParser,
    ServerShutdown,
    make_trade,
    micros,
    stream_name,
    trade_from_rest,
    trade_time_ms,
)
from workers.trade import Trade

# A real post-2024-06-18 capture (binance.md 2.1).
CURRENT = (b'{"e":"trade","E":1757522615939,"s":"BTCUSDT","t":5225367649,'
           b'"p":"113747.89000000","q":"0.00060000","T":1757522615939,"m":true,"M":true}')
# A real pre-removal capture with the b/a order ids (binance.md 2.1).
LEGACY = (b'{"e":"trade","E":1699534780335,"s":"BTCUSDT","t":3274098620,"p":"36877.31000000",'
          b'"q":"0.00059000","b":23160830204,"a":23160830482,"T":1699534780334,"m":true,'
          b'"M":true}')
DROP = object()  # payload(field=DROP) removes the field


def payload(**changes) -> dict:
    event = orjson.loads(CURRENT)
    for key, value in changes.items():
        if value is DROP:
            del event[key]
        else:
            event[key] = value
    return event


@pytest.fixture
def parser() -> MessageParser:
    return MessageParser(["BTCUSDT", "ETHUSDT"])


def reason_of(parser: MessageParser, data) -> str:
    if isinstance(data, dict):
        data = orjson.dumps(data)
    with pytest.raises(InvalidMessage) as info:
        parser.parse(data)
    return info.value.reason


# -- good trades ---------------------------------------------------------------------------------

def test_current_payload_parses_with_price_and_qty_kept_as_sent(parser):
    assert parser.parse(CURRENT) == Trade("BTCUSDT", 5225367649, "113747.89000000", "0.00060000",
                                          1757522615939, True, 1757522615939000)


def test_legacy_payload_with_order_ids_parses(parser):
    assert parser.parse(LEGACY) == Trade("BTCUSDT", 3274098620, "36877.31000000", "0.00059000",
                                         1699534780334, True, 1699534780334000)


def test_unknown_extra_fields_are_ignored(parser):
    event = payload(X="new", Y={"nested": [1, 2]}, b=1, a=2)

    assert parser.parse(orjson.dumps(event)).trade_id == 5225367649


def test_trade_time_is_T_not_the_event_time_E(parser):
    trade = parser.parse(orjson.dumps(payload(E=1757522615941, T=1757522615939)))

    assert trade.time_ms == 1757522615939


def test_buyer_maker_false_is_kept(parser):
    assert parser.parse(orjson.dumps(payload(m=False))).buyer_maker is False


def test_combined_wrapper_and_raw_payload_give_the_same_trade(parser):
    wrapped = orjson.dumps({"stream": "btcusdt@trade", "data": orjson.loads(CURRENT)})

    assert parser.parse(wrapped) == parser.parse(CURRENT)


def test_str_frames_parse_like_bytes(parser):
    assert parser.parse(CURRENT.decode()) == parser.parse(CURRENT)


def test_microsecond_trade_time_is_cut_to_milliseconds(parser):
    trade = parser.parse(orjson.dumps(payload(E=1757522615939723, T=1757522615939254)))

    assert trade.time_ms == 1757522615939


# -- microseconds (timeUnit=MICROSECOND, X-MBX-TIME-UNIT: MICROSECOND) ---------------------------

def test_a_microsecond_event_keeps_its_microseconds_and_the_millisecond_as_before(parser):
    trade = parser.parse(orjson.dumps(payload(E=1757522615939723, T=1757522615939254)))

    assert (trade.time_ms, trade.time_us) == (1757522615939, 1757522615939254)


@pytest.mark.parametrize("sub_ms", [0, 1, 999])
def test_the_millisecond_of_a_microsecond_time_is_its_floor(parser, sub_ms):
    trade = parser.parse(orjson.dumps(payload(T=1757522615939000 + sub_ms)))

    assert (trade.time_ms, trade.time_us) == (1757522615939, 1757522615939000 + sub_ms)


def test_a_millisecond_event_stores_its_millisecond_times_1000(parser):
    trade = parser.parse(CURRENT)

    assert (trade.time_ms, trade.time_us) == (1757522615939, 1757522615939000)


def test_the_same_trade_in_ms_and_in_us_has_the_same_millisecond(parser):
    in_us = parser.parse(orjson.dumps(payload(T=1757522615939254)))

    assert in_us.time_ms == parser.parse(CURRENT).time_ms


def test_a_microsecond_time_before_2025_is_stored_as_its_millisecond_times_1000(parser):
    """Days before 2025 are ms only in Binance's archive: every source stores ms * 1000."""
    t_us = MICROS_FROM_US - 86_400_000_000 + 123_456  # 2024-12-31, with a sub-ms part

    trade = parser.parse(orjson.dumps(payload(T=t_us)))

    assert (trade.time_ms, trade.time_us) == (t_us // 1000, t_us // 1000 * 1000)


def test_the_first_microsecond_of_2025_is_kept_exact(parser):
    trade = parser.parse(orjson.dumps(payload(T=MICROS_FROM_US + 7)))

    assert trade.time_us == MICROS_FROM_US + 7


@pytest.mark.parametrize("value, stored", [
    (1757522615939, 1757522615939000),  # ms
    (1757522615939254, 1757522615939254),  # µs from 2025 on
    (1735689599999999, 1735689599999000),  # µs of 2024-12-31 23:59:59.999999
    (1499865549590, 1499865549590000),  # ms of 2017
])
def test_micros_is_the_one_rule_for_the_stored_microseconds(value, stored):
    assert micros(value) == stored


def test_a_microsecond_time_days_ahead_of_our_clock_is_implausible(parser):
    two_days_ahead_us = int(time.time() * 1_000_000) + 2 * 86_400_000_000

    assert reason_of(parser, payload(T=two_days_ahead_us)) == "implausible_time"


def test_a_microsecond_server_shutdown_time_is_given_in_ms(parser):
    data = b'{"e":"serverShutdown","E":1757522615939723}'

    assert parser.parse(data) == ServerShutdown(1757522615939)


def test_rest_row_with_the_microsecond_header_keeps_its_microseconds():
    row = {**REST_ROW, "time": 1757522615939254}

    trade = trade_from_rest("BNBBTC", row)

    assert (trade.time_ms, trade.time_us) == (1757522615939, 1757522615939254)


def test_rest_row_and_stream_event_of_one_trade_are_equal_in_microseconds(parser):
    row = {"id": 5225367649, "price": "113747.89000000", "qty": "0.00060000",
           "quoteQty": "68.24873400", "time": 1757522615939254, "isBuyerMaker": True,
           "isBestMatch": True}

    assert trade_from_rest("BTCUSDT", row) == parser.parse(orjson.dumps(payload(
        E=1757522615939723, T=1757522615939254)))


def test_make_trade_and_the_fast_path_agree_on_every_unit(parser):
    for t in (1757522615939, 1757522615939254, MICROS_FROM_US - 1):
        slow = make_trade("BTCUSDT", 5225367649, "113747.89000000", "0.00060000", t, True)

        assert parser.parse(orjson.dumps(payload(T=t))) == slow


@pytest.mark.parametrize("price", ["100", "0.001", "0.00000123", "113747.89000000"])
def test_padded_and_unpadded_decimals_are_accepted(parser, price):
    assert parser.parse(orjson.dumps(payload(p=price))).price == price


def test_unicode_symbol_is_matched_as_utf8(parser):
    unicode_parser = MessageParser(["这是测试币456"])

    trade = unicode_parser.parse(orjson.dumps(payload(s="这是测试币456")))

    assert isinstance(trade, Trade) and trade.symbol == "这是测试币456"


# -- malformed frames: each with its reason ------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"not json", b'{"e":"trade",', b"\xff\xfe{}", "\ud800"])
def test_unparseable_frame_is_invalid_json(parser, data):
    assert reason_of(parser, data) == "invalid_json"


@pytest.mark.parametrize("data", [b"[]", b"[1,2]", b'"trade"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_refused(parser, data):
    assert reason_of(parser, data) == "not_an_object"


@pytest.mark.parametrize("event", ["aggTrade", "blockTrade", "referencePrice", "24hrTicker",
                                   None, 1])
def test_other_events_are_unknown_events_not_trades(parser, event):
    assert reason_of(parser, payload(e=event)) == "unknown_event"


def test_object_without_event_type_is_an_unknown_event(parser):
    assert reason_of(parser, {"hello": "world"}) == "unknown_event"


@pytest.mark.parametrize("field", ["s", "t", "p", "q", "T", "m"])
def test_trade_without_a_required_field_is_missing_field(parser, field):
    with pytest.raises(InvalidMessage) as info:
        parser.parse(orjson.dumps(payload(**{field: DROP})))

    assert info.value.reason == "missing_field"
    assert field in info.value.detail


def test_trade_without_the_ignored_M_and_E_fields_still_parses(parser):
    assert parser.parse(orjson.dumps(payload(M=DROP, E=DROP))).trade_id == 5225367649


@pytest.mark.parametrize("changes", [
    {"t": "5225367649"},  # id as a string
    {"t": True},  # bool is an int in Python: still refused
    {"t": 5225367649.0},
    {"p": 113747.89},  # price as a number loses the exact decimal string
    {"q": 1},
    {"m": "true"},
    {"m": 1},
    {"T": "1757522615939"},
    {"T": 1757522615939.5},
])
def test_field_of_the_wrong_json_type_is_wrong_type(parser, changes):
    assert reason_of(parser, payload(**changes)) == "wrong_type"


@pytest.mark.parametrize("data", [
    {"stream": "btcusdt@trade", "data": [1]},
    {"stream": "btcusdt@trade", "data": "x"},
    {"data": orjson.loads(CURRENT)},  # no stream name
    {"stream": 5, "data": orjson.loads(CURRENT)},
])
def test_broken_combined_wrapper_is_wrong_type(parser, data):
    assert reason_of(parser, data) == "wrong_type"


@pytest.mark.parametrize("field", ["p", "q"])
@pytest.mark.parametrize("value", ["1e5", "nan", "NaN", "inf", "-1.0", "+1", "0.00000000", "0",
                                   "", " 1.0", "1,5", ".5", "5.", "0x10", "１２"])
def test_price_or_quantity_that_is_not_a_positive_plain_decimal_is_bad_number(parser, field,
                                                                             value):
    assert reason_of(parser, payload(**{field: value})) == "bad_number"


def test_negative_trade_id_is_bad_number(parser):
    assert reason_of(parser, payload(t=-1)) == "bad_number"


@pytest.mark.parametrize("symbol", ["XRPUSDT", "btcusdt", "BTCUSDT ", ""])
def test_trade_of_a_symbol_not_subscribed_is_unknown_symbol(parser, symbol):
    assert reason_of(parser, payload(s=symbol)) == "unknown_symbol"


@pytest.mark.parametrize("symbol", [["BTCUSDT"], {"BTCUSDT": 1}])
def test_symbol_that_is_not_a_string_is_refused_as_invalid(parser, symbol):
    assert reason_of(parser, payload(s=symbol)) in ("wrong_type", "unknown_symbol")


@pytest.mark.parametrize("t", [0, 1_000_000_000_000, EARLIEST_TRADE_MS - 1, -1757522615939])
def test_trade_time_before_binance_existed_is_implausible(parser, t):
    assert reason_of(parser, payload(T=t)) == "implausible_time"


def test_trade_time_days_ahead_of_our_clock_is_implausible(parser):
    two_days_ahead = int(time.time() * 1000) + 2 * 86_400_000

    assert reason_of(parser, payload(T=two_days_ahead)) == "implausible_time"


def test_trade_time_slightly_ahead_of_our_clock_is_tolerated():
    now = 1_757_522_615_939

    assert trade_time_ms(now + 3_600_000, now_ms=now) == now + 3_600_000


def test_implausible_microsecond_time_is_checked_after_conversion():
    now = 1_757_522_615_939

    assert trade_time_ms(now * 1000, now_ms=now) == now
    with pytest.raises(InvalidMessage, match="implausible_time"):
        trade_time_ms(10 ** 14 + 1, now_ms=now)  # 1973 in microseconds


# -- serverShutdown and control replies ----------------------------------------------------------

def test_server_shutdown_raw_form(parser):
    assert parser.parse(b'{"e":"serverShutdown","E":1757522615939}') == \
        ServerShutdown(1757522615939)


def test_server_shutdown_combined_form(parser):
    data = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1757522615939}}'

    assert parser.parse(data) == ServerShutdown(1757522615939)


def test_server_shutdown_without_a_usable_time_is_still_a_shutdown(parser):
    assert isinstance(parser.parse(b'{"e":"serverShutdown"}'), ServerShutdown)
    assert isinstance(parser.parse(b'{"e":"serverShutdown","E":"soon"}'), ServerShutdown)


def test_subscribe_ack_is_a_control_reply(parser):
    assert parser.parse(b'{"result":null,"id":1}') == ControlReply(1, None, None)


def test_list_subscriptions_reply_carries_its_result(parser):
    reply = parser.parse(b'{"result":["btcusdt@trade"],"id":"req-3"}')

    assert reply == ControlReply("req-3", ["btcusdt@trade"], None)


@pytest.mark.parametrize("request_id", [2, None, "abc"])
def test_error_object_is_a_control_reply_with_the_error(parser, request_id):
    data = orjson.dumps({"error": {"code": 2, "msg": "Invalid request: invalid stream"},
                         "id": request_id})

    reply = parser.parse(data)

    assert reply == ControlReply(request_id, None,
                                 {"code": 2, "msg": "Invalid request: invalid stream"})


# -- REST rows -----------------------------------------------------------------------------------

REST_ROW = {"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",
            "time": 1499865549590, "isBuyerMaker": True, "isBestMatch": True}


def test_rest_historical_trade_row_maps_to_the_same_trade_model():
    assert trade_from_rest("BNBBTC", REST_ROW) == Trade("BNBBTC", 28457, "4.00000100",
                                                         "12.00000000", 1499865549590, True,
                                                         1499865549590000)


def test_rest_row_and_stream_event_of_one_trade_are_equal(parser):
    row = {"id": 5225367649, "price": "113747.89000000", "qty": "0.00060000",
           "quoteQty": "68.24873400", "time": 1757522615939, "isBuyerMaker": True,
           "isBestMatch": True}

    assert trade_from_rest("BTCUSDT", row) == parser.parse(CURRENT)


@pytest.mark.parametrize("field", ["id", "price", "qty", "time", "isBuyerMaker"])
def test_rest_row_without_a_field_is_missing_field(field):
    row = {k: v for k, v in REST_ROW.items() if k != field}

    with pytest.raises(InvalidMessage) as info:
        trade_from_rest("BNBBTC", row)

    assert info.value.reason == "missing_field"


def test_rest_row_that_is_not_an_object_is_refused():
    with pytest.raises(InvalidMessage, match="not_an_object"):
        trade_from_rest("BNBBTC", [28457, "4.00000100"])


def test_rest_row_is_checked_like_a_stream_event():
    with pytest.raises(InvalidMessage, match="bad_number"):
        trade_from_rest("BNBBTC", {**REST_ROW, "price": "0.00000000"})
    with pytest.raises(InvalidMessage, match="wrong_type"):
        trade_from_rest("BNBBTC", {**REST_ROW, "isBuyerMaker": "true"})


def test_make_trade_uses_the_given_clock_for_the_future_check():
    with pytest.raises(InvalidMessage, match="implausible_time"):
        make_trade("BTCUSDT", 1, "1", "1", 1_757_522_615_939, True, now_ms=1_600_000_000_000)


# -- stream names and URLs -----------------------------------------------------------------------

@pytest.mark.parametrize("symbol, name", [
    ("BTCUSDT", "btcusdt@trade"),
    ("1000SATSUSDT", "1000satsusdt@trade"),
    ("这是测试币456", "%E8%BF%99%E6%98%AF%E6%B5%8B%E8%AF%95%E5%B8%81456@trade"),
])
def test_stream_name_is_lowercase_or_url_encoded(symbol, name):
    assert stream_name(symbol) == name
