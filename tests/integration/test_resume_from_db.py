"""Resume from the database, with the real InfluxDB, simulator and workers.

A worker with no local checkpoint (a new host, a lost disk) asks InfluxDB for the highest trade id
stored per symbol and backfills from there; a token that cannot read, or an empty database, gives
one warning and a start from the live stream. Health points carry tag host=<CAPTURE_HOST>. On
Cloud Serverless (the front's `serverless` flavor) a bucket without a DBRP mapping is said at
once with its fix, and once the mapping exists a new host resumes without a hole.
"""
from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tests.support.capture import Capture, new_worker
from tests.support.influx_fixtures import FRONT_TOKEN
from tests.support.influx_front import InfluxFront
from tests.support.procs import wait_until

PAUSED = '{"action": "pause"}'
ONE = "symbols: [BTCUSDT]\n"
FAILED = "event=resume_from_db_failed"
NOTE = ("note='starting from the live stream: trades before the first one seen are not stored "
        "by this host'")


def host_tags(influx_db) -> set:
    rows = influx_db.query('SHOW TAG VALUES FROM streamer_health WITH KEY = "host"')
    return {row["value"] for row in rows}


@pytest.mark.slow
def test_a_new_home_without_data_resumes_from_the_database_and_backfills_the_downtime(
        tmp_path, exchange_sim, influx_front, influx_db):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=200", "--fault", PAUSED)
    first = new_worker(tmp_path / "host-a", "btcusdt", ONE, sim, influx_front, influx_db,
                       CAPTURE_HOST="host-a")
    cap = Capture(sim, influx_db, influx_front, first).start_worker()
    out = first.output()
    # An empty database: nothing to resume from, one warning, the live stream.
    assert out.count(FAILED) == 1, out
    (warning,) = [line for line in out.splitlines() if FAILED in line]
    assert " WARNING host=host-a worker=btcusdt " in warning
    assert "symbols=BTCUSDT " in warning and "no trade stored in the last 24 h" in warning
    assert NOTE in warning
    sim.fault("resume")
    time.sleep(4)
    wait_until(lambda: "host-a" in host_tags(influx_db), 20, what="host-a's health point")
    assert first.stop() == 0
    stored_before = max(cap.stored_ids("BTCUSDT"))
    shutil.rmtree(first.home)  # the disk is lost: no checkpoint, no spool, no status file
    time.sleep(5)  # the exchange trades on while no host captures

    second = new_worker(tmp_path / "host-b", "btcusdt", ONE, sim, influx_front, influx_db,
                        CAPTURE_HOST="host-b")
    assert not second.data_dir.exists()
    cap.worker = second
    cap.start_worker()
    time.sleep(3)
    cap.assert_exactly_once(["BTCUSDT"])
    out = second.output()
    assert FAILED not in out, out
    assert f"symbol=BTCUSDT event=resumed_from_db last_id={stored_before} " in out
    assert f"resume_from=BTCUSDT:{stored_before}" in out
    assert f"event=gap first_id={stored_before + 1} " in out
    assert "event=backfilled" in out
    wait_until(lambda: host_tags(influx_db) == {"host-a", "host-b"}, 20,
               what="health points tagged host-a and host-b")
    assert second.status()["host"] == "host-b"


@pytest.fixture
def serverless_front(influx_server, tmp_path) -> Iterator[InfluxFront]:
    front = InfluxFront.start(tmp_path / "serverless", influx_server.url, token=FRONT_TOKEN,
                              flavor="serverless")
    yield front
    front.stop()


def test_a_new_host_on_serverless_without_a_dbrp_mapping_says_the_fix_then_resumes_without_a_hole(
        tmp_path, exchange_sim, serverless_front, influx_db):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=200", "--fault", PAUSED)
    first = new_worker(tmp_path / "host-a", "btcusdt", ONE, sim, serverless_front, influx_db,
                       CAPTURE_HOST="host-a")
    cap = Capture(sim, influx_db, serverless_front, first).start_worker()
    lines = first.output().splitlines()
    (warning,) = [line for line in lines if FAILED in line]
    # at once: before the stream opens, one line carrying the command
    assert lines.index(warning) < min(i for i, line in enumerate(lines) if "event=starting" in line)
    assert f"database not found: {influx_db.name}: bucket '{influx_db.name}' has no DBRP " \
           "mapping" in warning
    fix = re.search(r"`(influx v1 dbrp create --db (\S+) --rp autogen --bucket-id (\S+) "
                    r"--default)`", warning)
    assert fix is not None and fix.group(2) == influx_db.name, warning
    assert fix.group(3) == influx_db.name  # looked up: the front's bucket id is its name
    assert NOTE in warning
    sim.fault("resume")
    time.sleep(3)
    assert first.stop() == 0
    stored_before = max(cap.stored_ids("BTCUSDT"))  # writes need no mapping
    shutil.rmtree(first.home)  # a new host next: no checkpoint

    serverless_front.create_dbrp(fix.group(2), fix.group(3))  # the fix, as said
    time.sleep(3)  # the exchange trades on while no host captures
    second = new_worker(tmp_path / "host-b", "btcusdt", ONE, sim, serverless_front, influx_db,
                        CAPTURE_HOST="host-b")
    cap.worker = second
    cap.start_worker()
    time.sleep(2)
    cap.assert_exactly_once(["BTCUSDT"])
    out = second.output()
    assert FAILED not in out, out
    assert f"symbol=BTCUSDT event=resumed_from_db last_id={stored_before} " in out
    assert f"event=gap first_id={stored_before + 1} " in out
    assert serverless_front.stats().refused("dbrp") == 1  # host-a's one query


class ReadRefusingFront:
    """Before the influx front: writes and pings pass; /query answers 403, as InfluxDB 2.x does
    for a token with write permission only."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.queries = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.path.startswith("/query"):
                    front.queries += 1
                    self._answer(403, b'{"code":"forbidden","message":"insufficient permissions'
                                      b' for read"}', {"Content-Type": "application/json"})
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type", "content-encoding",
                                            "accept")}
                request = urllib.request.Request(front.upstream + self.path, data=body,
                                                 headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=30) as resp:
                        status, payload, got = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as err:
                    status, payload, got = err.code, err.read(), err.headers
                self._answer(status, payload, {k: v for k, v in got.items() if k.lower() in
                                               ("content-type", "retry-after")})

            def _answer(self, status: int, payload: bytes, headers: dict) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = _relay  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def read_refusing(influx_front) -> Iterator[ReadRefusingFront]:
    front = ReadRefusingFront(influx_front.url)
    yield front
    front.server.shutdown()
    front.server.server_close()


def test_a_token_that_cannot_read_gives_one_warning_and_starts_from_the_live_stream(
        tmp_path, exchange_sim, influx_front, influx_db, read_refusing):
    sim = exchange_sim("--symbol", "BTCUSDT:rate=100")
    # Trades of an earlier host: a token that could read would resume from the newest of them.
    influx_db.write_lines(f"price_ticks,symbol=BTCUSDT price=1,price_str=\"1\",qty=1,"
                          f"qty_str=\"1\",trade_id=5i,buyer_maker=false {time.time_ns()}")
    proc = new_worker(tmp_path / "w", "btcusdt", ONE, sim, influx_front, influx_db,
                      INFLUXDB_URL=read_refusing.url, CAPTURE_HOST="write-only")
    cap = Capture(sim, influx_db, influx_front, proc).start_worker()
    time.sleep(2)
    sim.fault("pause")
    out = proc.output()
    warnings = [line for line in out.splitlines() if FAILED in line]
    assert len(warnings) == 1, out
    assert "symbols=BTCUSDT " in warnings[0] and NOTE in warnings[0]
    assert "the token cannot read the bucket (InfluxDB /query answered 403)" in warnings[0]
    assert "event=resumed_from_db" not in out
    (starting,) = [line for line in out.splitlines() if "event=starting" in line]
    assert starting.endswith("resume_from=-"), starting
    assert read_refusing.queries == 1
    # Captured from the live stream: every trade from the first one seen, each once.
    ledger = sim.ledger_ids("BTCUSDT")
    first_seen = min(i for i in cap.stored_ids("BTCUSDT") if i != 5)
    wait_until(lambda: set(cap.stored_ids("BTCUSDT")) == {5} | {i for i in ledger
                                                                if i >= first_seen}, 20,
               what="the live trades to be stored")
    assert "event=gap " not in out  # 5 was never taken for a checkpoint
    wait_until(lambda: "write-only" in host_tags(influx_db), 20, what="the health point")
