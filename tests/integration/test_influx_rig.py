"""The InfluxDB test rig: real influxd 1.6.7 behind a front that speaks the 2.x write API.

These tests pin what the rest of the suite relies on: the official influxdb-client can write
through the front, timestamps land at the exact instant for every precision, and each injected
fault looks to the client like the real failure it stands for.
"""
from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import pytest
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException

from tests.support.influx_front import InfluxFront
from tests.support.influx_server import InfluxServer
from tests.support.procs import ON_CI, wait_until

if TYPE_CHECKING:
    from tests.support.influx_fixtures import InfluxDb

# The fixtures influx_server, influx_db and influx_front (until tests/conftest.py offers them);
# registered as a plugin rather than imported, so pytest can rewrite its asserts.

ORG = "test-org"  # the front ignores the org, as 1.8's v2 API does

# 2023-11-14T22:13:20.123456789Z: every digit differs, so a unit slip cannot go unnoticed.
T_NS = 1_700_000_000_123_456_789


@contextmanager
def v2_writer(front: InfluxFront, token: Optional[str] = None,
              gzip_bodies: bool = False) -> Iterator[WriteApi]:
    """A SYNCHRONOUS WriteApi of the official client, pointed at the front.

    `token` defaults to the front's own; "" sends no Authorization header at all.
    """
    token = (front.token or "") if token is None else token
    with InfluxDBClient(url=front.url, token=token, org=ORG, timeout=10_000,
                        enable_gzip=gzip_bodies) as client:
        yield client.write_api(write_options=SYNCHRONOUS)


def post_write(front: InfluxFront, query: str, body: bytes) -> tuple[int, bytes]:
    """A raw POST /api/v2/write, for what the official client will not send."""
    req = urllib.request.Request(f"{front.url}/api/v2/write?{query}", data=body, method="POST",
                                 headers={"Authorization": f"Token {front.token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def count_rows(db: InfluxDb, measurement: str = "trade") -> int:
    return len(db.query(f'SELECT * FROM "{measurement}"'))


def lines(n: int, start_ns: int = T_NS) -> str:
    return "\n".join(f"trade,symbol=BTCUSDT price={i}.5,trade_id={i}i {start_ns + i}"
                     for i in range(n))


# --- writing through the front ---------------------------------------------------------------

def test_ns_write_through_the_official_client_lands_at_the_exact_nanosecond(
        influx_front: InfluxFront, influx_db: InfluxDb) -> None:
    with v2_writer(influx_front) as api:
        api.write(bucket=influx_db.name, record=f"trade,symbol=BTCUSDT price=42.5 {T_NS}",
                  write_precision=WritePrecision.NS)  # type: ignore[arg-type]

    assert influx_db.query('SELECT "price", "symbol" FROM "trade"') == [
        {"time": T_NS, "price": 42.5, "symbol": "BTCUSDT"}]


@pytest.mark.parametrize("precision, stamp, expected_ns", [
    (WritePrecision.US, T_NS // 1_000, T_NS // 1_000 * 1_000),
    (WritePrecision.MS, T_NS // 1_000_000, T_NS // 1_000_000 * 1_000_000),
    (WritePrecision.S, T_NS // 1_000_000_000, T_NS // 1_000_000_000 * 1_000_000_000),
])
def test_coarser_precisions_land_at_the_same_instant(
        influx_front: InfluxFront, influx_db: InfluxDb, precision: str, stamp: int,
        expected_ns: int) -> None:
    # 1.6.7 would read a passed-through `us` as nanoseconds: this pins the mapping us -> u.
    with v2_writer(influx_front) as api:
        api.write(bucket=influx_db.name, record=f"trade,symbol=BTCUSDT price=1 {stamp}",
                  write_precision=precision)  # type: ignore[arg-type]

    assert [row["time"] for row in influx_db.query('SELECT "price" FROM "trade"')] == [expected_ns]


def test_an_unknown_precision_is_rejected_like_2x(influx_front: InfluxFront,
                                                  influx_db: InfluxDb) -> None:
    status, body = post_write(influx_front, f"org=o&bucket={influx_db.name}&precision=n",
                              lines(1).encode())

    assert status == 400 and b'"code": "invalid"' in body
    assert count_rows(influx_db) == 0


def test_missing_precision_means_nanoseconds(influx_front: InfluxFront,
                                             influx_db: InfluxDb) -> None:
    status, _ = post_write(influx_front, f"org=o&bucket={influx_db.name}", lines(1).encode())

    assert status == 204
    assert influx_db.query('SELECT "price" FROM "trade"')[0]["time"] == T_NS


def test_gzip_bodies_are_forwarded_compressed_and_stored(influx_front: InfluxFront,
                                                         influx_db: InfluxDb) -> None:
    with v2_writer(influx_front, gzip_bodies=True) as api:
        api.write(bucket=influx_db.name, record=lines(50), write_precision=WritePrecision.NS)  # type: ignore[arg-type]

    stats = influx_front.stats()
    assert stats.gzip_bodies == 1 and stats.lines_forwarded == 50
    assert count_rows(influx_db) == 50


def test_bucket_db_slash_rp_selects_the_retention_policy(influx_front: InfluxFront,
                                                         influx_db: InfluxDb) -> None:
    with v2_writer(influx_front) as api:
        api.write(bucket=f"{influx_db.name}/autogen", record=lines(2))
        with pytest.raises(ApiException) as missing_rp:
            api.write(bucket=f"{influx_db.name}/nope", record=lines(2))

    assert count_rows(influx_db) == 2
    assert missing_rp.value.status == 404  # 1.6.7 says 500; a 2.x client sees no such bucket


@pytest.mark.parametrize("token", ["", "wrong-token"], ids=["missing", "wrong"])
def test_a_missing_or_wrong_token_gets_401_and_stores_nothing(
        influx_front: InfluxFront, influx_db: InfluxDb, token: str) -> None:
    with v2_writer(influx_front, token=token) as api:
        with pytest.raises(ApiException) as err:
            api.write(bucket=influx_db.name, record=lines(3))

    assert err.value.status == 401
    assert '"code": "unauthorized"' in err.value.body
    assert count_rows(influx_db) == 0


def test_a_missing_bucket_gets_a_2x_style_404(influx_front: InfluxFront) -> None:
    with v2_writer(influx_front) as api:
        with pytest.raises(ApiException) as err:
            api.write(bucket="no_such_db", record=lines(1))

    assert err.value.status == 404
    assert '"code": "not found"' in err.value.body
    assert 'bucket \\"no_such_db\\" not found' in err.value.body


# --- faults -----------------------------------------------------------------------------------

def test_throttle_answers_429_with_retry_after_then_lets_writes_through(
        influx_front: InfluxFront, influx_db: InfluxDb) -> None:
    influx_front.fault("throttle", count=2, retry_after=7)

    with v2_writer(influx_front) as api:
        for _ in range(2):
            with pytest.raises(ApiException) as err:
                api.write(bucket=influx_db.name, record=lines(1))
            assert err.value.status == 429
            assert err.value.headers["Retry-After"] == "7"
        api.write(bucket=influx_db.name, record=lines(1))

    assert count_rows(influx_db) == 1
    assert influx_front.stats().by_status == {"429": 2, "204": 1}


@pytest.mark.parametrize("action, status", [("unavailable", 503), ("server_error", 500),
                                            ("unauthorized", 401)])
def test_status_faults_answer_their_status_and_store_nothing(
        influx_front: InfluxFront, influx_db: InfluxDb, action: str, status: int) -> None:
    influx_front.fault(action, count=1)

    with v2_writer(influx_front) as api:
        with pytest.raises(ApiException) as err:
            api.write(bucket=influx_db.name, record=lines(3))
        assert err.value.status == status
        assert count_rows(influx_db) == 0
        api.write(bucket=influx_db.name, record=lines(3))  # count=1: the next one is fine

    assert count_rows(influx_db) == 3


def test_a_timed_fault_lasts_its_seconds(influx_front: InfluxFront, influx_db: InfluxDb) -> None:
    influx_front.fault("unavailable", seconds=0.6)

    with v2_writer(influx_front) as api:
        with pytest.raises(ApiException):
            api.write(bucket=influx_db.name, record=lines(1))
        time.sleep(0.7)
        api.write(bucket=influx_db.name, record=lines(1))

    assert count_rows(influx_db) == 1


def test_slow_answers_take_at_least_the_delay_and_still_store(
        influx_front: InfluxFront, influx_db: InfluxDb) -> None:
    influx_front.fault("slow", delay=0.5)

    with v2_writer(influx_front) as api:
        began = time.monotonic()
        api.write(bucket=influx_db.name, record=lines(2))
        took = time.monotonic() - began

    assert took >= 0.5
    assert count_rows(influx_db) == 2


def test_reset_drops_the_connection_without_an_answer(influx_front: InfluxFront,
                                                      influx_db: InfluxDb) -> None:
    influx_front.fault("reset", count=1)

    with v2_writer(influx_front) as api:
        with pytest.raises(urllib3.exceptions.ProtocolError):
            api.write(bucket=influx_db.name, record=lines(2))

    stats = influx_front.stats()
    assert stats.by_status == {"reset": 1} and stats.bodies_received == 1
    assert count_rows(influx_db) == 0


def test_partial_write_stores_exactly_the_other_lines_and_answers_400(
        influx_front: InfluxFront, influx_db: InfluxDb) -> None:
    influx_front.fault("partial", drop=2)

    with v2_writer(influx_front) as api:
        with pytest.raises(ApiException) as err:
            api.write(bucket=influx_db.name, record=lines(5))

    assert err.value.status == 400
    assert '"code": "invalid"' in err.value.body and "partial write:" in err.value.body
    assert "dropped=2" in err.value.body  # the 1.x server's wording
    stored = [row["trade_id"] for row in influx_db.query('SELECT "trade_id" FROM "trade"')]
    assert stored == [2, 3, 4]


def test_refuse_stops_listening_then_listens_again_on_the_same_port(
        influx_front: InfluxFront, influx_db: InfluxDb) -> None:
    with v2_writer(influx_front) as api:
        api.write(bucket=influx_db.name, record=lines(1))  # leaves a keep-alive connection
        influx_front.fault("refuse", seconds=1.0)

        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", influx_front.port), timeout=2).close()
        with pytest.raises(urllib3.exceptions.NewConnectionError):
            api.write(bucket=influx_db.name, record=lines(1, start_ns=T_NS + 10))

        wait_until(lambda: socket.create_connection(("127.0.0.1", influx_front.port), 1)
                   is not None, timeout=5, what="the front to listen again")
        api.write(bucket=influx_db.name, record=lines(1, start_ns=T_NS + 20))

    assert [r["time"] for r in influx_db.query('SELECT "price" FROM "trade"')] == [T_NS,
                                                                                 T_NS + 20]


def test_faults_can_be_armed_at_start(influx_server: InfluxServer, influx_db: InfluxDb,
                                      tmp_path: Path) -> None:
    front = InfluxFront.start(tmp_path, influx_server.url, token="start-token",
                              faults=[{"action": "throttle", "count": 1, "retry_after": 3}])
    try:
        with v2_writer(front) as api:
            with pytest.raises(ApiException) as err:
                api.write(bucket=influx_db.name, record=lines(1))
            api.write(bucket=influx_db.name, record=lines(1))
    finally:
        front.stop()

    assert err.value.status == 429 and err.value.headers["Retry-After"] == "3"
    assert count_rows(influx_db) == 1


def test_stats_count_requests_and_lines_and_reset_clears_them(
        influx_front: InfluxFront, influx_db: InfluxDb) -> None:
    influx_front.fault("server_error", count=5)
    influx_front.fault("slow", delay=0.01, count=5)
    assert [f["action"] for f in influx_front.stats().active_faults] == ["server_error", "slow"]

    influx_front.reset()
    with v2_writer(influx_front) as api:
        api.write(bucket=influx_db.name, record=lines(4) + "\n# a comment\n")

    stats = influx_front.stats()
    assert (stats.write_requests, stats.bodies_received, stats.lines_received,
            stats.lines_forwarded, stats.by_status) == (1, 1, 4, 4, {"204": 1})
    assert stats.active_faults == [] and stats.upstream_version not in ("", "unknown")


def test_the_control_api_rejects_unknown_actions(influx_front: InfluxFront) -> None:
    with pytest.raises(ValueError, match="unknown action"):
        influx_front.fault("explode")
    with pytest.raises(ValueError, match="refuse takes `seconds`"):
        influx_front.fault("refuse", count=1)


# --- health, ping, query -------------------------------------------------------------------

def test_health_and_ping_look_like_2x(influx_front: InfluxFront) -> None:
    import json

    with urllib.request.urlopen(f"{influx_front.url}/health", timeout=5) as resp:
        assert resp.status == 200
        health = json.loads(resp.read())
    for method in ("GET", "HEAD"):
        req = urllib.request.Request(f"{influx_front.url}/ping", method=method)
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 204
    with InfluxDBClient(url=influx_front.url, token=influx_front.token or "", org=ORG) as client:
        assert client.ping() is True

    assert health["name"] == "influxdb" and health["status"] == "pass"
    assert health["message"] == "ready for queries and writes" and health["version"]


def test_influxql_query_is_proxied_with_the_token(influx_front: InfluxFront,
                                                  influx_db: InfluxDb) -> None:
    influx_db.write_lines(lines(2))
    url = f"{influx_front.url}/query?db={influx_db.name}&epoch=ns&q=SELECT+count(price)+FROM+trade"

    req = urllib.request.Request(url, headers={"Authorization": f"Token {influx_front.token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert b'"values":[[0,2]]' in resp.read()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=5)
    assert err.value.code == 401


# --- server semantics the product relies on --------------------------------------------------

def test_duplicate_points_merge_and_the_newest_value_wins(influx_front: InfluxFront,
                                                          influx_db: InfluxDb) -> None:
    """Spec: a point's identity is measurement + tag set + timestamp (1.x and 2.x).

    Writing the same identity again merges field by field, newest value winning; within one
    body the later line wins. A different tag set or a timestamp 1 ns apart is another point,
    which is why trades get unique nanosecond timestamps rather than a trade-id tag.
    """
    with v2_writer(influx_front) as api:
        api.write(bucket=influx_db.name,
                  record=f"trade,symbol=BTCUSDT price=1,qty=2,trade_id=7i {T_NS}")
        api.write(bucket=influx_db.name, record=f"trade,symbol=BTCUSDT price=3 {T_NS}")
        api.write(bucket=influx_db.name, record=(f"trade,symbol=ETHUSDT price=10 {T_NS}\n"
                                                 f"trade,symbol=ETHUSDT price=11 {T_NS}\n"
                                                 f"trade,symbol=ETHUSDT price=12 {T_NS + 1}"))

    rows = influx_db.query('SELECT "price", "qty", "trade_id" FROM "trade" GROUP BY "symbol"')
    assert rows == [
        {"symbol": "BTCUSDT", "time": T_NS, "price": 3, "qty": 2, "trade_id": 7},
        {"symbol": "ETHUSDT", "time": T_NS, "price": 11, "qty": None, "trade_id": None},
        {"symbol": "ETHUSDT", "time": T_NS + 1, "price": 12, "qty": None, "trade_id": None},
    ]


# --- importing spool files with the 1.x CLI --------------------------------------------------

def influx_cli() -> str:
    found = os.environ.get("INFLUX") or shutil.which("influx")
    if not found:
        message = "influx CLI not found: apt-get install influxdb-client, or set INFLUX=/path"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_a_gzip_dml_file_imports_with_influx_import(influx_server: InfluxServer,
                                                    influx_db: InfluxDb, tmp_path: Path) -> None:
    spool = tmp_path / "spool.lp.gz"
    spool.write_bytes(gzip.compress(
        f"# DML\n# CONTEXT-DATABASE: {influx_db.name}\n{lines(3)}\n".encode()))

    done = subprocess.run(
        [influx_cli(), "-import", f"-path={spool}", "-compressed", "-precision=ns",
         "-host", "127.0.0.1", "-port", str(influx_server.http_port)],
        capture_output=True, text=True, timeout=30)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Processed 3 inserts" in done.stdout and "Failed 0 inserts" in done.stdout
    assert [r["time"] for r in influx_db.query('SELECT "price" FROM "trade"')] == [
        T_NS, T_NS + 1, T_NS + 2]
