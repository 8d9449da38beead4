"""What the 3.x flavors refuse of an InfluxQL query, from its text.

3 Core refuses a SELECT that would scan more than 432 Parquet files (~72 h at its defaults):
the front refuses by the span asked, with no lower time bound counting as unbounded. 3 Core and
Cloud Serverless lack SLIMIT/SOFFSET, SAMPLE(), SHOW SERIES, FROM db..m and the
technical-analysis functions (influxdb-servers.md, Reads).
"""
from __future__ import annotations

import pytest

from tests.support.influx_front.influxql import (
    FILE_LIMIT_MESSAGE,
    rfc3339_ns,
    span_refusal,
    split_statements,
    time_bounds,
    unsupported_feature,
    value_ns,
)

H = 3_600_000_000_000
NOW = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z
LIMIT = 72 * H


def test_time_values_read_now_durations_rfc3339_and_epoch_integers():
    assert value_ns("now()", NOW) == NOW
    assert value_ns("now() - 24h", NOW) == NOW - 24 * H
    assert value_ns("now()-1h30m", NOW) == NOW - 90 * 60 * 1_000_000_000
    assert value_ns("1700000000000ms", NOW) == NOW
    assert value_ns("1700000000000000000", NOW) == NOW
    assert value_ns("'2023-11-14T22:13:20Z'", NOW) == NOW
    assert rfc3339_ns("2023-11-14T22:13:20.000000001Z") == NOW + 1
    assert rfc3339_ns("2023-11-14T23:13:20+01:00") == NOW
    assert rfc3339_ns("2023-11-14") == NOW - (22 * 3600 + 13 * 60 + 20) * 1_000_000_000


def test_bounds_come_from_every_time_condition_and_the_upper_defaults_to_now():
    assert time_bounds("SELECT x FROM m WHERE time > now() - 1h", NOW) == (NOW - H, NOW)
    assert time_bounds(f"SELECT x FROM m WHERE symbol = 'a' AND time >= {NOW - 5 * H} AND "
                       f"time < {NOW - H}", NOW) == (NOW - 5 * H, NOW - H)
    assert time_bounds('SELECT x FROM m WHERE "time" >= now() - 2h', NOW) == (NOW - 2 * H, NOW)
    assert time_bounds("SELECT x FROM m", NOW) == (None, NOW)


@pytest.mark.parametrize("query", [
    "SELECT max(trade_id) FROM price_ticks WHERE time > now() - 72h GROUP BY symbol",
    f"SELECT trade_id FROM t WHERE symbol = 'X' AND time >= {NOW - 3 * H} AND time < {NOW}",
    "SELECT mean(price) FROM t WHERE time >= 1699900000000ms and time <= 1700000000000ms",
    "SELECT * FROM (SELECT price FROM t WHERE time > now() - 1h)",  # the subquery's bound
    'SHOW TAG VALUES FROM "t" WITH KEY = "symbol" WHERE time > now() - 24h',
    "SHOW MEASUREMENTS", 'SHOW FIELD KEYS FROM "t"', 'SHOW TAG KEYS FROM "t"',  # the catalog
])
def test_a_bounded_select_within_72h_or_a_catalog_query_passes(query):
    assert span_refusal(query, NOW, LIMIT) is None


@pytest.mark.parametrize("query", [
    "SELECT count(price) FROM price_ticks",  # no time bound at all
    "SELECT max(trade_id) FROM price_ticks WHERE time > now() - 7d GROUP BY symbol",
    "SELECT price FROM t WHERE time < now()",  # an upper bound only
    f"SELECT trade_id FROM t WHERE time >= {NOW - 73 * H} AND time < {NOW}",
    "SELECT 1 FROM t WHERE time > now() - 1h; SELECT price FROM t",  # one statement is enough
    "SHOW TAG VALUES FROM t WITH KEY = symbol",  # reads the data: bounded as a SELECT
    'show tag values with key = "host" where time > now() - 7d',
])
def test_an_unbounded_or_longer_select_or_tag_values_is_refused_in_3_cores_words(query):
    assert span_refusal(query, NOW, LIMIT) == FILE_LIMIT_MESSAGE
    assert "Query would exceed file limit of 432 parquet files" in FILE_LIMIT_MESSAGE


def test_statements_split_at_semicolons_outside_quotes():
    assert split_statements("SELECT 'a;b' FROM m; SHOW DATABASES;") == [
        "SELECT 'a;b' FROM m", "SHOW DATABASES"]


@pytest.mark.parametrize("query, feature", [
    ("SELECT price FROM t GROUP BY symbol SLIMIT 1", "SLIMIT or SOFFSET"),
    ("SELECT price FROM t GROUP BY * SOFFSET 2", "SLIMIT or SOFFSET"),
    ("SELECT sample(price, 3) FROM t", "SAMPLE()"),
    ("SHOW SERIES FROM t", "SHOW SERIES"),
    ("SHOW SERIES CARDINALITY", "SHOW SERIES"),
    ('SELECT price FROM ticks..price_ticks', "a database in FROM (db..m, db.rp.m)"),
    ('SELECT price FROM "ticks"."autogen"."price_ticks"', "a database in FROM (db..m, db.rp.m)"),
    ("SELECT holt_winters(first(price), 10, 4) FROM t", "technical-analysis functions"),
    ("SELECT relative_strength_index(price, 14) FROM t", "technical-analysis functions"),
])
def test_what_3x_influxql_lacks_is_named(query, feature):
    assert unsupported_feature(query) == feature


@pytest.mark.parametrize("query", [
    "SELECT moving_average(price, 3) FROM t WHERE time > now() - 1h",
    "SELECT max(trade_id) FROM price_ticks GROUP BY symbol",
    "SELECT price FROM autogen.price_ticks",  # rp.m without a database
    "SHOW TAG VALUES FROM t WITH KEY = symbol",
    "SELECT price FROM t WHERE note = 'SLIMIT 5'",  # inside a string: not the clause
    "SELECT mean(price) FROM t GROUP BY time(1m) fill(none)",
])
def test_what_3x_implements_passes(query):
    assert unsupported_feature(query) is None
