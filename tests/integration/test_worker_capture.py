"""The worker against the real rig: every trade the simulator made is stored once, exactly.

Each test compares the set of trade ids in InfluxDB with the simulator's ledger. Generation
starts paused and resumes once the worker is connected, so the ledger is exactly what a worker
without a checkpoint must store.
"""
from __future__ import annotations

import gzip
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.capture import Capture, assert_values_exact, new_worker
from tests.support.influx_fixtures import InfluxDb
from tests.support.influx_front import InfluxFront

PAUSED = '{"action": "pause"}'


def capture(tmp_path: Path, exchange_sim, influx_front, influx_db, symbols_yaml: str,
            worker: str, *sim_args: str, **env: str) -> Capture:
    sim = exchange_sim(*sim_args, "--fault", PAUSED)
    proc = new_worker(tmp_path / worker, worker, symbols_yaml, sim, influx_front, influx_db,
                      **env)
    return Capture(sim, influx_db, influx_front, proc).start_worker()


def test_single_worker_stores_every_trade_once_with_exact_strings(
        tmp_path, exchange_sim, influx_front, influx_db):
    cap = capture(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                  "btcusdt", "--symbol", "BTCUSDT:rate=400")
    cap.sim.fault("resume")
    time.sleep(4)
    cap.assert_exactly_once(["BTCUSDT"])
    cap.assert_sent_once(["BTCUSDT"])
    same_ms = cap.assert_values_exact("BTCUSDT")
    assert same_ms > 0, "no same-millisecond trades were stored: the burst case went untested"
    assert cap.worker.stop() == 0


def test_group_worker_stores_exotic_symbols_and_tiny_prices_exactly(
        tmp_path, exchange_sim, influx_front, influx_db):
    symbols = ["SOLUSDT", "SHIBUSDT", "1000SATSUSDT"]
    cap = capture(tmp_path, exchange_sim, influx_front, influx_db,
                  "groups:\n  alts: [SOLUSDT, SHIBUSDT, 1000SATSUSDT]\n", "alts",
                  "--symbol", "SOLUSDT:rate=150", "--symbol", "SHIBUSDT:rate=150:price=0.00000123",
                  "--symbol", "1000SATSUSDT:rate=150:price=0.00030000")
    cap.sim.fault("resume")
    time.sleep(4)
    cap.assert_exactly_once(symbols)  # exact strings included
    cap.assert_sent_once(symbols)
    tiny = cap.stored("SHIBUSDT")[0]["price_str"]
    assert tiny.startswith("0.0000") and len(tiny.split(".")[1]) == 8
    assert cap.worker.stop() == 0


def test_a_resent_span_creates_no_duplicate_point(tmp_path, exchange_sim, influx_front,
                                                  influx_db):
    cap = capture(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                  "btcusdt", "--symbol", "BTCUSDT:rate=300")
    cap.sim.fault("resume")
    time.sleep(2)
    first = min(cap.sim.ledger_ids("BTCUSDT"))
    cap.sim.fault("resend", symbol="BTCUSDT", from_id=first, to_id=first + 199)
    time.sleep(2)
    cap.assert_exactly_once(["BTCUSDT"])
    count = influx_db.query("SELECT COUNT(trade_id) FROM price_ticks WHERE symbol='BTCUSDT'")
    assert count[0]["count"] == len(cap.sim.ledger_ids("BTCUSDT"))
    time.sleep(5.5)  # past a status write (every second), so the counter is on disk
    assert cap.worker.status()["duplicates"] >= 200


def test_a_flood_of_malformed_frames_loses_no_valid_trade(tmp_path, exchange_sim,
                                                          influx_front, influx_db):
    cap = capture(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                  "btcusdt", "--symbol", "BTCUSDT:rate=300")
    cap.sim.fault("resume")
    kinds = ["invalid_json", "missing_fields", "wrong_types", "unknown_event", "huge", "binary"]
    for kind in kinds:
        cap.sim.fault("malformed", kind=kind, count=3 if kind == "huge" else 200)
        time.sleep(0.3)
    time.sleep(2)
    cap.assert_exactly_once(["BTCUSDT"])
    cap.worker.stop()
    status = cap.worker.status()
    assert status["reconnects"] == 0, "a malformed frame cost the connection"
    invalid = status["invalid"]
    assert sum(invalid.values()) >= 5 * 200 + 3, invalid
    assert invalid.get("binary_frame") == 200 and invalid.get("invalid_json", 0) >= 200


@pytest.mark.slow
def test_influxdb_answering_429_then_503_for_20_seconds_loses_nothing(
        tmp_path, exchange_sim, influx_front: InfluxFront, influx_db):
    cap = capture(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                  "btcusdt", "--symbol", "BTCUSDT:rate=200")
    cap.sim.fault("resume")
    time.sleep(1)
    influx_front.fault("throttle", seconds=10, retry_after=2)
    time.sleep(10)
    influx_front.fault("unavailable", seconds=10)
    time.sleep(10)
    cap.assert_exactly_once(["BTCUSDT"], timeout=60)
    assert influx_front.stats().count("429") > 0 and influx_front.stats().count("503") > 0
    assert cap.worker.stop() == 0


def test_a_wrong_token_is_reported_once_and_nothing_is_lost_once_fixed(
        tmp_path, exchange_sim, influx_front, influx_db):
    wrong = "wrong-token-5f2a9c0e7b1d4e3f8a6b"
    cap = capture(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                  "btcusdt", "--symbol", "BTCUSDT:rate=200", INFLUXDB_TOKEN=wrong)
    cap.sim.fault("resume")
    time.sleep(6)
    assert cap.worker.stop() == 0
    log = cap.worker.output()
    refusals = [line for line in log.splitlines() if "event=write_refused" in line]
    assert len(refusals) == 1, refusals
    assert "INFLUXDB_TOKEN" in refusals[0]
    assert wrong not in log and influx_front.token not in log
    assert cap.stored_ids("BTCUSDT") == []
    # The operator fixes the token and restarts: the spooled trades land, none twice.
    cap.worker.env["INFLUXDB_TOKEN"] = influx_front.token
    cap.start_worker()
    cap.assert_exactly_once(["BTCUSDT"])
    cap.worker.stop()
    assert wrong not in cap.worker.output() and influx_front.token not in cap.worker.output()


def test_sigterm_flushes_and_exits_0_within_seconds(tmp_path, exchange_sim, influx_front,
                                                    influx_db):
    cap = capture(tmp_path, exchange_sim, influx_front, influx_db, "symbols: [BTCUSDT]\n",
                  "btcusdt", "--symbol", "BTCUSDT:rate=300", WRITE_FLUSH_INTERVAL_MS="5000")
    cap.sim.fault("resume")
    time.sleep(2)
    cap.sim.fault("pause")
    expected = cap.sim.ledger_ids("BTCUSDT")
    started = time.monotonic()
    assert cap.worker.stop() == 0
    assert time.monotonic() - started < 15  # the flush deadline is 8 s; supervisord waits 20
    assert set(cap.stored_ids("BTCUSDT")) == expected  # the open 5 s batch was flushed
    assert "event=stopped" in cap.worker.output()


def test_no_database_mode_writes_files_that_the_influx_cli_loads(
        tmp_path, exchange_sim, influx_server):
    """The files load with `influx -import` into a server that does not have the database yet:
    their `# DDL` section creates it. Every trade once, with its exact strings, and quietly."""
    sim = exchange_sim("--symbol", "ETHUSDT:rate=300", "--fault", PAUSED)
    database = f"files_{int(time.time() * 1000)}"
    proc = new_worker(tmp_path / "w", "ethusdt", "symbols: [ETHUSDT]\n", sim, None, None,
                      INFLUXDB_BUCKET=database, FILE_ROTATE_S="2")
    Capture(sim, None, None, proc).start_worker()
    sim.fault("resume")
    time.sleep(5)
    sim.fault("pause")
    time.sleep(0.5)
    assert proc.stop() == 0
    files = sorted((proc.data_dir / "lp" / "ethusdt").glob("*.lp.gz"))
    assert len(files) >= 2, "FILE_ROTATE_S=2 over 5 s should give several files"
    assert not list((proc.data_dir / "lp" / "ethusdt").glob("*.lp")), "an unrotated file remains"
    with gzip.open(files[0], "rt") as fh:
        assert [fh.readline() for _ in range(5)] == [
            "# DDL\n", f'CREATE DATABASE "{database}"\n', "\n", "# DML\n",
            f"# CONTEXT-DATABASE: {database}\n"]
    assert database not in [r["name"] for r in influx_server.query("SHOW DATABASES")]
    try:
        host, port = influx_server.url.rsplit(":", 1)
        for path in files:  # the README's command
            done = subprocess.run(["influx", "-host", "127.0.0.1", "-port", port, "-import",
                                   f"-path={path}", "-compressed", "-precision=ns"],
                                  check=True, capture_output=True, text=True, timeout=60)
            out = done.stdout + done.stderr
            assert "Failed 0 inserts" in out and "price_ticks" not in out, out[-2000:]
        stored = [int(r["trade_id"]) for r in influx_server.query(
            "SELECT trade_id FROM price_ticks WHERE symbol='ETHUSDT'", db=database)]
        assert len(stored) == len(set(stored)) and set(stored) == sim.ledger_ids("ETHUSDT")
        assert_values_exact(sim, InfluxDb(database, influx_server), "ETHUSDT")
    finally:
        influx_server.drop_database(database)
