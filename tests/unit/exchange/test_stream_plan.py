"""How a worker's symbols are spread over connections, URLs and SUBSCRIBE messages."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from workers.exchange.stream_plan import MAX_URL_CHARS, plan_connections

BASE = "wss://stream.binance.com:9443"


def symbols(n: int) -> list:
    return [f"Q{i:04d}USDT" for i in range(n)]


def streams_of(plan) -> list:
    in_url = parse_qs(urlsplit(plan.url).query)["streams"][0].split("/")
    return in_url + [s for batch in plan.subscribe for s in batch]


def test_a_small_group_lists_every_symbol_on_the_stream_host():
    (plan,) = plan_connections(BASE + "/", ["BTCUSDT", "ETHUSDT"])
    assert plan.url == f"{BASE}/stream?streams=btcusdt@trade/ethusdt@trade&timeUnit=MICROSECOND"


def test_a_single_pair_is_one_connection_with_its_stream_in_the_url():
    (plan,) = plan_connections(BASE, ["BTCUSDT"])
    assert plan.url == f"{BASE}/stream?streams=btcusdt@trade&timeUnit=MICROSECOND"
    assert plan.subscribe == ()


def test_every_connection_asks_for_microsecond_times():
    """The unit is the connection's: streams added by SUBSCRIBE get it too."""
    for plan in plan_connections(BASE, symbols(2500)):
        assert parse_qs(urlsplit(plan.url).query)["timeUnit"] == ["MICROSECOND"]


def test_a_1000_symbol_group_keeps_its_url_under_the_limit_and_subscribes_the_rest():
    (plan,) = plan_connections(BASE, symbols(1000))
    assert len(plan.url) <= MAX_URL_CHARS
    assert plan.subscribe, "1000 streams cannot all fit an 8,000-character URL"
    assert all(len(batch) <= 200 for batch in plan.subscribe)
    assert streams_of(plan) == [f"q{i:04d}usdt@trade" for i in range(1000)]


def test_a_group_over_1024_symbols_is_spread_evenly_over_connections():
    plans = plan_connections(BASE, symbols(2500))
    assert [p.streams for p in plans] == [834, 833, 833]
    assert [p.label for p in plans] == ["s1", "s2", "s3"]
    every = [s for p in plans for s in streams_of(p)]
    assert every == [f"q{i:04d}usdt@trade" for i in range(2500)], "each stream once, in order"


def test_exactly_1024_symbols_fit_one_connection():
    assert len(plan_connections(BASE, symbols(1024))) == 1
    assert len(plan_connections(BASE, symbols(1025))) == 2


def test_a_tiny_url_budget_still_puts_one_stream_in_the_url():
    (plan,) = plan_connections(BASE, symbols(3), max_url_chars=10)
    assert plan.url.endswith("?streams=q0000usdt@trade&timeUnit=MICROSECOND")
    assert plan.subscribe == (("q0001usdt@trade", "q0002usdt@trade"),)
