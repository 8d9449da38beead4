"""Every InfluxDB our users run, as the front emulates it in front of the real influxd 1.6.7.

The worker's own write path (workers/storage/sink.py InfluxSink, the official influxdb-client)
and read path (workers/storage/influx_query.py InfluxQuery) against a front of each flavor:
`1.8`, `2.7`, `3core`, `serverless` (and `lenient`, the default the rest of the suite uses).
Each spec asserts the answer ../shared/reference/influxdb-servers.md documents for that server
(tests/support/influx_front/dialects.py cites the rows). No live 2.x or 3.x server runs here:
these prove the worker against the documented dialects, not against the servers themselves.

The worker on each flavor (issue 19): a batch refused whole is split until only the refused
lines are set aside, 3 Core's overload answer is retried, a long look-back is read in windows,
and a bucket without a DBRP mapping is named with its fix.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Dict, List, Optional, Tuple, cast

import pytest

from tests.support.influx_fixtures import FLAVOR_TOKEN, FLAVORS, SERVERS, InfluxDb
from tests.support.influx_front import InfluxFront
from tests.support.timing import poll
from workers.errors import (
    ContentRefused,
    PartialWrite,
    PermanentWriteError,
    RetryableWriteError,
    SinkError,
)
from workers.health import Stats
from workers.settings import InfluxSettings, WriteSettings
from workers.storage.batch import Batch
from workers.storage.checkpoint import Checkpoint
from workers.storage.influx_query import InfluxQuery, last_trades_query
from workers.storage.sink import InfluxSink
from workers.storage.spool import Spool
from workers.storage.writer import Writer

TOKEN = FLAVOR_TOKEN
M = "price_ticks"
DAY_NS = 86_400 * 10 ** 9


def settings(front: InfluxFront, bucket: str, gzip_bodies: bool = False) -> InfluxSettings:
    return InfluxSettings(url=front.url, token=front.token or "", org="test-org", bucket=bucket,
                          measurement=M, health_measurement="streamer_health", timeout_s=10.0,
                          gzip=gzip_bodies)


def sink_write(front: InfluxFront, db: InfluxDb, body: str, gzip_bodies: bool = False,
               token: Optional[str] = None) -> Optional[SinkError]:
    """One write through the worker's sink: the error it raised, or None when all was stored."""
    s = settings(front, db.name, gzip_bodies)
    sink = InfluxSink(s if token is None else dataclasses.replace(s, token=token))
    try:
        sink.write(body)
    except (RetryableWriteError, PermanentWriteError) as exc:
        return exc
    finally:
        sink.close()
    return None


def trade_lines(n: int, start_ns: Optional[int] = None, symbol: str = "BTCUSDT") -> List[str]:
    start = time.time_ns() - 60 * 10 ** 9 if start_ns is None else start_ns
    return [f"{M},symbol={symbol} price={100 + i}.5,qty=0.25,trade_id={i}i {start + i}"
            for i in range(n)]


def stored(db: InfluxDb) -> int:
    rows = db.query(f'SELECT count("price") FROM "{M}"')
    return int(rows[0]["count"]) if rows else 0


def raw(front: InfluxFront, path: str, body: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        method: Optional[str] = None) -> Tuple[int, Message, bytes]:
    """A plain HTTP request, for what the official client does not send (or hides); the
    headers as received (their names in any case)."""
    req = urllib.request.Request(f"{front.url}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


# --- writes: what every flavor stores --------------------------------------------------------

@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_good_batch_is_stored_plain_or_gzipped_on_every_flavor(front_for, influx_db, flavor):
    front = front_for(flavor)
    assert sink_write(front, influx_db, "\n".join(trade_lines(3))) is None
    assert sink_write(front, influx_db, "\n".join(trade_lines(4, time.time_ns())),
                      gzip_bodies=True) is None

    assert stored(influx_db) == 7
    stats = front.stats()
    assert stats.flavor == flavor and stats.gzip_bodies == 1 and stats.refusals == {}


# --- writes: one line that does not parse -----------------------------------------------------

@pytest.mark.parametrize("flavor, error, status, kept, words", [
    # servers.md, Writes, "one line that does not parse"
    ("1.8", PartialWrite, 400, 4, '"error": "partial write: unable to parse'),
    ("2.7", ContentRefused, 400, 0, '"code": "invalid"'),
    ("3core", ContentRefused, 400, 0, '"code": "invalid"'),
    ("serverless", PartialWrite, 400, 4, "partial write has occurred, errors encountered on "
                                         "line(s): line 3: unable to parse"),
])
def test_a_line_that_does_not_parse_refuses_it_or_the_whole_batch(
        front_for, influx_db, flavor, error, status, kept, words):
    front = front_for(flavor)
    lines = trade_lines(5)
    lines[2] = f"{M},symbol=BTCUSDT price=oops {time.time_ns()}"

    refused = sink_write(front, influx_db, "\n".join(lines))

    assert refused is not None and type(refused) is error and refused.status == status
    assert words in str(refused)
    assert stored(influx_db) == kept
    assert front.stats().refused("parse") == 1


# --- writes: field type conflict --------------------------------------------------------------

@pytest.mark.parametrize("flavor, error, status, kept, words", [
    # servers.md, Writes, "field type conflict"
    ("1.8", PartialWrite, 400, 3, "partial write: field type conflict"),
    ("2.7", PartialWrite, 422, 3, "failure writing points to database: partial write: field "
                                  "type conflict"),
    ("3core", ContentRefused, 400, 0, "invalid column type for column 'price'"),
    ("serverless", PartialWrite, 400, 3, "partial write has occurred"),
])
def test_a_field_type_conflict_refuses_the_point_or_the_whole_batch(
        front_for, influx_db, flavor, error, status, kept, words):
    front = front_for(flavor)
    now = time.time_ns()
    influx_db.write_lines(f"{M},symbol=SEED price=1.5 {now - 10 ** 9}")  # price: a float
    lines = trade_lines(4, now)
    lines[1] = f'{M},symbol=BTCUSDT price="1.5",trade_id=1i {now + 1}'

    refused = sink_write(front, influx_db, "\n".join(lines))

    assert refused is not None and type(refused) is error and refused.status == status
    assert words in str(refused)
    assert stored(influx_db) == 1 + kept
    assert front.stats().refused("type_conflict") == 1


# --- writes: points older than the retention period --------------------------------------------

@pytest.mark.parametrize("flavor, error, status, kept, words", [
    # servers.md, Writes, "points older than retention"
    ("1.8", PartialWrite, 400, 2, "partial write: points beyond retention policy dropped=1"),
    ("2.7", PartialWrite, 422, 2, "failure writing points to database: partial write: points "
                                  "beyond retention policy dropped=1"),
    ("3core", ContentRefused, 400, 0, "outside the retention period"),
    ("serverless", PartialWrite, 400, 2, "line 1: point is outside the retention period"),
])
def test_a_point_older_than_the_retention_period(front_for, influx_db, flavor, error, status,
                                                 kept, words):
    # serverless: the free plan's 30 days is its default; the others keep what the bucket says
    front = front_for(flavor) if flavor == "serverless" else front_for(flavor, retention="30d")
    lines = trade_lines(1, time.time_ns() - 40 * DAY_NS) + trade_lines(2, time.time_ns())

    refused = sink_write(front, influx_db, "\n".join(lines))

    assert refused is not None and type(refused) is error and refused.status == status
    assert words in str(refused)
    assert stored(influx_db) == kept
    assert front.stats().refused("retention") == 1


# --- writes: too large -------------------------------------------------------------------------

@pytest.mark.parametrize("flavor, size, content_type, words", [
    # servers.md, Writes, "too large": 1.8 25 MB, 3 Core 10 MiB, Cloud Serverless 50 MB
    ("1.8", 25_000_001, "application/json", b'{"error": "http: request body too large"}'),
    ("3core", 10 * 1024 ** 2 + 1, "application/json", b"max request size (10485760 bytes)"),
    ("serverless", 50_000_001, "text/html", b"<center>nginx</center>"),
])
def test_a_body_over_the_flavors_limit_gets_413_in_its_form(front_for, influx_db, flavor, size,
                                                            content_type, words):
    front = front_for(flavor)
    body = b"#" * size  # a comment: nothing would be stored even if it went through
    status, headers, answer = raw(front, f"/api/v2/write?org=o&bucket={influx_db.name}", body,
                                  {"Authorization": f"Token {front.token}"})

    assert status == 413 and headers["Content-Type"].startswith(content_type)
    assert words in answer
    refused = sink_write(front, influx_db, "#" * size)
    assert isinstance(refused, ContentRefused) and refused.status == 413
    assert front.stats().refused("too_large") == 2


def test_3core_counts_the_inflated_size_of_a_gzip_body_too(front_for, influx_db):
    front = front_for("3core")
    body = gzip.compress(b"#" * (11 * 1024 ** 2))  # ~11 KB sent, 11 MiB inflated
    status, _, answer = raw(front, f"/api/v2/write?org=o&bucket={influx_db.name}", body,
                            {"Authorization": f"Token {front.token}",
                             "Content-Encoding": "gzip"})
    assert status == 413 and b"max request size" in answer


# --- writes: the quota, 429 and 503 ------------------------------------------------------------

def wait_for_a_fresh_window(window_s: float, margin_s: float) -> None:
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.05)


def test_the_quota_counts_uncompressed_bytes_per_fixed_window_then_429_with_retry_after(
        front_for, influx_db):
    front = front_for("serverless", write_quota="3KB/4s")
    wait_for_a_fresh_window(4.0, 1.5)
    first = "\n".join(trade_lines(40))  # ~3.3 KB, ~0.5 KB gzipped
    assert sink_write(front, influx_db, first, gzip_bodies=True) is None
    assert front.stats().quota_used_bytes == len(first)  # what it inflates to, not the gzip

    over = sink_write(front, influx_db, "\n".join(trade_lines(1, time.time_ns())))

    assert isinstance(over, RetryableWriteError) and over.status == 429
    assert over.retry_after is not None and 1 <= over.retry_after <= 4
    status, headers, answer = raw(front, f"/api/v2/write?bucket={influx_db.name}", b"m v=1",
                                  {"Authorization": f"Token {front.token}"})
    assert (status, answer) == (429, b"") and 1 <= int(headers["Retry-After"]) <= 4
    time.sleep(over.retry_after)
    assert sink_write(front, influx_db, "\n".join(trade_lines(1, time.time_ns()))) is None
    assert stored(influx_db) == 41
    assert front.stats().refused("quota") == 2


@pytest.mark.parametrize("flavor, body", [("2.7", b'"code": "unavailable"'),
                                          ("serverless", b"")])
def test_503_with_retry_after_is_retryable(front_for, influx_db, flavor, body):
    front = front_for(flavor)
    front.fault("unavailable", count=2, retry_after=7)

    refused = sink_write(front, influx_db, "\n".join(trade_lines(2)))
    status, headers, answer = raw(front, f"/api/v2/write?bucket={influx_db.name}", b"m v=1",
                                  {"Authorization": f"Token {front.token}"})

    assert isinstance(refused, RetryableWriteError) and refused.retry_after == 7
    assert status == 503 and headers["Retry-After"] == "7" and body in answer
    assert front.stats().refused("fault_unavailable") == 2


def test_3cores_overload_answer_is_retried_not_set_aside(front_for, influx_db):
    front = front_for("3core")
    front.fault("overloaded", count=1)

    refused = sink_write(front, influx_db, "\n".join(trade_lines(2)))

    assert isinstance(refused, RetryableWriteError)


# --- writes: auth forms ------------------------------------------------------------------------

@pytest.mark.parametrize("flavor, header, status", [
    # servers.md, Writes, "auth"
    ("1.8", f"Token tester:{TOKEN}", 204), ("1.8", f"Token {TOKEN}", 401),
    ("2.7", f"Token {TOKEN}", 204), ("2.7", f"Bearer {TOKEN}", 401),
    ("3core", f"Token {TOKEN}", 204), ("3core", f"Bearer {TOKEN}", 204),
    ("serverless", f"Token {TOKEN}", 204), ("serverless", f"Bearer {TOKEN}", 401),
    ("3core", "Token wrong", 401),
])
def test_the_write_auth_forms_each_flavor_takes(front_for, influx_db, flavor, header, status):
    front = front_for(flavor)
    got, _, _ = raw(front, f"/api/v2/write?org=o&bucket={influx_db.name}",
                    trade_lines(1)[0].encode(), {"Authorization": header})
    assert got == status
    assert front.stats().refused("auth") == (status == 401)


def test_the_sinks_token_is_taken_on_every_flavor_and_a_wrong_one_refused(front_for, influx_db):
    for flavor in SERVERS:
        front = front_for(flavor)
        assert sink_write(front, influx_db, trade_lines(1, time.time_ns())[0]) is None
        refused = sink_write(front, influx_db, trade_lines(1)[0], token="tester:wrong")
        assert isinstance(refused, PermanentWriteError) and refused.status == 401, flavor
    assert stored(influx_db) == len(SERVERS)


def test_3core_creates_the_database_on_first_write(front_for, influx_server, influx_db):
    front = front_for("3core")
    fresh = InfluxDb(influx_db.name + "_new", influx_server)
    try:
        assert sink_write(front, fresh, "\n".join(trade_lines(2))) is None
        assert stored(fresh) == 2
    finally:
        influx_server.drop_database(fresh.name)


# --- reads -------------------------------------------------------------------------------------

def reader(front: InfluxFront, bucket: str) -> InfluxQuery:
    return InfluxQuery(settings(front, bucket))


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_worker_reads_its_last_trades_on_every_flavor(front_for, influx_db, flavor):
    front = front_for(flavor)
    influx_db.write_lines("\n".join(trade_lines(3)))
    if flavor == "serverless":
        front.create_dbrp(influx_db.name, influx_db.name)

    found = reader(front, influx_db.name).last_trades(["BTCUSDT"], lookback_h=24)

    assert found["BTCUSDT"][0] == 2
    assert front.stats().refusals == {}


def test_serverless_answers_database_not_found_in_a_200_until_a_dbrp_mapping_exists(
        front_for, influx_db):
    front = front_for("serverless")
    influx_db.write_lines("\n".join(trade_lines(3)))
    query = reader(front, "ticks_v1")  # what a user's InfluxQL clients name the database
    status, _, answer = raw(front, "/query?db=ticks_v1&q=SHOW+MEASUREMENTS",
                            headers={"Authorization": f"Token {TOKEN}"})
    assert status == 200 and json.loads(answer) == {
        "results": [{"statement_id": 0, "error": "database not found: ticks_v1"}]}
    with pytest.raises(SinkError, match="database not found: ticks_v1") as err:
        query.last_trades(["BTCUSDT"], lookback_h=24)
    assert err.value.status is None  # not an HTTP error: a 200 carrying it

    made = front.create_dbrp("ticks_v1", influx_db.name)

    assert made["database"] == "ticks_v1" and made["bucketID"] == influx_db.name
    assert query.last_trades(["BTCUSDT"], lookback_h=24)["BTCUSDT"][0] == 2
    assert front.stats().refused("dbrp") == 2


def test_3core_refuses_a_query_over_more_than_72h_or_with_no_time_bound(front_for, influx_db):
    front = front_for("3core")
    influx_db.write_lines("\n".join(trade_lines(3)))
    query = reader(front, influx_db.name)

    assert query.last_trades(["BTCUSDT"], lookback_h=72)["BTCUSDT"][0] == 2
    for refused in (last_trades_query(M, ["BTCUSDT"], 24 * 7), f'SELECT count(price) FROM "{M}"'):
        with pytest.raises(SinkError, match="file limit of 432 parquet files") as err:
            query.query(refused)
        assert err.value.status == 400
    # walked in windows, a week is fine: each query is bounded
    now = time.time_ns()
    assert len(list(query.trade_ids("BTCUSDT", now - 7 * DAY_NS, now, 3600))) == 3
    assert query.last_trades(["BTCUSDT"], lookback_h=24 * 7)["BTCUSDT"][0] == 2
    influx_db.write_lines(trade_lines(1, now - 5 * DAY_NS, "ETHUSDT")[0])  # five days ago
    assert query.last_trades(["BTCUSDT", "ETHUSDT"], lookback_h=24 * 7)["ETHUSDT"][0] == 0
    assert front.stats().refused("query_span") == 2


def test_3core_answers_a_missing_database_with_404(front_for):
    front = front_for("3core")
    with pytest.raises(SinkError) as err:
        reader(front, "no_such_db").last_trades(["BTCUSDT"], lookback_h=1)
    assert err.value.status == 404 and "database not found" in str(err.value)


@pytest.mark.parametrize("flavor, params, status", [
    # servers.md, Reads, "auth"
    ("lenient", f"p={TOKEN}", 200),
    ("1.8", f"u=tester&p={TOKEN}", 200), ("1.8", f"p={TOKEN}", 401),
    ("2.7", f"p={TOKEN}", 401), ("2.7", f"u=grafana&p={TOKEN}", 200),
    ("3core", f"p={TOKEN}", 200), ("3core", f"u=ignored&p={TOKEN}", 200),
    ("serverless", f"u=anyone&p={TOKEN}", 200), ("serverless", "u=anyone&p=wrong", 401),
])
def test_the_query_auth_forms_each_flavor_takes(front_for, influx_db, flavor, params, status):
    front = front_for(flavor)
    if flavor == "serverless":
        front.create_dbrp(influx_db.name, influx_db.name)
    got, _, _ = raw(front, f"/query?db={influx_db.name}&q=SHOW+MEASUREMENTS&{params}")
    assert got == status


@pytest.mark.parametrize("flavor, refused", [("2.7", False), ("3core", True),
                                             ("serverless", True)])
@pytest.mark.parametrize("q", [
    f"SELECT price FROM {M} WHERE time > now() - 1h GROUP BY symbol SLIMIT 1",
    f"SELECT sample(price, 2) FROM {M} WHERE time > now() - 1h",
    "SHOW SERIES", "SELECT price FROM {db}..price_ticks WHERE time > now() - 1h"])
def test_influxql_that_3x_lacks_is_refused_there(front_for, influx_db, flavor, refused, q):
    front = front_for(flavor)
    if flavor == "serverless":
        front.create_dbrp(influx_db.name, influx_db.name)
    with pytest.raises(SinkError) if refused else contextlib.nullcontext():
        reader(front, influx_db.name).query(q.format(db=influx_db.name))
    assert front.stats().refused("influxql_unsupported") == int(refused)


@pytest.mark.parametrize("flavor, status, version", [
    # influxdb.md §4 "Health endpoints"
    ("lenient", 204, "2.7.0-influx-front"), ("1.8", 204, "1.8.10"), ("2.7", 204, "v2.7.12"),
    ("3core", 200, "3.10.0"), ("serverless", 404, None)])
def test_ping_answers_as_each_server_does(front_for, flavor, status, version):
    front = front_for(flavor)
    got, headers, _ = raw(front, "/ping", headers={"Authorization": f"Token {front.token}"})
    assert got == status and headers.get("X-Influxdb-Version") == version
    if flavor == "3core":
        assert raw(front, "/ping")[0] == 401  # a token is needed
        assert raw(front, "/ping", method="HEAD")[0] == 404


# --- the worker on each flavor: refused lines set aside, and only those ------------------------

def make_writer(front: InfluxFront, db: InfluxDb, tmp_path: Path, stats: Stats,
                retry_budget_s: float = 20.0) -> Writer:
    """The worker's Writer and sink on `front`, its spool and rejected.lp under tmp_path/w."""
    return Writer("w", InfluxSink(settings(front, db.name)),
                  Spool(tmp_path / "w" / "spool", db.name, "w"),
                  Checkpoint(tmp_path / "w" / "checkpoint.json", "w"),
                  WriteSettings(batch_size=5000, flush_interval_s=1.0, retry_initial_s=0.2,
                                retry_max_delay_s=1.0, retry_budget_s=retry_budget_s,
                                queue_batches=4), stats)


def write_with_the_writer(front: InfluxFront, db: InfluxDb, tmp_path: Path,
                          lines: List[str]) -> Stats:
    """One batch of BTCUSDT trades through the Writer; its Stats once the batch is settled
    (stored, or its refused lines set aside)."""
    stats = Stats()
    writer = make_writer(front, db, tmp_path, stats)
    writer.start()
    last = len(lines) - 1
    writer.submit(Batch(1, lines, len(lines), {"BTCUSDT": last}, int(time.time() * 1000)))
    checkpoint = cast(Checkpoint, writer.checkpoint)  # the Writer takes any DurableMarks
    assert poll(lambda: checkpoint.snapshot().get("BTCUSDT") == last, timeout=60)
    writer.stop(10.0)
    return stats


def rejected_file_lines(tmp_path: Path) -> List[str]:
    path = tmp_path / "w" / "rejected.lp"
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_the_writer_sets_aside_exactly_the_refused_lines(front_for, influx_db, tmp_path: Path,
                                                         flavor):
    front = front_for(flavor)
    lines = trade_lines(500)
    bad = (17, 250, 480)
    for i in bad:
        lines[i] = f"{M},symbol=BTCUSDT price=oops,trade_id={i}i {time.time_ns() + i}"

    stats = write_with_the_writer(front, influx_db, tmp_path, lines)

    assert stats.rejected_lines == len(bad)
    assert stored(influx_db) == len(lines) - len(bad)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_3_refused_lines_among_5000_set_aside_exactly_those_and_store_every_other_trade(
        front_for, influx_db, tmp_path: Path, flavor, capsys):
    # issue 19, "Done when". 2.7 and 3 Core refuse the whole batch for a line that does not
    # parse, 1.8 and Serverless store the others: either way only those 3 are set aside.
    front = front_for(flavor)
    start = time.time_ns() - 60 * 10 ** 9
    lines = trade_lines(5000, start)
    bad = (17, 2500, 4321)
    for i in bad:  # dated as their neighbours: scattered through the batch, not one run
        lines[i] = f"{M},symbol=BTCUSDT price=oops,trade_id={i}i {start + i}"

    stats = write_with_the_writer(front, influx_db, tmp_path, lines)

    assert sorted(rejected_file_lines(tmp_path)) == sorted(lines[i] for i in bad)
    assert stats.rejected_lines == 3 and stats.spooled == 0
    assert stored(influx_db) == 4997
    ids = {int(r["trade_id"]) for r in influx_db.query(f'SELECT trade_id FROM "{M}"')}
    assert ids == set(range(5000)) - set(bad)
    extra = stats.write_requests - 1
    assert extra <= 2 * len(bad) * 13  # 2 requests per level (ceil(log2(5000))) per line
    with capsys.disabled():
        print(f"\n[{flavor}] 3 refused lines among 5000: {extra} extra write requests")


def test_a_429_on_serverless_is_waited_out_with_the_batches_spooled_and_none_lost(
        front_for, influx_db, tmp_path):
    # the free plan's quota, shrunk to 3 KB per 4 s window: the second batch crosses it
    front = front_for("serverless", write_quota="3KB/4s")
    wait_for_a_fresh_window(4.0, 3.0)
    stats = Stats()
    writer = make_writer(front, influx_db, tmp_path, stats, retry_budget_s=1.0)
    writer.start()
    start = time.time_ns()
    for k in range(4):  # ~2.4 KB each
        ids = range(40 * k, 40 * k + 40)
        writer.submit(Batch(k + 1, [f"{M},symbol=BTCUSDT price=1.5,qty=0.25,trade_id={i}i "
                                    f"{start + i}" for i in ids], 40, {"BTCUSDT": ids[-1]},
                            int(time.time() * 1000)))

    assert poll(lambda: stats.write_quota_until > 0, timeout=10)
    assert time.time() < stats.write_quota_until <= time.time() + 4.5  # the window's end
    assert poll(lambda: stored(influx_db) == 160, timeout=30)  # after the wait
    writer.stop(10.0)
    assert stats.rejected_lines == 0 and stats.spooled > 0 and stats.written + \
        stats.replayed == 160
    assert front.stats().refused("quota") == 1  # no request while it waited
