"""The front's flavors: the table of what each server does, and the pure rules that read it.

Each expectation is a row of ../shared/reference/influxdb-servers.md (Writes, Reads) or of
influxdb.md; `lenient`, the default, is the front as it always was.
"""
from __future__ import annotations

import base64
import json

import pytest

from tests.support.influx_front.dbrp import DbrpTable
from tests.support.influx_front.dialects import (
    DIALECTS,
    FLAVORS,
    LENIENT,
    NGINX_413,
    dialect,
    query_authorized,
    render_error,
    resolve_limits,
    write_authorized,
)
from tests.support.influx_front.lineproto import LineError, parse_line
from tests.support.influx_front.quota import QuotaSpec
from tests.support.influx_front.writes import check_lines, native_partial, refusal

DAY_NS = 86_400_000_000_000
NOW = 1_700_000_000 * 1_000_000_000
GOOD = b"price_ticks,symbol=BTCUSDT price=1.5,qty=2.0,trade_id=7i 1700000000000000000"
BAD = b"price_ticks,symbol=BTCUSDT price=oops 1700000000000000001"
STRING_PRICE = b'price_ticks,symbol=ETHUSDT price="1.5" 1700000000000000002'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the table ---------------------------------------------------------------------------------

def test_the_flavors_are_the_default_and_the_four_servers():
    assert FLAVORS == (LENIENT, "1.8", "2.7", "3core", "serverless")
    with pytest.raises(ValueError, match="unknown flavor 'cloud-tsm'"):
        dialect("cloud-tsm")


@pytest.mark.parametrize("name, parse, conflict, retention", [
    (LENIENT, "native", "native", "partial"),
    ("1.8", "native", "native", "partial"),  # influxd 1.6.7 stores the good lines, as 1.8
    ("2.7", "whole", "native", "partial"),
    ("3core", "whole", "whole", "whole"),  # compat paths force accept_partial=false
    ("serverless", "partial", "partial", "partial"),
])
def test_partial_or_whole_batch_per_flavor(name, parse, conflict, retention):
    d = DIALECTS[name]
    assert (d.parse_error, d.type_conflict, d.retention) == (parse, conflict, retention)


@pytest.mark.parametrize("name, quota, body, inflated, retention, span", [
    (LENIENT, None, None, None, None, None),
    ("1.8", None, 25_000_000, None, None, None),
    ("2.7", None, None, None, None, None),
    ("3core", None, 10 * 1024 ** 2, 10 * 1024 ** 2, None, 72 * 3600 * 10 ** 9),
    ("serverless", QuotaSpec(5_000_000, 300.0), 50_000_000, 250_000_000, 30 * DAY_NS, None),
])
def test_every_limit_is_on_by_default_for_its_flavor(name, quota, body, inflated, retention,
                                                      span):
    limits = resolve_limits(DIALECTS[name])
    assert (limits.quota, limits.max_body, limits.max_inflated, limits.retention_ns,
            limits.query_span_ns) == (quota, body, inflated, retention, span)


def test_each_limit_can_be_set_or_turned_off():
    limits = resolve_limits(DIALECTS["serverless"], write_quota="2KB/2s", max_body="off",
                            retention="off", query_span="1h")
    assert limits.quota == QuotaSpec(2000, 2.0) and limits.max_body is None
    assert limits.retention_ns is None and limits.query_span_ns == 3600 * 10 ** 9
    assert limits.max_inflated == 250_000_000  # not given: the flavor's


# --- bodies ------------------------------------------------------------------------------------

def test_error_bodies_take_the_flavors_form():
    assert json.loads(render_error(DIALECTS[LENIENT], 400, "x")[0]) == {"code": "invalid",
                                                                        "message": "x"}
    assert json.loads(render_error(DIALECTS["1.8"], 400, "x")[0]) == {"error": "x"}
    assert json.loads(render_error(DIALECTS["2.7"], 422, "x")[0])["code"] == \
        "unprocessable entity"
    assert json.loads(render_error(DIALECTS["3core"], 400, "x")[0])["code"] == "invalid"


def test_serverless_answers_413_in_html_and_429_503_empty_never_assume_json():
    d = DIALECTS["serverless"]
    assert render_error(d, 413, "x") == (NGINX_413, "text/html")
    assert render_error(d, 429, "x") == (b"", "text/plain")
    assert render_error(d, 503, "x") == (b"", "text/plain")
    assert json.loads(render_error(d, 400, "x")[0])["message"] == "x"


def test_query_errors_of_3x_and_1x_are_v1_documents():
    assert json.loads(render_error(DIALECTS["3core"], 404, "x", query=True)[0]) == {"error": "x"}
    assert json.loads(render_error(DIALECTS[LENIENT], 401, "x", query=True)[0])["code"] == \
        "unauthorized"


# --- auth --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, header, ok", [
    (LENIENT, "Token t0k", True), (LENIENT, "Bearer t0k", False),
    ("2.7", "Token t0k", True), ("2.7", "Bearer t0k", False),
    ("3core", "Token t0k", True), ("3core", "Bearer t0k", True),
    ("serverless", "Token t0k", True), ("serverless", "Bearer t0k", False),
    ("2.7", "Token wrong", False), ("2.7", "", False),
])
def test_write_auth_forms(name, header, ok):
    assert write_authorized(DIALECTS[name], "t0k", header) is ok


def test_1_8_takes_token_user_colon_password():
    d = DIALECTS["1.8"]
    assert write_authorized(d, "ann:secret", "Token ann:secret")
    assert not write_authorized(d, "ann:secret", "Token secret")


@pytest.mark.parametrize("name, params, header, ok", [
    (LENIENT, {"p": "t0k"}, "", True),
    ("2.7", {"p": "t0k"}, "", False),  # p= alone: refused, u must be non-empty
    ("2.7", {"u": "", "p": "t0k"}, "", False),
    ("2.7", {"u": "anyone", "p": "t0k"}, "", True),
    ("2.7", {}, basic("anyone", "t0k"), True),
    ("2.7", {}, "Token t0k", True),
    ("3core", {"p": "t0k"}, "", True),  # u ignored
    ("3core", {"u": "x", "p": "t0k"}, "", True),
    ("3core", {}, "Bearer t0k", True),
    ("3core", {}, basic("grafana", "t0k"), True),
    ("serverless", {"u": "any", "p": "t0k"}, "", True),
    ("serverless", {}, "Token t0k", True),
    ("serverless", {"u": "any", "p": "nope"}, "", False),
    ("serverless", {}, "", False),
])
def test_query_auth_forms(name, params, header, ok):
    assert query_authorized(DIALECTS[name], "t0k", header, params) is ok


def test_1_8_query_auth_is_user_and_password():
    d = DIALECTS["1.8"]
    assert query_authorized(d, "ann:secret", "", {"u": "ann", "p": "secret"})
    assert query_authorized(d, "ann:secret", basic("ann", "secret"), {})
    assert query_authorized(d, "ann:secret", "Token ann:secret", {})
    assert not query_authorized(d, "ann:secret", "", {"u": "bob", "p": "secret"})
    assert not query_authorized(d, "ann:secret", "", {"p": "secret"})


def test_no_token_configured_lets_everything_in():
    for d in DIALECTS.values():
        assert write_authorized(d, None, "") and query_authorized(d, None, "", {})


# --- line protocol -----------------------------------------------------------------------------

def test_lines_parse_into_measurement_field_types_and_timestamp():
    parsed = parse_line(GOOD)
    assert parsed.measurement == "price_ticks" and parsed.timestamp == 1_700_000_000 * 10 ** 9
    assert parsed.fields == {"price": "float", "qty": "float", "trade_id": "integer"}
    escaped = parse_line(b'my\\ m,tag\\,k=v\\ 1 s="a, \\"b\\" c",ok=true,n=3u')
    assert escaped.measurement == "my\\ m" and escaped.timestamp is None
    assert escaped.fields == {"s": "string", "ok": "boolean", "n": "unsigned"}


@pytest.mark.parametrize("line", [
    BAD, b"m", b"m,t=1", b"m v=1 12x", b"m v=1 123\r", b"m,=1 v=1", b"m,t= v=1", b"m v=",
    b'm v="open', b"m v=1e", b"m v=NaN", b"m v=9223372036854775808i", b"m v=1,=2",
])
def test_lines_influxd_refuses_do_not_parse(line):
    with pytest.raises(LineError):
        parse_line(line)


# --- which lines a flavor refuses, and its answer ----------------------------------------------

def test_2_7_and_3core_refuse_the_whole_batch_for_one_line_that_does_not_parse():
    for name in ("2.7", "3core"):
        d = DIALECTS[name]
        answer = refusal(d, check_lines([GOOD, BAD, GOOD], d, {}, "ns", None, NOW))
        assert answer is not None and (answer.status, answer.kind) == (400, "parse")
        assert not answer.forward and "unable to parse" in answer.message
        assert "partial write" not in answer.message


def test_serverless_keeps_the_good_lines_and_lists_the_refused_ones():
    d = DIALECTS["serverless"]
    checked = check_lines([GOOD, BAD, GOOD], d, {}, "ns", None, NOW)
    answer = refusal(d, checked)

    assert checked.accepted == [GOOD, GOOD] and [r.number for r in checked.refused] == [2]
    assert answer is not None and answer.status == 400 and answer.forward
    assert answer.message.startswith("partial write has occurred, errors encountered on "
                                     "line(s): line 2: unable to parse")


def test_serverless_with_nothing_good_says_no_data_written():
    d = DIALECTS["serverless"]
    answer = refusal(d, check_lines([BAD], d, {}, "ns", None, NOW))
    assert answer is not None and not answer.forward
    assert answer.message.startswith("no data written")


def test_serverless_lists_at_most_100_lines():
    d = DIALECTS["serverless"]
    answer = refusal(d, check_lines([BAD] * 150 + [GOOD], d, {}, "ns", None, NOW))
    assert answer is not None and answer.message.count("unable to parse") == 100


def test_3x_fixes_a_columns_type_forever_by_the_tables_first_write():
    d = DIALECTS["3core"]
    stored = {"price_ticks": {"price": "float"}}
    answer = refusal(d, check_lines([GOOD, STRING_PRICE], d, stored, "ns", None, NOW))
    assert answer is not None and (answer.status, answer.kind, answer.forward) == (
        400, "type_conflict", False)
    assert "invalid column type for column 'price'" in answer.message
    # within one batch too: the first line fixes a new field's type
    first = [b"fresh v=1i 1", b'fresh v="s" 2']
    assert refusal(d, check_lines(first, d, {}, "ns", None, NOW)) is not None


def test_serverless_refuses_only_the_conflicting_points():
    d = DIALECTS["serverless"]
    checked = check_lines([GOOD, STRING_PRICE], d, {"price_ticks": {"price": "float"}}, "ns",
                          None, NOW)
    assert checked.accepted == [GOOD] and checked.refused[0].kind == "type_conflict"


def test_retention_refuses_points_older_than_the_period_per_flavor():
    old = f"m v=1 {(NOW - 31 * DAY_NS) // 1_000_000}".encode()  # ms precision
    recent = f"m v=1 {(NOW - DAY_NS) // 1_000_000}".encode()
    answers = {}
    for name in ("1.8", "2.7", "3core", "serverless"):
        d = DIALECTS[name]
        checked = check_lines([old, recent, b"m v=2"], d, {} if name in ("3core", "serverless")
                              else None, "ms", 30 * DAY_NS, NOW)
        assert [r.number for r in checked.refused] == [1]
        answer = refusal(d, checked)
        assert answer is not None, f"{name} refuses the old point"
        answers[name] = answer
    assert (answers["1.8"].status, answers["1.8"].forward) == (400, True)
    assert answers["1.8"].message == "partial write: points beyond retention policy dropped=1"
    assert (answers["2.7"].status, answers["2.7"].forward) == (422, True)
    assert answers["2.7"].message.startswith("failure writing points to database: partial write")
    assert (answers["3core"].status, answers["3core"].forward) == (400, False)
    assert (answers["serverless"].status, answers["serverless"].forward) == (400, True)


def test_nothing_refused_means_no_answer_of_the_flavors_own():
    for d in DIALECTS.values():
        assert refusal(d, check_lines([GOOD], d, {}, "ns", 30 * DAY_NS, NOW)) is None


def test_influxds_own_partial_write_in_each_flavors_words():
    conflict = 'partial write: field type conflict: input field "price" ... dropped=1'
    assert native_partial(DIALECTS[LENIENT], conflict) == (400, conflict)
    assert native_partial(DIALECTS["1.8"], conflict) == (400, conflict)
    assert native_partial(DIALECTS["2.7"], conflict) == (
        422, "failure writing points to database: " + conflict)
    status, text = native_partial(DIALECTS["serverless"], conflict)
    assert status == 400 and text.startswith("partial write has occurred")


# --- DBRP mappings -----------------------------------------------------------------------------

def test_a_dbrp_mapping_points_a_database_at_a_bucket():
    table = DbrpTable()
    assert table.bucket("ticks") is None
    made = table.create({"bucketID": "ticks_bucket", "database": "ticks",
                         "retention_policy": "autogen", "default": True, "orgID": "o"})

    assert made.as_doc()["id"] == "ticks/autogen"
    assert table.bucket("ticks") == "ticks_bucket"
    assert table.bucket("ticks", "autogen") == "ticks_bucket"
    assert table.bucket("ticks", "other_rp") is None
    assert table.bucket("other") is None


def test_a_new_default_mapping_takes_over_and_missing_fields_are_named():
    table = DbrpTable()
    table.create({"bucketID": "a", "database": "db", "retention_policy": "one"})
    table.create({"bucketID": "b", "database": "db", "retention_policy": "two"})
    assert table.bucket("db") == "b" and table.bucket("db", "one") == "a"
    with pytest.raises(ValueError, match="missing bucketID"):
        table.create({"database": "db"})


# --- scripts/influx-rig ------------------------------------------------------------------------

def test_the_rig_takes_a_flavor_and_gives_1_8_a_user_for_its_token():
    from tests.support.influx_rig import build_parser, rig_token

    args = build_parser().parse_args(["--flavor", "3core", "--write-quota", "5MB/5m"])
    assert (args.flavor, args.write_quota) == ("3core", "5MB/5m")
    assert build_parser().parse_args([]).flavor == LENIENT
    assert rig_token("1.8", "secret") == "rig:secret"
    assert rig_token("1.8", "ann:secret") == "ann:secret"
    assert rig_token("serverless", "secret") == "secret"
